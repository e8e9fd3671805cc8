"""Tokenizer metrics as small pure functions, plus `evaluate` that applies them to one tokenizer.

Definitions (all per language):
- fertility: tokens per whitespace word (lower = cheaper text).
- premium: tokens for a language / tokens for the same parallel English lines (Petrov et al. 2023);
  reported as the total ratio and the median of per-sentence ratios.
- split shares: share of (punctuation-stripped) words that need >= 2 and >= 4 tokens, each word encoded
  on its own with a leading space, i.e. as it appears inside running text.
- vocabulary utilization: distinct token ids seen / vocab size.
- fallback rate: share of tokens that are unknown / byte-fallback tokens (see LoadedTokenizer).
- byte-token rate: share of tokens that are not whole characters on their own (they decode to U+FFFD):
  the byte-level BPE equivalent of byte fallback, e.g. a Kazakh letter split into its two UTF-8 bytes.
- Renyi efficiency (Zouhar et al. 2023, "Tokenization and the noiseless channel"):
  H_alpha(p) / log|V| with H_alpha = log(sum p_i^alpha) / (1 - alpha) over the unigram token distribution;
  alpha = 2.5 is the value they found to correlate best with downstream BLEU.
"""

from __future__ import annotations

import math
import statistics
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

PUNCT = string.punctuation + "«»“”„‘’—–…"


def count_words(text: str) -> int:
    """Whitespace-separated words (the unit of fertility in most tokenizer papers)."""
    return len(text.split())


def fertility(n_tokens: int, n_words: int) -> float:
    return n_tokens / n_words if n_words else float("nan")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def premium(tokens_lang: Sequence[int], tokens_en: Sequence[int]) -> tuple[float, float]:
    """(total, median) premium from per-line token counts of line-aligned parallel text.

    Lines where English has 0 tokens are skipped for the median (no ratio is defined).
    """
    if len(tokens_lang) != len(tokens_en):
        raise ValueError(f"premium needs parallel lines ({len(tokens_lang)} vs {len(tokens_en)})")
    total = ratio(sum(tokens_lang), sum(tokens_en))
    per_line = [a / b for a, b in zip(tokens_lang, tokens_en) if b]
    return total, (statistics.median(per_line) if per_line else float("nan"))


def split_shares(tokens_per_word: Sequence[int], weights: Sequence[int] | None = None) -> tuple[float, float]:
    """Share of words split into >= 2 and >= 4 tokens (`weights` = word frequencies)."""
    weights = weights if weights is not None else [1] * len(tokens_per_word)
    total = sum(weights)
    if not total:
        return float("nan"), float("nan")
    ge2 = sum(w for n, w in zip(tokens_per_word, weights) if n >= 2)
    ge4 = sum(w for n, w in zip(tokens_per_word, weights) if n >= 4)
    return ge2 / total, ge4 / total


def vocab_utilization(ids_seen: Iterable[int], vocab_size: int) -> float:
    return len(set(ids_seen)) / vocab_size if vocab_size else float("nan")


def renyi_entropy(counts: Iterable[int], alpha: float = 2.5) -> float:
    """Renyi entropy (nats) of the distribution given by `counts`; alpha = 1 is Shannon entropy."""
    counts = [c for c in counts if c > 0]
    total = sum(counts)
    if not total:
        return float("nan")
    probs = [c / total for c in counts]
    if alpha == 1:
        return -sum(p * math.log(p) for p in probs)
    return math.log(sum(p ** alpha for p in probs)) / (1 - alpha)


def renyi_efficiency(counts: Iterable[int], vocab_size: int, alpha: float = 2.5) -> float:
    """H_alpha(unigram token distribution) / log(vocab_size): 1.0 = every token used equally often."""
    return renyi_entropy(counts, alpha) / math.log(vocab_size) if vocab_size > 1 else float("nan")


def embedding_params(vocab_size: int, d_model: int, tied: bool = True) -> int:
    """Parameters spent on the vocabulary: input embedding (+ a separate output head when untied)."""
    return vocab_size * d_model * (1 if tied else 2)


def training_tokens(byte_budget: float, bytes_per_token: float) -> float:
    """Tokens a model sees when trained on `byte_budget` bytes of text in this language."""
    return byte_budget / bytes_per_token if bytes_per_token else float("nan")


