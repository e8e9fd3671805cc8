"""`qazlm sft-data`: build the trilingual chat instruction set; `qazlm sft`: fine-tune a model on it (docs/sft.md)."""

from __future__ import annotations

from qazlm.paths import EVAL_SETS

EPILOG = """examples:
  qazlm sft-data -o runs/sft-data                                  # every default task, 200 each
  qazlm sft-data -o runs/sft-small --per-task 20 --tasks translation,topic,script_latin
  qazlm sft-data -o runs/sft --lang-shares kk=0.6,ru=0.2,en=0.2 --external my_chats.jsonl
  qazlm sft-data -o runs/sft-safe --per-task 100 --task-sizes safety_refusal=300,translation=200
  qazlm sft-data --config sft.toml --set seed=1                    # an [sft_data] table, one key changed

Outputs: train.jsonl, heldout.jsonl (chat `messages` + task, lang, source), rejected.jsonl (set aside, with
the reason), card.md / card.json (counts per task x language x source, licences), qazlm_stage.json.
A rerun with the same config is skipped; --force rebuilds. alpaca_en (CC BY-NC 4.0) is off by default."""

FLAGS = {  # CLI flag dest -> SftDataConfig field
    "out_dir": "out_dir", "tasks": "tasks", "per_task": "per_task", "task_sizes": "task_sizes",
    "lang_shares": "lang_shares",
    "heldout_fraction": "heldout_fraction", "seed": "seed", "model_name": "model_name",
    "external": "external", "decontaminate": "decontaminate",
}


def load_sft_data_config(args):
    """[sft_data] of --config, then the flags, then --set (later wins); validated by SftDataConfig."""
    from qazlm.config import config_from_cli
    from qazlm.sft.data import SftDataConfig

    return config_from_cli(SftDataConfig, "sft_data", args, FLAGS, "sft-data")


def _run(args) -> int:
    from qazlm.sft.data import run

    cfg = load_sft_data_config(args)
    card = run(cfg, force=args.force)
    c = card["conversations"]
    print(f"sft-data: {c['train']:,} train, {c['heldout']:,} held-out conversations, {c['rejected']:,} set aside "
          f"-> {cfg.out_dir} (card: {cfg.out_dir}/card.md)")
    return 0


SFT_EPILOG = """examples:
  qazlm sft runs/tiny/pretrain/final --data runs/tiny/sft_data -o runs/tiny/sft        # full fine-tuning, packed
  qazlm sft runs/tiny/pretrain/final --data runs/sft-data -o runs/sft-lora --lora --lr 2e-4
  qazlm sft smollm2-135m/ --data runs/sft-data -o runs/smol-sft --set chat_template=qazlm --set max_steps=200
  qazlm sft MODEL --data DATA -o OUT --config sft.toml --set lora.r=8        # an [sft] table, one key changed
  torchrun --nproc_per_node=8 -m qazlm.cli sft MODEL --data DATA -o OUT       # several GPUs (DDP)

MODEL is our model folder (qazlm_model.json) or a Hugging Face Llama / Qwen3 / SmolLM2 folder. Outputs in OUT:
final/ (a Hugging Face model folder with the chat template and qazlm_lineage.json), checkpoints/, metrics.jsonl
(`qazlm plot OUT`), tb/ (TensorBoard), summary.json, qazlm_stage.json. Rerunning a killed run resumes from the
last complete checkpoint; the same finished config is skipped; other settings need --force."""

SFT_FLAGS = {  # CLI flag dest -> SftConfig field
    "model": "model", "data": "data", "out_dir": "out_dir", "lr": "lr", "epochs": "epochs",
    "max_steps": "max_steps", "batch_size": "batch_size", "max_len": "max_len", "device": "device",
}


def load_sft_config(args):
    """[sft] of --config, then the flags, then --lora, then --set (later wins); validated by SftConfig."""
    from qazlm.config import config_from_cli
    from qazlm.sft.config import SftConfig

    def lora_switch(data: dict) -> None:
        if args.lora:
            data["lora"] = {**data.get("lora", {}), "enabled": True}

    return config_from_cli(SftConfig, "sft", args, SFT_FLAGS, "sft", adjust=lora_switch)


def _run_sft(args) -> int:
    from qazlm.sft.train import run_sft

    run_sft(load_sft_config(args), force=args.force)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    register_sft(sub, HelpFormatter)
    p = sub.add_parser("sft-data", help="build trilingual chat instruction data (messages JSONL + card)",
                       formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG)
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/sft-data)")
    p.add_argument("--config", default=None, help="TOML file with an [sft_data] table")
    p.add_argument("--tasks", default=None, help="comma-separated task names (default: all but alpaca_en)")
    p.add_argument("--per-task", default=None, help="conversations per task (default: 200)")
    p.add_argument("--task-sizes", default=None, metavar="TASK=N,...",
                   help="conversations for the named tasks instead of --per-task, e.g. safety_refusal=400")
    p.add_argument("--lang-shares", default=None, help="e.g. kk=0.5,ru=0.25,en=0.25 (the default)")
    p.add_argument("--heldout-fraction", default=None, help="held-out share per task (default: 0.1)")
    p.add_argument("--seed", default=None, help="random seed (default: 0)")
    p.add_argument("--model-name", default=None, help="name the identity task answers with (default: Qazlm)")
    p.add_argument("--external", action="append", default=None, metavar="FILE|hf:NAME",
                   help="extra instruction data: messages / ShareGPT / Alpaca JSONL, or a Hub dataset (repeatable)")
    p.add_argument("--decontaminate", default=None,
                   help=f"evaluation sets to decontaminate against (default: {','.join(EVAL_SETS)})")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any [sft_data] key, e.g. lexicon=...")
    p.add_argument("--force", action="store_true", help="rebuild even when the folder matches the config")
    p.set_defaults(func=_run)


def register_sft(sub, formatter) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning (TRL SFTTrainer): full or LoRA, packed, assistant-only loss",
                       formatter_class=formatter, description=__doc__, epilog=SFT_EPILOG)
    p.add_argument("model", nargs="?", default=None, help="model folder: ours (qazlm_model.json) or Hugging Face")
    p.add_argument("--data", default=None, help="a `qazlm sft-data` folder (train.jsonl, heldout.jsonl)")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/sft)")
    p.add_argument("--config", default=None, help="TOML file with an [sft] table")
    p.add_argument("--lr", default=None, help="peak learning rate (default: 2e-5)")
    p.add_argument("--epochs", default=None, help="passes over the data (default: 3)")
    p.add_argument("--max-steps", default=None, help="stop after N optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", default=None, help="per-device batch: packed rows or conversations (default: 8)")
    p.add_argument("--max-len", default=None, help="tokens per packed row / conversation (default: 1024)")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default: auto)")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters ([sft.lora]) and merge them on save")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any [sft] key, e.g. packing=false, lora.r=8, chat_template=qazlm")
    p.add_argument("--force", action="store_true", help="replace an OUT trained with other settings")
    p.set_defaults(func=_run_sft)
