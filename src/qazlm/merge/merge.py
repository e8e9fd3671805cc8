"""`qazlm merge`: several model folders fine-tuned from one parent -> one model folder, through mergekit.

Why merge: two fine-tunes of one parent that each learned something the other lacks (say, refusals in one
language each) are often both kept by averaging their weights, with no further training (docs/merge.md has
the measured case). mergekit does the tensor arithmetic; qazlm checks that the inputs can be merged at all,
exports its own folders to transformers first, and writes a model folder with the chat tokenizer and a
lineage that names every input, so `generate`, `eval`, `serve`, `quantize` and `package` take it unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.merge.config import METHODS, MergeConfig

STAGE = "merge"
LINEAGE = "qazlm_lineage.json"
LINEAGE_FORMAT = "qazlm-merge-lineage-v1"


def run_merge(cfg: MergeConfig, force: bool = False, log=print) -> dict:
    """Merge `cfg.models` into `cfg.out_dir/final`; a rerun with the same config and inputs is skipped."""
    from qazlm.io import clean_temp
    from qazlm.runs import output_lock, refuse_foreign_final, up_to_date, write_record

    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise QazlmError(f"{out}: exists and is not a folder; choose another -o")
    wanted = record(cfg)
    with output_lock(out, STAGE):
        clean_temp(out)
        refuse_foreign_final(out, LINEAGE, LINEAGE_FORMAT, "qazlm merge")
        if up_to_date(out, STAGE, wanted, (out / "final" / LINEAGE).is_file(), force, log):
            return json.loads((out / "final" / LINEAGE).read_text(encoding="utf-8"))
        info = merge_folders(cfg, out, wanted["inputs"], log)
        write_record(out, STAGE, wanted)
    return info


def record(cfg: MergeConfig) -> dict:
    """The settings plus each input's weights hash: a retrained input (same path) is merged again."""
    from qazlm.infer.loading import model_kind
    from qazlm.model.io import weights_sha256

    inputs = {str(Path(f).resolve()): weights_sha256(f, model_kind(f)) for f in cfg.folders()}
    return {**json.loads(json.dumps(dataclasses.asdict(cfg))), "inputs": inputs}


def merge_folders(cfg: MergeConfig, out: Path, inputs: dict, log) -> dict:
    from qazlm.infer.loading import load_tokenizer, model_kind, with_chat_template
    from qazlm.io import atomic_dir, write_json

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out, prefix=".qazlm-tmp-") as scratch:
        sources = [as_transformers(f, Path(scratch) / f"in{i}") for i, f in enumerate(cfg.models)]
        base = as_transformers(cfg.base, Path(scratch) / "base") if cfg.base else None
        folders = [*sources, *([base] if base else [])]
        tok = with_chat_template(load_tokenizer(sources[0]), model_kind(cfg.models[0]))
        vocabs = [tok.get_vocab()] + [load_tokenizer(src).get_vocab() for src in folders[1:]]   # each read once
        check_mergeable(folders, cfg.folders(), vocabs)
        with atomic_dir(out / "final") as tmp:
            mergekit_merge(mergekit_config(cfg, sources, base), tmp)
            tok.save_pretrained(tmp)
            if (sources[0] / "generation_config.json").is_file():
                shutil.copy(sources[0] / "generation_config.json", tmp / "generation_config.json")
            info = lineage(cfg, inputs, time.perf_counter() - t0)
            write_json(tmp / LINEAGE, info)
    log(summary(cfg, out, info))
    return info


def as_transformers(folder: str, scratch: Path) -> Path:
    """A transformers folder with safetensors weights: HF folders as they are, ours exported (scratch)."""
    from qazlm.infer.loading import model_kind
    from qazlm.model.hf import export_hf

    path = Path(folder)
    if model_kind(path) == "qazlm":
        return export_hf(path, scratch)
    if not any(path.glob("*.safetensors")):
        raise QazlmError(f"{path}: no .safetensors weights (qazlm never unpickles .bin files); save the model "
                         "with save_pretrained(..., safe_serialization=True) first")
    return path


