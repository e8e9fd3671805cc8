"""The licensed, offline sources of the built-in tasks, with their licences for the dataset card.

Only training-safe splits are read: FLORES+ **dev** (devtest is the evaluation split), SIB-200
train/dev (test is evaluation), the bundled monolingual sample corpus, the Alpaca seed tasks and the
Hunspell lexicon in ../shared.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import sys
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import iter_text_lines
from qazlm.paths import FLORES_CODES, LANGS, SAMPLE_LICENCES, flores_path, shared_dir
from qazlm.text.normalize import normalize_text

LICENCES = {
    "flores_plus_dev": "CC BY-SA 4.0 (FLORES+, openlanguagedata)",
    "sib200": "CC BY-SA 4.0 (SIB-200 text, from FLORES-200)",
    "alpaca_seed_en": "CC BY-NC 4.0 (non-commercial; Stanford Alpaca seed tasks)",
    "alpaca_seed_ru": "Apache-2.0 (Russian translation of the Alpaca seed tasks)",
    "hunspell_kk": "GPL-2+/LGPL/MPL tri-licence (Kazakh Hunspell lexicon)",
    "generated": "Apache-2.0 (written by qazlm)",
    "qazlm-tools": "Apache-2.0 (tool calls and results computed by qazlm.sft.toolkit)",
}
_SKIP_LINE = re.compile(r"[A-Z]{2,}\d{3,}|gutenberg|\{|\}|https?://|www\.|@", re.IGNORECASE)


def licence_of(source: str) -> str:
    if source.startswith("corpus:"):
        return SAMPLE_LICENCES.get(source.split(":", 1)[1], "see data/LICENSES.md")
    return LICENCES.get(source, "as stated by the source")


def warn(msg: str) -> None:
    print(f"qazlm: warning: sft-data: {msg}", file=sys.stderr)


@functools.lru_cache(maxsize=8)
def flores_dev(lang: str) -> tuple[str, ...]:
    """FLORES+ dev sentences of `lang` (line-aligned across languages). Never devtest."""
    path = flores_path("dev", lang)
    if not path.exists():
        raise QazlmError(f"{path}: FLORES+ dev file not found; restore data/eval/flores_plus or drop the "
                         "translation tasks from `tasks`")
    return tuple(line.strip() for _, line in iter_text_lines(path))


def sib_dir() -> Path:
    return shared_dir() / "data" / "eval" / "sib200"


@functools.lru_cache(maxsize=8)
def sib_rows(lang: str) -> tuple[tuple[str, str, str], ...]:
    """(index_id, category, text) of SIB-200 train + dev in `lang` (never test); () when ../shared is absent."""
    base = sib_dir() / FLORES_CODES[lang]
    rows = []
    for split in ("train", "dev"):
        path = base / f"{split}.tsv"
        if not path.exists():
            return ()
        lines = (line for _, line in iter_text_lines(path))
        rows += [(r["index_id"], r["category"], r["text"]) for r in
                 csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return tuple(sorted(rows, key=lambda r: int(r[0])))


@functools.lru_cache(maxsize=8)
def corpus_lines(corpus_dir: str, lang: str) -> tuple[tuple[str, str], ...]:
    """(source, normalized line) of the monolingual corpus `corpus_dir/lang/*.txt.gz`, prose lines only."""
    files = sorted((Path(corpus_dir) / lang).glob("*.txt.gz"))
    if not files and lang in LANGS:
        raise QazlmError(f"{Path(corpus_dir) / lang}: no *.txt.gz files; set corpus_dir to a folder with "
                         "kk/, ru/, en/ subfolders (default data/sample)")
    out = []
    for path in files:
        name = path.name.removesuffix(".txt.gz")
        for _, line in iter_text_lines(path):
            text = normalize_text(line)
            if 20 <= len(text) <= 600 and not _SKIP_LINE.search(text) and text[-1] in ".!?»\"" and text[0].isupper():
                out.append((f"corpus:{name}", text))
    return tuple(out)


_TITLE_END = ".!?:;,»\"…"


def _starts_document(lines: list[str], i: int) -> bool:
    """A line followed by two blank lines opens a document in the Wikipedia-style article files
    (apertium_wiki_texts); paragraphs inside one are separated by a single blank line."""
    return bool(lines[i]) and i + 3 < len(lines) and not lines[i + 1] and not lines[i + 2]


def _is_title(line: str) -> bool:
    return len(line) <= 80 and line[-1] not in _TITLE_END


def _mentions(paragraph: str, title: str) -> bool:
    """The paragraph names the article's subject (a title word's first five letters occur in it)."""
    low = paragraph.lower()
    return any(w[:5].lower() in low for w in title.split() if len(w) >= 4)


def _titled(lines: list[str]) -> list[tuple[str, str]]:
    """(article title, paragraph) for the prose paragraphs of each titled article that name its subject."""
    found, title = [], None
    for i, line in enumerate(lines):
        if _starts_document(lines, i):
            title = line if _is_title(line) else None  # an untitled document has no answer: skipped
        prose = 100 <= len(line) <= 800 and line[-1] in ".!?" and line[0].isupper()
        if title and line != title and prose and _mentions(line, title):
            found.append((title, line))
    return found


@functools.lru_cache(maxsize=8)
def titled_paragraphs(corpus_dir: str, lang: str) -> tuple[tuple[str, str, str], ...]:
    """(source, article title, paragraph) of the articles with a real title in `corpus_dir/lang/*.txt.gz`."""
    out = []
    for path in sorted((Path(corpus_dir) / lang).glob("*.txt.gz")):
        lines = [normalize_text(line).strip() for _, line in iter_text_lines(path)]
        name = path.name.removesuffix(".txt.gz")
        out += [(f"corpus:{name}", title, body) for title, body in _titled(lines)]
    return tuple(out)


@functools.lru_cache(maxsize=8)
def stopwords(lang: str) -> frozenset[str]:
    """Function words: the data stage's Kazakh list (MIT) and the Russian and English lists of the `stop-words`
    package (BSD-3), bundled in `resources/` (see its README)."""
    if lang == "kk":
        from qazlm.data.steps import load_stopwords

        return load_stopwords("kk")
    from importlib import resources

    text = resources.files("qazlm.sft").joinpath(f"resources/stopwords_{lang}.txt").read_text(encoding="utf-8")
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip())


@functools.lru_cache(maxsize=4)
def alpaca_seed(lang: str) -> tuple[dict, ...]:
    """The Alpaca seed tasks of `lang` (en/ru) from ../shared/data/sft; () when absent."""
    path = shared_dir() / "data" / "sft" / f"alpaca_seed_tasks_{lang}.jsonl"
    if not path.exists():
        return ()
    out = []
    for lineno, line in iter_text_lines(path):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise QazlmError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
    return tuple(out)
