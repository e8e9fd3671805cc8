"""Our model folder: `model.safetensors` + `qazlm_model.json` (+ tokenizer files), written atomically.

`qazlm_model.json` = {"format": "qazlm-model-v1", "config": the ModelConfig, "sha256": {file: hex digest}}
(+ extra keys). The digest of every weight file is checked on load, so bytes damaged on disk (a size-keeping
overwrite, a bad copy) are one clear error naming the file instead of a model that silently scores NaN.
Folders written before checksums existed have no "sha256" and load unchecked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

from qazlm.errors import QazlmError

MODEL_JSON = "qazlm_model.json"
WEIGHTS = "model.safetensors"
FORMAT = "qazlm-model-v1"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "training_info.json")
DAMAGED_FIX = ("the file is damaged: copy or export the model again, or for a training checkpoint delete this "
               "step folder to resume from the previous one")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(state_dict: dict, path: str | Path) -> None:
    """safetensors file with ordinary permissions (safetensors creates 0600 whatever the umask, which hides
    a model from teammates and serving users), flushed before its folder is renamed into place."""
    from safetensors.torch import save_file

    from qazlm.io import current_umask

    save_file(state_dict, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_dict_for_saving(model) -> dict:
    """Contiguous fp32 tensors; the tied output head is not stored twice."""
    sd = model.state_dict()
    return {k: v.detach().float().contiguous().cpu() for k, v in sd.items() if not k.startswith("rope_")}


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: Path) -> None:
    """Copy the tokenizer files' content only (not their mode bits: the folder's own permissions apply)."""
    tokenizer_dir = Path(tokenizer_dir)
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise QazlmError(f"{tokenizer_dir}: no tokenizer.json; pass a tokenizer folder (qazlm tokenizer train -o DIR)")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)


def write_model_files(model, folder: str | Path, tokenizer_dir: str | Path | None = None, extra: dict | None = None,
                      also_checksum: tuple[str, ...] = ()) -> None:
    """Weights, `qazlm_model.json` (with the sha256 of the weights and of the files named in `also_checksum`,
    already in `folder`) and the tokenizer into an existing folder. Not atomic by itself: callers write into
    a `qazlm.io.atomic_dir` temp folder (`save_model_folder`, training checkpoints)."""
    folder = Path(folder)
    save_weights(state_dict_for_saving(model), folder / WEIGHTS)
    sums = {name: sha256_file(folder / name) for name in (WEIGHTS, *also_checksum)}
    meta = {"format": FORMAT, "config": dataclasses.asdict(model.cfg), **(extra or {}), "sha256": sums}
    with open(folder / MODEL_JSON, "w", encoding="utf-8") as f:
        f.write(json.dumps(meta, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    if tokenizer_dir is not None:
        copy_tokenizer(tokenizer_dir, folder)


def save_model_folder(model, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                      extra: dict | None = None) -> Path:
    """Write the folder under a temp name beside `out_dir`, then swap it in: a kill never leaves half a model
    (only a `qazlm.io.TMP_PREFIX` leftover that `clean_temp` removes). Ordinary permissions (umask)."""
    from qazlm.io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        write_model_files(model, tmp, tokenizer_dir, extra)
    return Path(out_dir)


def read_model_meta(path: str | Path) -> dict:
    """The parsed `qazlm_model.json` of a model folder (one clear error when absent or malformed)."""
    path = Path(path)
    if not path.is_dir():
        raise QazlmError(f"{path}: no such model folder; check the path")
    meta_path = path / MODEL_JSON
    if not meta_path.exists():
        hint = " (an HF folder: use `qazlm import hf`)" if (path / "config.json").exists() else ""
        raise QazlmError(f"{path}: not a qazlm model folder, no {MODEL_JSON}{hint}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise QazlmError(f"{meta_path}: invalid JSON ({e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise QazlmError(f"{meta_path}: cannot read ({e}); {DAMAGED_FIX}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) \
            or not isinstance(meta.get("sha256", {}), dict):
        raise QazlmError(f"{meta_path}: not a qazlm model description (needs a \"config\" table); {DAMAGED_FIX}")
    return meta


def model_config_from_meta(meta: dict, meta_path: Path):
    from qazlm.config import from_dict
    from qazlm.model.config import ModelConfig

    try:
        return from_dict(ModelConfig, meta["config"], where=str(meta_path))
    except QazlmError as e:  # a range error from ModelConfig does not know the file: name it
        raise QazlmError(str(e) if str(meta_path) in str(e) else f"{meta_path}: {e}") from None


def read_model_config(path: str | Path):
    path = Path(path)
    return model_config_from_meta(read_model_meta(path), path / MODEL_JSON)


def verify_checksum(folder: str | Path, name: str, meta: dict) -> None:
    """Refuse `folder/name` when its sha256 differs from the one recorded in qazlm_model.json (if any)."""
    expected = meta.get("sha256", {}).get(name)
    if expected is None:
        return  # written before checksums were recorded
    path = Path(folder) / name
    if sha256_file(path) != expected:
        raise QazlmError(f"{path}: checksum mismatch (sha256 differs from the one in {MODEL_JSON}); {DAMAGED_FIX}")


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


def read_weights(path: Path, device="cpu") -> dict:
    """The tensors of a safetensors file; a damaged file is one QazlmError naming it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise many types for a damaged file
        first = (str(e).splitlines() or [""])[0]
        raise QazlmError(f"{path}: cannot read the weights ({type(e).__name__}: {first}); {DAMAGED_FIX}") from None


def load_model_folder(path: str | Path, device="cpu"):
    """Our Transformer from a model folder (fp32, eval mode), its weights' checksum verified first."""
    from qazlm.model.transformer import build_model

    path = Path(path)
    meta = read_model_meta(path)
    cfg = model_config_from_meta(meta, path / MODEL_JSON)
    if not (path / WEIGHTS).exists():
        raise QazlmError(f"{path}: no {WEIGHTS}; the folder is incomplete")
    verify_checksum(path, WEIGHTS, meta)
    model = build_model(cfg, device)  # rope tables; the weights are overwritten below
    load_state_dict_checked(model, read_weights(path / WEIGHTS, device), str(path / WEIGHTS))
    return model.eval()


def files_sha256(files: list[Path]) -> str:
    """sha256 over the named files' bytes (in order): which exact inputs a model was trained on."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def weights_sha256(path: str | Path, kind: str) -> str:
    """qazlm folders record their weights' sha256; HF folders are hashed here."""
    path = Path(path)
    if kind == "qazlm":
        sums = read_model_meta(path).get("sha256", {})
        if sums:
            return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()
        return files_sha256([path / "model.safetensors"])
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return files_sha256(files) if files else ""
