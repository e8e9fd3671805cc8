"""Rebuild data/sample/en/wordnet_glosses.txt.gz: general English vocabulary from WordNet 3.0 glosses.

Why: the rest of the English sample is Shakespeare, Defoe, UD web text and Python's docs — little of the
everyday and news vocabulary (television, tourist, province, election …) that FLORES+ and real users
write. WordNet's definitions and example sentences cover it in plain prose, under a permissive licence
(WordNet 3.0 licence, see data/LICENSES.md). One synset in three is kept (deterministic) to keep the
sample small; each kept synset gives one line `lemma, lemma: definition.` and one line per example
sentence. Output is deterministic (gzip mtime 0).

The WordNet database is Debian's `wordnet-base` package (no installation needed):

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wn
    python scripts/build_wordnet_en.py --wordnet /tmp/wn/usr/share/wordnet
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from qazlm.io import write_gzip_lines

POS_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")


def synset_lines(line: str) -> list[str]:
    """`lemma, lemma: definition.` plus each example sentence, from one line of a WordNet data file."""
    head, gloss = line.split("|", 1)
    fields = head.split()
    n_words = int(fields[3], 16)
    lemmas = dict.fromkeys(re.sub(r"\(.*\)$", "", fields[4 + 2 * i]).replace("_", " ") for i in range(n_words))
    parts = [p.strip() for p in gloss.strip().split(";")]
    definitions = [p for p in parts if p and not p.startswith('"')]
    examples = [e.strip('" ') for p in parts if p.startswith('"') for e in re.split(r'"\s*[:;,]\s*"', p)]
    out = [f"{', '.join(lemmas)}: {'; '.join(definitions)}."] if definitions else []
    for ex in examples:
        if len(ex) > 15:
            out.append(ex[0].upper() + ex[1:] + ("" if ex[-1] in ".!?" else "."))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="folder with data.noun etc.")
    ap.add_argument("--keep-every", type=int, default=3, help="keep one synset in N")
    ap.add_argument("--out", type=Path, default=Path("data/sample/en/wordnet_glosses.txt.gz"))
    args = ap.parse_args()

    seen: set[str] = set()
    kept: list[str] = []
    index = 0
    for name in POS_FILES:
        for line in (args.wordnet / name).read_text(encoding="utf-8").splitlines():
            if line.startswith("  ") or "|" not in line:  # the licence header lines
                continue
            index += 1
            if index % args.keep_every:
                continue
            for text in synset_lines(line):
                if text not in seen:
                    seen.add(text)
                    kept.append(text)
    write_gzip_lines(args.out, kept)
    print(f"{args.out}: {len(kept)} lines from {index // args.keep_every} synsets, "
          f"{sum(map(len, kept)) / 1e6:.2f} MB of text")


if __name__ == "__main__":
    main()
