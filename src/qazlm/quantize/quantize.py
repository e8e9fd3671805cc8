"""`qazlm quantize`: a model folder -> a quantized Hugging Face model folder, through torchao and
transformers' `TorchAoConfig`, saved as safetensors (torchao's tensor-subclass flattening; no pickle).

`AutoModelForCausalLM.from_pretrained(OUT/final)` restores the quantized modules, so `qazlm generate`,
`qazlm eval` and the server load the folder like any other. Our own folders go through `qazlm export hf`
first (in a scratch folder), so the result is always the transformers model the export defines.

Only the Linear layers are quantized; the (usually tied) embedding and output head stay fp32, as in
transformers' default. Every run checks the quantized model against its fp32 parent on FLORES+ dev
sentences (bits per byte, KL, top-1 agreement) and writes it to `quantize_report.json`.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.quantize.config import SCHEMES, QuantizeConfig

STAGE = "quantize"
LINEAGE = "qazlm_lineage.json"
LINEAGE_FORMAT = "qazlm-quantize-lineage-v1"
REPORT = "quantize_report.json"


def torchao_config(scheme: str, group_size: int):
    """The torchao config object behind each scheme name (see SCHEMES)."""
    from qazlm.infer.loading import quiet_torchao

    quiet_torchao()
    import torch
    from torchao.quantization import (Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig,
                                      IntxWeightOnlyConfig, MappingType)
    from torchao.quantization.granularity import PerGroup

    if scheme == "int8-weight":
        return Int8WeightOnlyConfig()
    if scheme == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig()
    return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group_size),
                                mapping_type=MappingType.ASYMMETRIC)


def int4_float_zero(weight, group_size: int):
    """`weight` in int4, each group of `group_size` input columns spanning its own [min, max] in 16 steps
    with a float offset: the grid llama.cpp's Q4_1 and torchao's CUDA int4 (tinygemm) use, chosen by
    torchao's own tinygemm routines and stored in the portable `IntxUnpackedToInt8Tensor` (int8 data,
    float zero point) that saves to safetensors and runs on any device.

    Why not IntxWeightOnlyConfig's own choice: it rounds the zero point to an integer, which shifts every
    group's grid by up to half a step (what that costs a real model: docs/deploy.md)."""
    import torch
    from torchao.quantization import IntxUnpackedToInt8Tensor, MappingType
    from torchao.quantization.quant_primitives import _choose_qparams_affine_tinygemm, _quantize_affine_tinygemm

    block = (1, group_size)
    scale, mid_value = _choose_qparams_affine_tinygemm(weight, MappingType.ASYMMETRIC, block, torch.uint8, 0, 15)
    steps = _quantize_affine_tinygemm(weight, block, scale, mid_value, torch.uint8, 0, 15)  # 0..15
    # tinygemm: w = (q - 8) * scale + mid_value; affine: w = (q' - zero) * scale with q' = q - 8 in -8..7
    return IntxUnpackedToInt8Tensor(steps.to(torch.int8) - 8, scale, -mid_value / scale, torch.int4, block,
                                    weight.dtype, None)


def set_float_zero_points(quantized, parent, group_size: int) -> None:
    """Requantize every int4 Linear of `quantized` (built by `torchao_config`, so transformers' torchao
    quantizer saves it) from the fp32 `parent`'s weight with `int4_float_zero`."""
    import torch

    weights = dict(parent.named_parameters())
    for name, module in quantized.named_modules():
        if isinstance(module, torch.nn.Linear) and type(module.weight).__name__ == "IntxUnpackedToInt8Tensor":
            module.weight = torch.nn.Parameter(int4_float_zero(weights[f"{name}.weight"].detach(), group_size),
                                               requires_grad=False)


