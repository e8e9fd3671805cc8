"""Decontamination index: long word n-grams of the evaluation sets, so training text never contains them.

A document is contaminated when it shares one word 13-gram (lowercased, punctuation dropped) with an
evaluation item; items shorter than 13 words (kkCOPA premises, SIB headlines) are matched whole if
they have at least 8 words. Shorter items are too generic to decide anything — except kkWikiSpell's, whose
whole test is the likelihood of one exact encyclopedia sentence: seeing it in training is the contamination,
so its sentences are matched whole from 5 words (none is shorter).

The data stage keeps the index in `<out_dir>/decontam/`: `index.npz` (per n-gram length, the 64-bit
hashes and the id of the set each came from; read with `allow_pickle=False`, so a planted file can never
run code) and `meta.json` (sets used, sets absent on this machine, items per set, fingerprint). The
fingerprint covers the requested sets, the n-gram size and the content of every evaluation file, so any
change rebuilds the index; an old pickled `decontam.pkl` is deleted unread.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from qazlm.data.wordtok import words
from qazlm.errors import QazlmError
from qazlm.io import atomic_dir, atomic_write, iter_text_lines, write_json
from qazlm.paths import EVAL_SETS, FLORES_CODES, flores_path, shared_dir

MIN_ITEM_WORDS = 8
SET_MIN_WORDS = {"kkwikispell": 5}   # exact-sentence sets: matched whole below MIN_ITEM_WORDS
KNOWN_SETS = EVAL_SETS
SAFETY_FILE = "safety/ru_kk_sensitive_questions.jsonl.gz"   # evaluation only: never training text
FORMAT = "qazlm-decontam-v1"
INDEX_DIR, INDEX_FILE, META_FILE, LEGACY_FILE = "decontam", "index.npz", "meta.json", "decontam.pkl"


def _h(tokens: list[str]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest(), "little")


def check_known_sets(names: list[str], table: str) -> None:
    """Every name an evaluation set this module knows, else one error naming the `table` key and the choices
    (the post-training stages take only known sets; the corpus pipeline also takes local files)."""
    for name in names:
        if name not in KNOWN_SETS:
            raise QazlmError(f"{table} decontaminate: unknown set {name!r}; choose from {', '.join(KNOWN_SETS)}")


def set_files(name: str) -> list[Path]:
    """The files of evaluation set `name` present on this machine ([] when absent); any other name is a
    local text file (one item per line)."""
    base = shared_dir() / "data" / "eval"
    if name == "flores":
        found = [flores_path(split, lang) for split in ("dev", "devtest") for lang in FLORES_CODES]
    elif name == "sib200":
        found = sorted((base / "sib200").glob("*/*.tsv"))
    elif name == "kkcopa":
        found = [base / "kk" / "kkcopa.jsonl"]
    elif name == "kazqad":
        found = [base / "kk" / "kazqad_rc_validation.jsonl.gz"]
    elif name == "safety":
        found = [base / SAFETY_FILE]
    elif name in ("kkwikispell", "nis_math"):
        found = [base / "kk" / f"{name}.jsonl"]
    elif name == "wic":
        found = [base / "kk" / "wic_kazakh.jsonl"]
    else:
        found = [Path(name)]
    return [p for p in found if p.is_file()]


def resolve_sets(sets: list[str], warn: bool = True) -> dict[str, list[Path]]:
    """{set: its files} for the requested sets found here. A name that is neither a known set nor a file is
    an error; a known set absent on this machine (no ../shared) gets one warning line and is left out."""
    found, missing = {}, []
    for name in dict.fromkeys(sets):
        files = set_files(name)
        if files:
            found[name] = files
        elif name in KNOWN_SETS:
            missing.append(name)
        else:
            raise QazlmError(f"decontaminate: {name!r} is neither a known evaluation set ({', '.join(KNOWN_SETS)}) "
                             "nor an existing file; fix the name or the path")
    if missing and warn:
        print(f"qazlm: warning: decontaminate: {', '.join(missing)} not found on this machine (looked under "
              f"{shared_dir() / 'data' / 'eval'}); training text is not checked against them", file=sys.stderr)
    return found


def _json_lines(path: Path) -> Iterator[dict]:
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise QazlmError(f"{path}:{lineno}: malformed JSON line ({e.msg}); fix or remove it") from None
        if isinstance(obj, dict):
            yield obj


def _file_texts(name: str, path: Path) -> Iterator[str]:
    """The evaluation items of one file of set `name` (exact file:line errors for bad UTF-8 or JSON)."""
    if name == "sib200":
        rows = csv.DictReader((line for _, line in iter_text_lines(path)), delimiter="\t")
        yield from (row.get("text") or "" for row in rows)
    elif name == "kkcopa":
        for obj in _json_lines(path):
            yield from (v for k, v in obj.items() if "contents" in k and isinstance(v, str))
    elif name in ("kazqad", "safety", "nis_math"):   # NIS_Math's options are a few words: too short to match
        for obj in _json_lines(path):
            yield obj.get("context") or ""
            yield obj.get("question") or ""
    elif name in ("kkwikispell", "wic"):
        keys = ("Original Sentence", "Sentence with Mistake", "sentence1", "sentence2")
        for obj in _json_lines(path):
            yield from (obj[k] for k in keys if isinstance(obj.get(k), str))
    else:  # FLORES+ and local files: one item per line
        yield from (line.strip() for _, line in iter_text_lines(path))


class NgramIndex:
    """Hashes of the evaluation items' word n-grams; `match` names the set a text shares one with."""

    def __init__(self, n: int = 13):
        self.n = n
        self.grams: dict[int, dict[int, int]] = {}   # length -> hash -> set id (position in self.names)
        self.names: list[str] = []
        self.items: dict[str, int] = {}

    def add(self, text: str, source: str) -> None:
        ws = [w.lower() for w in words(text)]
        if len(ws) < SET_MIN_WORDS.get(source, MIN_ITEM_WORDS):
            return
        if source not in self.names:
            self.names.append(source)
        sid = self.names.index(source)
        self.items[source] = self.items.get(source, 0) + 1
        if len(ws) < self.n:
            self.grams.setdefault(len(ws), {})[_h(ws)] = sid
            return
        table = self.grams.setdefault(self.n, {})
        for i in range(len(ws) - self.n + 1):
            table[_h(ws[i:i + self.n])] = sid

    def match(self, text: str) -> str | None:
        """Name of the evaluation set sharing an n-gram with `text`, or None."""
        ws = [w.lower() for w in words(text)]
        for n, table in self.grams.items():
            for i in range(len(ws) - n + 1):
                hit = table.get(_h(ws[i:i + n]))
                if hit is not None:
                    return self.names[hit]
        return None

    def save(self, path: str | Path) -> None:
        """Plain numpy arrays in an .npz (no object arrays: it loads with allow_pickle=False)."""
        import numpy as np

        arrays = {"n": np.array(self.n), "names": np.array(self.names, dtype=str),
                  "items": np.array([self.items[x] for x in self.names], dtype=np.int64)}
        for length, table in self.grams.items():
            hashes = np.fromiter(table.keys(), dtype=np.uint64, count=len(table))
            ids = np.fromiter(table.values(), dtype=np.uint16, count=len(table))
            arrays[f"hash_{length}"], arrays[f"set_{length}"] = hashes, ids
        with atomic_write(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NgramIndex:
        """Read an index written by `save`; anything else (a pickle, a damaged file) is one QazlmError."""
        import zipfile

        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as z:
                idx = cls(int(z["n"]))
                idx.names = [str(x) for x in z["names"]]
                idx.items = dict(zip(idx.names, (int(x) for x in z["items"])))
                for key in (k for k in z.files if k.startswith("hash_")):
                    length = int(key.removeprefix("hash_"))
                    idx.grams[length] = dict(zip(z[key].tolist(), z[f"set_{length}"].tolist()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, zipfile.BadZipFile) as e:
            raise QazlmError(f"{path}: not a qazlm decontamination index ({e}); delete its folder and rerun "
                             "to rebuild it") from None
        return idx


def build_index(sets: list[str] | dict[str, list[Path]], n: int = 13) -> NgramIndex:
    """Index the items of `sets` (names, or {name: files} from `resolve_sets`)."""
    files = sets if isinstance(sets, dict) else resolve_sets(sets)
    idx = NgramIndex(n)
    for name, paths in files.items():
        for path in paths:
            for text in _file_texts(name, path):
                idx.add(text, name)
    return idx


def fingerprint(sets: list[str], n: int, files: dict[str, list[Path]]) -> str:
    """Changes with the requested sets, n, the item rules and the content of every evaluation file."""
    h = hashlib.sha256(json.dumps([FORMAT, list(sets), n, MIN_ITEM_WORDS, SET_MIN_WORDS]).encode())
    for name, paths in files.items():
        for path in paths:
            h.update(f"\n{name}|{path.name}|".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def index_fingerprint(sets: list[str], n: int = 13) -> str:
    """The fingerprint `prepare_index` would give these sets now (quiet): for a stage record, so that a run
    is redone when an evaluation file changes."""
    return fingerprint(sets, n, resolve_sets(sets, warn=False))


def read_meta(out_dir: str | Path) -> dict | None:
    """`<out_dir>/decontam/meta.json` (which sets the index covers, which were absent), or None."""
    try:
        meta = json.loads((Path(out_dir) / INDEX_DIR / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _drop_legacy(out_dir: Path) -> None:
    """Delete an old pickled index without opening it (unpickling a planted file would run its code)."""
    legacy = out_dir / LEGACY_FILE
    if legacy.exists() or legacy.is_symlink():
        legacy.unlink()
        print(f"qazlm: note: {legacy}: old pickled decontamination index deleted unread (the index is now "
              f"{out_dir / INDEX_DIR / INDEX_FILE})", file=sys.stderr)


def prepare_index(out_dir: str | Path, sets: list[str], n: int = 13) -> Path:
    """Path of an up-to-date index for `sets` under `<out_dir>/decontam/`: reused when its fingerprint
    matches (after checking it loads), else rebuilt. An index that would be empty is an error."""
    from qazlm.config import check_value

    check_value("data config: decontam_ngram", n, ">= 1")
    out_dir = Path(out_dir)
    _drop_legacy(out_dir)
    folder, files = out_dir / INDEX_DIR, resolve_sets(sets)
    fp = fingerprint(sets, n, files)
    meta = read_meta(out_dir)
    if meta and meta.get("fingerprint") == fp and (folder / INDEX_FILE).is_file():
        NgramIndex.load(folder / INDEX_FILE)
        return folder / INDEX_FILE
    idx = build_index(files, n)
    if not idx.items:
        raise QazlmError(f"decontaminate = {list(sets)}: no evaluation item of >= {MIN_ITEM_WORDS} words found, "
                         "so nothing would be decontaminated; check the sets' files or set decontaminate = []")
    meta = {"format": FORMAT, "fingerprint": fp, "n": n, "requested": list(sets),
            "used": {name: idx.items.get(name, 0) for name in files}, "missing": [s for s in sets if s not in files],
            "files": {name: [str(p) for p in paths] for name, paths in files.items()},
            "grams": sum(len(t) for t in idx.grams.values())}
    with atomic_dir(folder) as tmp:
        idx.save(tmp / INDEX_FILE)
        write_json(tmp / META_FILE, meta)
    print(f"data: decontamination index: {', '.join(f'{k} {v:,} items' for k, v in idx.items.items())} "
          f"-> {folder}", flush=True)
    return folder / INDEX_FILE
