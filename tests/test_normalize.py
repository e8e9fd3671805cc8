"""Normalization: entities, NFC, invisibles and Kazakh homoglyph repair on real corpus lines."""

import gzip
import html
import itertools
import re
import unicodedata

import pytest

from qazlm.paths import SAMPLE_DIR
from qazlm.text.normalize import normalize_text, repair_homoglyphs

WORD = re.compile(r"[^\W\d_]+")


@pytest.mark.parametrize("raw, fixed", [
    ("Жеңiске жетті", "Жеңіске жетті"),                      # apertium: Latin i in a Kazakh word
    ("жəне бəрі Əдемі", "және бәрі Әдемі"),                  # KazSAnDRA: Latin schwa U+0259 / U+018F
    ("Аллаh жаhан", "Аллаһ жаһан"),                          # Latin h for Kazakh һ
    ("мемлекеттiк университетiнде", "мемлекеттік университетінде"),  # KazNERD
    ("Aстана Kинопарк Tаза", "Астана Кинопарк Таза"),        # KazNERD: Latin capitals
    ("күйi тyрлi", "күйі түрлі"),                            # y in a front-vowel Kazakh word -> ү
    ("Hе знаю, пpи этом полyчи", "Не знаю, при этом получи"),  # fortunes-ru: Russian y -> у
    ("Netscaрe comрleted the backuр", "Netscape completed the backup"),  # Cyrillic р in English words
    ("CРU", "CPU"),
])
def test_homoglyph_repair(raw, fixed):
    assert normalize_text(raw) == fixed


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog.",
    "iPhone 15 сатылымда, IT-компания Apple",   # Latin brand names beside Kazakh words stay Latin
    "Qazaqstan Respublikasy — Қазақстан",       # Latin-script Kazakh is not 'repaired' into Cyrillic
])
def test_single_script_words_untouched(text):
    assert repair_homoglyphs(text) == text


def test_english_sample_words_never_change():
    """Every Latin-script word of the bundled English corpus survives normalization unchanged (HTML
    entities aside: the Python docs quote `&gt;`, which normalization decodes on purpose)."""
    for path in sorted((SAMPLE_DIR / "en").glob("*.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in itertools.islice(f, 3000):
                if html.unescape(line) != line:
                    continue  # quotes an entity (decoded on purpose): not a homoglyph question
                before = WORD.findall(unicodedata.normalize("NFC", line))
                assert WORD.findall(normalize_text(line)) == before, line


def test_real_apertium_line_is_repaired():
    with gzip.open(SAMPLE_DIR / "kk" / "apertium_wiki_texts.txt.gz", "rt", encoding="utf-8") as f:
        lines = [ln for ln in f if "Жеңiске" in ln]
    assert lines, "the bundled apertium text should contain the Latin-i homoglyph example"
    assert all("Жеңіске" in normalize_text(ln) and "Жеңiске" not in normalize_text(ln) for ln in lines)


def test_entities_nfc_invisibles_and_spaces():
    decomposed = "и\u0306"  # и + combining breve
    assert normalize_text(f"It&#39;s  ж{decomposed}\u00a0b\u200b\x07 &amp; c ") == "It's жй b & c"
    assert normalize_text("line one  \r\n  line two") == "line one\nline two"
    assert normalize_text("") == ""
