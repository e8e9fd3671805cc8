"""Resumable checkpoints: `<out>/checkpoints/step_NNNNNN/` = a loadable model folder + `train_state.pt`.

- model: `qazlm.model.io.write_model_files` (model.safetensors + qazlm_model.json), so every checkpoint can be
  evaluated or exported like the final model;
- train_state.pt: optimizer, step, data-loader position, RNG states, the model config (to refuse a
  checkpoint of another model) and the training config, as tensors and plain Python data only. It is read
  with `torch.load(weights_only=True)`, so a crafted file placed in an output folder cannot run code.
- qazlm_model.json records the sha256 of model.safetensors and of train_state.pt; resume verifies both, so
  a damaged checkpoint is one clear error instead of a run that dies later with a NaN loss.

Atomic: everything is written into one `qazlm.io.atomic_dir` temp folder which is renamed into place, so a
`kill -9` leaves either the previous checkpoint or the new one, never half of one; the next run's
`clean_partial` removes the temp leftover. Keep-last-K deletes older ones (renamed away first, so a kill
during the deletion never leaves a half checkpoint under a step name).

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
import warnings
from pathlib import Path

from qazlm.errors import QazlmError

STEP_RE = re.compile(r"^step_(\d+)$")
STATE_FILE = "train_state.pt"
# temp names of checkpoint writes before the shared `qazlm.io.TMP_PREFIX`; removed by `clean_partial` too
LEGACY_TEMP = (".tmp_step_*", "..tmp_step_*", ".old_step_*")


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
    """Python, numpy, torch (and CUDA) RNG states as ints, lists and tensors: loadable with weights_only."""
    import numpy as np
    import torch

    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": [version, list(internal), gauss_next],
             "numpy": {"kind": str(kind), "key": [int(k) for k in key], "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state(saved) -> tuple:
    """np.random.set_state's tuple from our dict (or from a checkpoint that stored numpy's tuple itself)."""
    import numpy as np

    if isinstance(saved, dict):
        return (saved["kind"], np.asarray(saved["key"], dtype=np.uint32), saved["pos"], saved["has_gauss"],
                saved["gauss"])
    return tuple(saved)


def set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_plain(obj, where: str = "train_state"):
    """`obj` as `torch.load(weights_only=True)` will accept it on resume: numpy scalars/arrays become Python
    numbers/lists, tensors and plain data stay; anything else is refused before writing (a bug)."""
    import numpy as np
    import torch

    if isinstance(obj, dict):
        return {to_plain(k, where): to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, list | tuple):
        return type(obj)(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, np.generic | np.ndarray):
        return obj.tolist()
    if isinstance(obj, str | int | float | bool | type(None) | torch.Tensor | torch.dtype | torch.device):
        return obj
    raise TypeError(f"{where} is a {type(obj).__name__}: a checkpoint holds only tensors and plain data")


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
    """A plain CPU copy of the model holding `model_sd` (for writing the model folder under FSDP); building
    it leaves the global RNG untouched, so checkpointing never changes the training run."""
    import torch

    from qazlm.model.transformer import build_model

    with torch.random.fork_rng(devices=[]):
        copy = build_model(raw_model.cfg, "cpu")
    copy.load_state_dict(model_sd)
    return copy


def write_state(path: Path, state: dict) -> None:
    import torch

    with open(path, "wb") as f:
        torch.save(to_plain(state), f)
        f.flush()
        os.fsync(f.fileno())


def save(ckpt_root: str | Path, step: int, *, model, raw_model, optimizer, extra: dict, is_main: bool,
         keep_last_k: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """Write checkpoint `step_{step:06d}` atomically (rank 0), then prune to the newest `keep_last_k`.
    Collective under FSDP (the state is gathered): call it on every rank."""
    from qazlm.io import atomic_dir
    from qazlm.model.io import write_model_files

    model_sd, optim_sd = full_state_dicts(model, raw_model, optimizer)
    root = Path(ckpt_root)
    final = root / f"step_{step:06d}"
    if not is_main:
        return final
    to_save = raw_model if not _is_fsdp(model) else _cpu_model_with(raw_model, model_sd)
    state = {"step": step, "optimizer": optim_sd, "rng": rng_state(),
             "model_config": dataclasses.asdict(raw_model.cfg), **extra}
    with atomic_dir(final) as tmp:  # same step written again after a resume: replaced as a whole
        write_state(tmp / STATE_FILE, state)
        write_model_files(to_save, tmp, tokenizer_dir, also_checksum=(STATE_FILE,))
    if keep_last_k > 0:
        prune(root, keep_last_k)
    return final


def prune(root: Path, keep_last_k: int) -> None:
    """Delete all but the newest `keep_last_k` checkpoints: each is renamed to a temp name first, so a kill
    mid-deletion leaves a leftover for `clean_partial`, never a half checkpoint that looks complete."""
    from qazlm.io import TMP_PREFIX

    for old in step_dirs(root)[:-keep_last_k]:
        doomed = root / f"{TMP_PREFIX}old-{old.name}-{os.getpid()}"
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def clean_partial(ckpt_root: str | Path) -> list[Path]:
    """Remove what checkpoint writes killed midway left behind (temp folders, each up to a full model copy):
    the shared temp prefix and the older names. Call on rank 0 before training. Returns what was removed."""
    from qazlm.io import clean_temp

    root = Path(ckpt_root)
    removed = clean_temp(root)
    for pattern in LEGACY_TEMP:
        for p in sorted(root.glob(pattern)) if root.is_dir() else []:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _legacy_numpy_globals() -> list:
    """What a train_state.pt written before plain RNG states needs (numpy's RNG key array): data types only,
    allowlisted for `weights_only` loading; nothing that can call code."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_state(path: str | Path) -> dict:
    """The train state of checkpoint `path`, checksum-verified and loaded with weights_only=True."""
    import pickle

    import torch

    from qazlm.model.io import read_model_meta, verify_checksum

    path = Path(path)
    file = path / STATE_FILE
    if not file.is_file():
        raise QazlmError(f"{path}: no {STATE_FILE}; not a qazlm training checkpoint")
    verify_checksum(path, STATE_FILE, read_model_meta(path))
    try:
        with torch.serialization.safe_globals(_legacy_numpy_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickle protocols: the error below says it
            state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        detail = f"it refers to {found.group(1)}" if found else "not a torch tensor file"
        raise QazlmError(f"{file}: cannot read: holds more than tensors and plain data ({detail}); qazlm never "
                         "loads code from a checkpoint: delete this step folder to resume from the previous "
                         "one") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a corrupt file
        first = (str(e).splitlines() or [""])[0]
        raise QazlmError(f"{file}: cannot read ({type(e).__name__}: {first}); delete this step folder "
                         "to resume from the previous one") from None
    missing = [k for k in ("step", "optimizer", "rng") if not isinstance(state, dict) or k not in state]
    if missing:
        raise QazlmError(f"{file}: not a qazlm train state (no {', '.join(missing)}); delete this step folder "
                         "to resume from the previous one")
    return state


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
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise QazlmError(f"{path}: weights or optimizer state do not fit this model "
                             f"({(str(e).splitlines() or [''])[0]})") from None
    set_rng_state(state["rng"])
    return state
