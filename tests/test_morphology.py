"""Kazakh morpheme segmentation (Hunspell lexicon) and token/morpheme boundary alignment."""

from __future__ import annotations

from collections import Counter

import pytest

from qazlm.tokenizer.morphology import HunspellSegmenter, boundary_alignment


@pytest.fixture(scope="module")
def toy_lexicon(tmp_path_factory):
    d = tmp_path_factory.mktemp("lex")
    (d / "kk.dic").write_text("3\nбала/A\nжүрек/B\nмектеп/A\n", encoding="utf-8")
    (d / "kk.aff").write_text("SET UTF-8\nSFX A N 3\nSFX A 0 лар [аоуұыэ]\nSFX A 0 тер .\nSFX A 0 да .\n"
                              "SFX B N 2\nSFX B к гім к\nSFX B 0 ымыз .\nSFX B 0 ға .\nSFX B 0 ы .\n"
                              "SFX B 0 мыз .\nSFX B 0 ім .\n", encoding="utf-8")
    return HunspellSegmenter(d / "kk.dic")


def test_toy_segmentation(toy_lexicon):
    seg = toy_lexicon
    assert seg.analyze("балаларымызға") == ["бала", "лар", "ымыз", "ға"]  # multi-letter suffixes win
    assert seg.analyze("Мектептерде") is None  # "де" is no suffix here
    assert seg.analyze("мектептерда") == ["мектеп", "тер", "да"]
    assert seg.analyze("Балалар") == ["Бала", "лар"]  # case kept, lookup lower-cased
    assert seg.analyze("жүрегім") == ["жүрег", "ім"]  # жүрек + ім with the final к voiced to г
    assert seg.analyze("бала") == ["бала"]
    assert seg.segment("Жеңіске") == ["Жеңіске"]  # unknown words come back whole
    assert seg.boundaries("балаларымызға") == {4, 7, 11}
    assert seg.boundaries("xyz") is None


def test_real_lexicon_segments(shared):
    from qazlm.tokenizer.morphology import get_segmenter, segment_word

    seg = get_segmenter(str(shared / "data" / "lexicon" / "kk_KZ.dic"))
    assert seg.analyze("балаларымызға") == ["бала", "лар", "ымыз", "ға"]
    assert seg.analyze("мектептерде") == ["мектеп", "тер", "де"]
    assert seg.analyze("келдіңіздер") == ["кел", "ді", "ңіз", "дер"]
    for w in ["Жеңіске", "Қазақстанның", "университетінің", "ауырған", "x"]:
        assert "".join(segment_word(w)) == w


def test_boundary_alignment_hand_case(toy_lexicon):
    class Halves:
        """Splits each word in the middle: one boundary at len // 2."""

        def word_boundaries(self, words):
            return [{len(w) // 2} for w in words]

    words = Counter({"балалар": 3, "мектептерда": 1, "zzz": 5})
    res = boundary_alignment(Halves(), words, segmenter=toy_lexicon)
    # балалар: gold {4}, pred {3} -> fp 1, fn 1 (x3); мектептерда: gold {6, 9}, pred {5} -> fp 1, fn 2
    assert res["precision"] == 0.0 and res["recall"] == 0.0
    assert res["words"] == 2
    assert res["coverage"] == pytest.approx(4 / 9)

    class Exact:
        def word_boundaries(self, words):
            return [toy_lexicon.boundaries(w) for w in words]

    exact = boundary_alignment(Exact(), words, segmenter=toy_lexicon)
    assert exact["precision"] == exact["recall"] == exact["f1"] == 1.0
