"""Kazakh-only tasks: script conversion, homoglyph repair, morphology (answers checked before use)."""

from __future__ import annotations

import re

from qazlm.sft import sources
from qazlm.sft.morph import lemma_of, unambiguous_analysis
from qazlm.sft.prompts import KK
from qazlm.sft.script import convertible, inject_homoglyphs, to_cyrillic, to_latin
from qazlm.sft.tasks import TaskContext, _corpus, _pick, item
from qazlm.text.normalize import repair_homoglyphs

_WORD = re.compile(r"[^\W\d_]+")


def _kk_sentences(ctx: TaskContext, n: int, keep) -> list[tuple[str, str]]:
    pool = [(s, t) for s, t in _corpus(ctx, "kk") if len(t) <= 300 and keep(t)]
    return _pick(ctx.rng, pool, n)


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


def _analysed_words(ctx: TaskContext, n: int) -> list[tuple[str, str, list[str], str]]:
    from qazlm.tokenizer.morphology import default_lexicon, get_segmenter

    dic = ctx.lexicon or str(default_lexicon())
    if ctx.lexicon is None and not default_lexicon().exists():
        sources.warn(f"{dic}: Kazakh Hunspell lexicon not found; morphology tasks skipped")
        return []
    seg = get_segmenter(dic)
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
