"""Multi-turn tasks whose second user turn refers back to the first answer ("shorter", "now in Latin
script", "how many words is that?"); the second answer is computed from the first, so it is correct by
construction. (`multiturn`, "now into <language>", lives in `tasks`.)

Not built: "why?" after a topic label. SIB-200 labels are human judgements; no reason for them can be
computed from the text (keywords would be an invented justification), so no item claims one.
"""

from __future__ import annotations

from qazlm.paths import LANGS
from qazlm.sft import sources
from qazlm.sft.prompts import P
from qazlm.sft.script import convertible, to_latin
from qazlm.sft.tasks import _SENT_END, _WORD, TaskContext, _pick, flores_ids, item, reorder


def _add_turn(it: dict, task: str, user: str, answer: str) -> dict:
    it["messages"] += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    it["task"] = task
    return it


def followup_shorter(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Put shuffled sentences in order, then "shorter: only the first sentence" -> the first sentence of
    that paragraph."""
    return [_add_turn(it, "followup_shorter", P[it["lang"]]["shorter"],
                      _SENT_END.split(it["messages"][-1]["content"])[0])
            for it in reorder(ctx, counts)]


def _flores_pairs(ctx: TaskContext, lang: str, n: int, targets, keep) -> list[tuple[int, str, str]]:
    """Up to `n` (FLORES+ dev line, source language, target language) for a user writing in `lang`: the
    source is `lang` unless `lang` is the target (then another language); the target line passes `keep`."""
    out = []
    ids = flores_ids(ctx.clean)
    for i in _pick(ctx.rng, ids, len(ids)):
        target = ctx.rng.choice([t for t in targets if t != lang] or list(targets))
        src = lang if lang != target else ctx.rng.choice([x for x in LANGS if x != target])
        if keep(sources.flores_dev(target)[i]):
            out.append((i, src, target))
        if len(out) == n:
            break
    return out


def _translate_then(ctx: TaskContext, counts: dict[str, int], task: str, targets, keep, follow) -> list[dict]:
    """Translate a FLORES+ dev line (the answer is the aligned line), then a follow-up turn: `follow(lang,
    answer)` gives (question, answer)."""
    out = []
    for lang, n in counts.items():
        for i, src, target in _flores_pairs(ctx, lang, n, targets, keep):
            answer = sources.flores_dev(target)[i]
            out.append(item(task, lang, "flores_plus_dev", f"flores:{i}",
                            P[lang]["translate"].format(tgt=P[lang]["lang"][target], text=sources.flores_dev(src)[i]),
                            answer, more=[follow(lang, answer)]))
    return out


def followup_latin(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Translate into Kazakh, then "now in the Latin alphabet" -> `script.to_latin` of that answer; only
    lines whose Latin form reads back exactly (`script.convertible`)."""
    return _translate_then(ctx, counts, "followup_latin", ("kk",), convertible,
                           lambda lang, kk: (P[lang]["in_latin"], to_latin(kk)))


def countable_words(text: str) -> int | None:
    """The number of words when every space-separated token holds exactly one run of letters and no digit
    (stricter than `count_words`: is "CG4684" a word?), else None."""
    tokens = text.split()
    ok = tokens and not any(ch.isdigit() for ch in text) and all(len(_WORD.findall(t)) == 1 for t in tokens)
    return len(tokens) if ok else None


def followup_count(ctx: TaskContext, counts: dict[str, int]) -> list[dict]:
    """Translate into another language, then "how many words are in your answer?" (`countable_words`)."""
    return _translate_then(ctx, counts, "followup_count", LANGS, countable_words,
                           lambda lang, text: (P[lang]["count_answer"], str(countable_words(text))))
