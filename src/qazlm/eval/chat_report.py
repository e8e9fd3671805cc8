"""Write a chat evaluation (`qazlm.eval.chat.evaluate_chat`) as chat_report.md, chat_report.json, chat_eval.png
and replies.jsonl (every prompt, reply and reference, per model), models side by side."""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.io import atomic_write, save_png, write_json, write_text
from qazlm.paths import LANGS
from qazlm.stats import rate_text

CI_NOTE = "[a–b]: the rate's 95% Wilson interval, in percent (how far one draw of these items can be off)."


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _score(r: dict | None) -> str:
    if not r or r.get("value") is None:
        return "—"
    return _pct(r["value"]) if r["metric"] == "exact" else f"{r['value']:.1f}"


def _fid_cell(f: dict) -> str:
    if f["rate"] is None:
        return f"— ({f['too_short']} too short)" if f["too_short"] else "—"
    return (f"{rate_text(f['rate'], f['n'])} ({f['in_language']}/{f['n']}"
            + (f", {f['too_short']} too short)" if f["too_short"] else ")"))


def _header(models: list[dict], first: str) -> list[str]:
    return [f"| {first} | " + " | ".join(m["name"] for m in models) + " |", "|---|" + "---:|" * len(models)]


def _fidelity_section(result: dict) -> list[str]:
    models = result["models"]
    lines = ["## Language fidelity", "",
             "Share of replies in the language the user wrote in, or the one the instruction or system prompt asked "
             "for (translation target, `system_language`), judged by `qazlm.text.langid`. Replies of fewer than "
             f"{result['min_words']} words (numbers, one word, a label) cannot be identified: they are left out of "
             "the denominator and counted as *too short*. Latin-script Kazakh (`script_latin`) is not judged. "
             + CI_NOTE, ""]
    lines += _header(models, "expected language")
    for lang in (*LANGS, "all"):
        lines.append(f"| {lang} | " + " | ".join(_fid_cell(m["fidelity"][lang]) for m in models) + " |")
    wrong = [f"{m['name']}: " + ", ".join(f"{k} {v}" for k, v in sorted(m["fidelity"]["all"]["wrong_as"].items()))
             for m in models if m["fidelity"]["all"]["wrong_as"]]
    if wrong:
        lines += ["", "Replies in the wrong language were identified as: " + "; ".join(wrong) + "."]
    sets = list(dict.fromkeys(k for m in models for k in m["fidelity_by_set"]))
    lines += ["", "By prompt set:", ""] + _header(models, "set")
    lines += [f"| {k} | " + " | ".join(_fid_cell(m["fidelity_by_set"][k]) if k in m["fidelity_by_set"] else "—"
                                      for m in models) + " |" for k in sets]
    return lines


def _eot_section(result: dict) -> list[str]:
    models = result["models"]
    lines = ["## End of turn", "", f"Replies that close their turn with `<|im_end|>` within "
             f"{result['settings']['max_new_tokens']} new tokens; the others stopped at the document end token "
             "`<|endoftext|>` or ran into the token limit. Judged on the prompts whose reference answer fits in "
             "that limit (in the model's tokens); those whose right answer alone is longer are left out and "
             "counted.", ""] + _header(models, "")
    lines.append("| **end-of-turn rate** | " + " | ".join(rate_text(m["eot"]["rate"], m["eot"]["n"]) for m in models)
                 + " |")
    for key, what in (("eot", "ended with <\\|im_end\\|>"), ("eos", "ended with <\\|endoftext\\|>"),
                      ("limit", "hit the token limit"), ("long_reference", "left out: reference longer than the limit")):
        lines.append(f"| {what} | " + " | ".join(str(m["eot"].get(key, 0)) for m in models) + " |")
    return lines


