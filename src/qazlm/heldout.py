"""Held-out text sets for bits-per-byte, named `<source>:<lang>` so reports can group them by language.

Sources: `flores` / `flores:dev` / `flores:devtest` (FLORES+, one set per language), a data-stage output
folder (its `val/{kk,ru,en}.jsonl.gz`), or any text file (.txt/.gz: one document per line; .jsonl: "text").
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import iter_lines, read_lines
from qazlm.paths import LANGS, flores_path


def flores_texts(split: str = "devtest", langs=LANGS) -> dict[str, list[str]]:
    out = {}
    for lang in langs:
        path = flores_path(split, lang)
        if not path.exists():
            raise QazlmError(f"{path}: FLORES+ {split} file not found; put FLORES+ under data/eval/flores_plus "
                             "or ../shared/data/eval/flores_plus")
        out[f"flores-{split}:{lang}"] = [ln for ln in read_lines(path) if ln.strip()]
    return out


def val_texts(folder: Path, langs=LANGS) -> dict[str, list[str]]:
    base = folder / "val" if (folder / "val").is_dir() else folder
    out = {f"val:{lang}": list(iter_lines(base / f"{lang}.jsonl.gz"))
           for lang in langs if (base / f"{lang}.jsonl.gz").exists()}
    if not out:
        raise QazlmError(f"{folder}: no val/{{kk,ru,en}}.jsonl.gz inside; give a `qazlm data prepare` output folder")
    return out


def file_lang(path: Path) -> str:
    """Guess the language from the file name (kk.txt, devtest.kaz_Cyrl.gz, ...); 'other' otherwise."""
    parts = set(path.name.lower().replace("-", ".").replace("_", ".").split("."))
    for lang, code in (("kk", "kaz"), ("ru", "rus"), ("en", "eng")):
        if lang in parts or code in parts:
            return lang
    return "other"


def load_bpb_sets(specs: list[str], limit: int | None = None, langs=LANGS) -> dict[str, list[str]]:
    """Parse `--bpb` specs into {set name: documents}; `limit` keeps the first N documents of each set."""
    sets: dict[str, list[str]] = {}
    for spec in specs:
        if spec == "flores" or spec.startswith("flores:"):
            split = spec.split(":", 1)[1] if ":" in spec else "devtest"
            if split not in ("dev", "devtest"):
                raise QazlmError(f"--bpb {spec}: FLORES+ split must be dev or devtest")
            sets.update(flores_texts(split, langs))
        elif Path(spec).is_dir():
            sets.update(val_texts(Path(spec), langs))
        else:
            path = Path(spec)
            texts = list(iter_lines(path))
            if not texts:
                raise QazlmError(f"{path}: no non-empty lines to score; check the file")
            stem = path.name.split(".")[0]
            sets[f"{stem}:{file_lang(path)}"] = texts
    if limit:
        sets = {k: v[:limit] for k, v in sets.items()}
    return sets


def set_lang(name: str) -> str:
    return name.rsplit(":", 1)[-1]


def char_unigram_bpb(train: list[str], test: list[str]) -> float:
    """Bits per byte of a character unigram model (add-one smoothing) fit on `train`: the floor any
    language model must beat. Tokenizer-independent like bpb itself."""
    counts = Counter("".join(train))
    total, vocab = sum(counts.values()), len(counts) + 1
    bits = 0.0
    for ch, n in Counter("".join(test)).items():
        bits -= n * math.log2((counts.get(ch, 0) + 1) / (total + vocab))
    return bits / max(1, sum(len(t.encode("utf-8")) for t in test))


def unigram_baselines(sets: dict[str, list[str]]) -> dict[str, float]:
    """Unigram bpb per set, fit on FLORES+ dev of the set's language (devtest when scoring dev itself)."""
    out = {}
    for name, texts in sets.items():
        lang, fit = set_lang(name), "devtest" if name.startswith("flores-dev:") else "dev"
        if lang in LANGS and flores_path(fit, lang).exists():
            out[name] = char_unigram_bpb([ln for ln in read_lines(flores_path(fit, lang)) if ln], texts)
    return out
