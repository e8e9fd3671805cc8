"""The prompts of the chat evaluation, each with its reference answer, metric and expected reply language.

An item is a dict: `set` (heldout / multiturn / sib200 / flores), `task` (what its scores are grouped by),
`lang` (the language the user writes in), `expect` (the language the reply must be in, None when language ID
cannot judge it), `messages` (the conversation up to the reply to generate), `reference` and `metric`
(`exact` or `chrf`). Sources: the held-out split of a `qazlm sft-data` folder (never trained on), SIB-200
**test** and FLORES+ **devtest** (both removed from the instruction data by its decontamination).
"""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.paths import LANGS
from qazlm.text.instructions import LANG_NAMES, SIB_LABELS, TOPIC_LABELS, topic_prompt, translate_prompt

# answers with one right form (labels, numbers, words, converted text, keyword lists, a sentence picked from the
# text): exact match after normalization; every other task (free text) is scored with chrF
EXACT_TASKS = {"topic", "count_words", "count_sentences", "fill_gap", "system_short", "morph_segment", "morph_lemma",
               "morph_inflect", "script_latin", "script_cyrillic", "homoglyph", "keywords", "title",
               "followup_shorter", "followup_latin", "followup_count"}
# replies language ID cannot judge: Kazakh in Latin letters (no class for it), and article titles (Kazakh names,
# whatever language the question is asked in)
NO_LANGUAGE_TASKS = {"script_latin", "followup_latin", "title"}
# the reply is in Kazakh whatever language the question is asked in
KAZAKH_REPLY_TASKS = {"morph_inflect"}
FLORES_DIRECTIONS = [(s, t) for s in LANGS for t in LANGS if s != t]


def asked_language(instruction: str, user_lang: str) -> str | None:
    """The target language a translation instruction names (on its first line), in the user's wording."""
    first = instruction.splitlines()[0].lower() if instruction else ""
    names = LANG_NAMES.get(user_lang, {})
    found = [tgt for tgt, name in names.items() if name.lower() in first]
    return found[0] if len(found) == 1 else None


def expected_language(task: str, lang: str, messages: list[dict]) -> str | None:
    """Language the reply must be in: the translation target, the system prompt's language (system_language,
    whose `lang` is that language), else the language the user writes in."""
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if task in ("translation", "multiturn"):
        return asked_language(last_user, lang)
    if task in NO_LANGUAGE_TASKS:
        return None
    if task in KAZAKH_REPLY_TASKS:
        return "kk"
    if lang in LANGS:
        return lang
    from qazlm.text.langid import detect_language  # external data ("und"): the user's own language

    found = detect_language(last_user)[0]
    return found if found in LANGS else None


def _bad_record(r) -> str | None:
    """Why a held-out line cannot be used, or None. Tool-use conversations (a `tools` field: tool turns, calls
    without text) are valid here; `heldout_items` passes over them, as `qazlm.eval.tools` scores them."""
    if not isinstance(r, dict) or not isinstance(r.get("messages"), list) or not r["messages"]:
        return "no messages list"
    msgs = r["messages"]
    tool_use = bool(r.get("tools"))
    roles = ("system", "user", "assistant") + (("tool",) if tool_use else ())
    if any(not isinstance(m, dict) or m.get("role") not in roles
           or not (isinstance(m.get("content"), str) or tool_use and m.get("tool_calls")) for m in msgs):
        return "a message without a known role or text content"
    if msgs[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in msgs):
        return "no user turn, or it does not end with the assistant's reply"
    if not isinstance(r.get("task"), str) or not isinstance(r.get("lang"), str):
        return "no task or lang field"
    return None


