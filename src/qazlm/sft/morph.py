"""Kazakh morphology items from the Hunspell lexicon, kept only where the analysis is unambiguous.

`kazstem` (PyPI) cannot run offline (its FST resources are not in the wheel; see
`qazlm.tokenizer.morphology`), so segmentation and lemmas come from `HunspellSegmenter`. A word is used
only when exactly one split point gives a dictionary stem followed by a chain of known suffixes, and the
whole word is not itself a dictionary entry: then stem + suffixes is the one analysis the lexicon allows.
"""

from __future__ import annotations

from qazlm.tokenizer.morphology import MIN_STEM, SOFTENED, HunspellSegmenter

MIN_WORD = 5


def unambiguous_analysis(seg: HunspellSegmenter, word: str) -> list[str] | None:
    """[stem, suffix, ...] when the lexicon allows exactly one analysis with at least one suffix, else None."""
    low = word.lower()
    if low != word or low in seg.stems or not low.isalpha():
        return None
    candidates = [i for i in range(MIN_STEM, len(low))
                  if seg._is_stem(low[:i]) and seg._split_suffixes(low[i:]) is not None]
    if len(candidates) != 1:
        return None
    parts = seg.analyze(word)
    if parts is None or len(word) < MIN_WORD or any(len(p) < 2 for p in parts):
        return None  # one-letter pieces are the lexicon's usual false splits (ал|қ)
    return parts


def lemma_of(seg: HunspellSegmenter, stem: str) -> str:
    """The dictionary form of a stem (жүрег- -> жүрек: the voiced final consonant is undone)."""
    if stem in seg.stems:
        return stem
    return stem[:-1] + SOFTENED[stem[-1]]
