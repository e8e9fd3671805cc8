"""CPU SFT throughput: `qazlm sft` (qazlm.sft.train.run_sft) vs the bare TRL script a user would otherwise write,
and the padding that packing saves.

Both train the same model on the same `qazlm sft-data` folder (Kazakh-heavy: kk=0.6, ru=0.2, en=0.2) with the
same settings: fp32, loss on assistant tokens only, best-fit packing, batch x max_len, constant LR, same seed.
The default model is the `small` preset (26M, random init) with a 16k qazlm tokenizer trained on the bundled
sample: a step takes a few seconds, so any per-step cost of the wrapper shows. `--model smollm2` trains the
real SmolLM2-135M-Instruct (benchmarks/_smollm2.py) instead, at ~7 s per 512 tokens.
- ours: `run_sft` itself on the qazlm folder (model/data checks, in-memory conversion, qazlm's ChatML
  template, row-packed collator, token counter, metrics.jsonl, TensorBoard, progress bar, final save);
- bare TRL: `trl.SFTTrainer` with an equivalent `SFTConfig` (TRL's own padding-free collator) on the same
  model exported with `qazlm export hf`, the same template installed on the tokenizer.
Throughput = trained (real) tokens / wall time between the end of step 1 and the end of the last step: the
first step (warm-up) and the final checkpoint save are left out of both. qazlm computes a shared opening (the same
tool definitions, ...) once per row (docs/sft.md), so its batches differ from TRL's and it computes fewer tokens
for the same conversations: its throughput is given both in tokens computed and in the conversations' tokens
(computed x the epoch's conversation/computed ratio), the measure of the same training work; the target is on
the latter. Rounds alternate bare/ours; the
table reports the median. Padding waste is counted over a whole epoch of the batches run_sft would train on,
with and without packing (no training needed), and over the batches the timed runs trained on.
Targets: ours >= 0.90x bare TRL; padding waste with packing <= 5%. Prints a table, then one JSON line.

    python benchmarks/bench_sft.py [--model small|tiny|smollm2|DIR] [--rounds 2] [--steps 10] [--batch 4]
                                   [--max-len 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGET_RATIO = 0.90
TARGET_PAD = 0.05
LANG_SHARES = {"kk": 0.6, "ru": 0.2, "en": 0.2}


def step_timer():
    """A TrainerCallback recording the time at the end of every optimizer step and each logged loss."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.losses: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

    return StepTimer()


def throughput(step_tokens: list[int], ends: list[float]) -> float:
    """Tokens/s over steps 2..N (the window between the end of step 1 and the end of step N)."""
    if len(ends) < 2 or len(step_tokens) != len(ends):
        raise RuntimeError(f"need >= 2 timed steps with token counts (got {len(ends)} times, {len(step_tokens)} counts)")
    return sum(step_tokens[1:]) / (ends[-1] - ends[0])


def build_data(out: Path, per_task: int) -> Path:
    from qazlm.sft.data import SftDataConfig, run

    run(SftDataConfig(out_dir=str(out), per_task=per_task, lang_shares=dict(LANG_SHARES)))
    return out


def settings(args) -> dict:
    return dict(lr=args.lr, max_steps=args.steps, batch_size=args.batch, max_len=args.max_len, seed=0)


def run_ours(model: Path, data: Path, out: Path, args, packing: bool = True) -> dict:
    """run_sft on a fresh folder; tokens per step from its metrics.jsonl, times from our callback."""
    from qazlm.sft.config import SftConfig
    from qazlm.sft.train import run_sft
    from qazlm.train.monitor import read_metrics

    timer = step_timer()
    cfg = SftConfig(model=str(model), data=str(data), out_dir=str(out), packing=packing, warmup=0,
                    schedule="constant", max_heldout=0, save_steps=10_000, logging_steps=1, device="cpu",
                    chat_template="qazlm", **settings(args))
    summary = run_sft(cfg, force=True, log=lambda *a, **k: None, callbacks=[timer])
    cumulative = [int(r["tokens"]) for r in read_metrics(out / "metrics.jsonl") if "tokens" in r and r.get("step", 0) > 0]
    per_step = [b - a for a, b in zip([0] + cumulative, cumulative)]
    computed = throughput(per_step, timer.ends)
    # conversations that open alike share their opening (docs/sft.md, "Shared openings"): the same conversations
    # cost fewer computed tokens; scaled by the epoch's ratio, the throughput in the tokens bare TRL computes
    whole = (summary["tokens_per_epoch"] + summary["shared_opening_tokens_per_epoch"]) / summary["tokens_per_epoch"]
    return {"tokens_per_s": computed * whole, "computed_tokens_per_s": computed, "step_tokens": per_step,
            "first_loss": timer.losses[0], "padding_waste": summary["padding_waste"],
            "summary_tokens_per_s": summary["tokens_per_s"], "shared_share": 1 - 1 / whole}