def read_heldout(folder: str | Path) -> tuple[list[dict], list[dict]]:
    """(records, set-aside lines with a reason) of `<folder>/heldout.jsonl`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QazlmError(f"--sft-data {folder}: folder not found; build one with `qazlm sft-data -o {folder}`")
    path = folder / "heldout.jsonl"
    if not path.is_file():
        raise QazlmError(f"{path}: not found; --sft-data must be a `qazlm sft-data` output folder")
    kept, rejected = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except ValueError:
                r = None
            why = "invalid JSON" if r is None else _bad_record(r)
            (rejected.append({"line": n, "reason": why}) if why else kept.append(r))
    if not kept:
        raise QazlmError(f"{path}: no usable conversations ({len(rejected)} malformed lines); rebuild it with "
                         "`qazlm sft-data`")
    return kept, rejected


def _item(set_name, task, lang, messages, reference, metric) -> dict:
    return {"set": set_name, "task": task, "lang": lang, "expect": expected_language(task, lang, messages),
            "messages": messages, "reference": reference, "metric": metric}


def last_turn(messages: list[dict]) -> tuple[list[dict], str]:
    """(context, reference) for the last assistant turn. Earlier assistant turns stay as the reference wrote
    them: every model answers the same context, and a weak first reply does not decide whether a follow-up
    instruction ("now into <language>", "shorter", "how many words?") is followed."""
    return messages[:-1], messages[-1]["content"]


def heldout_items(records: list[dict], limit: int | None) -> list[dict]:
    """Held-out conversations but `multiturn` and tool use (`qazlm.eval.tools` scores those), the first `limit`
    of each task, asked for their last reply."""
    out, per_task = [], {}
    for r in records:
        if r["task"] == "multiturn" or r.get("tools") or per_task.get(r["task"], 0) == limit:
            continue
        per_task[r["task"]] = per_task.get(r["task"], 0) + 1
        context, reference = last_turn(r["messages"])
        metric = "exact" if r["task"] in EXACT_TASKS else "chrf"
        out.append(_item("heldout", r["task"], r["lang"], context, reference, metric))
    return out


def multiturn_items(records: list[dict], limit: int | None) -> list[dict]:
    """Second turns of held-out `multiturn` dialogues: translate, then "now into <the third language>"."""
    out = []
    for r in records:
        users = [m for m in r["messages"] if m["role"] == "user"]
        if r["task"] != "multiturn" or len(users) < 2 or len(out) == limit:
            continue
        out.append(_item("multiturn", "multiturn", r["lang"], *last_turn(r["messages"]), "chrf"))
    return out


def sib_items(data_dir: str | None, limit: int | None) -> list[dict]:
    """SIB-200 test topic questions per language, the labels named in that language; gold = the test label."""
    from qazlm.eval.tasks.utils import load_sib
    from qazlm.paths import FLORES_CODES

    out = []
    for lang in LANGS:
        test = load_sib(data_dir, lang=FLORES_CODES[lang])["test"]
        rows = test.select(range(min(limit or len(test), len(test))))
        for text, choices, label in zip(rows["text"], rows["choices"], rows["label"]):
            if choices[label] not in SIB_LABELS:
                raise QazlmError(f"SIB-200 {lang}: unknown label {choices[label]!r} in labels.txt; "
                                 f"expected one of {', '.join(SIB_LABELS)}")
            out.append(_item("sib200", f"sib200_{lang}", lang, [{"role": "user", "content": topic_prompt(lang, text)}],
                             TOPIC_LABELS[lang][choices[label]], "exact"))
    return out


def flores_items(per_direction: int | None) -> list[dict]:
    """FLORES+ devtest translation in all six kk/ru/en directions, the first N sentences of each."""
    from qazlm.heldout import flores_texts

    texts = {k.rsplit(":", 1)[1]: v for k, v in flores_texts("devtest").items()}
    n = min(len(v) for v in texts.values())
    n = min(per_direction or n, n)
    return [{**_item("flores", f"flores_{s}_{t}", s, [{"role": "user", "content": translate_prompt(s, t, texts[s][i])}],
                     texts[t][i], "chrf"), "expect": t}  # the reply belongs in the target language
            for s, t in FLORES_DIRECTIONS for i in range(n)]


def build_items(sets: list[str], records: list[dict] | None, *, limit: int | None, sib_limit: int | None,
                flores_per_direction: int | None, data_dir: str | None) -> tuple[list[dict], dict[str, str]]:
    """(items, {set: why it was skipped}); a set whose data is absent is skipped with a reason, not fatal."""
    items, skipped = [], {}
    builders = {
        "heldout": lambda: heldout_items(records, limit),
        "multiturn": lambda: multiturn_items(records, limit),
        "sib200": lambda: sib_items(data_dir, sib_limit),
        "flores": lambda: flores_items(flores_per_direction),
    }
    for name in sets:
        try:
            got = builders[name]()
        except (OSError, QazlmError) as e:
            skipped[name] = str(e).splitlines()[0]
            continue
        if not got:
            skipped[name] = "no items (the sft-data folder has none of this kind)"
        items += got
    return items, skipped
