"""An offline word/sentence tokenizer for kk, ru and en, registered with datatrove's filters.

datatrove's default tokenizer for Kazakh is stanza (downloads a model at run time) and for ru/en it is
NLTK (not installed here); a Unicode regex is enough for the word statistics the Gopher/FineWeb
filters and MinHash shingles need, and it is identical for all three languages.
"""

from __future__ import annotations

import re

from datatrove.utils.word_tokenizers import WordTokenizer

_WORDS = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]", re.UNICODE)
_SENT_END = re.compile(r"(?<=[.!?…])\s+|\n+")


class RegexWordTokenizer(WordTokenizer):
    """Words = runs of letters/digits (with inner hyphens/apostrophes); punctuation is not a word.

        (Counting punctuation as words would make Gopher's "≥80% words with a letter" rule reject
        every short, well-punctuated sentence.)
        """

    def __init__(self, language: str = "kk"):
        super().__init__(language)

    def word_tokenize(self, text: str) -> list[str]:
        return words(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [s for s in _SENT_END.split(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, pos = [], 0
        for sent in self.sent_tokenize(text):
            start = text.index(sent, pos)
            spans.append((start, start + len(sent)))
            pos = start + len(sent)
        return spans


def words(text: str) -> list[str]:
    """Alphanumeric words only (no punctuation tokens)."""
    return [w for w in _WORDS.findall(text) if w[0].isalnum() or w[0] == "_"]
