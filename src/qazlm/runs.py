"""What every stage shares about runs: one run per output folder, stage records, the pipeline's RunContext.

**Run lock.** One run per output folder: an exclusive lock that every stage takes on the folder it writes.

The lock is `<folder>/.qazlm.lock`, held with `fcntl.flock` for the life of the process: the kernel
releases it when the process dies, however it dies, so a lock left by a killed run is simply taken over
(the file's content is only a note saying who held it). A second run into a folder that is in use exits
with one line naming the holder (pid, host, start time) instead of mixing its outputs with the first's.

Taking the lock also proves the folder is writable before any work starts (a read-only output path
fails here, not after an hour of training). `flock` works on local filesystems and on NFSv4; on a
filesystem without locks the run goes ahead with a warning.

    with output_lock(out_dir, "pretrain"):
        ...

**Stage records.** A stage that finished writes `<folder>/qazlm_stage.json` last (the effective config it
ran with). A later run skips the stage only when the record exists and equals the requested config, so an
edited recipe is never answered with stale outputs.

**RunContext.** What `qazlm run` hands every stage: the run folder, the run seed (one rule for every stage:
a stage table's own `seed` wins, else `[run] seed`), `--force`, and the skip decision above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import difflib
import errno
import json
import os
import socket
import sys
from pathlib import Path

from qazlm.errors import QazlmError

LOCK_NAME = ".qazlm.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, {info['stage']} started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


_HELD: set[Path] = set()  # folders this process holds: a nested `output_lock` on one of them is a no-op


@contextlib.contextmanager
def output_lock(folder: str | Path, stage: str):
    """Hold the exclusive run lock of `folder` (created if needed) for the `with` block. Re-entrant within a
    process (a pipeline stage and the function it calls may both ask for it)."""
    import fcntl

    folder = Path(folder)
    key = folder.resolve()
    if key in _HELD:
        yield folder
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise QazlmError(f"{folder}: cannot write to the output folder ({e.strerror}); "
                         "choose a writable folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise QazlmError(f"{folder}: in use by another qazlm run ({_holder(folder / LOCK_NAME)}); "
                                 "wait for it to finish or choose another output folder") from None
            print(f"qazlm: warning: {folder}: file locks are not supported here ({e.strerror}); "
                  "make sure no other run writes to this folder", file=sys.stderr)
        note = {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
                "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(note) + "\n").encode(), 0)
        _HELD.add(key)
        try:
            yield folder
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race with a waiting run)


def is_locked(folder: str | Path) -> bool:
    """True while some process holds `folder`'s run lock (for tests and status displays)."""
    import fcntl

    path = Path(folder) / LOCK_NAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


STAGE_RECORD = "qazlm_stage.json"


def read_record(folder: str | Path) -> dict | None:
    """The config a completed stage recorded in `folder`, or None (not completed, or unreadable)."""
    path = Path(folder) / STAGE_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record.get("config") if isinstance(record, dict) else None


def write_record(folder: str | Path, stage: str, config: dict) -> None:
    """Mark `folder` as a completed `stage` run with `config` (written last, atomically)."""
    from qazlm import __version__
    from qazlm.io import write_json

    write_json(Path(folder) / STAGE_RECORD, {"stage": stage, "qazlm_version": __version__,
                                             "config": _plain(config)})


def _plain(obj):
    """JSON's view of a config (tuples -> lists, paths -> str), so records compare equal after a round trip."""
    return json.loads(json.dumps(obj, default=str))


def refuse_foreign_final(out: Path, lineage: str, lineage_format: str, command: str) -> None:
    """OUT/final is swapped whole: never replace a final/ folder that `command` did not write (e.g.
    `-o runs/tiny/pretrain`), known by the `format` its lineage file records."""
    final = Path(out) / "final"
    if not final.exists():
        return
    try:
        ours = json.loads((final / lineage).read_text(encoding="utf-8")).get("format") == lineage_format
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise QazlmError(f"{out}: already holds a final/ folder that `{command}` did not write; it would be "
                         "replaced, so choose a new or empty -o folder")


