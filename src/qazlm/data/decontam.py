"""Decontamination index: long word n-grams of the evaluation sets, so training text never contains them.

A document is contaminated when it shares one word 13-gram (lowercased, punctuation dropped) with an
evaluation item; items shorter than 13 words (kkCOPA premises, SIB headlines) are matched whole if
they have at least 8 words. Shorter items are too generic to decide anything.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

from qazlm.data.wordtok import words
from qazlm.paths import FLORES_CODES, flores_path, shared_dir

MIN_ITEM_WORDS = 8


def _h(tokens: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest(), "little")


def _eval_texts(name: str) -> Iterator[str]:
    base = shared_dir() / "data" / "eval"
    if name == "flores":
        for split in ("dev", "devtest"):
            for lang in FLORES_CODES:
                p = flores_path(split, lang)
                if p.exists():
                    with gzip.open(p, "rt", encoding="utf-8") as f:
                        yield from (ln.strip() for ln in f)
    elif name == "sib200":
        for p in sorted((base / "sib200").glob("*/*.tsv")):
            with open(p, encoding="utf-8") as f:
                for row in csv.DictReader(f, delimiter="\t"):
                    yield row.get("text") or ""
    elif name == "kkcopa":
        p = base / "kk" / "kkcopa.jsonl"
        if p.exists():
            for line in p.open(encoding="utf-8"):
                obj = json.loads(line)
                yield from (v for k, v in obj.items() if "contents" in k and isinstance(v, str))
    elif name == "kazqad":
        p = base / "kk" / "kazqad_rc_validation.jsonl.gz"
        if p.exists():
            with gzip.open(p, "rt", encoding="utf-8") as f:
                for line in f:
                    obj = json.loads(line)
                    yield obj.get("context") or ""
                    yield obj.get("question") or ""
    else:
        for p in ([Path(name)] if Path(name).is_file() else []):  # any local txt(.gz) file, one item per line
            with (gzip.open(p, "rt", encoding="utf-8") if p.suffix == ".gz" else open(p, encoding="utf-8")) as f:
                yield from (ln.strip() for ln in f)


class NgramIndex:
    def __init__(self, n: int = 13):
        self.n = n
        self.grams: dict[int, dict[int, str]] = {}   # length -> hash -> eval set name
        self.items: dict[str, int] = {}

    def add(self, text: str, source: str) -> None:
        ws = [w.lower() for w in words(text)]
        if len(ws) < MIN_ITEM_WORDS:
            return
        self.items[source] = self.items.get(source, 0) + 1
        if len(ws) < self.n:
            self.grams.setdefault(len(ws), {})[_h(ws)] = source
            return
        table = self.grams.setdefault(self.n, {})
        for i in range(len(ws) - self.n + 1):
            table[_h(ws[i:i + self.n])] = source

    def match(self, text: str) -> str | None:
        """Name of the evaluation set sharing an n-gram with `text`, or None."""
        ws = [w.lower() for w in words(text)]
        for n, table in self.grams.items():
            for i in range(len(ws) - n + 1):
                hit = table.get(_h(ws[i:i + n]))
                if hit:
                    return hit
        return None

    def save(self, path: str | Path) -> None:
        from qazlm.io import atomic_write

        with atomic_write(path, "wb") as f:
            pickle.dump({"n": self.n, "grams": self.grams, "items": self.items}, f)

    @classmethod
    def load(cls, path: str | Path) -> NgramIndex:
        with open(path, "rb") as f:
            d = pickle.load(f)
        idx = cls(d["n"])
        idx.grams, idx.items = d["grams"], d["items"]
        return idx


def build_index(sets: list[str], n: int = 13) -> NgramIndex:
    idx = NgramIndex(n)
    for name in sets:
        for text in _eval_texts(name):
            idx.add(text, name)
    return idx
