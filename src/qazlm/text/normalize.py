"""Text normalization shared by every stage (tokenizer training, corpus pipeline, evaluation).

Tokenizers in qazlm have no normalizer of their own (so transformers, llama.cpp and vLLM tokenize
identically); all cleaning happens here, upstream, once:

1. HTML entities (`&#39;`, `&amp;`) decoded — UD Russian GSD has them.
2. Unicode NFC, so `й` is one code point whatever the source did.
3. Control and invisible characters removed (C0/C1 controls, zero-width spaces, BOM, soft hyphen);
   exotic spaces (NBSP, thin space, ...) become a plain space; runs of spaces collapse; line ends stripped.
4. Kazakh homoglyph repair: Latin look-alikes typed inside Cyrillic words (`Жеңiске` with Latin `i`,
   `жəне` with Latin schwa, `Аллаh`) become the Kazakh letters (`Жеңіске`, `және`, `Аллаһ`), and
   Cyrillic look-alikes inside Latin words (`comрleted`) become Latin. Words written in one script only are
   never changed, so English text passes through untouched.
"""

from __future__ import annotations

import html
import re
import unicodedata

# Latin (and IPA) letters that look like a Cyrillic letter -> that Cyrillic letter.
LATIN_TO_CYRILLIC = {
    "a": "а", "c": "с", "e": "е", "o": "о", "p": "р", "x": "х", "y": "у", "i": "і", "h": "һ", "k": "к",
    "ə": "ә", "ɵ": "ө", "ö": "ө", "ü": "ү", "ğ": "ғ",
    "A": "А", "B": "В", "C": "С", "E": "Е", "H": "Н", "K": "К", "M": "М", "O": "О", "P": "Р", "T": "Т",
    "X": "Х", "Y": "У", "I": "І", "Ə": "Ә", "Ɵ": "Ө", "Ö": "Ө", "Ü": "Ү", "Ğ": "Ғ",
}
# Cyrillic letters that look like a Latin letter -> that Latin letter.
CYRILLIC_TO_LATIN = {
    "а": "a", "с": "c", "е": "e", "о": "o", "р": "p", "х": "x", "у": "y", "і": "i", "һ": "h", "к": "k",
    "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "К": "K", "М": "M", "О": "O", "Р": "P", "Т": "T",
    "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
}
KAZAKH_LETTERS = set("әғқңөұүһіӘҒҚҢӨҰҮҺІ")
FRONT_VOWELS = set("әеіөүиэӘЕІӨҮИЭ")
BACK_VOWELS = set("аоұыяАОҰЫЯ")

_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_INVISIBLE = re.compile(r"[\u00ad\u200b\u200c\u200e\u200f\u2060\ufeff]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_MULTI_SPACE = re.compile(r"[ \t]{2,}")
_ENTITY = re.compile(r"&(#\d+|#[xX][0-9a-fA-F]+|[a-zA-Z]{2,8});")
_WORD = re.compile(r"[^\W\d_]+")  # runs of letters (any script)


def _script(ch: str) -> str:
    """'cyr', 'lat' or '' for a letter; IPA schwa/barred-o count as Latin look-alikes."""
    if "\u0400" <= ch <= "\u04ff" or "\u0500" <= ch <= "\u052f":
        return "cyr"
    if ch.isascii() or "\u00c0" <= ch <= "\u024f" or ch in "əɵƏƟ":
        return "lat"
    return ""


def _latin_y(word: str, i: int, kazakh_context: bool) -> str:
    """Latin `y` in a Cyrillic word is `ү` in a front-vowel Kazakh word, otherwise `у`."""
    if not kazakh_context:
        return "у" if word[i] == "y" else "У"
    letters = [LATIN_TO_CYRILLIC.get(ch, ch) for ch in word]
    front = sum(ch in FRONT_VOWELS for ch in letters)
    back = sum(ch in BACK_VOWELS for ch in letters)
    if front > back:
        return "ү" if word[i] == "y" else "Ү"
    return "у" if word[i] == "y" else "У"


def _repair_word(word: str, line_script: str, kazakh_context: bool) -> str:
    scripts = [_script(ch) for ch in word]
    if "cyr" not in scripts or "lat" not in scripts:
        return word  # single-script words are never touched
    # A letter with no look-alike in the other script decides the word's script.
    cyr_only = any(s == "cyr" and ch not in CYRILLIC_TO_LATIN for ch, s in zip(word, scripts))
    lat_only = any(s == "lat" and ch not in LATIN_TO_CYRILLIC for ch, s in zip(word, scripts))
    if cyr_only and lat_only:
        return word  # genuinely mixed (e.g. a transliteration); leave it alone
    if cyr_only:
        target = "cyr"
    elif lat_only:
        target = "lat"
    else:  # only look-alikes: the word's majority, then the line's script
        n_cyr, n_lat = scripts.count("cyr"), scripts.count("lat")
        target = "cyr" if n_cyr > n_lat else "lat" if n_lat > n_cyr else line_script
    out = []
    for i, (ch, s) in enumerate(zip(word, scripts)):
        if target == "cyr" and s == "lat":
            out.append(_latin_y(word, i, kazakh_context) if ch in "yY" else LATIN_TO_CYRILLIC[ch])
        elif target == "lat" and s == "cyr":
            out.append(CYRILLIC_TO_LATIN[ch])
        else:
            out.append(ch)
    return "".join(out)


def repair_homoglyphs(text: str) -> str:
    """Fix look-alike letters from the other script inside words (see module docstring)."""
    if text.isascii():
        return text
    n_cyr = sum(1 for ch in text if "\u0400" <= ch <= "\u04ff")
    n_lat = sum(1 for ch in text if ch.isascii() and ch.isalpha())
    if not n_cyr:
        return text
    line_script = "cyr" if n_cyr >= n_lat else "lat"
    kazakh_context = any(ch in KAZAKH_LETTERS or ch in "əƏ" for ch in text)
    return _WORD.sub(lambda m: _repair_word(m.group(0), line_script, kazakh_context), text)


def _unescape_entities(text: str) -> str:
    if "&" not in text or not _ENTITY.search(text):
        return text
    return html.unescape(text)


def normalize_text(text: str) -> str:
    """The one normalization every stage applies: entities, NFC, invisibles/spaces, homoglyph repair.

    Newlines are kept (documents can span lines); spaces at line ends are stripped.
    """
    text = _unescape_entities(text)
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _INVISIBLE.sub("", text)
    text = _CONTROLS.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _MULTI_SPACE.sub(" ", text)
    if " \n" in text or "\n " in text:
        text = "\n".join(line.strip(" ") for line in text.split("\n"))
    text = repair_homoglyphs(text.strip(" "))
    return text
