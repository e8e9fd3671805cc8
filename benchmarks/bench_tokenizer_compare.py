"""Benchmark: `qazlm tokenizer compare` on all 8 reference tokenizers x kk/ru/en FLORES+ devtest.

Target: the whole comparison (loading every tokenizer + every metric incl. morphology) in < 60 s on 2 cores.
Baseline in the same run: what a user would write by hand, a per-line `encode` loop with the same
libraries (`tokenizer.encode(line)` / `enc.encode_ordinary(line)`) just to count tokens; reported as the
ratio of per-line to batched encoding time. Nothing is cached between tokenizers or runs.

    python benchmarks/bench_tokenizer_compare.py [--split devtest] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_SECONDS = 60.0


def per_line_encode_seconds(tok, texts: dict[str, list[str]]) -> float:
    """The naive loop: encode one line at a time through the library's single-text call."""
    t0 = time.perf_counter()
    for lines in texts.values():
        for line in lines:
            tok.encode_batch([line])
    return time.perf_counter() - t0


def batch_encode_seconds(tok, texts: dict[str, list[str]]) -> float:
    t0 = time.perf_counter()
    for lines in texts.values():
        tok.encode_batch(lines)
    return time.perf_counter() - t0


def main() -> None:
    from qazlm.paths import shared_dir
    from qazlm.tokenizer.compare import CompareOptions, compare, flores_files, read_parallel
    from qazlm.tokenizer.loaders import load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="devtest", choices=["dev", "devtest"])
    ap.add_argument("--skip-baseline", action="store_true", help="skip the per-line encode loop")
    args = ap.parse_args()

    ref_dir = shared_dir() / "tokenizers"
    specs = sorted(p for p in Path(ref_dir).iterdir() if p.is_dir())
    if len(specs) != 8:
        print(f"note: expected 8 reference tokenizers in {ref_dir}, found {len(specs)}")

    t0 = time.perf_counter()
    texts = read_parallel(flores_files(args.split))
    load_s, toks = 0.0, []
    for spec in specs:
        t = time.perf_counter()
        toks.append(load_tokenizer(str(spec)))
        load_s += time.perf_counter() - t
    t = time.perf_counter()
    rows = compare(toks, texts, parallel=True, opts=CompareOptions())
    metrics_s = time.perf_counter() - t
    total_s = time.perf_counter() - t0

    print(f"FLORES+ {args.split}: {len(specs)} tokenizers x {len(texts)} languages "
          f"({sum(len(v) for v in texts.values())} lines), {len(rows)} rows")
    print(f"{'tokenizer':<16}{'kind':<14}{'batch s':>9}{'per-line s':>12}{'ratio':>8}")
    batch_total = line_total = 0.0
    for tok in toks:
        b = batch_encode_seconds(tok, texts)
        line = float("nan") if args.skip_baseline else per_line_encode_seconds(tok, texts)
        batch_total += b
        line_total += 0.0 if args.skip_baseline else line
        print(f"{tok.name:<16}{getattr(tok, 'kind', '?'):<14}{b:>9.3f}{line:>12.3f}{line / b:>8.2f}")
    ratio = line_total / batch_total if batch_total and not args.skip_baseline else None
    print(f"\ncompare total {total_s:.1f} s (load {load_s:.1f} s, metrics {metrics_s:.1f} s); "
          f"target < {TARGET_SECONDS:.0f} s; per-line/batch encode ratio "
          f"{'n/a' if ratio is None else f'{ratio:.2f}x'} (measured on {os.cpu_count()} cores)")
    print(json.dumps({"benchmark": "tokenizer_compare", "split": args.split, "tokenizers": len(toks),
                      "languages": len(texts), "compare_seconds": round(total_s, 2),
                      "load_seconds": round(load_s, 2), "metrics_seconds": round(metrics_s, 2),
                      "batch_encode_seconds": round(batch_total, 3),
                      "per_line_encode_seconds": None if ratio is None else round(line_total, 3),
                      "per_line_over_batch": None if ratio is None else round(ratio, 2),
                      "target_seconds": TARGET_SECONDS, "target_met": total_s < TARGET_SECONDS}))


if __name__ == "__main__":
    main()
