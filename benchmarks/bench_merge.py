"""`qazlm merge` against mergekit's own CLI (`mergekit-yaml`), the tool a user would otherwise run.

Two random Qwen3 models of a real small size (default: SmolLM2-135M's shape and tokenizer) are merged
linearly, 0.8 / 0.2, by both, each run as the command a user types (a new process). qazlm adds checks (tensor
shapes, vocabulary), the chat tokenizer and the lineage around mergekit's own merge, so the weights must be the
same and the time close. Prints a table, then one JSON line.

    python benchmarks/bench_merge.py                       # ~1 min on 2 CPU cores
    python benchmarks/bench_merge.py --layers 4 --hidden 256   # a quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def make_model(out: Path, seed: int, args) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from qazlm.paths import shared_dir

    tok = AutoTokenizer.from_pretrained(shared_dir() / "tokenizers" / "smollm2")   # SmolLM2's own vocabulary
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=args.hidden * 8 // 3,
                      num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                      num_key_value_heads=max(1, args.hidden // 192), head_dim=64, tie_word_embeddings=True)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def params(folder: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def max_abs_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x)


def run_qazlm(a: Path, b: Path, out: Path) -> float:
    cli = Path(sys.executable).with_name("qazlm")
    t0 = time.perf_counter()
    subprocess.run([str(cli), "merge", str(a), str(b), "--weights", "0.8,0.2", "-o", str(out)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run_mergekit_cli(a: Path, b: Path, out: Path) -> float:
    config = out.parent / "mergekit.yml"
    config.write_text(f"merge_method: linear\ndtype: float32\nmodels:\n"
                      f"  - model: {a}\n    parameters: {{weight: 0.8}}\n"
                      f"  - model: {b}\n    parameters: {{weight: 0.2}}\n", encoding="utf-8")
    cli = Path(sys.executable).with_name("mergekit-yaml")
    t0 = time.perf_counter()
    subprocess.run([str(cli), str(config), str(out), "--no-copy-tokenizer"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--repeats", type=int, default=2, help="runs of each (the best is reported)")
    args = p.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        a, b = make_model(tmp / "a", 1, args), make_model(tmp / "b", 2, args)
        n = params(a)
        ours = min(run_qazlm(a, b, tmp / f"q{i}") for i in range(args.repeats))
        theirs = min(run_mergekit_cli(a, b, tmp / f"m{i}") for i in range(args.repeats))
        diff = max_abs_diff(tmp / "q0" / "final", tmp / "m0")
    print(f"linear merge of two {n / 1e6:.0f}M-parameter Qwen3 models (fp32), best of {args.repeats}; "
          "both as commands in new processes\n")
    print("| tool | seconds | vs mergekit-yaml |\n|---|---|---|")
    print(f"| qazlm merge (checks + mergekit + tokenizer + lineage) | {ours:.1f} | {ours / theirs:.2f}x |")
    print(f"| mergekit-yaml | {theirs:.1f} | 1.00x |")
    print(f"\nmax |weight difference| between the two outputs: {diff:.2e}")
    print(json.dumps({"bench": "merge", "params": n, "qazlm_s": round(ours, 2), "mergekit_cli_s": round(theirs, 2),
                      "ratio": round(ours / theirs, 3), "max_abs_diff": diff, "same_weights": diff < 1e-5,
                      "wall_s": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
