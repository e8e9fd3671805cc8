"""Reading text corpora (streaming) and writing files atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from qazlm.errors import QazlmError

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".gz", ".zst", ".tsv")


def open_binary(path: str | Path):
    """Open a possibly compressed file (.gz, .zst or plain) for reading decompressed bytes."""
    path = Path(path)
    if not path.exists():
        raise QazlmError(f"{path}: file not found; check the path")
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError as e:  # pragma: no cover - optional
            raise QazlmError(f"{path}: reading .zst needs `pip install zstandard`") from e
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def iter_text_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline), decoding each line on its own as strict UTF-8.

    Line by line (not a TextIOWrapper, which decodes 8 KB chunks) so that an encoding error names the exact
    line. Invalid UTF-8, unreadable gzip and I/O errors raise one QazlmError naming the file.
    """
    path = Path(path)
    lineno = 0
    try:
        with open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise QazlmError(f"{path}:{lineno}: invalid UTF-8 (byte {e.start + 1} of the line); "
                                     "re-encode the file as UTF-8") from None
    except (OSError, EOFError) as e:
        raise QazlmError(f"{path}: cannot read after line {lineno} ({e}); is it a valid text/gzip file?") from None


def expand_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Files and folders (recursively) to a sorted list of text files; a missing path is an error."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(TEXT_SUFFIXES))
            if not found:
                raise QazlmError(f"{p}: folder holds no .txt/.jsonl/.gz files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise QazlmError(f"{p}: no such file or folder; check the path")
    return files


def _is_jsonl(path: Path) -> bool:
    name = path.name
    for ext in (".gz", ".zst"):
        name = name.removesuffix(ext)
    return name.endswith((".jsonl", ".json"))


def iter_lines(path: str | Path, text_key: str = "text") -> Iterator[str]:
    """Yield non-empty text lines (plain) or the `text_key` field (jsonl), streaming.

    Invalid UTF-8 and malformed JSON raise one QazlmError naming the file and line.
    """
    path = Path(path)
    jsonl = _is_jsonl(path)
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        if not jsonl:
            yield line
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise QazlmError(f"{path}:{lineno}: malformed JSON line ({e.msg}); fix or remove it") from None
        text = obj.get(text_key) if isinstance(obj, dict) else None
        if not isinstance(text, str):
            raise QazlmError(f"{path}:{lineno}: JSON line has no string field {text_key!r}")
        if text.strip():
            yield text


def read_lines(path: str | Path) -> list[str]:
    """All lines of a (small) file, keeping empty lines so parallel files stay aligned."""
    return [line for _, line in iter_text_lines(path)]


# Every temporary file or folder qazlm writes starts with this prefix, so a stage can remove what a killed
# run left behind (`clean_temp`) without touching anything else in its output folder.
TMP_PREFIX = ".qazlm-tmp-"


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSONL file such as a run's metrics.jsonl: [] when it is absent, and a damaged line
    (the tail a killed run left) skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def current_umask() -> int:
    """The process umask (read from /proc where possible: os.umask can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ordinary_mode(path: Path, is_dir: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; give them the mode an ordinary write would (umask applied)."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file in the same folder, fsync, then rename: a kill never leaves a half file.
    The file gets the permissions of an ordinary write (0666 minus the umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _ordinary_mode(Path(tmp), is_dir=False)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Build a folder under a temp name beside `path`, then swap it into place (replacing an old one).

    Yields the temp folder to fill. A kill leaves either the old folder or the new one (plus, at worst, a
    `TMP_PREFIX` leftover that `clean_temp` removes); the folder and every file in it get ordinary permissions
    (0777 / 0666 minus the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent))
    try:
        yield tmp
        for inner in tmp.rglob("*"):  # writers such as safetensors create 0600 files whatever the umask
            if inner.is_file() and not inner.is_symlink():
                _ordinary_mode(inner, is_dir=False)
        _ordinary_mode(tmp, is_dir=True)
        fsync_dir(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}old-{path.name}.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside `path` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_temp(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the `TMP_PREFIX` files/folders a killed write left in `folder` (call it holding the folder's
    run lock, so no live writer is using them). Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = list(folder.rglob(f"{TMP_PREFIX}*") if recursive else folder.glob(f"{TMP_PREFIX}*"))
    removed = []
    for p in sorted(found, key=lambda p: len(p.parts)):
        if not p.exists() and not p.is_symlink():
            continue  # inside a folder removed just before
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


def write_json(path: str | Path, obj) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")


def write_gzip_lines(path: str | Path, lines: Iterable[str]) -> None:
    """One line per item, gzip with mtime 0 (the same text gives the same bytes: reproducible data files)."""
    import gzip

    with atomic_write(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for line in lines:
            f.write((line + "\n").encode("utf-8"))


def save_png(fig, path: str | Path, dpi: int = 110) -> Path:
    """Write a matplotlib figure atomically (a half-written PNG never replaces a good one) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    plt.close(fig)
    return path