def up_to_date(out: Path, stage: str, wanted: dict, complete: bool, force: bool, log=print) -> bool:
    """True when `out` holds exactly this result (its record equals `wanted` and `complete`): skip. Otherwise
    says what changed, if anything, and drops the record, so a kill before the new one is written never leaves
    an old record over new files."""
    done = read_record(out)
    if done == wanted and complete and not force:
        log(f"{stage}: {out} is up to date (same config); skipping (--force to redo)")
        return True
    if done is not None and done != wanted:
        log(f"{stage}: settings changed ({'; '.join(config_changes(done, wanted)[:3])}); rebuilding {out}")
    (Path(out) / STAGE_RECORD).unlink(missing_ok=True)
    return False


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two recorded configs (`key: old -> new`), nested keys dotted."""
    old, new = _plain(old), _plain(new)
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            changes += config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


@dataclasses.dataclass
class RunConfig:
    """The `[run]` table of a recipe."""

    name: str = "run"
    out_dir: str = "runs/run"
    seed: int = 1337


@dataclasses.dataclass
class RunContext:
    """What every pipeline stage knows: where the run lives, its seed, and whether to redo finished work."""

    run: RunConfig
    recipe_path: Path
    force: bool = False

    @property
    def out_dir(self) -> Path:
        return Path(self.run.out_dir)

    def stage_dir(self, stage: str) -> Path:
        return self.out_dir / stage

    def fixed_out_dir(self, section: dict, stage: str, command: str) -> dict:
        """`section` writing into `<run>/<stage>`; an `out_dir` in the recipe is an error naming the command
        that writes elsewhere."""
        if "out_dir" in section:
            raise QazlmError(f"{self.recipe_path}[{stage}] out_dir: not settable in a recipe; the stage always "
                             f"writes {self.stage_dir(stage)} (use `{command}` for another folder)")
        return {**section, "out_dir": str(self.stage_dir(stage))}

    def last_model(self, *stages: str) -> Path:
        """`<run>/<stage>/final` of the first of `stages` whose folder exists, else of the last one."""
        found = [self.stage_dir(s) / "final" for s in stages]
        return next((p for p in found if p.is_dir()), found[-1])

    def with_run_defaults(self, section: dict, **defaults) -> dict:
        """The stage table with the run's seed (and other run-derived `defaults`) where it sets none."""
        return {"seed": self.run.seed, **defaults, **section}

    def skip(self, stage: str, config: dict, folder: str | Path | None = None) -> bool:
        """True when `stage` already completed in its folder with exactly `config` (and no --force).
        Prints why it skips, or what changed when it does not."""
        folder = Path(folder) if folder is not None else self.stage_dir(stage)
        done = read_record(folder)
        if done is None or self.force:
            return False
        changes = config_changes(done, config)
        if not changes:
            print(f"{stage}: {folder} is complete with these settings; skipping (use --force to redo)")
            return True
        print(f"{stage}: settings changed since {folder} was made ({'; '.join(changes[:4])}"
              f"{'; ...' if len(changes) > 4 else ''}); redoing")
        return False


# section name -> module with `run_stage(section: dict, ctx: RunContext) -> None` (or "module:function")
STAGES = {
    "tokenizer": "qazlm.tokenizer.stage",
    "data": "qazlm.data.stage",
    "pretrain": "qazlm.train.stage",
    "eval": "qazlm.eval.stage",
    "sft_data": "qazlm.sft.data_stage",
    "sft": "qazlm.sft.stage",
    "pref_data": "qazlm.align.stage:run_pref_data",
    "rm": "qazlm.align.stage:run_rm",
    "dpo": "qazlm.align.stage:run_dpo",
    "chat_eval": "qazlm.eval.chat_stage",
    "tool_eval": "qazlm.eval.model_stages:run_tool_eval",
    "safety_eval": "qazlm.eval.model_stages:run_safety_eval",
    "quantize": "qazlm.quantize.stage",
    "gguf": "qazlm.gguf.stage",
    "package": "qazlm.package.stage",
}


def read_recipe(path: str | Path, overrides: list[str] | None = None) -> dict:
    """A run recipe's tables with `--set` overrides applied; a misspelled table (`[pretrian]`) is an error,
    not a stage silently left out."""
    from qazlm.config import apply_overrides, read_toml

    data = apply_overrides(read_toml(path), overrides)
    unknown = sorted(set(data) - set(STAGES) - {"run"})
    if unknown:
        close = difflib.get_close_matches(unknown[0], [*STAGES, "run"], n=1)
        hint = f"did you mean [{close[0]}]? " if close else ""
        raise QazlmError(f"{path}: unknown table [{unknown[0]}]; {hint}valid tables: run, {', '.join(STAGES)}")
    return data


def resolve_device(device: str, where: str) -> str:
    """"auto" -> cuda when a GPU is visible, else cpu; cuda[:N] without a GPU, or anything else than auto, cpu or
    cuda[:N], is one error line naming `where` (the stage's config section or command)."""
    import re

    import torch

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise QazlmError(f"{where} device = {device!r}: use auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise QazlmError(f"{where} device = {device!r} but no CUDA GPU is visible; use device = 'auto' or 'cpu'")
    return device