def _refusals_section(result: dict) -> list[str]:
    models = result["models"]
    lines = ["## Refusals of ordinary requests", "",
             "Share of replies to these prompts that refuse, by the safety evaluation's refusal classifier "
             "(`qazlm.eval.safety.is_refusal`; its measured accuracy: docs/alignment.md). Every prompt here is an "
             "ordinary request except the held-out `safety_refusal` items, which are left out; by the language the "
             "user wrote in. " + CI_NOTE, ""] + _header(models, "user's language / set")

    def cell(r: dict) -> str:
        return "—" if r["rate"] is None else f"{rate_text(r['rate'], r['n'])} ({r['refused']}/{r['n']})"

    for lang in (*LANGS, "all"):
        lines.append(f"| {lang} | " + " | ".join(
            cell(m["refusals"]["all"] if lang == "all" else m["refusals"]["by_lang"][lang]) for m in models) + " |")
    sets = list(dict.fromkeys(k for m in models for k in m["refusals"]["by_set"]))
    lines += [f"| set: {k} | " + " | ".join(cell(m["refusals"]["by_set"][k]) if k in m["refusals"]["by_set"] else "—"
                                           for m in models) + " |" for k in sets]
    return lines


def _tasks_section(result: dict) -> list[str]:
    models = result["models"]
    keys = list(dict.fromkeys(k for m in models for k in m["tasks"]))
    lines = ["## Tasks", "", "Exact match (normalized: case, spaces, quotes and end punctuation ignored) as %, chrF "
             "(sacrebleu, corpus level) as 0-100. *chance* for SIB-200 is 1/7; *majority* is the share of the most "
             "frequent label among the items asked (a model answering one label for everything scores up to it).", "",
             "| set | task | metric | n | chance | majority | " + " | ".join(m["name"] for m in models) + " |",
             "|---|---|---|---:|---:|---:|" + "---:|" * len(models)]
    for k in keys:
        first = next(m["tasks"][k] for m in models if k in m["tasks"])
        set_name, task = k.split(":", 1)
        lines.append(f"| {set_name} | {task} | {first['metric']} | {first['n']} | {_pct(first.get('chance'))} | "
                     f"{_pct(first.get('majority'))} | " + " | ".join(_score(m["tasks"].get(k)) for m in models) + " |")
    return lines


def _multiturn_section(result: dict) -> list[str]:
    models = result["models"]
    if not any(m["multiturn"] for m in models):
        return []
    lines = ["## Multi-turn", "", "Held-out dialogues \"translate X into A\" → reply → \"now into B\": the context "
             "holds the user's first turn, the *reference* first reply (the same context for every model) and the "
             "second turn; the second reply is scored.", ""] + _header(models, "")
    rows = [("in the newly asked language", lambda r: _pct(r["fidelity"])), ("chrF vs reference", lambda r: f"{r['chrf']:.1f}"),
            ("dialogues (judged / too short)", lambda r: f"{r['n']} ({r['judged']} / {r['too_short']})")]
    for what, fmt in rows:
        lines.append(f"| {what} | " + " | ".join(fmt(m["multiturn"]) if m["multiturn"] else "—" for m in models) + " |")
    return lines


def _one_line(text: str, limit: int = 240) -> str:
    text = text.replace("\n", " ⏎ ").replace("|", "\\|")
    return text if len(text) <= limit else text[:limit] + "…"


def _samples_section(result: dict) -> list[str]:
    lines = ["## Sample dialogues", ""]
    for m in result["models"]:
        lines += [f"### {m['name']}", ""]
        for lang, dialogues in m["samples"].items():
            for d in dialogues:
                turns = " / ".join(f"*{t['role']}*: {_one_line(t['content'], 160)}" for t in d["messages"])
                lines += [f"- **{lang} · {d['task']}** {turns}",
                          f"  - reply ({d['end']}): {_one_line(d['reply']) or '(empty)'}",
                          f"  - reference: {_one_line(d['reference'])}"]
        lines.append("")
    return lines


