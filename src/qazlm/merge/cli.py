"""`qazlm merge A B [...] -o OUT`: one model folder from several fine-tunes of one parent, through mergekit."""

from __future__ import annotations

EPILOG = """examples:
  qazlm merge runs/kk/sft/final runs/ru/sft/final --weights 0.8,0.2 -o runs/soup        # a weighted model soup
  qazlm merge runs/a/sft/final runs/b/sft/final -o runs/soup                            # equal weights
  qazlm merge runs/a/sft/final runs/b/sft/final --method task_arithmetic --base smollm2/ --weights 1,0.5 -o runs/ta
  qazlm eval --safety --sft-data runs/kk/sft_data runs/soup/final                       # then score it like any model

Methods (mergekit, fp32 arithmetic):
  linear           sum of w_i * model_i, the weights normalized to sum 1 (a model soup)
  task_arithmetic  base + sum of w_i * (model_i - base) (needs --base, the common parent)

The models must share every tensor name and shape and the tokenizer vocabulary (fine-tunes of one parent);
our own folders are exported to transformers first. Output: OUT/final, a Hugging Face model folder with the
first model's tokenizer and chat template, and qazlm_lineage.json naming every input, its weight and hash."""

FLAGS = {"models": "models", "weights": "weights", "method": "method", "base": "base", "out_dir": "out_dir"}


def load_merge_config(args):
    """[merge] of --config, then the flags, then --set (later wins); validated by MergeConfig."""
    from qazlm.config import config_from_cli
    from qazlm.merge.config import MergeConfig

    args.models = args.models or None   # no folders on the command line: those of --config's [merge] table
    return config_from_cli(MergeConfig, "merge", args, FLAGS, "merge")


def _run(args) -> int:
    from qazlm.merge.merge import run_merge

    run_merge(load_merge_config(args), force=args.force)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter, add_config_flags
    from qazlm.merge.config import METHODS

    p = sub.add_parser("merge", help="average fine-tunes of one parent (model soup, task arithmetic) with mergekit",
                       formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG)
    p.add_argument("models", nargs="*", default=None, help="model folders (ours or Hugging Face), two or more")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/merged)")
    p.add_argument("--weights", default=None, help="one weight per model, comma-separated (default: equal)")
    p.add_argument("--method", default=None, help=f"{' | '.join(METHODS)} (default: linear)")
    p.add_argument("--base", default=None, help="task_arithmetic: the folder the models were fine-tuned from")
    add_config_flags(p, "merge", "redo even when OUT holds this exact result")
    p.set_defaults(func=_run)
