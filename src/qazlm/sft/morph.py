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


# --- Inflection (the reverse direction): noun case / number / possessive suffixes by rule -------------------
#
# Kazakh noun suffixes are chosen by two things only: the stem's last vowel (back а о ұ ы -> а/ы, front
# ә ө ү і е -> е/і) and its final sound. The classes below are the textbook ones, checked against the forms
# attested in the bundled corpus (the instrumental, for instance, is -мен after л/м/н/ң as written today,
# -бен only after з/ж). Stems whose suffixes are not fixed by these two facts are refused: Russian loanwords
# (в ф х ц ч щ ъ ь ё э ю я һ), a last vowel и/у/ю/я/ё/э, a final б в г д ғ у и, and the possessives of
# stems ending in к/қ/п (their consonant may voice: кітап -> кітабы) or in a vowel (1st person: балам is also
# a word of its own).

BACK, FRONT = "аоұы", "әөүіе"
LOAN_LETTERS = set("вфхцчщъьёэюяһ")
FINAL_CLASS = {**{v: "V" for v in BACK + FRONT}, "р": "R", "й": "R", "л": "L", "з": "Z", "ж": "Z",
               "м": "N", "н": "N", "ң": "N", **{c: "T" for c in "кқпстш"}}
# suffix -> {final class: first consonant}; the rest of the suffix is (back, front)
CASES = {
    "pl": ({"V": "л", "R": "л", "L": "д", "Z": "д", "N": "д", "T": "т"}, ("ар", "ер")),
    "gen": ({"V": "н", "R": "д", "L": "д", "Z": "д", "N": "н", "T": "т"}, ("ың", "ің")),
    "acc": ({"V": "н", "R": "д", "L": "д", "Z": "д", "N": "д", "T": "т"}, ("ы", "і")),
    "dat": ({"V": "ғ", "R": "ғ", "L": "ғ", "Z": "ғ", "N": "ғ", "T": "қ"}, ("а", "е")),
    "loc": ({"V": "д", "R": "д", "L": "д", "Z": "д", "N": "д", "T": "т"}, ("а", "е")),
    "abl": ({"V": "д", "R": "д", "L": "д", "Z": "д", "N": "н", "T": "т"}, ("ан", "ен")),
    "ins": ({"V": "м", "R": "м", "L": "м", "Z": "б", "N": "м", "T": "п"}, ("ен", "ен")),
}
FRONT_OF = {"ғ": "г", "қ": "к"}
FEATURES = ("pl", "gen", "acc", "dat", "loc", "abl", "ins",
            "pl_gen", "pl_acc", "pl_dat", "pl_loc", "pl_abl", "pl_ins", "poss3", "poss1")
NOMINAL_EVIDENCE = ("pl", "dat", "loc", "abl", "ins")  # forms a verb stem never takes (unlike -ды, -дың)
# lexicon entries that are inflected words themselves (plurals, participles) rather than noun lemmas
NOT_LEMMA_ENDINGS = ("лар", "лер", "дар", "дер", "тар", "тер", "ған", "ген", "қан", "кен",
                     "атын", "етін", "йтын", "йтін")
PRONOUNS = frozenset("мен сен ол біз сіз олар бұл осы сол мына ана кім не өз өзі бәрі барлық мынау анау".split())


def harmony(stem: str) -> str | None:
    """"back" / "front" from the last vowel; None when that vowel does not decide it (и у ю я ё э)."""
    for ch in reversed(stem):
        if ch in BACK:
            return "back"
        if ch in FRONT:
            return "front"
        if ch in "иуюяёэ":
            return None
    return None


def regular_stem(stem: str) -> bool:
    """A stem whose suffixes the rules fix: Kazakh letters only, a deciding vowel, a known final class."""
    return (len(stem) >= 3 and stem.isalpha() and stem == stem.lower() and not set(stem) & LOAN_LETTERS
            and harmony(stem) is not None and stem[-1] in FINAL_CLASS)


def _suffix(stem: str, case: str) -> str | None:
    first, (back, front) = CASES[case]
    cls, side = FINAL_CLASS[stem[-1]], harmony(stem)
    c = first[cls]
    if case == "dat" and cls == "T" and stem[-1] in "кқ" and (stem[-1] == "к") != (side == "front"):
        return None  # a back stem in -к or a front one in -қ (loans): the dative is not fixed
    if side == "front":
        c = FRONT_OF.get(c, c)
    return c + (back if side == "back" else front)


def inflect(stem: str, feature: str) -> str | None:
    """The inflected form of a regular noun stem (`FEATURES`), or None where the rules do not fix it."""
    if not regular_stem(stem):
        return None
    if feature.startswith("pl_"):
        plural = inflect(stem, "pl")
        suffix = plural and _suffix(plural, feature[3:])
        return suffix and plural + suffix
    if feature in CASES:
        suffix = _suffix(stem, feature)
        return suffix and stem + suffix
    vowel = "ы" if harmony(stem) == "back" else "і"
    cls = FINAL_CLASS[stem[-1]]
    if stem[-1] in "кқп" or (feature == "poss1" and cls == "V"):
        return None
    if feature == "poss3":
        return stem + ("с" + vowel if cls == "V" else vowel)
    return stem + vowel + "м"


def inflection_pool(stems: set[str], attested: set[str], exclude: frozenset[str] = frozenset(),
                    ) -> list[tuple[str, str, str]]:
    """(lemma, feature, form) triples that are correct by rule and checked against real text.

    A lemma is a regular lexicon stem that is not itself one of the generated forms (the .dic also lists
    inflected words such as кітаптар, or a participle) nor a pronoun or in `exclude` (stopwords). It counts as a noun only when
    at least two of its `NOMINAL_EVIDENCE` forms occur in `attested` (a verb stem never takes them). A form
    is kept when it occurs in `attested` and no other (lemma, feature) pair generates it.
    """
    regular = sorted(s for s in stems if regular_stem(s) and s not in exclude and s not in PRONOUNS
                     and not s.endswith(NOT_LEMMA_ENDINGS))
    forms = {s: {f: inflect(s, f) for f in FEATURES} for s in regular}
    makers: dict[str, int] = {}
    for by_feature in forms.values():
        for form in filter(None, by_feature.values()):
            makers[form] = makers.get(form, 0) + 1
    pool = []
    for lemma in regular:
        by_feature = forms[lemma]
        if lemma in makers or sum(by_feature[f] in attested for f in NOMINAL_EVIDENCE) < 2:
            continue
        pool += [(lemma, f, form) for f, form in by_feature.items()
                 if form and form in attested and makers[form] == 1]
    return pool