def markdown(result: dict) -> str:
    s, models, items = result["settings"], result["models"], result["items"]
    decoding = "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}"
    lines = ["# qazlm chat evaluation", "",
             f"{items['n']} chat prompts (" + ", ".join(f"{k}: {v}" for k, v in items["by_set"].items())
             + f"), {decoding}, at most {s['max_new_tokens']} new tokens, stop at `<|im_end|>`; limits: "
             f"{s['limit']} held-out items per task, {s['sib_limit']} SIB-200 test items per language, "
             f"{s['flores_per_direction']} FLORES+ devtest sentences per direction.", "",
             "| model | kind | params | prompts skipped (too long) | time (s) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {m['name']} | {m['kind']} | {m['params'] / 1e6:.2f}M | {m['skipped_items']} | {m['seconds']} |"
              for m in models]
    for section in (_fidelity_section, _eot_section, _refusals_section, _tasks_section, _multiturn_section,
                    _samples_section):
        part = section(result)
        lines += ([""] + part) if part else []
    notes = [f"- set {k} skipped: {v}" for k, v in items["skipped_sets"].items()]
    if items["heldout_malformed"]:
        notes.append(f"- {len(items['heldout_malformed'])} malformed heldout.jsonl lines set aside (see chat_report.json)")
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    lines += ["Plot: `chat_eval.png`. Every prompt, reply and reference: `replies.jsonl`.", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Two panels, models side by side: fidelity per language + end-of-turn rate (top); task scores, 0-1
    (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = result["models"]
    groups = [*LANGS, "all"]
    keys = list(dict.fromkeys(k for m in models for k in m["tasks"]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(7.0, 0.32 * len(keys) + 2), 7.5),
                                   gridspec_kw={"height_ratios": [1, 1.3]})
    width = 0.8 / len(models)

    def value(v):
        return np.nan if v is None else v

    for i, m in enumerate(models):
        vals = [value(m["fidelity"][g]["rate"]) for g in groups] + [value(m["eot"]["rate"])]
        ax1.bar(np.arange(len(groups) + 1) + i * width, vals, width, label=m["name"])
        scores = [value(m["tasks"].get(k, {}).get("value")) for k in keys]
        scores = [v / 100 if k in m["tasks"] and m["tasks"][k]["metric"] == "chrf" else v for k, v in zip(keys, scores)]
        ax2.bar(np.arange(len(keys)) + i * width, scores, width, label=m["name"])
    for j, k in enumerate(keys):
        chance = next((m["tasks"][k].get("chance") for m in models if k in m["tasks"]), None)
        if chance:
            ax2.hlines(chance, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="--")
    ax1.set_xticks(np.arange(len(groups) + 1) + 0.4 - width / 2, [*groups, "EOT"])
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("share of replies")
    ax1.set_title("Language fidelity and end-of-turn rate", fontsize=10)
    ax2.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, [k.split(":", 1)[1] for k in keys], rotation=60,
                   ha="right", fontsize=7)
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("score")
    ax2.set_title("Tasks: exact match, chrF/100 (dashed: chance)", fontsize=10)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def write_chat_report(result: dict, out_dir: str | Path) -> list[Path]:
    """replies.jsonl, chat_eval.png, chat_report.md, then chat_report.json (written last: the report is whole)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items, replies = result.pop("_items", []), result.pop("_replies", [])
    with atomic_write(out_dir / "replies.jsonl") as f:
        for m, results in zip(result["models"], replies):
            for it, res in zip(items, results):
                f.write(json.dumps({"model": m["name"], **{k: it[k] for k in ("set", "task", "lang", "expect")},
                                    "messages": it["messages"], "reference": it["reference"], **res},
                                   ensure_ascii=False) + "\n")
    png = plot(result, out_dir / "chat_eval.png")
    write_text(out_dir / "chat_report.md", markdown(result))
    write_json(out_dir / "chat_report.json", result)
    return [out_dir / "chat_report.md", out_dir / "chat_report.json", png, out_dir / "replies.jsonl"]