def load_fp32(folder: Path, quantization=None):
    """A Hugging Face causal LM in fp32, optionally quantized while loading; one line when it cannot load."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {"quantization_config": quantization} if quantization is not None else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32,
                                                     **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise QazlmError(f"{folder}: cannot load as a transformers causal LM ({first}); quantize supports "
                         "the architectures transformers loads (Qwen3, Llama, SmolLM2, ...)") from None
    return model.eval()


def check_group_size(model, cfg: QuantizeConfig) -> None:
    """int4 groups split each row of input features; a layer whose width is not a multiple cannot be grouped."""
    import torch

    from qazlm.quantize.config import GROUP_SIZES

    if cfg.scheme != "int4-weight":
        return
    for name, module in model.named_modules():
        width = getattr(module, "in_features", 0)
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name and width % cfg.group_size:
            fits = [g for g in GROUP_SIZES if width % g == 0]
            fix = f"pass --group-size {fits[-1]}" if fits else "use --scheme int8-weight"
            raise QazlmError(f"{cfg.model}: layer {name} has {width} input features, not a multiple of "
                             f"group_size = {cfg.group_size}; {fix}")


def quantized_layers(model) -> int:
    """Linear layers whose weight torchao replaced by a quantized tensor subclass."""
    import torch

    return sum(1 for m in model.modules()
               if isinstance(m, torch.nn.Linear) and type(m.weight).__name__ not in ("Parameter", "Tensor"))


def weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def check_texts(n: int) -> dict[str, list[str]]:
    """The first `n` FLORES+ dev sentences per language (dev, so devtest stays the benchmark's)."""
    from qazlm.heldout import flores_texts

    return {name.split(":")[-1]: texts[:n] for name, texts in flores_texts("dev").items()}


def run_quantize(cfg: QuantizeConfig, force: bool = False, log=print) -> dict:
    """Quantize `cfg.model` into `cfg.out_dir/final` (+ quantize_report.json); a rerun with the same config
    is skipped, a changed one rebuilt."""
    from qazlm.io import clean_temp
    from qazlm.runs import output_lock, refuse_foreign_final, up_to_date, write_record

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise QazlmError(f"{out}: exists and is not a folder; choose another -o")
    with output_lock(out, STAGE):  # creates OUT, or says in one line why it cannot
        clean_temp(out)
        refuse_foreign_final(out, LINEAGE, LINEAGE_FORMAT, "qazlm quantize")
        wanted = record(cfg)
        complete = (out / REPORT).is_file() and (out / "final" / LINEAGE).is_file()
        if up_to_date(out, STAGE, wanted, complete, force, log):
            return json.loads((out / REPORT).read_text(encoding="utf-8"))
        report = quantize_folder(cfg, out, log, wanted["parent_sha256"])
        write_record(out, STAGE, wanted)
    return report


def record(cfg: QuantizeConfig) -> dict:
    """The settings plus the parent's weights hash: a retrained parent (same path) is quantized again."""
    from qazlm.infer.loading import model_kind
    from qazlm.model.io import weights_sha256

    return {**json.loads(json.dumps(dataclasses.asdict(cfg))),
            "parent_sha256": weights_sha256(cfg.model, model_kind(cfg.model))}


def quantize_folder(cfg: QuantizeConfig, out: Path, log, parent_sha256: str) -> dict:
    import transformers
    from transformers import TorchAoConfig

    from qazlm.infer.loading import load_tokenizer, model_kind, quiet_torchao, with_chat_template
    from qazlm.io import write_json
    from qazlm.model.hf import export_hf

    quiet_torchao()
    transformers.logging.disable_progress_bar()  # per-tensor loading/writing bars would bury the summary
    model_path = Path(cfg.model)
    kind = model_kind(model_path)
    tok = with_chat_template(load_tokenizer(model_path), kind)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=".qazlm-tmp-") as scratch:
        src = model_path if kind == "hf" else export_hf(model_path, Path(scratch) / "fp32")
        parent = load_fp32(src)
        check_group_size(parent, cfg)
        quantized = load_fp32(src, TorchAoConfig(torchao_config(cfg.scheme, cfg.group_size)))
        if cfg.scheme == "int4-weight":
            set_float_zero_points(quantized, parent, cfg.group_size)
        layers = quantized_layers(quantized)
        if layers == 0:
            raise QazlmError(f"{cfg.model}: no Linear layer was quantized; nothing to save")
        check = None
        if cfg.check_sentences:
            from qazlm.quantize.compare import compare_languages

            check = compare_languages(parent, quantized, tok, check_texts(cfg.check_sentences))
        report = {"scheme": cfg.scheme, "what": SCHEMES[cfg.scheme], "group_size": cfg.group_size
                  if cfg.scheme == "int4-weight" else None, "parent": str(model_path.resolve()), "parent_kind": kind,
                  "params": sum(p.numel() for p in parent.parameters()), "quantized_linear_layers": layers,
                  "fp32_weight_bytes": weight_bytes(src), "check": check, "versions": versions()}
        save_final(quantized, tok, out / "final", lineage(cfg, kind, parent_sha256, report))
    report["weight_bytes"] = weight_bytes(out / "final")
    report["seconds"] = time.perf_counter() - t0
    write_json(out / REPORT, report)
    log(summary(report, out))
    return report


def versions() -> dict:
    import torch
    import torchao
    import transformers

    from qazlm import __version__

    return {"qazlm": __version__, "torch": torch.__version__, "torchao": torchao.__version__,
            "transformers": transformers.__version__}


def lineage(cfg: QuantizeConfig, kind: str, parent_sha256: str, report: dict) -> dict:
    return {"format": LINEAGE_FORMAT, "stage": STAGE,
            "parent": {"path": str(Path(cfg.model).resolve()), "kind": kind,
                       "fingerprint": parent_sha256},
            "config": dataclasses.asdict(cfg), "report": report}


def save_final(model, tok, final: Path, info: dict) -> None:
    """The quantized transformers folder (config.json carries the torchao quantization_config), the
    tokenizer with its chat template and the lineage; built in a temp folder and swapped in."""
    from qazlm.io import atomic_dir, write_json

    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json(tmp / LINEAGE, info)


def summary(report: dict, out: Path) -> str:
    size = f"{report['fp32_weight_bytes'] / 2**20:.1f} -> {report['weight_bytes'] / 2**20:.1f} MiB"
    lines = [f"quantize: {report['scheme']}, {report['quantized_linear_layers']} Linear layers, weights {size} "
             f"({report['seconds']:.1f} s) -> {out / 'final'}"]
    for lang, c in (report["check"] or {}).items():
        lines.append(f"  {lang}: bpb {c['bpb_ref']:.4f} -> {c['bpb_test']:.4f} ({c['delta_pct']:+.2f}%), "
                     f"KL {c['kl']:.5f}, same top token {100 * c['top1']:.1f}% ({c['tokens']} FLORES+ dev tokens)")
    return "\n".join(lines)
