"""Our model folder: `model.safetensors` + `qazlm_model.json` (+ tokenizer files), written atomically."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from qazlm.errors import QazlmError

MODEL_JSON = "qazlm_model.json"
WEIGHTS = "model.safetensors"
FORMAT = "qazlm-model-v1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "training_info.json")


def state_dict_for_saving(model) -> dict:
    """Contiguous fp32 tensors; the tied output head is not stored twice."""
    sd = model.state_dict()
    return {k: v.detach().float().contiguous().cpu() for k, v in sd.items() if not k.startswith("rope_")}


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: Path) -> None:
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise QazlmError(f"{tokenizer_dir}: no tokenizer.json; pass a tokenizer folder (qazlm tokenizer train -o DIR)")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy2(tokenizer_dir / name, out_dir / name)


def save_model_folder(model, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                      extra: dict | None = None) -> Path:
    """Write the folder into a temp dir beside `out_dir`, then swap it in: a kill never leaves half a model."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save_file(state_dict_for_saving(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        meta = {"format": FORMAT, "config": dataclasses.asdict(model.cfg), **(extra or {})}
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if tokenizer_dir is not None:
            copy_tokenizer(tokenizer_dir, tmp)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_model_config(path: str | Path):
    from qazlm.config import from_dict
    from qazlm.model.config import ModelConfig

    path = Path(path)
    meta_path = path / MODEL_JSON
    if not meta_path.exists():
        hint = " (an HF folder: use `qazlm import hf`)" if (path / "config.json").exists() else ""
        raise QazlmError(f"{path}: not a qazlm model folder, no {MODEL_JSON}{hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise QazlmError(f"{meta_path}: invalid JSON ({e.msg})") from None
    try:
        return from_dict(ModelConfig, meta["config"], where=str(meta_path))
    except (KeyError, ValueError) as e:
        raise QazlmError(f"{meta_path}: bad model config ({e})") from None


def load_state_dict_checked(model, state_dict: dict, source: str) -> None:
    """load_state_dict with one clear error when the weights belong to another model shape."""
    own = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("rope_")}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = sorted(k for k in own.keys() & state_dict.keys() if tuple(own[k]) != tuple(state_dict[k].shape))
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected else
                  f"shape of {wrong[0]} is {tuple(state_dict[wrong[0]].shape)}, model expects {tuple(own[wrong[0]])}")
        raise QazlmError(f"{source}: weights are from another model configuration ({detail}); "
                         f"use the config the checkpoint was trained with")
    model.load_state_dict(state_dict, strict=False)


def load_model_folder(path: str | Path, device="cpu"):
    """Our Transformer from a model folder (fp32, eval mode)."""
    import torch
    from safetensors.torch import load_file

    from qazlm.model.transformer import Transformer

    path = Path(path)
    cfg = read_model_config(path)
    if not (path / WEIGHTS).exists():
        raise QazlmError(f"{path}: no {WEIGHTS}; the folder is incomplete")
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.init_weights()  # rope tables; weights are overwritten below
    load_state_dict_checked(model, load_file(str(path / WEIGHTS), device=str(device)), str(path / WEIGHTS))
    return model.eval()
