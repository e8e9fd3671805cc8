"""Kazakh morpheme segmentation from the Hunspell lexicon, the gold standard for boundary alignment.

Why Hunspell and not `kazstem`: the PyPI `kazstem` analyser (import name `qazmorph`) needs compiled HFST
resources and binaries that are not shipped in the wheel (`Analyzer()` raises "Kazakh FST resources are
not installed"), so it cannot run offline. The Hunspell lexicon `../shared/data/lexicon/kk_KZ.{dic,aff}`
(54k stems, 300 distinct suffix strings) can: a word is split into

  dictionary stem (with k/g, q/gh, p/b final-consonant alternation)  +  suffix chain,

where the suffix chain must be covered entirely by suffixes that occur in the .aff file. Among all such
analyses (the .dic also lists many inflected forms such as `кітаптарды` as entries, so the whole word is
only one candidate) we pick the one with the fewest one-letter suffixes (they are the usual false
splits: `ме|к|те|п|тер|де`), then the most multi-letter suffixes, then the longest stem:
`балаларымызға` -> `бала|лар|ымыз|ға`, `мектептерде` -> `мектеп|тер|де`. The stem boundary is exact
w.r.t. the lexicon; suffix-internal boundaries are as fine as its suffix inventory. Words with no such
analysis are returned whole and `analyze()` reports None for them, so metrics can skip them.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.paths import shared_dir

SOFTENED = {"г": "к", "ғ": "қ", "б": "п"}  # жүрек -> жүрегі: the stem's final consonant voices
MIN_STEM = 2


def default_lexicon() -> Path:
    return shared_dir() / "data" / "lexicon" / "kk_KZ.dic"


class HunspellSegmenter:
    """Stem + suffix-chain segmentation from a Hunspell .dic/.aff pair (see module docstring)."""

    def __init__(self, dic: str | Path, aff: str | Path | None = None):
        dic = Path(dic)
        aff = Path(aff) if aff else dic.with_suffix(".aff")
        for p in (dic, aff):
            if not p.exists():
                raise QazlmError(f"{p}: Hunspell lexicon not found; pass --lexicon DIR/kk_KZ.dic (with its .aff)")
        try:
            lines = dic.read_text(encoding="utf-8-sig").splitlines()
            aff_lines = aff.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError:
            raise QazlmError(f"{dic}: lexicon is not UTF-8; convert it with iconv") from None
        self.stems = {ln.split("/", 1)[0].strip().lower() for ln in lines[1:] if ln.strip()}
        self.suffixes: set[str] = set()
        for ln in aff_lines:
            parts = ln.split()
            if len(parts) >= 5 and parts[0] == "SFX" and parts[3] != "0":
                self.suffixes.add(parts[3].split("/", 1)[0].lower())
        if not self.stems or not self.suffixes:
            raise QazlmError(f"{dic}: no stems or no SFX rules found; is this a Hunspell .dic/.aff pair?")
        self.max_suffix = max(map(len, self.suffixes))
        self._cache: dict[str, list[str] | None] = {}

    def _is_stem(self, s: str) -> bool:
        return s in self.stems or (len(s) > MIN_STEM and s[-1] in SOFTENED and s[:-1] + SOFTENED[s[-1]] in self.stems)

    def _split_suffixes(self, rest: str) -> list[str] | None:
        """`rest` as known suffixes (most multi-letter, fewest one-letter pieces), or None if not covered."""
        def score(pieces: list[str]) -> tuple[int, int]:
            return sum(len(p) > 1 for p in pieces), -sum(len(p) == 1 for p in pieces)

        n = len(rest)
        best: list[list[str] | None] = [None] * (n + 1)
        best[0] = []
        for i in range(1, n + 1):
            for j in range(max(0, i - self.max_suffix), i):
                if best[j] is not None and rest[j:i] in self.suffixes:
                    cand = best[j] + [rest[j:i]]
                    if best[i] is None or score(cand) > score(best[i]):
                        best[i] = cand
        return best[n]

    def analyze(self, word: str) -> list[str] | None:
        """Morphemes of `word` (concatenation == word), or None when the lexicon cannot analyse it."""
        if word in self._cache:
            return self._cache[word]
        low = word.lower()
        result: list[str] | None = None
        if len(low) == len(word):
            best_key = None
            for i in range(MIN_STEM, len(low) + 1):
                if i == len(low):
                    pieces = [] if low in self.stems else None
                elif self._is_stem(low[:i]):
                    pieces = self._split_suffixes(low[i:])
                else:
                    continue
                if pieces is None:
                    continue
                key = (-sum(len(p) == 1 for p in pieces), sum(len(p) > 1 for p in pieces), i)
                if best_key is None or key > best_key:
                    best_key, pos, result = key, i, [word[:i]]
                    for p in pieces:
                        result.append(word[pos:pos + len(p)])
                        pos += len(p)
        self._cache[word] = result
        return result

    def segment(self, word: str) -> list[str]:
        return self.analyze(word) or [word]

    def boundaries(self, word: str) -> set[int] | None:
        """Character offsets of internal morpheme boundaries, or None when the word is not analysable."""
        parts = self.analyze(word)
        if parts is None:
            return None
        out, pos = set(), 0
        for p in parts[:-1]:
            pos += len(p)
            out.add(pos)
        return out


@functools.lru_cache(maxsize=4)
def get_segmenter(dic: str | None = None) -> HunspellSegmenter:
    """The shared segmenter (loaded once per process)."""
    return HunspellSegmenter(dic or default_lexicon())


def segment_word(word: str) -> list[str]:
    """Kazakh morphemes of `word`; "".join(result) == word (unanalysable words come back whole)."""
    return get_segmenter().segment(word)


def boundary_alignment(tok, words: Counter[str], max_words: int = 5000, segmenter: HunspellSegmenter | None = None,
                       ) -> dict[str, float]:
    """Token-boundary vs morpheme-boundary precision/recall/F1 over Kazakh word occurrences.

    `tok` is a LoadedTokenizer (its `word_boundaries` encodes ' ' + word); `words` maps words to their
    frequency; the `max_words` most frequent words the lexicon can analyse are scored, each weighted by
    its frequency. "coverage" = share of word occurrences the lexicon could analyse.
    """
    from qazlm.tokenizer.metrics import boundary_prf

    seg = segmenter or get_segmenter()
    analysed = [(w, b) for w, _ in words.most_common() if (b := seg.boundaries(w)) is not None][:max_words]
    total = sum(words.values())
    if not analysed:
        return {"precision": float("nan"), "recall": float("nan"), "f1": float("nan"), "words": 0,
                "coverage": 0.0}
    preds = tok.word_boundaries([w for w, _ in analysed])
    pred_occ, gold_occ = [], []
    for (w, gold), pred in zip(analysed, preds):
        pred_occ.extend([pred] * words[w])
        gold_occ.extend([gold] * words[w])
    res = boundary_prf(pred_occ, gold_occ)
    res.update(words=len(analysed), coverage=sum(words[w] for w, _ in analysed) / total)
    return res
