"""Continuous batching (`qazlm.infer.batcher`) against one request at a time, same model and requests.

N requests (FLORES+ devtest sentence starts as prompts, greedy, `--tokens` new tokens each, no stop token) are
run (a) one after another through `generate_ids` — what a server without batching does — and (b) all
submitted to a `ContinuousBatcher` with N slots, half of them arriving while the first half decode. Prints
total tokens/s of both, the speed-up, and checks that every request decoded the same tokens both ways. The last
line is one JSON object.

    python benchmarks/bench_batcher.py --model runs/tiny/pretrain/final --requests 8 --tokens 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/tiny/pretrain/final", help="a model folder (ours or HF)")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=32, help="prefill chunk")
    args = ap.parse_args()
    from bench_quantize import devtest, prompt_ids

    from qazlm.infer.batcher import ContinuousBatcher
    from qazlm.infer.engine import generate_ids
    from qazlm.infer.loading import load_model
    from qazlm.infer.sampling import SamplingParams

    loaded = load_model(args.model)
    model, tok = loaded.model, loaded.tokenizer
    prompts = prompt_ids(tok, devtest(args.requests), args.requests)[:args.requests]
    params = SamplingParams(max_new_tokens=args.tokens)
    t0 = time.perf_counter()
    alone = [generate_ids(model, [p], params, stop_token_ids=())[0] for p in prompts]
    sequential = time.perf_counter() - t0

    batcher = ContinuousBatcher(model, slots=args.requests, max_len=max(map(len, prompts)) + args.tokens + 1,
                                prefill_chunk=args.chunk)
    t0 = time.perf_counter()
    half = len(prompts) // 2
    reqs = [batcher.submit(p, params, ()) for p in prompts[:half]]
    for _ in range(4):  # the second half arrives while the first decodes
        batcher.step()
    reqs += [batcher.submit(p, params, ()) for p in prompts[half:]]
    batcher.run_until_idle()
    batched = time.perf_counter() - t0
    same = sum(r.tokens == a for r, a in zip(reqs, alone))
    total = sum(len(a) for a in alone)
    row = {"bench": "batcher", "model": loaded.name, "requests": len(prompts), "tokens_each": args.tokens,
           "sequential_tok_s": round(total / sequential, 1), "batched_tok_s": round(total / batched, 1),
           "speedup": round(sequential / batched, 2), "identical_requests": same}
    print("| mode | total tok/s |\n|---|---:|")
    print(f"| one request at a time (generate_ids) | {row['sequential_tok_s']} |")
    print(f"| continuous batching, {len(prompts)} slots | {row['batched_tok_s']} ({row['speedup']}x) |")
    print(f"identical tokens: {same}/{len(prompts)} requests")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
