"""Metric functions on hand-computed cases (a tiny fake tokenizer) and one real reference figure."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest

from qazlm.tokenizer import metrics as M


class CharTok:
    """Fake tokenizer: one token per non-space character, preceding spaces glued to it (like byte-level
    BPE's ' word'); lowercases (so round trip fails on capitals); characters outside a-d are <unk> (id 0)."""

    name = "char"
    vocab_size = 100
    unknown_ids = frozenset({0})

    def __init__(self):
        self.vocab = {"<unk>": 0}

    def _id(self, piece: str) -> int:
        if piece.strip() not in "abcd" or not piece.strip():
            return 0
        return self.vocab.setdefault(piece, len(self.vocab))

    def encode_batch(self, texts):
        return [[self._id(p) for p in re.findall(r"\s*\S", t.lower())] for t in texts]

    def decode(self, ids):
        inv = {i: p for p, i in self.vocab.items()}
        return "".join(inv[i] if i != self.vocab.get(" d") else "\ufffd" for i in ids)  # ' d': a raw byte


TEXTS = {"kk": ["Abab", "abcdab"], "ru": ["ax", "ab"], "en": ["ab", "abcd"]}


@pytest.fixture(scope="module")
def result():
    return M.evaluate(CharTok(), TEXTS, parallel=True, d_model=10, tied=False, byte_budget=1000)


def test_fertility_and_sizes(result):
    en, kk = result["en"], result["kk"]
    assert (en["tokens"], en["words"], en["bytes"]) == (6, 2, 6)
    assert en["fertility"] == pytest.approx(3.0)
    assert kk["fertility"] == pytest.approx(5.0)
    assert en["chars_per_token"] == pytest.approx(1.0) and en["bytes_per_token"] == pytest.approx(1.0)


def test_premium_total_and_median(result):
    # kk per line 4/2 = 2.0 and 6/4 = 1.5: total 10/6, median 1.75; English against itself is 1
    assert result["kk"]["premium_total"] == pytest.approx(10 / 6)
    assert result["kk"]["premium_median"] == pytest.approx(1.75)
    assert result["en"]["premium_total"] == pytest.approx(1.0)
    assert M.premium([3, 4, 10], [1, 2, 2]) == pytest.approx((17 / 5, 3.0))
    with pytest.raises(ValueError):
        M.premium([1, 2], [1])


def test_word_splits_utilization_fallback_roundtrip(result):
    en, kk, ru = result["en"], result["kk"], result["ru"]
    assert (en["split_ge2"], en["split_ge4"]) == (1.0, 0.5)  # ' ab' = 2 tokens, ' abcd' = 4
    assert en["vocab_utilization"] == pytest.approx(4 / 100)  # a b c d seen
    assert ru["fallback_rate"] == pytest.approx(1 / 4)  # 'x' is <unk>
    assert en["fallback_rate"] == 0
    assert kk["roundtrip_exact"] == pytest.approx(0.5)  # 'Abab' comes back lowercased
    assert en["roundtrip_exact"] == 1.0
    assert en["encode_mb_s"] > 0
    assert result["kk"]["byte_token_rate"] == 0 and M.partial_char_ids(CharTok(), [0]) == set()


def test_costs(result):
    assert result["en"]["embedding_params"] == 100 * 10 * 2  # untied: embedding + output head
    assert M.embedding_params(32000, 512) == 32000 * 512
    assert result["kk"]["train_tokens"] == pytest.approx(1000 / 1.0)
    assert M.training_tokens(1e9, 4.0) == pytest.approx(2.5e8)


def test_renyi_on_known_distributions(result):
    # uniform over the whole vocabulary is perfectly efficient for every alpha
    assert M.renyi_efficiency([5] * 64, 64) == pytest.approx(1.0)
    # two equally likely tokens out of 4: H = ln 2, efficiency = ln 2 / ln 4 = 0.5 (any alpha)
    assert M.renyi_efficiency([7, 7, 0, 0], 4) == pytest.approx(0.5)
    # p = (1/2, 1/4, 1/4), alpha = 2.5: sum p^a = 2^-2.5 + 2 * 4^-2.5
    expected = math.log(2 ** -2.5 + 2 * 4 ** -2.5) / (1 - 2.5)
    assert M.renyi_entropy([2, 1, 1], 2.5) == pytest.approx(expected)
    assert M.renyi_entropy([1, 1, 1, 1], 1) == pytest.approx(math.log(4))  # alpha = 1 is Shannon
    # English text of the fake tokenizer: a b x2, c d x1 over vocab 100
    p = [1 / 3, 1 / 3, 1 / 6, 1 / 6]
    h = math.log(sum(x ** 2.5 for x in p)) / (1 - 2.5)
    assert result["en"]["renyi_efficiency"] == pytest.approx(h / math.log(100))


def test_small_helpers():
    assert M.count_words("  Жеңіске   жетті!\tok ") == 3
    assert math.isnan(M.fertility(3, 0))
    assert M.split_shares([1, 2, 5], [2, 1, 1]) == (0.5, 0.25)
    assert M.word_counts(["«Сәлем», әлем!", "әлем"]) == Counter({"әлем": 2, "Сәлем": 1})
    prf = M.boundary_prf([{2, 4}, {1}], [{2}, {1, 3}])  # tp 2, fp 1, fn 1
    assert prf["precision"] == pytest.approx(2 / 3) and prf["recall"] == pytest.approx(2 / 3)
    assert prf["f1"] == pytest.approx(2 / 3)


def test_morph_hook_runs_only_for_kazakh():
    calls = []

    def morph(tok, words, max_words):
        calls.append(sorted(words))
        return {"f1": 0.25, "words": len(words)}

    out = M.evaluate(CharTok(), {**TEXTS, "en": ["ab d"]}, parallel=False, morph=morph)
    assert out["en"]["byte_token_rate"] == pytest.approx(1 / 3)  # ' d' decodes to U+FFFD
    assert calls == [["Abab", "abcdab"]] and out["kk"]["morph_f1"] == 0.25
    assert "morph_f1" not in out["en"] and "premium_total" not in out["kk"]  # monolingual: no premium


def test_reference_figure_o200k_kazakh(shared):
    """GPT-4o o200k on FLORES+ devtest Kazakh: 2.45 tokens/word and premium 1.59 (shared/README.md)."""
    from qazlm.io import read_lines
    from qazlm.paths import flores_path
    from qazlm.tokenizer.loaders import load_tokenizer

    tok = load_tokenizer(str(shared / "tokenizers" / "gpt4o" / "o200k_base.tiktoken"))
    texts = {lang: read_lines(flores_path("devtest", lang)) for lang in ("kk", "en")}
    if not all(texts.values()):
        pytest.skip("FLORES+ devtest absent")
    out = M.evaluate(tok, texts, parallel=True)
    assert out["kk"]["fertility"] == pytest.approx(2.45, abs=0.01)
    assert out["kk"]["premium_total"] == pytest.approx(1.59, abs=0.01)
    assert out["kk"]["roundtrip_exact"] == 1.0
