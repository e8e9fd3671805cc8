"""Read every configured source into datatrove Documents, never crashing on bad records.

Bad records (invalid UTF-8, malformed JSON, empty, gigantic, binary junk) are still yielded, tagged with
`metadata["reject"] = reason`, so the next step (`RejectFilter`) counts them and writes them to the
rejects folder: documents in = kept + removed, always.

Work is split across datatrove tasks by file (task r reads files r, r+N, ...), or by record when
there are fewer than 4 files per task; a Hugging Face dataset is streamed and sharded with
`IterableDataset.shard(world_size, rank)`.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os
import re
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.readers.base import BaseReader

from qazlm.errors import QazlmError

GUTENBERG_END = re.compile(r"\*{3}\s*end of (the|this) project gutenberg", re.IGNORECASE)
_BINARY_CTRL = set(range(0, 9)) | {11, 12} | set(range(14, 32))


def expand_paths(patterns: list[str], base: Path | None = None) -> list[str]:
    """Files, folders (recursive) and globs -> sorted file list; a pattern matching nothing is an error."""
    out: list[str] = []
    for pat in patterns:
        p = Path(pat) if Path(pat).is_absolute() or base is None else base / pat
        if p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif any(ch in str(p) for ch in "*?["):
            found = sorted(f for f in glob.glob(str(p), recursive=True) if Path(f).is_file())
        else:
            found = [str(p)] if p.is_file() else []
        if not found:
            raise QazlmError(f"{p}: no input files here; check the source's `paths`")
        out.extend(found)
    return out


def detect_format(path: str) -> str:
    name = path.lower()
    for ext in (".gz", ".zst", ".bz2"):
        name = name.removesuffix(ext)
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".csv", ".tsv")):
        return "csv"
    return "txt"


def _open_binary(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise QazlmError(f"{path}: reading .zst needs `pip install zstandard`") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")))
    return open(path, "rb")


def reject_reason(text: str, min_chars: int, max_chars: int) -> str | None:
    """Why a decoded record cannot be a document (None = fine)."""
    if len(text.strip()) < min_chars or not text.strip():
        return "empty"
    if len(text) > max_chars:
        return "gigantic"
    sample = text[:2000]
    bad = sum(1 for ch in sample if ord(ch) in _BINARY_CTRL or ch == "\ufffd")
    if bad / len(sample) > 0.05:
        return "binary"
    return None


class CorpusReader(BaseReader):
    """All sources of a DataConfig: local txt/jsonl/parquet/csv files and HF datasets (streaming)."""

    name = "📚 qazlm corpus reader"

    def __init__(self, sources: list[dict], min_chars: int = 1, max_chars: int = 1_000_000):
        super().__init__()
        self.sources = sources  # plain dicts (picklable for Slurm/Ray)
        self.min_chars, self.max_chars = min_chars, max_chars
        self.units: list[tuple[int, str]] = []
        for i, s in enumerate(sources):
            if s["format"] == "hf" or s["hf"]:
                self.units.append((i, "hf"))
            else:
                self.units.extend((i, f) for f in expand_paths(s["paths"]))

    # -- record iterators: yield (id_suffix, text_or_None, reason_or_None, extra_metadata)
    def _txt(self, path: str, blank: bool):
        with _open_binary(path) as f:
            para: list[bytes] = []
            start = 1
            for lineno, raw in enumerate(f, 1):
                line = raw.rstrip(b"\r\n")
                if not blank:
                    if line.strip():
                        yield str(lineno), line
                    continue
                if line.strip():
                    if not para:
                        start = lineno
                    para.append(line)
                elif para:
                    yield str(start), b"\n".join(para)
                    para = []
            if para:
                yield str(start), b"\n".join(para)

    def _decode_records(self, path: str, blank: bool):
        for key, raw in self._txt(path, blank):
            try:
                yield key, raw.decode("utf-8"), None
            except UnicodeDecodeError:
                yield key, raw.decode("utf-8", errors="replace"), "invalid_utf8"

    def _jsonl(self, path: str, src: dict):
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    yield str(lineno), raw.decode("utf-8", errors="replace"), "invalid_utf8"
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    yield str(lineno), line.rstrip("\n"), "malformed_json"
                    continue
                text = obj.get(src["text_key"]) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    yield str(lineno), line.rstrip("\n"), "no_text_field"
                    continue
                key = obj.get(src["id_key"]) if isinstance(obj, dict) else None
                yield str(key if key is not None else lineno), text, None

    def _parquet(self, path: str, src: dict):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        cols = [c for c in (src["text_key"], src["id_key"]) if c in pf.schema_arrow.names]
        if src["text_key"] not in cols:
            raise QazlmError(f"{path}: parquet has no column {src['text_key']!r}; set the source's text_key")
        row = 0
        for batch in pf.iter_batches(batch_size=1000, columns=cols):
            d = batch.to_pydict()
            for j, text in enumerate(d[src["text_key"]]):
                key = d[src["id_key"]][j] if src["id_key"] in d else row
                row += 1
                if not isinstance(text, str):
                    yield str(key), "", "no_text_field"
                else:
                    yield str(key), text, None

    def _csv(self, path: str, src: dict):
        with _open_binary(path) as fb:
            f = io.TextIOWrapper(fb, encoding="utf-8", errors="replace", newline="")
            delim = "\t" if ".tsv" in path else ","
            reader = csv.DictReader(f, delimiter=delim)
            if src["text_key"] not in (reader.fieldnames or []):
                raise QazlmError(f"{path}: csv has no column {src['text_key']!r}; set the source's text_key")
            for row, rec in enumerate(reader, 1):
                text = rec.get(src["text_key"]) or ""
                reason = "invalid_utf8" if "\ufffd" in text else None
                yield str(rec.get(src["id_key"]) or row), text, reason

    def _hf(self, src: dict, rank: int, world_size: int):
        from datasets import load_dataset

        kwargs = {"split": src["hf_split"], "streaming": True}
        if src["paths"]:
            kwargs["data_files"] = expand_paths(src["paths"])
        ds = load_dataset(src["hf"] or "parquet", src["hf_config"] or None, **kwargs)
        if world_size > 1:
            ds = ds.shard(num_shards=min(world_size, ds.num_shards), index=rank) if rank < ds.num_shards else []
        for row, rec in enumerate(ds):
            text = rec.get(src["text_key"])
            key = rec.get(src["id_key"], row)
            if not isinstance(text, str):
                yield str(key), "", "no_text_field"
            else:
                yield str(key), text, None

    def _records(self, src: dict, unit: str, rank: int, world_size: int):
        if unit == "hf":
            yield from self._hf(src, rank, world_size)
            return
        fmt = src["format"] if src["format"] != "auto" else detect_format(unit)
        try:
            if fmt in ("txt", "txt_blank"):
                yield from self._decode_records(unit, fmt == "txt_blank")
            elif fmt == "jsonl":
                yield from self._jsonl(unit, src)
            elif fmt == "parquet":
                yield from self._parquet(unit, src)
            elif fmt == "csv":
                yield from self._csv(unit, src)
        except (OSError, EOFError) as e:  # truncated gzip etc.: count it, keep going
            yield "read_error", f"{unit}: {e}", "unreadable_file"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        sizes = [os.path.getsize(u) for _, u in self.units if u != "hf"]
        # Few files for many tasks, or one file holding a big share of the data (KazSAnDRA in the
        # sample): every task reads every file and keeps records i ≡ rank (mod tasks), so the work is
        # balanced; reading is ~20x cheaper than filtering.
        stripe = world_size > 1 and bool(sizes) and (len(sizes) < 4 * world_size or max(sizes) > 0.25 * sum(sizes))
        for i, (si, unit) in enumerate(self.units):
            src = self.sources[si]
            if unit != "hf" and not stripe and i % world_size != rank:
                continue  # HF datasets: every task streams its own shard
            fname = "hf" if unit == "hf" else Path(unit).name
            licence = False  # after a Project Gutenberg END marker (seen by every task, striped or not)
            for j, (key, text, reason) in enumerate(self._records(src, unit, rank, world_size)):
                if src["limit"] >= 0 and j >= src["limit"]:
                    break
                was_licence = licence
                licence = licence or bool(GUTENBERG_END.search(text[:300]))
                if stripe and unit != "hf" and j % world_size != rank:
                    continue
                reason = reason or reject_reason(text, self.min_chars, self.max_chars)
                meta = {"source": src["name"], "lang_hint": src["lang"], "file": fname}
                if was_licence:
                    meta["gutenberg_licence"] = True
                if reason:
                    meta["reject"] = reason
                    text = text[:5000]  # keep the rejects file small
                doc = Document(text=text, id=f"{src['name']}/{fname}:{key}", metadata=meta)
                self.stat_update("documents")
                yield doc
