"""Built-in task families: every answer is computed from its source, so it is correct by construction.

A task function gets a `TaskContext` (its own seeded random generator, the config) and the number of items
wanted per language, and returns items `{"messages", "task", "lang", "source", "key"}`; `key` names the
source unit (a FLORES line, a corpus line, a word), which decides the held-out split.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from qazlm.paths import LANGS, SAMPLE_DIR
from qazlm.sft import sources
from qazlm.sft.prompts import LABELS, NAMES, P, SIB_LABELS

_WORD = re.compile(r"[^\W\d_]+")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[A-ZА-ЯЁӘҒҚҢӨҰҮҺІ«\"])")


@dataclass
class TaskContext:
    rng: random.Random
    corpus_dir: str | None
    model_name: str
    lexicon: str | None = None
    clean: Callable[[str], bool] = lambda text: True   # False: the text overlaps an evaluation split (clean.is_clean)


@functools.lru_cache(maxsize=4)
def flores_ids(clean: Callable[[str], bool]) -> tuple[int, ...]:
    """The FLORES+ dev lines a task may use: those clean in all three languages (89 of them are SIB-200 test items,
    which decontamination would set aside after the pick)."""
    lines = [sources.flores_dev(lang) for lang in LANGS]
    return tuple(i for i in range(len(lines[0])) if all(clean(text[i]) for text in lines))


def item(task: str, lang: str, source: str, key: str, user: str, answer: str, system: str | None = None,
         more: list[tuple[str, str]] = ()) -> dict:
    """One conversation: optional system prompt, user -> assistant, then follow-up (user, assistant) turns."""
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    for u, a in more:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return {"messages": msgs, "task": task, "lang": lang, "source": source, "key": key}


def _pick(rng: random.Random, pool, k: int) -> list:
    return rng.sample(list(pool), min(k, len(pool)))


def _pick_where(rng: random.Random, pool, k: int, keep) -> list:
    """Up to `k` random members of `pool` that pass `keep`, testing only as many as needed (a costly test
    on a large pool, e.g. script round trips, then runs on a few hundred lines, not all of them)."""
    pool = list(pool)
    out = []
    for i in rng.sample(range(len(pool)), len(pool)):
        if len(out) == k:
            break
        if keep(pool[i]):
            out.append(pool[i])
    return out


def _others(lang: str) -> list[str]:
    return [x for x in LANGS if x != lang]


def translation(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """All six directions: the user writes in the source language; the answer is the aligned FLORES+ dev line."""
    out = []
    for src, n in counts.items():
        lines = sources.flores_dev(src)
        for j, i in enumerate(_pick(ctx.rng, flores_ids(ctx.clean), n)):
            tgt = _others(src)[j % 2]
            out.append(item("translation", src, "flores_plus_dev", f"flores:{i}",
                            P[src]["translate"].format(tgt=P[src]["lang"][tgt], text=lines[i]),
                            sources.flores_dev(tgt)[i]))
    return out


def multiturn(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Translate, then "now into <the third language>": the second answer refers back to the first text."""
    out = []
    for src, n in counts.items():
        lines = sources.flores_dev(src)
        for i in _pick(ctx.rng, flores_ids(ctx.clean), n):
            first, second = ctx.rng.sample(_others(src), 2)
            out.append(item("multiturn", src, "flores_plus_dev", f"flores:{i}",
                            P[src]["translate"].format(tgt=P[src]["lang"][first], text=lines[i]),
                            sources.flores_dev(first)[i],
                            more=[(P[src]["now_into"].format(tgt=P[src]["lang"][second]),
                                   sources.flores_dev(second)[i])]))
    return out


