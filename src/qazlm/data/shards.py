"""Token shards: the memory-mappable training format shared by the data and pretraining stages.

Layout of `<data_out>/tokens/`:
  meta.json        {"format": "qazlm-tokens-v1", "dtype", "vocab_size", "doc_sep_id", "tokenizer",
                    "splits": {split: [{"file", "tokens", "docs"}, ...]}}
  <split>_NNNNN.bin      raw little-endian tokens; every document is followed by doc_sep_id
  <split>_NNNNN.idx.npy  int64 start offset of every document inside the .bin

Shards are written to a temp name and renamed, and meta.json is rewritten after each shard, so a
killed writer never leaves a shard that the reader would trust. The writer of the folder adds
`"complete": true` to meta.json last (`mark_complete`), once every split is closed: a folder left by a
killed `qazlm data prepare` lists only the shards written so far, and `TokenDataset` refuses it rather
than let pretraining run on part of the data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from qazlm.errors import QazlmError
from qazlm.io import atomic_write, write_json

FORMAT = "qazlm-tokens-v1"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
COMPLETE = "complete"  # meta.json key set by `mark_complete`, once the whole folder is written


def dtype_for_vocab(vocab_size: int) -> str:
    """uint16 while every id fits (vocab ≤ 65,535), else uint32: halves the disk and page cache."""
    return "uint16" if vocab_size <= 65535 else "uint32"


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / "meta.json"
    if not path.exists():
        raise QazlmError(f"{path}: token meta.json not found; run `qazlm data prepare` first")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QazlmError(f"{path}: not valid JSON ({e}); rerun `qazlm data prepare --force`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise QazlmError(f"{path}: not a {FORMAT} token folder; rerun `qazlm data prepare`")
    if meta.get("dtype") not in DTYPES:
        raise QazlmError(f"{path}: unknown dtype {meta.get('dtype')!r}; expected uint16 or uint32")
    return meta


def mark_complete(folder: str | Path) -> None:
    """Declare the token folder finished (every split closed): call it last; a rewrite by any writer drops it."""
    path = Path(folder) / "meta.json"
    write_json(path, {**read_meta(folder), COMPLETE: True})


def is_complete(folder: str | Path) -> bool:
    """True when `folder` holds a readable token folder that its writer marked complete."""
    try:
        return read_meta(folder).get(COMPLETE) is True
    except QazlmError:
        return False


def _unmark_complete(folder: Path) -> None:
    """A writer reopening a finished folder makes it incomplete before it deletes or writes any shard."""
    if is_complete(folder):
        meta = read_meta(folder)
        del meta[COMPLETE]
        write_json(folder / "meta.json", meta)


def _update_meta(folder: Path, split: str, shards: list[dict], base: dict) -> None:
    """Merge this split's shard list into meta.json (other splits are kept; the folder is incomplete again)."""
    path = folder / "meta.json"
    meta = dict(base)
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            if old.get("format") == FORMAT:
                meta["splits"] = dict(old.get("splits", {}))
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    meta.setdefault("splits", {})
    meta["splits"] = {**meta["splits"], split: shards}
    write_json(path, meta)


class TokenShardWriter:
    """Appends documents (lists of ids) to `<folder>/<split>_NNNNN.bin` shards of ~shard_tokens tokens."""

    def __init__(self, folder: str | Path, split: str, dtype: str = "uint16", shard_tokens: int = 50_000_000,
                 *, vocab_size: int = 0, doc_sep_id: int = 0, tokenizer: str = ""):
        if dtype not in DTYPES:
            raise QazlmError(f"dtype {dtype!r}: expected uint16 or uint32")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.split, self.dtype, self.shard_tokens = split, dtype, int(shard_tokens)
        self.doc_sep_id = int(doc_sep_id)
        self._max_id = np.iinfo(DTYPES[dtype]).max
        self._base = {"format": FORMAT, "dtype": dtype, "vocab_size": int(vocab_size),
                      "doc_sep_id": self.doc_sep_id, "tokenizer": str(tokenizer)}
        self.shards: list[dict] = []
        self._buf: list[np.ndarray] = []
        self._starts: list[int] = []
        self._n = 0
        self.total_tokens = 0
        self.total_docs = 0
        _unmark_complete(self.folder)
        for old in self.folder.glob(f"{split}_*.bin"):  # a rerun replaces the split wholesale
            old.unlink()
        for old in self.folder.glob(f"{split}_*.idx.npy"):
            old.unlink()

    def add_document(self, ids) -> None:
        arr = np.asarray(ids, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > self._max_id):
            raise QazlmError(f"token id {int(arr.max())} does not fit {self.dtype}; use dtype uint32")
        self._starts.append(self._n)
        doc = np.empty(arr.size + 1, dtype=DTYPES[self.dtype])
        doc[:-1] = arr
        doc[-1] = self.doc_sep_id
        self._buf.append(doc)
        self._n += doc.size
        self.total_docs += 1
        if self._n >= self.shard_tokens:
            self._flush()

    def _flush(self) -> None:
        if not self._buf:
            return
        name = f"{self.split}_{len(self.shards):05d}"
        data = np.concatenate(self._buf)
        with atomic_write(self.folder / f"{name}.bin", "wb") as f:
            f.write(data.tobytes())
        with atomic_write(self.folder / f"{name}.idx.npy", "wb") as f:
            np.save(f, np.asarray(self._starts, dtype=np.int64))
        self.shards.append({"file": f"{name}.bin", "tokens": int(data.size), "docs": len(self._starts)})
        self.total_tokens += int(data.size)
        self._buf, self._starts, self._n = [], [], 0
        _update_meta(self.folder, self.split, self.shards, self._base)

    def close(self) -> dict:
        """Flush the last shard and write meta.json (an empty split is recorded with no shards)."""
        self._flush()
        if not self.shards:
            _update_meta(self.folder, self.split, [], self._base)
        return {"tokens": self.total_tokens, "docs": self.total_docs, "shards": len(self.shards)}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()


