"""`qazlm pref-data`, `qazlm rm train|score`, `qazlm dpo`: preference pairs, a reward model and DPO
(docs/alignment.md)."""

from __future__ import annotations

from qazlm.paths import EVAL_SETS

PREF_EPILOG = """examples:
  qazlm pref-data --sft-data runs/tiny/sft_data -o runs/tiny/pref_data
  qazlm pref-data --sft-data runs/sft-data -o runs/pref --per-type 500 --types language,tool_call,computed
  qazlm pref-data --sft-data runs/tiny/sft_data -o runs/tiny/pref2 --policy runs/tiny/sft/final \
      --reward-model runs/tiny/rm/final --set samples=4            # + on-policy pairs ranked by the RM

Outputs: train.jsonl / heldout.jsonl (TRL's conversational preference format: prompt, chosen, rejected, tools;
plus type, lang, source), rejected.jsonl (set aside, with the reason), card.md / card.json, qazlm_stage.json."""

RM_EPILOG = """examples:
  qazlm rm train runs/tiny/sft/final --data runs/tiny/pref_data -o runs/tiny/rm
  qazlm rm train smollm2-135m/ --data runs/pref -o runs/rm-smol --set max_steps=200 --set lr=1e-5
  qazlm rm score runs/tiny/rm/final --prompt "Сәлем! Қалайсың?" --response "Жақсы, рақмет!" --response "Fine."
  torchrun --nproc_per_node=8 -m qazlm.cli rm train MODEL --data PREF -o OUT      # several GPUs (DDP)

`train` writes OUT/final (a Qwen3/Llama ForSequenceClassification folder transformers loads as is),
rm_report.md/.json (held-out pairwise accuracy per type and language), checkpoints/, metrics.jsonl."""

DPO_EPILOG = """examples:
  qazlm dpo runs/tiny/sft/final --data runs/tiny/pref_data -o runs/tiny/dpo --reward-model runs/tiny/rm/final
  qazlm dpo MODEL --data PREF -o OUT --set loss_type=ipo --set beta=0.5
  qazlm dpo MODEL --data PREF -o OUT --set 'loss_type=["sigmoid","sft"]' --set 'loss_weights=[1.0,0.2]'
  torchrun --nproc_per_node=8 -m qazlm.cli dpo MODEL --data PREF -o OUT           # several GPUs (DDP)

OUT/final is a Hugging Face causal LM folder (chat template, lineage) that generate, eval, serve and
quantize take as is; dpo_report.md/.json: held-out reward accuracy and margins, win rate over the parent."""

PREF_FLAGS = {"sft_data": "sft_data", "out_dir": "out_dir", "per_type": "per_type", "types": "types",
              "seed": "seed", "policy": "policy", "reward_model": "reward_model", "decontaminate": "decontaminate"}
RM_FLAGS = {"model": "model", "data": "data", "out_dir": "out_dir", "lr": "lr", "max_steps": "max_steps",
            "batch_size": "batch_size", "max_len": "max_len", "device": "device"}
DPO_FLAGS = {**RM_FLAGS, "reward_model": "reward_model", "beta": "beta", "loss_type": "loss_type"}


def _pref_data(args) -> int:
    from qazlm.align.pairs import PrefDataConfig, run
    from qazlm.config import config_from_cli

    run(config_from_cli(PrefDataConfig, "pref_data", args, PREF_FLAGS, "pref-data"), force=args.force)
    return 0


def _rm_train(args) -> int:
    from qazlm.align.reward import RmConfig, run_rm
    from qazlm.config import config_from_cli

    run_rm(config_from_cli(RmConfig, "rm", args, RM_FLAGS, "rm train"), force=args.force)
    return 0


def _rm_score(args) -> int:
    from qazlm.align.reward import score
    from qazlm.errors import QazlmError

    if not args.response:
        raise QazlmError("rm score: give at least one --response to score")
    for n, (reward, text) in enumerate(score(args.model, args.prompt, args.response, args.system), 1):
        print(f"{n}. {reward:+.4f}  {text}")
    return 0


