"""CPU reward-model and DPO throughput: qazlm's trainers vs the bare TRL ones a user would otherwise run.

Both sides train the same model on the same preference pairs, in the same order (the length-grouped stream
`qazlm rm train` / `qazlm dpo` read, sequential sampling) with the same TrainingArguments (`rm_args` /
`dpo_args` of the config below), so the batches are identical and only the trainer differs:
- reward model: qazlm's `reward_trainer` (the padding skipped, real tokens end to end, each pair's shared prompt
  run once as a forked conversation)
  vs `trl.RewardTrainer` (batches padded to their longest side);
- DPO: `trl.DPOTrainer` inside qazlm's `labelled_positions_only` (TRL's fused LM head projects only the
  completion positions, as it does where Triton runs) vs the same trainer without it (every position on a CPU).
Throughput = real tokens (chosen + rejected, prompt included) of steps 2..N / time from the end of step 1 to the
end of step N. DPO's reference log-probs (computed once, in the trainer's constructor, over the whole stream) are
timed separately. Rounds alternate bare/qazlm; the table reports medians. No target is set by the issue; the
ratio must stay >= 1 (qazlm's wrapper costs nothing). Prints a table, then one JSON line.

The default model is the demo's: the `tiny` preset (4.6M, random init) with a 16k qazlm tokenizer trained on
the bundled sample, reading pairs built now by `qazlm sft-data` + `qazlm pref-data` (tool pairs included, so
rows reach ~600-900 tokens as in the demo). `--model DIR --pairs DIR` take a trained SFT model and a pref-data
folder instead (e.g. runs/tiny/sft/final and runs/tiny/pref_data).

    python benchmarks/bench_align.py [--model tiny|small|DIR] [--pairs DIR] [--rounds 2] [--steps 8]
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

from bench_sft import build_qazlm_model, step_timer  # noqa: E402  (benchmarks/ is not a package)


def build_pairs(tmp: Path, per_task: int, per_type: int) -> Path:
    from qazlm.align.pairs import PrefDataConfig
    from qazlm.align.pairs import run as pref_data
    from qazlm.sft.data import SftDataConfig
    from qazlm.sft.data import run as sft_data

    sft_data(SftDataConfig(out_dir=str(tmp / "sft_data"), per_task=per_task, decontaminate=[]))
    pref_data(PrefDataConfig(sft_data=str(tmp / "sft_data"), out_dir=str(tmp / "pref"), per_type=per_type),
              log=lambda *a: None)
    return tmp / "pref"


def stream_tokens(tok, stream: list[dict], batch: int) -> list[int]:
    """Real tokens (both sides of every pair) of each batch of the stream."""
    from qazlm.align.common import side_lengths

    return [sum(sum(side_lengths(tok, p)) for p in stream[i:i + batch]) for i in range(0, len(stream), batch)]


def timed(trainer_factory, tokens: list[int]) -> dict:
    """Build the trainer (timed: DPO computes its reference log-probs there), train it, and measure."""
    timer = step_timer()
    t0 = time.perf_counter()
    trainer = trainer_factory()
    built = time.perf_counter() - t0
    trainer.add_callback(timer)
    trainer.train()
    steps = len(timer.ends)
    return {"construct_s": built, "tokens_per_s": sum(tokens[1:steps]) / (timer.ends[-1] - timer.ends[0]),
            "s_per_step": (timer.ends[-1] - timer.ends[0]) / (steps - 1), "first_loss": timer.losses[0]}


def rm_round(model: Path, pairs: Path, out: Path, args, ours: bool) -> dict:
    from trl import RewardTrainer

    from qazlm.align.common import dataset, training_pairs
    from qazlm.align.reward import RmConfig, load_reward_start, reward_trainer, rm_args

    cfg = RmConfig(model=str(model), data=str(pairs), out_dir=str(out), max_steps=args.steps, batch_size=8,
                   max_len=1024, lr=3e-3, logging_steps=1, save_steps=10_000, device="cpu")
    net, tok, _ = load_reward_start(cfg.model, "cpu", cfg.seed)
    stream = training_pairs(tok, cfg)[0]
    if ours:
        def factory():
            return reward_trainer(net, tok, cfg, out, "cpu", stream)
    else:
        def factory():
            return RewardTrainer(model=net, args=rm_args(cfg, out, "cpu"), processing_class=tok,
                                 train_dataset=dataset(stream))
    return timed(factory, stream_tokens(tok, stream, cfg.batch_size))


def dpo_round(model: Path, pairs: Path, out: Path, args, ours: bool) -> dict:
    from contextlib import nullcontext

    from trl import DPOTrainer

    from qazlm.align.common import dataset, training_pairs
    from qazlm.align.dpo import DpoConfig, dpo_args, labelled_positions_only
    from qazlm.sft.load import load_chat_tokenizer, load_model

    cfg = DpoConfig(model=str(model), data=str(pairs), out_dir=str(out), max_steps=args.steps, batch_size=4,
                    max_len=320, lr=5e-4, loss_type=["sigmoid", "sft"], logging_steps=1, save_steps=10_000,
                    win_prompts=0, device="cpu")
    net, kind = load_model(cfg.model, "cpu")
    tok = load_chat_tokenizer(cfg.model, kind, "")
    stream = training_pairs(tok, cfg)[0]
    with labelled_positions_only() if ours else nullcontext():
        return timed(lambda: DPOTrainer(model=net, args=dpo_args(cfg, out, "cpu"), processing_class=tok,
                                        train_dataset=dataset(stream)), stream_tokens(tok, stream, cfg.batch_size))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/bench_align.py --rounds 2 --steps 8\n"
                                        "  python benchmarks/bench_align.py --model runs/tiny/sft/final "
                                        "--pairs runs/tiny/pref_data")
    ap.add_argument("--model", default="tiny", help="tiny | small (a random qazlm preset, built now) or a folder")
    ap.add_argument("--pairs", help="a `qazlm pref-data` folder (default: built now from a fresh sft-data set)")
    ap.add_argument("--per-task", type=int, default=24, help="sft-data conversations per task, when building")
    ap.add_argument("--per-type", type=int, default=48, help="pref-data pairs per type, when building")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for flag, value, least in (("--steps", args.steps, 2), ("--rounds", args.rounds, 1),
                               ("--per-task", args.per_task, 1), ("--per-type", args.per_type, 1)):
        if value < least:
            ap.error(f"{flag} must be >= {least} (got {value})")
    for flag, path, what in (("--model", args.model if args.model not in ("tiny", "small") else None,
                              "tiny, small or a model folder"), ("--pairs", args.pairs, "a `qazlm pref-data` folder")):
        if path is not None and not Path(path).is_dir():
            ap.error(f"{flag} {path}: not a folder; give {what}")

    import torch

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_align_"))
    model = build_qazlm_model(tmp, args.model) if args.model in ("tiny", "small") else Path(args.model)
    pairs = Path(args.pairs) if args.pairs else build_pairs(tmp, args.per_task, args.per_type)
    runs: dict[tuple[str, bool], list[dict]] = {}
    for r in range(args.rounds):
        for stage, one_round in (("rm", rm_round), ("dpo", dpo_round)):
            for ours in (False, True):
                out = tmp / f"{stage}_{'ours' if ours else 'bare'}_{r}"
                runs.setdefault((stage, ours), []).append(one_round(model, pairs, out, args, ours))
                shutil.rmtree(out, ignore_errors=True)
        print(f"round {r + 1}: " + ", ".join(f"{s} {'qazlm' if o else 'bare'} {v[-1]['tokens_per_s']:,.0f} tok/s"
                                             for (s, o), v in runs.items()), file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)

    def med(stage, ours, key):
        return statistics.median(x[key] for x in runs[(stage, ours)])

    ratio = {s: med(s, True, "tokens_per_s") / med(s, False, "tokens_per_s") for s in ("rm", "dpo")}
    ref_ratio = med("dpo", False, "construct_s") / med("dpo", True, "construct_s")
    print(f"| {args.model}, fp32 CPU, {torch.get_num_threads()} threads, {args.steps} steps, median of {args.rounds} "
          "| bare TRL | qazlm | qazlm / bare |")
    print("|---|---:|---:|---:|")
    for stage, what in (("rm", "reward model (batch 8 pairs, max_len 1024)"), ("dpo", "DPO (batch 4, max_len 320)")):
        print(f"| {what}, real tokens/s | {med(stage, False, 'tokens_per_s'):,.0f} | "
              f"{med(stage, True, 'tokens_per_s'):,.0f} | {ratio[stage]:.2f}x |")
        print(f"| {what}, s/step | {med(stage, False, 's_per_step'):.3f} | {med(stage, True, 's_per_step'):.3f} | |")
        print(f"| {what}, first loss | {runs[(stage, False)][0]['first_loss']:.4f} | "
              f"{runs[(stage, True)][0]['first_loss']:.4f} | |")
    print(f"| DPO reference log-probs over the stream, s | {med('dpo', False, 'construct_s'):.1f} | "
          f"{med('dpo', True, 'construct_s'):.1f} | {ref_ratio:.2f}x |")
    wall = time.perf_counter() - t_all
    print(f"| whole benchmark | {wall:.0f} s | | |")
    print(json.dumps({
        "bench": "align", "model": args.model, "threads": torch.get_num_threads(), "steps": args.steps,
        "rounds": args.rounds,
        **{f"{s}_{'qazlm' if o else 'bare_trl'}_tokens_per_s": [round(x["tokens_per_s"], 1) for x in v]
           for (s, o), v in runs.items()},
        "rm_ratio": round(ratio["rm"], 3), "dpo_ratio": round(ratio["dpo"], 3),
        "dpo_reference_ratio": round(ref_ratio, 3),
        "first_loss": {f"{s}_{'qazlm' if o else 'bare_trl'}": round(v[0]["first_loss"], 4)
                       for (s, o), v in runs.items()},
        "ratio_met": min(ratio.values()) >= 1.0, "wall_s": round(wall, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