def system_language(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """System prompt fixes the reply language; the user writes in another one; the answer is the aligned line."""
    out = []
    for reply, n in counts.items():
        lines = sources.flores_dev(reply)
        for i in _pick(ctx.rng, flores_ids(ctx.clean), n):
            asked = ctx.rng.choice(_others(reply))
            out.append(item("system_language", reply, "flores_plus_dev", f"flores:{i}",
                            P[asked]["what_says"].format(text=sources.flores_dev(asked)[i]), lines[i],
                            system=P[reply]["only_lang"]))
    return out


def topic(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """SIB-200 train/dev topic classification; the answer is the gold label in the prompt's language."""
    out = []
    for lang, n in counts.items():
        rows = sources.sib_rows(lang)
        if not rows:
            sources.warn(f"{sources.sib_dir()}: SIB-200 train/dev not found; topic task skipped")
            return []
        labels = LABELS[lang]
        for idx, cat, text in _pick_where(ctx.rng, rows, n, lambda row: ctx.clean(row[2])):
            options = ", ".join(labels[c] for c in SIB_LABELS)
            out.append(item("topic", lang, "sib200", f"flores_sib:{idx}",
                            P[lang]["topic"].format(options=options, text=text), labels[cat]))
    return out


def _corpus(ctx: TaskContext, lang: str) -> tuple[tuple[str, str], ...]:
    return sources.corpus_lines(ctx.corpus_dir or str(SAMPLE_DIR), lang)


def count_words(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Words = runs of letters; sentences whose space-separated tokens each hold exactly one such run."""
    out = []
    for lang, n in counts.items():
        pool = [(s, t) for s, t in _corpus(ctx, lang)
                if len(t) < 160 and all(len(_WORD.findall(tok)) == 1 for tok in t.split())]
        for src, text in _pick(ctx.rng, pool, n):
            out.append(item("count_words", lang, src, f"{src}:{text}",
                            P[lang]["count_words"].format(text=text), str(len(_WORD.findall(text)))))
    return out


def fill_gap(ctx: TaskContext, counts: dict[str, int], task: str = "fill_gap", system: bool = False) -> list[dict]:
    """One word (>= 4 letters, once in the sentence) becomes ___; the answer is that word."""
    out = []
    for lang, n in counts.items():
        pool = [(s, t) for s, t in _corpus(ctx, lang) if len(t) < 200]
        for src, text in _pick(ctx.rng, pool, n * 2):
            words = [w for w in _WORD.findall(text) if len(w) >= 4 and len(re.findall(rf"\b{w}\b", text)) == 1]
            if not words or sum(x["lang"] == lang for x in out) >= n:
                continue
            word = ctx.rng.choice(words)
            gapped = re.sub(rf"\b{word}\b", "___", text, count=1)
            out.append(item(task, lang, src, f"{src}:{text}", P[lang]["fill_gap"].format(text=gapped), word,
                            system=P[lang]["one_word"] if system else None))
    return out


def system_short(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Length limit in the system prompt ("one word"), honoured by a fill-the-gap answer."""
    return fill_gap(ctx, counts, task="system_short", system=True)


def continue_text(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """The first half of a line (cut at a word boundary); the answer is the rest of the line."""
    out = []
    for lang, n in counts.items():
        pool = [(s, t) for s, t in _corpus(ctx, lang) if len(t.split()) >= 8]
        for src, text in _pick(ctx.rng, pool, n):
            words = text.split()
            cut = len(words) // 2
            out.append(item("continue", lang, src, f"{src}:{text}",
                            P[lang]["continue"].format(text=" ".join(words[:cut])), " ".join(words[cut:])))
    return out


def reorder(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """The sentences of one paragraph (3-5), shuffled; the answer is the paragraph in its original order.
    Only paragraphs whose sentence split is unambiguous (`sentences_of`: no initials or abbreviations)."""
    out = []
    for lang, n in counts.items():
        pool = [(s, t, parts) for s, t in _corpus(ctx, lang)
                if 3 <= len(parts := sentences_of(t) or []) <= 5 and len(set(parts)) == len(parts)]
        for src, text, parts in _pick(ctx.rng, pool, n):
            shuffled = parts[:]
            while shuffled == parts:
                ctx.rng.shuffle(shuffled)
            listing = "\n".join(f"{k + 1}. {s}" for k, s in enumerate(shuffled))
            out.append(item("reorder", lang, src, f"{src}:{text}", P[lang]["reorder"].format(text=listing),
                            " ".join(parts)))
    return out


def identity(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """"Who are you?" -> the configured model name (`model_name`)."""
    out = []
    for lang, n in counts.items():
        for q in [ctx.rng.choice(P[lang]["who"]) for _ in range(n)]:
            out.append(item("identity", lang, "generated", f"identity:{lang}:{q}", q,
                            P[lang]["i_am"].format(name=ctx.model_name)))
    return out


def system_persona(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """The system prompt gives a persona name; asked its name, the assistant uses that one."""
    out = []
    for lang, n in counts.items():
        for _ in range(n):
            name, q = ctx.rng.choice(NAMES), ctx.rng.choice(P[lang]["your_name"])
            out.append(item("system_persona", lang, "generated", f"persona:{lang}:{name}:{q}", q,
                            P[lang]["my_name"].format(name=name), system=P[lang]["persona"].format(name=name)))
    return out


def alpaca(ctx: TaskContext, counts: dict[str, int], lang: str) -> list[dict]:
    """The Alpaca seed tasks (instruction [+ input] -> output), one conversation per instance."""
    rows = [(r, inst) for r in sources.alpaca_seed(lang) for inst in r.get("instances", [])
            if str(r.get("instruction", "")).strip() and str(inst.get("output", "")).strip()]
    if not rows:
        sources.warn(f"alpaca_seed_tasks_{lang}.jsonl not found under ../shared/data/sft; alpaca_{lang} task skipped")
    out = []
    for r, inst in _pick(ctx.rng, rows, sum(counts.values())):
        user = r["instruction"].strip() + (f"\n\n{inst['input'].strip()}" if str(inst.get("input", "")).strip() else "")
        out.append(item(f"alpaca_{lang}", lang, f"alpaca_seed_{lang}", f"alpaca:{r.get('id')}", user,
                        inst["output"].strip()))
    return out


def title(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """A paragraph of a titled Kazakh encyclopedia article -> the article's real title (asked in kk, ru, en).
    Only the Wikipedia-style Kazakh file has titles; other corpus files have none, so nothing is made up."""
    pool = sources.titled_paragraphs(ctx.corpus_dir or str(SAMPLE_DIR), "kk")
    if not pool:
        sources.warn("no titled articles in the Kazakh corpus; title task skipped")
    return [item("title", lang, src, f"title:{name}", P[lang]["title"].format(text=text), name)
            for lang, n in counts.items() for src, name, text in _pick(ctx.rng, pool, n)]


KEYWORDS_MAX = 3


def keywords_of(text: str, stop: frozenset[str]) -> list[str] | None:
    """The content words (3+ letters, lowercased, not in `stop`) that occur at least twice, most frequent
    first, ties in order of first occurrence, at most `KEYWORDS_MAX`; None unless there are two or more and
    the cut after the last one falls between two different counts (so the list is the only right answer)."""
    words = [w for w in (x.lower() for x in _WORD.findall(text)) if len(w) >= 3 and w not in stop]
    counts: dict[str, int] = {}
    for w in words:  # dicts keep insertion order: first occurrence breaks ties in the stable sort below
        counts[w] = counts.get(w, 0) + 1
    ranked = sorted((w for w in counts if counts[w] >= 2), key=lambda w: -counts[w])
    if len(ranked) < 2:
        return None
    if len(ranked) > KEYWORDS_MAX and counts[ranked[KEYWORDS_MAX - 1]] == counts[ranked[KEYWORDS_MAX]]:
        return None
    return ranked[:KEYWORDS_MAX]


def keywords(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Keywords by construction (`keywords_of`); the prompt states the rule, so the answer is checkable."""
    out = []
    for lang, n in counts.items():
        stop = sources.stopwords(lang)
        pool = [(s, t, kw) for s, t in _corpus(ctx, lang) if (kw := keywords_of(t, stop))]
        out += [item("keywords", lang, src, f"{src}:{text}", P[lang]["keywords"].format(text=text), ", ".join(kw))
                for src, text, kw in _pick(ctx.rng, pool, n)]
    return out


_INNER_STOP = re.compile(r"\.\.|…|[.!?][^\s.!?»\"”)]")  # ellipsis, or a stop inside a token (т.б., 3.5)


def _abbreviation(token: str) -> bool:
    """An initial or abbreviation before a capital would look like a sentence end: М. Ж. Mr. St. 1909 ж."""
    core = token.strip("«\"“(").rstrip("»\"”)")
    if not core.endswith("."):
        return False
    word = core[:-1]
    return len(word) == 1 or (word[:1].isupper() and len(word) <= 3) or word[-1:].isdigit()


def sentences_of(text: str) -> list[str] | None:
    """The sentences of `text` when the count is unambiguous: every . ! ? ends a sentence (no abbreviation,
    initial, ellipsis or number before or inside it) and each sentence starts with a capital; else None."""
    if _INNER_STOP.search(text) or any(_abbreviation(t) for t in text.split()):
        return None
    parts = _SENT_END.split(text)
    ends = re.findall(r"[.!?]+", text)
    if len(ends) != len(parts) or not all(p.rstrip("»\"”")[-1:] in ".!?" for p in parts):
        return None
    return parts


SENTENCE_COUNTS = range(2, 7)


def count_sentences(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Number of sentences of a passage: k consecutive corpus lines of one file, each a single sentence by
    `sentences_of`, k = 2-6 in turn. The corpus's own paragraphs are almost all two sentences long, and a
    model taught on them answers "2" to many long prompts (docs/sft.md)."""
    out, turn = [], 0
    for lang, n in counts.items():
        lines = [(src, t) for src, t in _corpus(ctx, lang)
                 if t[-1] in ".!?" and len(sentences_of(t) or ()) == 1]  # joined, the count stays unambiguous
        starts = {k: [i for i in range(len(lines) - k + 1) if lines[i][0] == lines[i + k - 1][0]
                      and sum(len(t) for _, t in lines[i:i + k]) <= 600] for k in SENTENCE_COUNTS}
        used: set[int] = set()
        for _ in range(n):
            k, turn = SENTENCE_COUNTS[turn % len(SENTENCE_COUNTS)], turn + 1
            start = next((i for i in _pick(ctx.rng, starts[k], 32) if not used & set(range(i, i + k))), None)
            if start is None:
                continue
            used.update(range(start, start + k))
            src, text = lines[start][0], " ".join(t for _, t in lines[start:start + k])
            out.append(item("count_sentences", lang, src, f"{src}:{text}",
                            P[lang]["count_sentences"].format(text=text), str(k)))
    return out
