"""`qazlm pretrain` (train or resume from a recipe's [pretrain] table) and `qazlm plot` (PNG curves)."""

from __future__ import annotations

PRETRAIN_EPILOG = """examples:
  qazlm pretrain --config recipes/tiny.toml                      # CPU, after `qazlm run recipes/tiny.toml --only data`
  qazlm pretrain --config recipes/350m.toml --set lr=2e-3 --set steps=1000
  qazlm pretrain --config recipes/tiny.toml --data tokens.npy --set tokenizer=runs/tiny/tokenizer
  torchrun --nproc_per_node=8 -m qazlm.cli pretrain --config recipes/350m.toml          # 8 GPUs, DDP
  torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
      -m qazlm.cli pretrain --config recipes/500m.toml --set parallel=fsdp             # 2 nodes
A rerun with the same out_dir resumes from the latest checkpoint (see docs/pretraining.md)."""

PLOT_EPILOG = """example:
  qazlm plot runs/tiny          # -> runs/tiny/pretrain/plots/{loss,val_bpb,lr,grad_norm,tokens_per_s}.png"""


def load_pretrain_config(path: str, overrides: list[str] | None = None, *, data: str | None = None,
                         out: str | None = None):
    """[pretrain] of a recipe + overrides (`lr=1e-3` or `pretrain.lr=1e-3`, `run.out_dir=...`); paths and the
    seed default to the recipe's [run] table, as in `qazlm run`."""
    from pathlib import Path

    from qazlm.config import from_dict
    from qazlm.errors import QazlmError
    from qazlm.runs import RunConfig, read_recipe
    from qazlm.train.config import PretrainConfig
    from qazlm.train.stage import fill_run_paths

    scoped = [o if o.split("=", 1)[0].startswith(("run.", "pretrain.")) else f"pretrain.{o}" for o in overrides or []]
    recipe = read_recipe(path, scoped)
    if "pretrain" not in recipe:
        raise QazlmError(f"{path}: no [pretrain] table; use a run recipe such as recipes/tiny.toml")
    section = dict(recipe["pretrain"])
    if data:
        section["data"] = data
    if out:
        section["out_dir"] = out
    run = from_dict(RunConfig, recipe.get("run", {}), f"{path}[run]")
    cfg = from_dict(PretrainConfig, {"seed": run.seed, **section}, f"{path}[pretrain]")
    return fill_run_paths(cfg, Path(run.out_dir))


def _cmd_pretrain(args) -> int:
    from qazlm.train.trainer import train

    cfg = load_pretrain_config(args.config, args.set, data=args.data, out=args.out)
    final = train(cfg)
    if final is not None and not args.no_plot:
        import os

        if int(os.environ.get("RANK", "0")) == 0:
            from qazlm.train.plot import plot_run

            for p in plot_run(cfg.out_dir):
                print(f"pretrain: wrote {p}")
    return 0


def _cmd_plot(args) -> int:
    from qazlm.train.plot import plot_run

    for p in plot_run(args.run, args.out):
        print(p)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("pretrain", help="train (or resume) a model from a recipe's [pretrain] table",
                       description=__doc__, epilog=PRETRAIN_EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--config", required=True, help="recipe TOML with a [pretrain] table, e.g. recipes/tiny.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a [pretrain] key, e.g. lr=1e-3 or model_overrides.n_layers=4")
    p.add_argument("--data", help="token folder (meta.json) or .bin/.npy file; default <run>/data/tokens")
    p.add_argument("--out", help="output folder; default <run>/pretrain")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG curves at the end")
    p.set_defaults(func=_cmd_pretrain)

    q = sub.add_parser("plot", help="PNG training curves of a pretraining run", description=__doc__,
                       epilog=PLOT_EPILOG, formatter_class=HelpFormatter)
    q.add_argument("run", help="run folder, its pretrain/ folder, or a metrics.jsonl")
    q.add_argument("--out", help="folder for the PNGs; default <metrics dir>/plots")
    q.set_defaults(func=_cmd_plot)
