"""Kazakh script conversion (Cyrillic <-> the official Latin alphabet) and Latin-homoglyph injection.

The Latin alphabet is the one of Presidential Decree No. 569 of 26 October 2017 ("On the transfer of the
Kazakh alphabet from Cyrillic to the Latin script"), amended by Decree No. 637 of 19 February 2018, in its
revised 31-letter form presented by the Government on 28 January 2021:

    A Ä B D E F G Ğ H I İ J K L M N Ñ O Ö P Q R S Ş T U Ū Ü V Y Z

І -> I ı, И/Й -> İ i, Ы -> Y y, Ұ -> Ū ū, Ү -> Ü ü, Қ -> Q q, Х/Һ -> H h; letters of Russian loanwords
have no letter of their own and are spelled out (Ц ts, Ч ch, Щ şş, Ю iu, Я ia, Ё io, Э e; Ъ Ь dropped).
Cyrillic -> Latin is therefore a function, but Latin -> Cyrillic is not (i is И or Й, h is Х or Һ):
`to_cyrillic` picks the usual reading and a sentence is used for the Latin -> Cyrillic task only when
`to_cyrillic(to_latin(s)) == s`, so every answer is correct by construction.
"""

from __future__ import annotations

import random

from qazlm.text.normalize import LATIN_TO_CYRILLIC

CYR_TO_LAT = {
    "а": "a", "ә": "ä", "б": "b", "в": "v", "г": "g", "ғ": "ğ", "д": "d", "е": "e", "ё": "io", "ж": "j",
    "з": "z", "и": "i", "й": "i", "к": "k", "қ": "q", "л": "l", "м": "m", "н": "n", "ң": "ñ", "о": "o",
    "ө": "ö", "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ұ": "ū", "ү": "ü", "ф": "f", "х": "h",
    "һ": "h", "ц": "ts", "ч": "ch", "ш": "ş", "щ": "şş", "ъ": "", "ы": "y", "і": "ı", "ь": "", "э": "e",
    "ю": "iu", "я": "ia",
}
UPPER = {"i": "İ", "ı": "I"}  # Turkish-style dotted/dotless pair: str.upper() would get these wrong
LAT_TO_CYR = {"a": "а", "ä": "ә", "b": "б", "v": "в", "g": "г", "ğ": "ғ", "d": "д", "e": "е", "j": "ж",
              "z": "з", "k": "к", "q": "қ", "l": "л", "m": "м", "n": "н", "ñ": "ң", "o": "о", "ö": "ө",
              "p": "п", "r": "р", "s": "с", "t": "т", "u": "у", "ū": "ұ", "ü": "ү", "f": "ф", "h": "х",
              "ş": "ш", "y": "ы", "ı": "і"}
VOWELS_LAT = set("aäeıioöuūüy")


def _lat_upper(s: str) -> str:
    return "".join(UPPER.get(ch, ch.upper()) for ch in s)


def to_latin(text: str) -> str:
    """Kazakh Cyrillic text in the 2021 Latin alphabet (other characters pass through)."""
    out = []
    for i, ch in enumerate(text):
        low = ch.lower()
        if low not in CYR_TO_LAT:
            out.append(ch)
            continue
        lat = CYR_TO_LAT[low]
        if ch != low and lat:
            near = text[i + 1:i + 2] + text[i - 1:i] if i else text[i + 1:i + 2]
            all_caps = len(lat) > 1 and any(c.isupper() for c in near)
            lat = _lat_upper(lat) if all_caps else _lat_upper(lat[0]) + lat[1:]
        out.append(lat)
    return "".join(out)


def _lower_lat(ch: str) -> str:
    return {"İ": "i", "I": "ı"}.get(ch, ch.lower())


def to_cyrillic(text: str) -> str:
    """The usual Cyrillic reading of 2021-Latin Kazakh: i is Й after a vowel, else И; h is Х."""
    out = []
    for i, ch in enumerate(text):
        low = _lower_lat(ch)
        if low == "i":
            prev = _lower_lat(text[i - 1]) if i else ""
            cyr = "й" if prev in VOWELS_LAT else "и"
        elif low in LAT_TO_CYR:
            cyr = LAT_TO_CYR[low]
        else:
            out.append(ch)
            continue
        out.append(cyr.upper() if ch != low else cyr)
    return "".join(out)


def convertible(sentence: str) -> bool:
    """Pure Cyrillic Kazakh (no Latin letters) whose Latin form reads back to exactly the same text."""
    return (any(ch in "әғқңөұүі" for ch in sentence.lower()) and not any(ch.isascii() and ch.isalpha() for ch in sentence)
            and to_cyrillic(to_latin(sentence)) == sentence)


HOMOGLYPHS = {cyr: lat for lat, cyr in LATIN_TO_CYRILLIC.items() if lat.isascii() or lat in "əÖöÜü"}


def inject_homoglyphs(text: str, rng: random.Random, rate: float = 0.3) -> str:
    """Replace some Cyrillic letters by Latin look-alikes (the typing error the normalizer repairs)."""
    return "".join(HOMOGLYPHS[ch] if ch in HOMOGLYPHS and rng.random() < rate else ch for ch in text)