def boundary_prf(predicted: Iterable[set[int]], gold: Iterable[set[int]]) -> dict[str, float]:
    """Micro precision/recall/F1 of predicted boundary positions against gold ones, word by word."""
    tp = fp = fn = 0
    for p, g in zip(predicted, gold):
        tp += len(p & g)
        fp += len(p - g)
        fn += len(g - p)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1}


def clean_word(word: str) -> str:
    return word.strip(PUNCT)


def word_counts(lines: Iterable[str]) -> Counter:
    """Frequencies of punctuation-stripped whitespace words."""
    c: Counter = Counter()
    for line in lines:
        c.update(w for w in (clean_word(x) for x in line.split()) if w)
    return c


def unknown_among(tok, ids) -> set[int]:
    """Ids among `ids` that are unknown/byte-fallback tokens of `tok` (LoadedTokenizer.unknown_ids)."""
    if hasattr(tok, "fallback_among"):
        return set(tok.fallback_among(ids))
    unknown = getattr(tok, "unknown_ids", frozenset())
    return {i for i in ids if i in unknown}


def partial_char_ids(tok, ids) -> set[int]:
    """Ids among `ids` whose text alone is not whole characters (decodes to U+FFFD): raw UTF-8 bytes."""
    return {i for i in ids if "\ufffd" in tok.decode([i])}


def evaluate(tok, texts_by_lang: dict[str, list[str]], parallel: bool, *, ref_lang: str = "en",
             d_model: int | None = None, tied: bool = True, byte_budget: float | None = None,
             alpha: float = 2.5, morph: Callable | None = None, morph_lang: str = "kk",
             morph_max_words: int = 5000) -> dict[str, dict[str, float]]:
    """All metrics of one LoadedTokenizer on text per language -> {lang: {metric: value}}.

    `parallel`: the languages' lines are aligned, so premium vs `ref_lang` is computed.
    `morph(tok, word_counter, max_words) -> {precision, recall, f1, words}` adds morphology alignment
    for `morph_lang` (see qazlm.tokenizer.morphology.boundary_alignment).
    """
    out: dict[str, dict[str, float]] = {}
    per_line: dict[str, list[int]] = {}
    for lang, lines in texts_by_lang.items():
        t0 = time.perf_counter()
        encoded = tok.encode_batch(lines)
        seconds = time.perf_counter() - t0
        lens = [len(e) for e in encoded]
        per_line[lang] = lens
        n_tok = sum(lens)
        n_bytes = sum(len(x.encode("utf-8")) for x in lines)
        n_chars = sum(len(x) for x in lines)
        n_words = sum(count_words(x) for x in lines)
        counts = Counter(i for e in encoded for i in e)
        fb = unknown_among(tok, counts)
        decoded = [tok.decode(e) for e in encoded]
        words = word_counts(lines)
        word_list = list(words)
        word_lens = [len(e) for e in tok.encode_batch([" " + w for w in word_list])]
        ge2, ge4 = split_shares(word_lens, [words[w] for w in word_list])
        m = {
            "lines": len(lines), "words": n_words, "bytes": n_bytes, "tokens": n_tok,
            "fertility": fertility(n_tok, n_words),
            "chars_per_token": ratio(n_chars, n_tok),
            "bytes_per_token": ratio(n_bytes, n_tok),
            "split_ge2": ge2, "split_ge4": ge4,
            "vocab_utilization": vocab_utilization(counts, tok.vocab_size),
            "fallback_rate": ratio(sum(counts[i] for i in fb), n_tok),
            "byte_token_rate": ratio(sum(counts[i] for i in partial_char_ids(tok, counts)), n_tok),
            "roundtrip_exact": ratio(sum(d == x for d, x in zip(decoded, lines)), len(lines)),
            "renyi_efficiency": renyi_efficiency(counts.values(), tok.vocab_size, alpha),
            "encode_mb_s": ratio(n_bytes / 1e6, seconds),
        }
        if byte_budget:
            m["train_tokens"] = training_tokens(byte_budget, m["bytes_per_token"])
        if d_model:
            m["embedding_params"] = embedding_params(tok.vocab_size, d_model, tied)
        if morph is not None and lang == morph_lang:
            res = morph(tok, words, morph_max_words)
            m.update({f"morph_{k}": v for k, v in res.items()})
        out[lang] = m
    if parallel and ref_lang in per_line:
        for lang, lens in per_line.items():
            total, median = premium(lens, per_line[ref_lang])
            out[lang]["premium_total"] = total
            out[lang]["premium_median"] = median
    return out
