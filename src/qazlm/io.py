"""Reading text corpora (streaming) and writing files atomically."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from qazlm.errors import QazlmError

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".gz", ".zst", ".tsv")


def open_text(path: str | Path):
    """Open a possibly compressed text file for strict UTF-8 reading (.gz, .zst or plain)."""
    path = Path(path)
    if not path.exists():
        raise QazlmError(f"{path}: file not found; check the path")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    if path.suffix == ".zst":
        try:
            import zstandard
        except ImportError as e:  # pragma: no cover - optional
            raise QazlmError(f"{path}: reading .zst needs `pip install zstandard`") from e
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8", errors="strict")


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
    lineno = 0
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if jsonl:
                    if not line.strip():
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
                else:
                    line = line.rstrip("\n")
                    if line.strip():
                        yield line
    except UnicodeDecodeError:
        raise QazlmError(f"{path}: invalid UTF-8 after line {lineno}; re-encode the file as UTF-8") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, QazlmError):
            raise
        raise QazlmError(f"{path}: cannot read ({e}); is it a valid text/gzip file?") from None


def read_lines(path: str | Path) -> list[str]:
    """All lines of a (small) file, keeping empty lines so parallel files stay aligned."""
    try:
        with open_text(path) as f:
            return [line.rstrip("\n") for line in f]
    except UnicodeDecodeError:
        raise QazlmError(f"{path}: invalid UTF-8; re-encode the file as UTF-8") from None


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8"):
    """Write to a temp file in the same folder, fsync, then rename: a kill never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