def chat_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.chat_template = CHAT_TEMPLATE  # SmolLM2's own template has no {% generation %} markers
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def trained_conversations(model_dir: Path, data: Path, max_len: int) -> list[dict]:
    """The conversations `qazlm sft` trains on (tools included, those longer than max_len left out), so the
    bare script sees the same data; TRL alone would cut the long ones instead."""
    from qazlm.sft.load import read_sft_data, set_aside_overlong

    train, _, _ = read_sft_data(data, 0)
    return set_aside_overlong(chat_tokenizer(model_dir), train, max_len)[0]


def run_bare_trl(model_dir: Path, conversations: list[dict], out: Path, args) -> dict:
    """The script a user writes with TRL alone: SFTConfig + SFTTrainer on the conversations."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    dataset = Dataset.from_list(conversations)
    tok = chat_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    s = settings(args)
    config = SFTConfig(
        output_dir=str(out), learning_rate=s["lr"], max_steps=s["max_steps"],
        per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=1, max_length=s["max_len"],
        packing=True, packing_strategy="bfd", assistant_only_loss=True, lr_scheduler_type="constant",
        warmup_steps=0, seed=s["seed"], data_seed=s["seed"], logging_steps=1, save_strategy="no",
        report_to="none", use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        activation_checkpointing=False, disable_tqdm=True)

    class CountingTrainer(SFTTrainer):
        step_tokens: list[int] = []

        def training_step(self, model, inputs, num_items_in_batch=None):
            self.step_tokens.append(int(inputs["input_ids"].numel()))  # padding-free: every token is real
            return super().training_step(model, inputs, num_items_in_batch)

    timer = step_timer()
    trainer = CountingTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                              callbacks=[timer])
    trainer.step_tokens = []
    trainer.train()
    return {"tokens_per_s": throughput(trainer.step_tokens, timer.ends), "step_tokens": trainer.step_tokens,
            "first_loss": timer.losses[0]}


def build_qazlm_model(tmp: Path, preset_name: str) -> Path:
    """A randomly initialised qazlm model (`preset_name`) with a 16k qazlm tokenizer trained on the bundled
    sample (a few seconds; throughput does not depend on the weights' values)."""
    import torch
    from transformers import AutoTokenizer

    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import Transformer
    from qazlm.paths import SAMPLE_DIR
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    train_tokenizer(TokenizerTrainConfig(inputs=[str(SAMPLE_DIR)], vocab_size=16000,
                                         max_bytes=4_000_000), tmp / "tokenizer", show_progress=False)
    tok = AutoTokenizer.from_pretrained(str(tmp / "tokenizer"))
    torch.manual_seed(0)
    model = Transformer(preset(preset_name, len(tok)))
    model.init_weights()
    return save_model_folder(model.eval(), tmp / "model", tmp / "tokenizer")


def prepare_model(arg: str, tmp: Path) -> tuple[Path, Path, str]:
    """(folder run_sft trains, HF folder the bare TRL script loads, display name). A qazlm folder is trained
    as such by run_sft (converted in memory) and exported to HF for TRL: same module, same weights."""
    from qazlm.infer.loading import model_kind
    from qazlm.model.hf import export_hf

    if arg == "smollm2":
        from _smollm2 import ensure_smollm2

        folder = ensure_smollm2(None)
        return folder, folder, "SmolLM2-135M-Instruct"
    if arg in ("tiny", "small"):
        folder, name = build_qazlm_model(tmp, arg), f"qazlm `{arg}` preset (random init, 16k qazlm tokenizer)"
    else:
        folder, name = Path(arg), arg
    if model_kind(folder) == "qazlm":
        return folder, export_hf(folder, tmp / "model_hf"), name
    return folder, folder, name


def epoch_padding(model: Path, data: Path, args, packing: bool) -> float:
    """Padding share of one whole epoch of the batches run_sft would train on (its own trainer and collator,
    no training): packed rows vs one conversation per row."""
    from qazlm.sft.callbacks import REAL_KEY
    from qazlm.sft.config import SftConfig
    from qazlm.sft.load import load_chat_tokenizer, load_model, read_sft_data
    from qazlm.sft.train import build_trainer

    cfg = SftConfig(model=str(model), data=str(data), packing=packing, max_heldout=0, device="cpu",
                    chat_template="qazlm", **settings(args))
    train, _, _ = read_sft_data(cfg.data, 0)
    net, kind = load_model(cfg.model, "cpu")
    tok = load_chat_tokenizer(cfg.model, kind, cfg.chat_template)
    with tempfile.TemporaryDirectory(prefix="bench_sft_pad_") as out:
        trainer = build_trainer(cfg, net, tok, train, [], Path(out), "cpu")
        real = total = 0
        for batch in trainer.get_train_dataloader():
            real += int(batch[REAL_KEY])
            total += int(batch["input_ids"].numel())
    return 1 - real / total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/bench_sft.py --rounds 2 --steps 8\n"
                                        "  QAZLM_SMOLLM2_DIR=/work/cache/smollm2-hf python benchmarks/bench_sft.py")
    ap.add_argument("--model", default="small",
                    help="small | tiny (a random qazlm preset, built now), smollm2 (SmolLM2-135M-Instruct, see "
                         "_smollm2.py; use --max-len 1024 for its Kazakh token counts) or a model folder")
    ap.add_argument("--data", help="a `qazlm sft-data` folder (default: built now, kk=0.6 ru=0.2 en=0.2)")
    ap.add_argument("--per-task", type=int, default=20, help="conversations per task when building the data")
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import torch

    from qazlm.errors import QazlmError

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_sft_"))
    try:
        model, model_hf, name = prepare_model(args.model, tmp)
        data = Path(args.data) if args.data else build_data(tmp / "sft_data", args.per_task)
    except QazlmError as e:
        print(f"qazlm: error: {e}", file=sys.stderr)
        return 2
    conversations = trained_conversations(model_hf, data, args.max_len)
    bare, ours = [], []
    for r in range(args.rounds):
        bare.append(run_bare_trl(model_hf, conversations, tmp / f"bare_{r}", args))
        ours.append(run_ours(model, data, tmp / f"ours_{r}", args))
        for done in (tmp / f"bare_{r}", tmp / f"ours_{r}"):  # checkpoints of a 135M model: GBs each
            shutil.rmtree(done, ignore_errors=True)
        print(f"round {r + 1}: bare TRL {bare[-1]['tokens_per_s']:,.0f} tok/s, qazlm sft {ours[-1]['tokens_per_s']:,.0f} "
              f"tok/s", file=sys.stderr)
    pad_packed, pad_unpacked = epoch_padding(model, data, args, True), epoch_padding(model, data, args, False)
    shutil.rmtree(tmp, ignore_errors=True)
    bare_tps = statistics.median(b["tokens_per_s"] for b in bare)
    our_tps = statistics.median(o["tokens_per_s"] for o in ours)
    our_computed = statistics.median(o["computed_tokens_per_s"] for o in ours)
    ratio = our_tps / bare_tps
    same_batches = bare[0]["step_tokens"] == ours[0]["step_tokens"]
    pad_trained = statistics.median(o["padding_waste"] for o in ours)
    wall = time.perf_counter() - t_all

    print(f"| SFT, {name}, fp32 CPU, {torch.get_num_threads()} threads, batch {args.batch} x max_len {args.max_len}, "
          f"{args.steps} steps | value |")
    print("|---|---|")
    print(f"| bare TRL SFTTrainer, tokens/s (median of {args.rounds}) | {bare_tps:,.0f} |")
    print(f"| qazlm sft (run_sft), tokens computed/s (median of {args.rounds}) | {our_computed:,.0f} |")
    print(f"| qazlm sft, the same conversations' tokens/s (shared openings: {ours[0]['shared_share']:.1%} of "
          f"them not computed) | {our_tps:,.0f} |")
    print(f"| ratio qazlm / bare TRL, conversations' tokens (target >= {TARGET_RATIO:.2f}) | {ratio:.3f}x |")
    print(f"| ratio qazlm / bare TRL, tokens computed | {our_computed / bare_tps:.3f}x |")
    print(f"| first loss: bare TRL / qazlm | {bare[0]['first_loss']:.4f} / {ours[0]['first_loss']:.4f} |")
    print(f"| same tokens per step in both | {same_batches} |")
    print(f"| padding waste, packing, whole epoch (target <= {TARGET_PAD:.0%}) | {pad_packed:.1%} |")
    print(f"| padding waste, packing, batches trained above | {pad_trained:.1%} |")
    print(f"| padding waste, no packing, whole epoch | {pad_unpacked:.1%} |")
    print(f"| whole benchmark | {wall:.0f} s |")
    print(json.dumps({
        "bench": "sft", "model": name, "threads": torch.get_num_threads(), "steps": args.steps, "batch": args.batch,
        "max_len": args.max_len, "rounds": args.rounds,
        "bare_trl_tokens_per_s": [round(b["tokens_per_s"], 1) for b in bare],
        "qazlm_tokens_per_s": [round(o["tokens_per_s"], 1) for o in ours],
        "qazlm_computed_tokens_per_s": [round(o["computed_tokens_per_s"], 1) for o in ours],
        "shared_opening_share": round(ours[0]["shared_share"], 4),
        "bare_trl_median": round(bare_tps, 1), "qazlm_median": round(our_tps, 1), "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO, "ratio_met": ratio >= TARGET_RATIO,
        "first_loss_bare": round(bare[0]["first_loss"], 4), "first_loss_qazlm": round(ours[0]["first_loss"], 4),
        "same_tokens_per_step": same_batches,
        "padding_waste_packed": round(pad_packed, 4), "padding_waste_unpacked": round(pad_unpacked, 4),
        "padding_waste_trained": round(pad_trained, 4),
        "target_padding_waste": TARGET_PAD, "padding_met": pad_packed <= TARGET_PAD, "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
