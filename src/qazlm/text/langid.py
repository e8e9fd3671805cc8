"""Offline language ID for kk/ru/en (+ "other"): py3langid restricted to a few languages, plus a Kazakh-letter rule.

py3langid alone confuses short Kazakh and Russian lines (shared Cyrillic). Kazakh has nine letters
Russian never uses (ә ғ қ ң ө ұ ү һ і), so a Cyrillic text where a fair share of words carry one of
them is Kazakh, even when it is code-mixed with Russian (KazSAnDRA reviews).
"""

from __future__ import annotations

import re
from functools import lru_cache

KAZAKH_LETTERS = set("әғқңөұүһіӘҒҚҢӨҰҮҺІ")
# candidates: our three plus the languages most often confused with them, which all map to "other"
CANDIDATES = ["kk", "ru", "en", "uk", "be", "bg", "ky", "tt", "mn", "sr", "mk", "uz", "tr", "de", "fr", "es", "it",
              "nl", "pt", "pl", "la"]
TARGETS = ("kk", "ru", "en")
_WORD = re.compile(r"\w+", re.UNICODE)
_CYR = re.compile(r"[\u0400-\u04FF]")


@lru_cache(1)
def _identifier():
    from py3langid.langid import _load_identifier

    return _load_identifier(norm_probs=True, langs=CANDIDATES)


def kazakh_word_ratio(text: str) -> float:
    """Share of Cyrillic words containing a Kazakh-only letter (≈0.3+ for Kazakh prose, 0 for Russian)."""
    words = [w for w in _WORD.findall(text) if _CYR.search(w)]
    if not words:
        return 0.0
    return sum(1 for w in words if KAZAKH_LETTERS.intersection(w)) / len(words)


def detect_language(text: str, kk_ratio: float = 0.08) -> tuple[str, float]:
    """(lang in kk/ru/en/other, score in 0..1). Long texts are judged on their first 4,000 characters."""
    sample = text[:4000]
    lang, prob = _identifier().classify(sample)
    ratio = kazakh_word_ratio(sample)
    if ratio >= kk_ratio and _mostly_cyrillic(sample):
        return "kk", max(float(prob) if lang == "kk" else 0.0, min(1.0, 0.5 + ratio))
    if lang == "kk" and ratio == 0.0 and _CYR.search(sample):
        # no Kazakh-only letter at all in Cyrillic text: Russian unless the text is tiny
        words = len(_WORD.findall(sample))
        if words >= 4:
            return "ru", 0.5
    if lang not in TARGETS:
        return "other", float(prob)
    return lang, float(prob)


def _mostly_cyrillic(text: str) -> bool:
    letters = [ch for ch in text if ch.isalpha()]
    return bool(letters) and sum(1 for ch in letters if _CYR.match(ch)) / len(letters) >= 0.5


def script_matches(text: str, lang: str) -> bool:
    """Is the text written in the script of `lang` (Cyrillic for kk/ru, Latin for en)?"""
    cyr = _mostly_cyrillic(text)
    return cyr if lang in ("kk", "ru") else (not cyr and any(ch.isalpha() for ch in text))


def short_text(text: str, max_words: int = 5) -> bool:
    return len(_WORD.findall(text)) <= max_words