class TokenDataset:
    """Memory-mapped view of one split: fixed-length windows anywhere in the concatenated token stream."""

    def __init__(self, folder: str | Path, split: str = "train"):
        self.folder = Path(folder)
        self.meta = read_meta(self.folder)
        if self.meta.get(COMPLETE) is not True:
            raise QazlmError(f"{self.folder}: token folder is incomplete (its `qazlm data prepare` was killed or "
                             "is still running); rerun the same `qazlm data prepare` command to finish it")
        if split not in self.meta["splits"]:
            raise QazlmError(f"{self.folder}/meta.json: no split {split!r}; have {sorted(self.meta['splits'])}")
        self.split = split
        self.dtype = DTYPES[self.meta["dtype"]]
        self.vocab_size = int(self.meta["vocab_size"])
        self.doc_sep_id = int(self.meta["doc_sep_id"])
        self._maps: list[np.memmap] = []
        for shard in self.meta["splits"][split]:
            path = self.folder / shard["file"]
            if not path.exists():
                raise QazlmError(f"{path}: shard listed in meta.json is missing; rerun `qazlm data prepare`")
            expected = int(shard["tokens"]) * self.dtype.itemsize
            if os.path.getsize(path) != expected:
                raise QazlmError(f"{path}: size {os.path.getsize(path)} != {expected} bytes in meta.json; "
                                 "the shard is truncated, rerun `qazlm data prepare --force`")
            if shard["tokens"]:
                self._maps.append(np.memmap(path, dtype=self.dtype, mode="r"))
        sizes = np.array([m.size for m in self._maps], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_tokens = int(self._offsets[-1])
        # one shard (the usual case for small runs) -> vectorised gather
        self._single = self._maps[0] if len(self._maps) == 1 else None

    def __len__(self) -> int:
        return self.num_tokens

    def num_documents(self) -> int:
        return sum(int(s["docs"]) for s in self.meta["splits"][self.split])

    def window(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start+length) of the split, spanning shard boundaries (as int64)."""
        if start < 0 or length < 0 or start + length > self.num_tokens:
            raise IndexError(f"window [{start}, {start + length}) outside 0..{self.num_tokens}")
        out = np.empty(length, dtype=np.int64)
        pos, filled = start, 0
        i = int(np.searchsorted(self._offsets, start, side="right")) - 1
        while filled < length:
            m = self._maps[i]
            local = pos - int(self._offsets[i])
            take = min(length - filled, m.size - local)
            out[filled:filled + take] = m[local:local + take]
            filled += take
            pos += take
            i += 1
        return out

    def random_windows(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
        """`batch` windows of `length` tokens at uniform random starts -> int64 [batch, length]."""
        if length > self.num_tokens:
            raise QazlmError(f"{self.folder}: split {self.split!r} has {self.num_tokens} tokens, fewer than "
                             f"one window of {length}; prepare more data or use a shorter sequence length")
        starts = rng.integers(0, self.num_tokens - length + 1, size=batch)
        if self._single is not None:
            idx = starts[:, None] + np.arange(length)[None, :]
            return self._single[idx].astype(np.int64)
        return np.stack([self.window(int(s), length) for s in starts])

    def document_starts(self) -> np.ndarray:
        """Global start offset of every document (from the .idx.npy files)."""
        parts = []
        for i, shard in enumerate(s for s in self.meta["splits"][self.split] if s["tokens"]):
            idx = np.load(self.folder / shard["file"].replace(".bin", ".idx.npy"))
            parts.append(idx + self._offsets[i])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
