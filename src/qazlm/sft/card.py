"""The dataset card: card.json (machine-readable) and card.md (for people), with every source's licence."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path

from qazlm.io import write_json, write_text
from qazlm.sft.sources import licence_of


def _counts(items: list[dict]) -> dict:
    """{task: {lang: {source: n}}}, keys sorted (the card is byte-identical for the same data)."""
    c = Counter((it["task"], it["lang"], it["source"]) for it in items)
    out: dict = {}
    for (task, lang, source), n in sorted(c.items()):
        out.setdefault(task, {}).setdefault(lang, {})[source] = n
    return out


def _removed(rejected: list[dict]) -> dict:
    c = Counter((r["reason"], r.get("task", "external")) for r in rejected)
    out: dict = {}
    for (reason, task), n in sorted(c.items()):
        out.setdefault(reason, {})[task] = n
    return out


def card_data(cfg, result: dict, non_commercial: set[str]) -> dict:
    kept = result["train"] + result["heldout"]
    langs = Counter(it["lang"] for it in kept)
    sources = sorted({it["source"] for it in kept})
    return {
        "stage": "sft-data", "config": dataclasses.asdict(cfg),
        "conversations": {"train": len(result["train"]), "heldout": len(result["heldout"]),
                          "rejected": len(result["rejected"])},
        "lang_shares": {lang: round(n / max(1, len(kept)), 4) for lang, n in sorted(langs.items())},
        "train": _counts(result["train"]), "heldout": _counts(result["heldout"]),
        "removed": _removed(result["rejected"]),
        "licences": {s: licence_of(s) for s in sources},
        "non_commercial_tasks": sorted(set(cfg.tasks) & non_commercial),
        "notes": result["notes"],
    }


def _table(counts: dict) -> list[str]:
    rows = ["| task | lang | source | conversations |", "|---|---|---|---:|"]
    for task, by_lang in counts.items():
        for lang, by_src in by_lang.items():
            rows += [f"| {task} | {lang} | {src} | {n} |" for src, n in by_src.items()]
    return rows


def to_markdown(card: dict) -> str:
    c = card["conversations"]
    lines = ["# Instruction data card (qazlm sft-data)", "",
             f"{c['train']} training and {c['heldout']} held-out conversations; {c['rejected']} set aside "
             "(rejected.jsonl). Format: one JSON object per line with `messages` (system/user/assistant), "
             "`task`, `lang`, `source`.", "",
             "Language shares: " + ", ".join(f"{k} {v:.1%}" for k, v in card["lang_shares"].items()), ""]
    if card["non_commercial_tasks"]:
        lines += [f"**Non-commercial data included** ({', '.join(card['non_commercial_tasks'])}: CC BY-NC 4.0): "
                  "this dataset and models trained on it may not be used commercially.", ""]
    lines += ["## Train", ""] + _table(card["train"]) + ["", "## Held-out", ""] + _table(card["heldout"])
    lines += ["", "## Removed", "", "| reason | task | conversations |", "|---|---|---:|"]
    lines += [f"| {r} | {t} | {n} |" for r, by in card["removed"].items() for t, n in by.items()]
    lines += ["", "## Sources and licences", "", "| source | licence |", "|---|---|"]
    lines += [f"| {s} | {lic} |" for s, lic in card["licences"].items()]
    if card["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"


def write_card(out: Path, cfg, result: dict, non_commercial: set[str]) -> dict:
    card = card_data(cfg, result, non_commercial)
    write_json(out / "card.json", card)
    write_text(out / "card.md", to_markdown(card))
    return card
