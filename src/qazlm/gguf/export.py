"""`qazlm export gguf`: a model folder -> GGUF files for llama.cpp / Ollama, checked against the source.

llama.cpp's own tools do the work: `convert_hf_to_gguf.py` writes the f32 file (our folders go through
`qazlm export hf` first, so the converter sees the transformers model the export defines) and
`llama_model_quantize` (llama-quantize) makes every other type from it. qazlm adds what the converter cannot
know (the pre-tokenizer of our tokenizers, qazlm.gguf.vocab) and checks each run: token ids, special ids,
f32 logits against the source, and each type's perplexity change, KL and same-top-token rate against f32.

OUT holds NAME-F16.gguf, NAME-Q8_0.gguf, ... (the requested types), gguf_report.json and gguf_report.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.gguf.config import TYPES, GGUFConfig

STAGE = "gguf"
REPORT = "gguf_report.json"
REPORT_MD = "gguf_report.md"
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def file_name(stem: str, type_name: str) -> str:
    return f"{stem}-{type_name.upper()}.gguf"


def default_stem(model: Path) -> str:
    """`runs/tiny/sft/final` -> `tiny-sft`; any other folder -> its name."""
    model = model.resolve()
    return f"{model.parent.parent.name}-{model.parent.name}" if model.name == "final" else model.name


def check_source(hf_dir: Path) -> None:
    """One line for a folder the converter must not see: no tokenizer, a foreign architecture, torchao weights."""
    from qazlm.model.hf import read_hf_config

    config = read_hf_config(hf_dir)
    if not (hf_dir / "tokenizer.json").is_file():
        raise QazlmError(f"{hf_dir}: no tokenizer.json beside the weights; a GGUF file carries its tokenizer, so "
                         "copy the tokenizer files into the model folder")
    arch = (config.get("architectures") or ["(none)"])[0]
    if arch not in ARCHITECTURES:
        raise QazlmError(f"{hf_dir}: architecture {arch} is not supported for GGUF export; qazlm exports "
                         f"{', '.join(ARCHITECTURES)} (the families its token and logit checks cover)")
    if config.get("quantization_config"):
        raise QazlmError(f"{hf_dir}: holds quantized weights ({config['quantization_config'].get('quant_method')}); "
                         "export its fp32 parent (qazlm_lineage.json names it) and pick a GGUF --type instead")


def run_gguf(cfg: GGUFConfig, force: bool = False, log=print) -> dict:
    """Export `cfg.model` into `cfg.out_dir` (one run per folder; a rerun with the same config and parent
    weights is skipped, a changed one rebuilt)."""
    from qazlm.io import clean_temp
    from qazlm.runs import output_lock, up_to_date, write_record

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise QazlmError(f"{out}: exists and is not a folder; choose another -o")
    with output_lock(out, STAGE):
        clean_temp(out)
        wanted, stem = record(cfg), cfg.name or default_stem(Path(cfg.model))
        complete = (out / REPORT).is_file() and all((out / file_name(stem, t)).is_file() for t in cfg.types)
        if up_to_date(out, STAGE, wanted, complete, force, log):
            return json.loads((out / REPORT).read_text(encoding="utf-8"))
        report = export(cfg, out, stem, log)
        write_record(out, STAGE, wanted)
    return report


def record(cfg: GGUFConfig) -> dict:
    from qazlm.gguf.converter import llama_cpp_version
    from qazlm.infer.loading import model_kind
    from qazlm.io import expand_inputs
    from qazlm.model.io import weights_sha256
    from qazlm.tokenizer.mixture import inputs_fingerprint

    importance = cfg.calibration or ([cfg.imatrix] if cfg.imatrix else [])
    return {**json.loads(json.dumps(dataclasses.asdict(cfg))), "llama_cpp": llama_cpp_version(),
            "parent_sha256": weights_sha256(cfg.model, model_kind(cfg.model)),
            "importance_inputs": inputs_fingerprint({"": expand_inputs(importance)}) if importance else ""}


def export(cfg: GGUFConfig, out: Path, stem: str, log) -> dict:
    from qazlm.gguf import vocab
    from qazlm.gguf.converter import llama_cpp_version, require_converter, run_converter
    from qazlm.gguf.imatrix import IMATRIX_SUFFIX
    from qazlm.gguf.llamacpp import quantize
    from qazlm.infer.loading import model_kind
    from qazlm.io import TMP_PREFIX
    from qazlm.model.hf import export_hf

    model = Path(cfg.model)
    kind = model_kind(model)
    require_converter()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=TMP_PREFIX) as scratch:
        scratch = Path(scratch)
        hf_dir = model if kind == "hf" else export_hf(model, scratch / "hf")
        check_source(hf_dir)
        f32 = scratch / file_name(stem, "f32")
        log(f"gguf: converting {model} with llama.cpp's convert_hf_to_gguf.py")
        run_converter(hf_dir, f32, vocab.overrides(hf_dir, ours=kind == "qazlm"))
        files = {"f32": f32}
        source = load_source(hf_dir)
        imatrix, imatrix_report = importance(cfg, source, f32, scratch / f"{stem}{IMATRIX_SUFFIX}", log)
        for type_name in cfg.types:
            if type_name != "f32":
                log(f"gguf: quantizing to {type_name} with llama.cpp")
                files[type_name] = scratch / file_name(stem, type_name)
                quantize(f32, files[type_name], type_name, imatrix, cfg.output_type)
        log("gguf: checking token ids, logits and quality against the source")
        report = {"model": str(model.resolve()), "model_kind": kind, "llama_cpp": llama_cpp_version(),
                  "output_type": cfg.output_type or "llama.cpp's choice per type", "imatrix": imatrix_report,
                  **checks(*source, files, cfg.check_sentences)}
        report["files"] = {t: info for t, info in report["files"].items() if t in cfg.types}
        publish(scratch, out, [files[t].name for t in cfg.types] + ([imatrix_report["file"]] if cfg.calibration
                                                                       else []))
    report["seconds"] = time.perf_counter() - t0
    write_reports(out, report)
    log(summary(report, out))
    return report


def load_source(hf_dir: Path) -> tuple:
    """(fp32 transformers model, tokenizer) of the folder the converter read: the matrix and the checks use it."""
    import transformers

    from qazlm.infer.loading import load_tokenizer
    from qazlm.quantize.quantize import load_fp32

    transformers.logging.disable_progress_bar()
    return load_fp32(hf_dir), load_tokenizer(hf_dir)


def importance(cfg: GGUFConfig, source: tuple, f32: Path, path: Path, log):
    """(Imatrix or None, its report entry): computed from `cfg.calibration` on the source model and written
    to `path` (published beside the GGUF files), or read from `cfg.imatrix`."""
    from qazlm.gguf import imatrix as im

    if cfg.imatrix:
        matrix = im.read(Path(cfg.imatrix))
        im.check_names(matrix, f32)
        return matrix, {"source": str(Path(cfg.imatrix).resolve()), "tensors": len(matrix.sums)}
    if not cfg.calibration:
        return None, None
    t0 = time.perf_counter()
    matrix = im.compute(*source, f32, cfg.calibration, cfg.calibration_chunks)
    im.write(path, matrix)
    log(f"gguf: importance matrix from {matrix.chunks} x {matrix.chunk_tokens} tokens of "
        f"{', '.join(cfg.calibration)} ({time.perf_counter() - t0:.1f} s)")
    return matrix, {"file": path.name, "datasets": matrix.datasets, "chunks": matrix.chunks,
                    "chunk_tokens": matrix.chunk_tokens, "tensors": len(matrix.sums)}


def checks(source, tok, files: dict[str, Path], sentences: int) -> dict:
    from qazlm.gguf.check import (PARITY_SAMPLES, kquant_fallbacks, read_tensors, special_tokens, tensor_types,
                                  token_parity)
    from qazlm.gguf.llamacpp import Scorer, open_gguf
    from qazlm.quantize.compare import compare_languages
    from qazlm.quantize.quantize import check_texts

    texts = check_texts(sentences) if sentences else {}
    params = sum(p.numel() for p in source.parameters())
    with open_gguf(files["f32"]) as f32:
        parity = {"samples": token_parity(f32, tok, PARITY_SAMPLES),
                  **{lang: token_parity(f32, tok, lines) for lang, lines in texts.items()}}
        result = {"parity": parity, "special_tokens": special_tokens(f32, tok),
                  "f32_vs_source": compare_languages(source, Scorer(f32), tok, texts), "quality": {}}
        for type_name, path in files.items():
            if type_name != "f32":
                with open_gguf(path) as quantized:
                    result["quality"][type_name] = compare_languages(Scorer(f32), Scorer(quantized), tok, texts)
    result["files"] = {}
    for t, p in files.items():
        tensors = read_tensors(p)
        result["files"][t] = {"file": p.name, "bytes": p.stat().st_size, "what": TYPES[t],
                              "bits_per_weight": 8 * p.stat().st_size / params, "tensor_types": tensor_types(tensors),
                              "kquant": kquant_fallbacks(tensors) if "_k" in t else None}
    result["params"] = params
    return result


def publish(scratch: Path, out: Path, names: list[str]) -> None:
    """Move the new files into OUT (each rename atomic) and drop GGUF files of types no longer requested."""
    from qazlm.io import current_umask, fsync_dir

    for old in out.glob("*.gguf"):
        if old.name not in names:
            old.unlink()
    for name in names:
        os.chmod(scratch / name, 0o666 & ~current_umask())  # like every file atomic_dir writes
        os.replace(scratch / name, out / name)
    fsync_dir(out)


def write_reports(out: Path, report: dict) -> None:
    from qazlm.io import write_json, write_text

    write_json(out / REPORT, report)
    write_text(out / REPORT_MD, markdown(report))


def markdown(report: dict) -> str:
    langs = list(report["f32_vs_source"])
    lines = [f"# GGUF export of `{report['model']}`", "",
             f"llama.cpp {report['llama_cpp']} (llama-cpp-python); pre-tokenizer "
             f"`{report['special_tokens']['pre_tokenizer']}`. {quantizer_line(report)}", "",
             "## Token ids (llama.cpp vs transformers)", "",
             "| text set | lines | identical |", "|---|---:|---:|"]
    lines += [f"| {name} | {p['lines']} | {p['identical']} |" for name, p in report["parity"].items()]
    lines += ["", "## f32 GGUF vs the source model (fp32)", ""]
    if langs:
        lines += ["| lang | max logit diff | bpb source | bpb GGUF |", "|---|---:|---:|---:|"]
        lines += [f"| {lang} | {c['max_logit_diff']:.2e} | {c['bpb_ref']:.4f} | {c['bpb_test']:.4f} |"
                  for lang, c in report["f32_vs_source"].items()]
    else:
        lines.append("Not checked (`check_sentences = 0`).")
    header = ["type", "MiB", "bits/weight", "tensors"] + [f"{lang} {what}" for lang in langs
                                                         for what in ("PPL Δ%", "KL", "same top")]
    lines += ["", "## Quantized files vs f32 (FLORES+ dev)", "", "| " + " | ".join(header) + " |",
              "|---|---:|---:|---|" + "---:|" * (len(header) - 4)]
    for type_name, info in report["files"].items():
        q = report["quality"].get(type_name, {})
        cells = [f"{info['bytes'] / 2**20:.1f}", f"{info['bits_per_weight']:.2f}",
                 " · ".join(f"{t} {n}" for t, n in info["tensor_types"].items())]
        cells += [cell for lang in langs for cell in
                  ((f"{q[lang]['ppl_delta_pct']:+.2f}", f"{q[lang]['kl']:.5f}", f"{100 * q[lang]['top1']:.1f}%")
                   if lang in q else ("ref", "0", "100%"))]
        lines.append(f"| {type_name} | " + " | ".join(cells) + " |")
    lines += [f"\n{line}" for line in fallback_lines(report)]
    return "\n".join(lines) + "\n"


def fallback_lines(report: dict) -> list[str]:
    """One line per k-quant file that holds layer tensors llama.cpp could not k-quantize."""
    out = []
    for type_name, info in report["files"].items():
        fell = (info.get("kquant") or {}).get("fallbacks")
        if fell:
            out.append(f"{type_name}: {sum(fell.values())} of {info['kquant']['tensors']} quantized layer tensors have "
                       "rows that are no multiple of 256, which k-quants need, so llama.cpp stored them as "
                       + ", ".join(f"{t} ({n})" for t, n in fell.items()) + ", as llama-quantize does.")
    return out


def quantizer_line(report: dict) -> str:
    """How the quantizer ran: the importance matrix (made here, or given) and the output tensor's type."""
    matrix = report.get("imatrix")
    if not matrix:
        made = "no importance matrix"
    elif "file" in matrix:
        made = (f"importance matrix `{matrix['file']}` from {matrix['chunks']} x {matrix['chunk_tokens']} tokens of "
                + ", ".join(f"`{d}`" for d in matrix["datasets"]))
    else:
        made = f"importance matrix from `{matrix['source']}`"
    output = report.get("output_type") or "llama.cpp's choice per type"
    return f"Quantizer: {made}; output tensor: {output}."


def summary(report: dict, out: Path) -> str:
    parity = report["parity"]
    same, total = sum(p["identical"] for p in parity.values()), sum(p["lines"] for p in parity.values())
    diffs = [c["max_logit_diff"] for c in report["f32_vs_source"].values()]
    checked = f"f32 max logit diff {max(diffs):.1e}" if diffs else "quality not checked (check_sentences = 0)"
    lines = [f"gguf: {', '.join(report['files'])} -> {out} ({report['seconds']:.1f} s); token ids identical on "
             f"{same}/{total} texts; {checked}"]
    lines += [f"  {line}" for line in fallback_lines(report)]
    for type_name, by_lang in report["quality"].items():
        if type_name in report["files"] and by_lang:
            lines.append(f"  {type_name}: " + ", ".join(
                f"{lang} PPL {c['ppl_delta_pct']:+.2f}% KL {c['kl']:.4f} top {100 * c['top1']:.1f}%"
                for lang, c in by_lang.items()))
    return "\n".join(lines)
