"""Resumable checkpoints: `<out>/checkpoints/step_NNNNNN/` = a loadable model folder + `train_state.pt`.

- model: `qazlm.model.io.save_model_folder` (model.safetensors + qazlm_model.json), so every checkpoint can be
  evaluated or exported like the final model;
- train_state.pt: optimizer, step, data-loader position, RNG states, the model config (to refuse a
  checkpoint of another model) and the training config.

Atomic: everything is written into a hidden temp folder which is renamed into place, so a `kill -9` leaves
either the previous checkpoint or the new one, never half of one. Keep-last-K deletes older ones.

Distributed: DDP ranks hold identical copies, rank 0 writes. FSDP2 state is *gathered* to a full,
CPU-offloaded state dict (`torch.distributed.checkpoint.state_dict`, full_state_dict=True) and written by
rank 0 in the same format, so a checkpoint does not depend on the number of GPUs that wrote it (resume on
a different world size works). Every rank reads it back on resume (a shared filesystem is assumed). For
models far beyond 1B parameters a sharded DCP save would be faster; at qazlm's sizes (<= 500M) gathering
costs seconds.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
from pathlib import Path

from qazlm.errors import QazlmError

STEP_RE = re.compile(r"^step_(\d+)$")
STATE_FILE = "train_state.pt"


def step_dirs(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoints under `ckpt_root`, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and STEP_RE.match(p.name) and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: int(STEP_RE.match(p.name).group(1)))


def latest(ckpt_root: str | Path) -> Path | None:
    dirs = step_dirs(ckpt_root)
    return dirs[-1] if dirs else None


def rng_state() -> dict:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _is_fsdp(model) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def full_state_dicts(model, raw_model, optimizer) -> tuple[dict, dict]:
    """(model, optimizer) state dicts with full tensors on CPU. Collective under FSDP: call on every rank."""
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=opts)
    return raw_model.state_dict(), optimizer.state_dict()


def _cpu_model_with(raw_model, model_sd: dict):
    """A plain CPU copy of the model holding `model_sd` (for writing the model folder under FSDP)."""
    from qazlm.model.transformer import Transformer

    copy = Transformer(raw_model.cfg)
    copy.load_state_dict(model_sd)
    return copy


def save(ckpt_root: str | Path, step: int, *, model, raw_model, optimizer, extra: dict, is_main: bool,
         keep_last_k: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """Write checkpoint `step_{step:06d}` atomically (rank 0), then prune to the newest `keep_last_k`."""
    import torch

    from qazlm.model.io import save_model_folder

    model_sd, optim_sd = full_state_dicts(model, raw_model, optimizer)
    root = Path(ckpt_root)
    final = root / f"step_{step:06d}"
    if not is_main:
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_step_{step:06d}_{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    to_save = raw_model if not _is_fsdp(model) else _cpu_model_with(raw_model, model_sd)
    save_model_folder(to_save, tmp, tokenizer_dir=tokenizer_dir)
    state = {"step": step, "optimizer": optim_sd, "rng": rng_state(),
             "model_config": dataclasses.asdict(raw_model.cfg), **extra}
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():  # same step written again after a resume: replace it
        old = root / f".old_step_{step:06d}_{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    if keep_last_k > 0:
        for old in step_dirs(root)[:-keep_last_k]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_partial(ckpt_root: str | Path) -> None:
    """Remove temp folders left by a checkpoint write that was killed."""
    root = Path(ckpt_root)
    if root.is_dir():
        for p in root.glob(".tmp_step_*"):
            shutil.rmtree(p, ignore_errors=True)


def read_state(path: str | Path) -> dict:
    import torch

    path = Path(path)
    try:
        return torch.load(path / STATE_FILE, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise QazlmError(f"{path}: no {STATE_FILE}; not a qazlm training checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt file
        raise QazlmError(f"{path}/{STATE_FILE}: cannot read ({type(e).__name__}: {e}); delete this checkpoint "
                         "to resume from the previous one") from None


def check_same_model(path: str | Path, saved: dict, current: dict) -> None:
    """One clear error when a checkpoint belongs to another model configuration."""
    diff = [f"{k}={saved.get(k)!r} (this run: {current.get(k)!r})" for k in sorted(set(saved) | set(current))
            if saved.get(k) != current.get(k)]
    if diff:
        raise QazlmError(f"{path}: checkpoint is from another model config ({', '.join(diff[:4])}); "
                         "use the matching [pretrain] model settings or a new out_dir")


def load(path: str | Path, *, model, raw_model, optimizer) -> dict:
    """Restore model + optimizer + RNG from checkpoint `path` (every rank); returns the train state."""
    from qazlm.model.io import load_model_folder

    path = Path(path)
    state = read_state(path)
    check_same_model(path, state.get("model_config", {}), dataclasses.asdict(raw_model.cfg))
    try:
        model_sd = load_model_folder(path, device="cpu").state_dict()
    except QazlmError:
        raise
    except Exception as e:  # noqa: BLE001
        raise QazlmError(f"{path}: cannot load the model weights ({type(e).__name__}: {e})") from None
    if _is_fsdp(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
    else:
        try:
            raw_model.load_state_dict(model_sd)
        except RuntimeError as e:
            raise QazlmError(f"{path}: weights do not fit this model ({str(e).splitlines()[0]})") from None
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state
