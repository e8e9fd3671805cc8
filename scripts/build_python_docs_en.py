"""Rebuild data/sample/en/python_docs.txt.gz: modern English prose from CPython's own documentation.

Why: the other English sample files are Shakespeare, Defoe (archaic) and 0.3 MB of UD web text, too
little modern vocabulary for a fair English share in the tokenizer. CPython's docstrings and the
language-reference topics shipped as `pydoc_data.topics` are PSF-2.0 licensed and on every Python
install, so the file is reproducible offline. Only prose paragraphs are kept (no code, no doctest,
no tables); duplicates are dropped; the output is deterministic (gzip mtime 0).

    python scripts/build_python_docs_en.py [--stdlib DIR] [--out data/sample/en/python_docs.txt.gz]
"""

from __future__ import annotations

import argparse
import ast
import re
import sysconfig
from pathlib import Path

from qazlm.io import write_gzip_lines

SKIP_PREFIXES = ("test/", "idlelib/", "lib2to3/", "site-packages/", "tkinter/test/", "unittest/test/",
                 "ctypes/test/", "distutils/tests/", "sqlite3/test/", "turtledemo/")
NOT_PROSE_LINE = (">>>", "...", "$", "-", "*", ":", "|", "+", "=", "#")


def prose(paragraph: str) -> str | None:
    """One paragraph as a single line, or None when it looks like code, a table or a fragment."""
    lines = [line.strip() for line in paragraph.splitlines()]
    if not lines or any(line.startswith(NOT_PROSE_LINE) for line in lines):
        return None
    text = " ".join(lines)
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) < 80 or not text[0].isupper() or not text.endswith((".", ":")):
        return None
    if sum(c.isalpha() or c == " " for c in text) / len(text) < 0.9:
        return None
    return text


def docstrings(stdlib: Path):
    for path in sorted(stdlib.rglob("*.py")):
        rel = path.relative_to(stdlib).as_posix()
        if rel.startswith(SKIP_PREFIXES):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                yield ast.get_docstring(node) or ""


def topic_texts():
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stdlib", type=Path, default=Path(sysconfig.get_paths()["stdlib"]))
    ap.add_argument("--out", type=Path, default=Path("data/sample/en/python_docs.txt.gz"))
    args = ap.parse_args()

    seen: set[str] = set()
    kept: list[str] = []
    for doc in [*topic_texts(), *docstrings(args.stdlib)]:
        for paragraph in re.split(r"\n\s*\n", doc):
            text = prose(paragraph)
            if text and text not in seen:
                seen.add(text)
                kept.append(text)
    write_gzip_lines(args.out, kept)
    print(f"{args.out}: {len(kept)} paragraphs, {sum(map(len, kept)) / 1e6:.2f} MB of text")


if __name__ == "__main__":
    main()