def _dpo(args) -> int:
    from qazlm.align.dpo import DpoConfig, run_dpo
    from qazlm.config import config_from_cli

    run_dpo(config_from_cli(DpoConfig, "dpo", args, DPO_FLAGS, "dpo"), force=args.force)
    return 0


def _common(p, table: str) -> None:
    p.add_argument("--config", default=None, help=f"TOML file with a [{table}] table")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override any [{table}] key")
    p.add_argument("--force", action="store_true", help="replace an output made with other settings")


def _training(p) -> None:
    p.add_argument("model", nargs="?", default=None, help="model folder: ours (qazlm_model.json) or Hugging Face")
    p.add_argument("--data", default=None, help="a `qazlm pref-data` folder")
    p.add_argument("-o", "--out-dir", default=None, help="output folder")
    p.add_argument("--lr", default=None, help="peak learning rate")
    p.add_argument("--max-steps", default=None, help="stop after N optimizer steps")
    p.add_argument("--batch-size", default=None, help="pairs per step (default: 8)")
    p.add_argument("--max-len", default=None, help="tokens per rendered conversation; longer pairs are set aside")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("pref-data", help="preference pairs right by construction (+ HH harmless), with a card",
                       formatter_class=HelpFormatter, description=__doc__, epilog=PREF_EPILOG)
    p.add_argument("--sft-data", default=None, help="the `qazlm sft-data` folder the pairs are built from")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/pref_data)")
    p.add_argument("--per-type", default=None, help="training pairs per type (default: 200; held-out: a tenth)")
    p.add_argument("--types", default=None, help="comma-separated pair types (default: all)")
    p.add_argument("--seed", default=None, help="random seed (default: 0)")
    p.add_argument("--policy", default=None, help="add on-policy pairs: the model whose samples are paired")
    p.add_argument("--reward-model", default=None, help="ranks the on-policy samples (default: the checkable rules)")
    p.add_argument("--decontaminate", default=None,
                   help=f"evaluation sets no pair may share text with (default: {','.join(EVAL_SETS)})")
    _common(p, "pref_data")
    p.set_defaults(func=_pref_data)

    rm = sub.add_parser("rm", help="reward model: train (TRL RewardTrainer) or score responses",
                        formatter_class=HelpFormatter, description=__doc__, epilog=RM_EPILOG)
    verbs = rm.add_subparsers(dest="rm_command", metavar="VERB", required=True)
    t = verbs.add_parser("train", help="train a reward model on preference pairs", formatter_class=HelpFormatter,
                         epilog=RM_EPILOG)
    _training(t)
    _common(t, "rm")
    t.set_defaults(func=_rm_train)
    s = verbs.add_parser("score", help="rank responses to a prompt", formatter_class=HelpFormatter,
                         epilog=RM_EPILOG)
    s.add_argument("model", help="a reward model folder (`qazlm rm train` OUT/final)")
    s.add_argument("--prompt", required=True, help="the user's message")
    s.add_argument("--response", action="append", help="a response to score (repeatable)")
    s.add_argument("--system", default=None, help="a system prompt before the user's message")
    s.set_defaults(func=_rm_score)

    d = sub.add_parser("dpo", help="direct preference optimisation (TRL DPOTrainer) of a chat model",
                       formatter_class=HelpFormatter, description=__doc__, epilog=DPO_EPILOG)
    _training(d)
    d.add_argument("--reward-model", default=None, help="a reward model folder that judges the win rate")
    d.add_argument("--beta", default=None, help="KL strength (default: 0.1)")
    d.add_argument("--loss-type", default=None, help="sigmoid (default), ipo, hinge, robust, ... (comma-separated)")
    _common(d, "dpo")
    d.set_defaults(func=_dpo)
