"""CPU training throughput of the qazlm pretraining engine vs the loop a user would otherwise write.

ours: `qazlm.train.trainer.train` itself (shuffled-window loader with prefetch, grad accumulation, clipping,
LR schedule, AdamW foreach, metrics) on the `small` preset, fp32.
baseline: transformers' Qwen3ForCausalLM with the same config in a plain PyTorch loop (AdamW foreach, same
batch geometry, same data windows, fp32).
Rounds alternate baseline/ours so background load hits both alike; the first step of every round is warm-up.
Prints a table, then one JSON line (target: ours >= 1.0x baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def hf_loop(cfg, batches, lr: float) -> float:
    """tokens/s of a plain HF training loop over `batches` (first one is warm-up)."""
    import torch
    from transformers import AutoModelForCausalLM

    from qazlm.model.hf import hf_config

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config(cfg, {}), attn_implementation="sdpa", dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, foreach=True)
    t0, tokens = None, 0
    for i, micro in enumerate(batches):
        if i == 1:
            t0 = time.perf_counter()
        for rows in micro:
            x = torch.from_numpy(rows)
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1]).loss / len(micro)  # HF shifts labels itself
            loss.backward()
            if i >= 1:
                tokens += x[:, :-1].numel()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return tokens / (time.perf_counter() - t0)


def ours(cfg_kwargs: dict, out: Path) -> float:
    from qazlm.train.config import PretrainConfig
    from qazlm.train.monitor import read_metrics
    from qazlm.train.trainer import train

    train(PretrainConfig(**cfg_kwargs, out_dir=str(out)), log=lambda *a, **k: None)
    recs = [r for r in read_metrics(out / "metrics.jsonl") if "tokens_per_s" in r]
    timed = recs[1:]  # the first logged step includes warm-up
    total = sum(cfg_kwargs["global_batch_tokens"] for _ in timed)
    return total / sum(cfg_kwargs["global_batch_tokens"] / r["tokens_per_s"] for r in timed)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/bench_pretrain.py --rounds 2 --steps 5")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--micro", type=int, default=4)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round (plus one warm-up)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch

    from qazlm.train.loader import BatchLoader, PlainTokens, WindowSampler
    from qazlm.train.trainer import model_config

    tmp = Path(tempfile.mkdtemp(prefix="bench_pretrain_"))
    rng = np.random.default_rng(0)
    np.save(tmp / "tokens.npy", rng.integers(0, args.vocab, size=2_000_000, dtype=np.int32))
    kwargs = dict(model=args.preset, data=str(tmp / "tokens.npy"), tokenizer="", seq_len=args.seq,
                  micro_batch=args.micro, global_batch_tokens=args.seq * args.micro * args.accum,
                  steps=args.steps + 1, warmup_steps=1, eval_every=-1, ckpt_every=0, log_every=1,
                  tensorboard=False, resume=False, dtype="fp32", compile="false")
    from qazlm.train.config import PretrainConfig

    mcfg = model_config(PretrainConfig(model=args.preset), args.vocab)
    # the plain token file has no vocabulary: tell the trainer through the model config override
    kwargs["model_overrides"] = {"vocab_size": args.vocab}
    loader = BatchLoader(WindowSampler(PlainTokens(tmp / "tokens.npy"), args.seq, 1337), micro_batch=args.micro,
                         accum=args.accum, prefetch=0)
    batches = [loader.step_batches(s) for s in range(args.steps + 1)]
    hf, our = [], []
    for r in range(args.rounds):
        hf.append(hf_loop(mcfg, batches, 3e-4))
        our.append(ours(kwargs, tmp / f"ours_{r}"))
        print(f"round {r + 1}: transformers {hf[-1]:,.0f} tok/s, qazlm {our[-1]:,.0f} tok/s", file=sys.stderr)
    hf_tps, our_tps = float(np.median(hf)), float(np.median(our))
    ratio = our_tps / hf_tps
    n = sum(p.numel() for p in __import__("qazlm.model.transformer", fromlist=["T"]).Transformer(mcfg).parameters())
    print(f"| training step, {args.preset} ({n / 1e6:.1f}M params), fp32 CPU, {torch.get_num_threads()} threads, "
          f"batch {args.micro}x{args.accum}x{args.seq} | tokens/s (median of {args.rounds}) |")
    print("|---|---|")
    print(f"| transformers Qwen3ForCausalLM, plain loop | {hf_tps:,.0f} |")
    print(f"| qazlm pretrain engine | {our_tps:,.0f} |")
    print(f"| ratio qazlm / transformers | {ratio:.2f}x |")
    print("(measured under contention: other jobs share the CPU)")
    print(json.dumps({"bench": "pretrain", "preset": args.preset, "params": n, "seq": args.seq, "micro": args.micro,
                      "accum": args.accum, "hf_tokens_per_s": round(hf_tps, 1), "qazlm_tokens_per_s": round(our_tps, 1),
                      "ratio": round(ratio, 3), "target_ratio": 1.0, "target_met": ratio >= 1.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
