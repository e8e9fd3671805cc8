"""Kazakh tasks: script conversion, homoglyph repair, morphology (segment, lemma, inflect); answers checked before use."""

from __future__ import annotations

import functools
import re

from qazlm.paths import SAMPLE_DIR
from qazlm.sft import sources
from qazlm.sft.morph import inflection_pool, lemma_of, unambiguous_analysis
from qazlm.sft.prompts import FORM_NAMES, KK, P
from qazlm.sft.script import convertible, inject_homoglyphs, to_cyrillic, to_latin
from qazlm.sft.tasks import TaskContext, _corpus, _pick, _pick_where, item
from qazlm.text.normalize import repair_homoglyphs

_WORD = re.compile(r"[^\W\d_]+")


def _kk_sentences(ctx: TaskContext, n: int, keep) -> list[tuple[str, str]]:
    return _pick_where(ctx.rng, _corpus(ctx, "kk"), n, lambda st: len(st[1]) <= 300 and keep(st[1]))


def script_latin(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Cyrillic -> 2021 Latin, on sentences whose Latin form reads back exactly (see `script`)."""
    return [item("script_latin", "kk", src, f"{src}:{t}", KK["to_latin"].format(text=t), to_latin(t))
            for src, t in _kk_sentences(ctx, counts.get("kk", 0), convertible)]


def script_cyrillic(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """2021 Latin -> Cyrillic (the reverse direction; only sentences that round-trip)."""
    return [item("script_cyrillic", "kk", src, f"{src}:{t}", KK["to_cyrillic"].format(text=to_latin(t)),
                 to_cyrillic(to_latin(t)))
            for src, t in _kk_sentences(ctx, counts.get("kk", 0), convertible)]


def homoglyph(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Latin look-alikes injected into clean Cyrillic; kept only when the normalizer restores the original."""
    out = []
    clean = _kk_sentences(ctx, counts.get("kk", 0) * 2, lambda t: not t.isascii() and repair_homoglyphs(t) == t)
    for src, t in clean:
        dirty = inject_homoglyphs(t, ctx.rng)
        if dirty != t and repair_homoglyphs(dirty) == t and len(out) < counts.get("kk", 0):
            out.append(item("homoglyph", "kk", src, f"{src}:{t}", KK["homoglyph"].format(text=dirty), t))
    return out


def _segmenter(ctx: TaskContext):
    """The Hunspell segmenter of `ctx.lexicon` (default ../shared), or None with one warning when absent."""
    from qazlm.tokenizer.morphology import default_lexicon, get_segmenter

    dic = ctx.lexicon or str(default_lexicon())
    if ctx.lexicon is None and not default_lexicon().exists():
        sources.warn(f"{dic}: Kazakh Hunspell lexicon not found; morphology tasks skipped")
        return None
    return get_segmenter(dic)


def _analysed_words(ctx: TaskContext, n: int) -> list[tuple[str, str, list[str], str]]:
    seg = _segmenter(ctx)
    if seg is None:
        return []
    words = sorted({(src, w) for src, t in _corpus(ctx, "kk") for w in _WORD.findall(t)})
    found = []
    for src, w in _pick(ctx.rng, words, n * 20):
        parts = unambiguous_analysis(seg, w)
        if parts and len(found) < n and w not in {f[1] for f in found}:
            found.append((src, w, parts, lemma_of(seg, parts[0])))
    return found


def morph_segment(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Split a word into stem and suffixes (hyphen-joined), where the lexicon has one analysis."""
    return [item("morph_segment", "kk", "hunspell_kk", f"word:{w}", KK["segment"].format(word=w), "-".join(parts))
            for _, w, parts, _ in _analysed_words(ctx, counts.get("kk", 0))]


def morph_lemma(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """The dictionary stem of an inflected word (voicing undone: жүрегі -> жүрек)."""
    return [item("morph_lemma", "kk", "hunspell_kk", f"word:{w}", KK["lemma"].format(word=w), lemma)
            for _, w, _, lemma in _analysed_words(ctx, counts.get("kk", 0))]


@functools.lru_cache(maxsize=4)
def _inflections(dic: str, corpus_dir: str) -> tuple[tuple[str, str, str], ...]:
    from qazlm.data.steps import load_stopwords
    from qazlm.tokenizer.morphology import get_segmenter

    attested = {w for _, t in sources.corpus_lines(corpus_dir, "kk") for w in _WORD.findall(t) if w.islower()}
    return tuple(inflection_pool(get_segmenter(dic).stems, attested, load_stopwords("kk")))


def morph_inflect(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """A noun lemma and a case / number / possessive -> the form the suffix rules give (`morph.inflect`),
    kept only when that form occurs in the Kazakh corpus. Asked in kk, ru and en; the answer is Kazakh."""
    seg = _segmenter(ctx)
    if seg is None:
        return []
    from qazlm.tokenizer.morphology import default_lexicon

    pool = _inflections(ctx.lexicon or str(default_lexicon()), ctx.corpus_dir or str(SAMPLE_DIR))
    return [item("morph_inflect", lang, "hunspell_kk", f"word:{lemma}",
                 P[lang]["inflect"].format(lemma=lemma, form=FORM_NAMES[lang][feature]), form)
            for lang, n in counts.items() for lemma, feature, form in _pick(ctx.rng, pool, n)]