def tensor_shapes(folder: Path) -> dict[str, tuple]:
    from safetensors import safe_open

    shapes = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            shapes.update({k: tuple(st.get_slice(k).get_shape()) for k in st.keys()})
    return shapes


def check_mergeable(sources: list[Path], names: list[str], vocabs: list[dict]) -> None:
    """One line naming the first tensor or vocabulary that differs: only one architecture can be averaged."""
    shapes = tensor_shapes(sources[0])
    for src, name, vocab in zip(sources[1:], names[1:], vocabs[1:]):
        other = tensor_shapes(src)
        diff = sorted(set(shapes) ^ set(other)) or sorted(k for k in shapes if shapes[k] != other[k])
        if diff:
            k = diff[0]
            raise QazlmError(f"merge: {name} and {names[0]} differ in tensor {k} ({other.get(k, 'absent')} vs "
                             f"{shapes.get(k, 'absent')}); merge only fine-tunes of one parent model")
        if vocab != vocabs[0]:
            raise QazlmError(f"merge: {name} and {names[0]} have different tokenizer vocabularies; merge only "
                             "fine-tunes of one parent model")


def mergekit_config(cfg: MergeConfig, sources: list[Path], base: Path | None) -> dict:
    first = json.loads((sources[0] / "config.json").read_text(encoding="utf-8"))
    out_dtype = first.get("dtype") or first.get("torch_dtype") or "float32"
    config = {"merge_method": cfg.method, "dtype": "float32", "out_dtype": out_dtype,
              "models": [{"model": str(src), "parameters": {"weight": w}}
                         for src, w in zip(sources, cfg.model_weights())]}
    if base is not None:
        config["base_model"] = str(base)
    return config


def mergekit_merge(config: dict, out: Path) -> None:
    """mergekit's own merge (fp32 arithmetic on CPU) into `out`: weights and config.json."""
    import logging

    from qazlm.infer.loading import quiet_torchao

    quiet_torchao()  # mergekit imports peft, which imports torchao
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mergekit_run
    from mergekit.options import MergeOptions

    import transformers

    logging.getLogger("mergekit").setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()   # mergekit passes transformers' deprecated `torch_dtype`
    try:
        mergekit_run(MergeConfiguration.model_validate(config), str(out),
                     MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True))
    except (RuntimeError, ValueError, KeyError) as e:
        raise QazlmError(f"merge: mergekit could not merge these folders ({str(e).splitlines()[0][:200]})") from None


def lineage(cfg: MergeConfig, inputs: dict, seconds: float) -> dict:
    """The first model is the parent (its lineage chain leads to the root model); all inputs are listed."""
    from importlib.metadata import version

    models = [{"path": str(Path(m).resolve()), "weight": w, "fingerprint": inputs[str(Path(m).resolve())]}
              for m, w in zip(cfg.models, cfg.model_weights())]
    return {"format": LINEAGE_FORMAT, "stage": STAGE, "parent": models[0], "models": models,
            "base": {"path": str(Path(cfg.base).resolve()), "fingerprint": inputs[str(Path(cfg.base).resolve())]}
            if cfg.base else None,
            "method": cfg.method, "what": METHODS[cfg.method], "config": dataclasses.asdict(cfg),
            "seconds": round(seconds, 1), "versions": {"mergekit": version("mergekit")}}


def summary(cfg: MergeConfig, out: Path, info: dict) -> str:
    def short(path: str) -> str:
        return "/".join(Path(path).parts[-2:])

    parts = ", ".join(f"{short(m['path'])} x {m['weight']:.3g}" for m in info["models"])
    base = f" on base {short(info['base']['path'])}" if cfg.base else ""
    return f"merge: {cfg.method} of {parts}{base} ({info['seconds']:.1f} s) -> {out / 'final'}"
