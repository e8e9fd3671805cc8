"""Deduplication (exact; external data also by MinHash) and decontamination of the built conversations, with the
corpus pipeline's own code (its MinHash stages and decontamination index).

Decontamination indexes only the evaluation splits: FLORES+ devtest (dev is a training source here),
SIB-200 test, kkCOPA, KazQAD and the ru/kk sensitive-questions set (`safety`), through `qazlm.data.decontam.build_index`/`NgramIndex.match` (word
13-grams; shorter items matched whole from 8 words). A conversation sharing one with any of them is set
aside. Sets absent on this machine are listed in the card.

The tasks also draw only clean source lines (`is_clean`), so a task's `per_task` items are not halved afterwards:
380 of SIB-200's 800 train/dev rows are FLORES+ devtest sentences, and 89 FLORES+ dev lines are SIB-200 test
items. The pass over the built conversations stays, for what a template adds and for external data.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence

from qazlm.data.decontam import NgramIndex, build_index, check_known_sets, set_files
from qazlm.paths import FLORES_CODES, flores_path, shared_dir
from qazlm.sft.sources import warn
from qazlm.text.normalize import normalize_text

_SPACE = re.compile(r"\s+")


def _plain(it: dict, reason: str) -> dict:
    return {"messages": it["messages"], "task": it["task"], "lang": it["lang"], "source": it["source"], "reason": reason}


def norm_key(it: dict) -> str:
    """Case- and space-insensitive NFC text of all turns (roles included)."""
    return "\n".join(f"{m['role']}:{_SPACE.sub(' ', normalize_text(m['content'])).strip().lower()}"
                     for m in it["messages"])


def dedup(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """First occurrence of each normalized conversation kept; later copies set aside as duplicates."""
    seen, kept, removed = set(), [], []
    for it in items:
        key = norm_key(it)
        if key in seen:
            removed.append(_plain(it, "duplicate"))
        else:
            seen.add(key)
            kept.append(it)
    return kept, removed


def near_dedup_external(items: list[dict]) -> tuple[list[dict], list[dict]]:
    """External conversations that the corpus pipeline's MinHash (`qazlm.data.prepare.near_duplicates`: word
    5-grams, 14 buckets x 8 hashes) finds near-duplicates of another external one set aside, one of each cluster
    kept. Only external data: the built tasks share templates and tool definitions by design, so MinHash at these
    settings would take many that differ only in their arguments (docs/sft.md)."""
    external = [it for it in items if it["task"] == "external"]
    if len(external) < 2:
        return items, []
    from qazlm.data.prepare import near_duplicates

    drop = {id(external[i]) for i in near_duplicates([norm_key(it) for it in external])}
    return ([it for it in items if id(it) not in drop],
            [_plain(it, "near-duplicate (MinHash)") for it in items if id(it) in drop])


def eval_split_files(name: str) -> list:
    """The evaluation-split files of a known set: the corpus pipeline's, less the training splits of FLORES+ and
    SIB-200 (dev and train are sources here)."""
    if name == "flores":
        return [p for p in (flores_path("devtest", lang) for lang in FLORES_CODES) if p.is_file()]
    if name == "sib200":
        return [p for p in set_files(name) if p.name == "test.tsv"]
    return set_files(name)


def eval_index(sets: Sequence[str]) -> tuple[NgramIndex | None, list[str]]:
    """(index of the evaluation splits present, notes on sets absent here); built once per set list and
    ../shared folder in a process."""
    return _eval_index(tuple(sets), str(shared_dir()))


@functools.lru_cache(maxsize=4)
def _eval_index(sets: tuple[str, ...], shared: str) -> tuple[NgramIndex | None, list[str]]:
    check_known_sets(sets, "[sft_data]")
    files = {name: eval_split_files(name) for name in sets}
    missing = [name for name, paths in files.items() if not paths]
    notes = [f"decontamination: {', '.join(missing)} not found on this machine, not checked"] if missing else []
    if missing:
        warn(notes[0])
    found = {k: v for k, v in files.items() if v}
    return (build_index(found) if found else None), notes


def is_clean(sets: Sequence[str]) -> Callable[[str], bool]:
    """A test of one source text against the evaluation splits of `sets`: true when it shares no n-gram with them.
    One function per set list and ../shared folder, so what is derived from it can be cached (`tasks.flores_ids`)."""
    return _is_clean(tuple(sets), str(shared_dir()))


@functools.lru_cache(maxsize=4)
def _is_clean(sets: tuple[str, ...], shared: str) -> Callable[[str], bool]:
    index = _eval_index(sets, shared)[0]
    return (lambda text: True) if index is None else (lambda text: index.match(text) is None)


def decontaminate(items: list[dict], sets: list[str]) -> tuple[list[dict], list[dict], list[str]]:
    """(kept, set aside with the matching set named, notes)."""
    index, notes = eval_index(sets)
    if index is None:
        return items, [], notes
    kept, removed = [], []
    for it in items:
        hit = next((h for m in it["messages"] if (h := index.match(m["content"]))), None)
        if hit:
            removed.append(_plain(it, f"contaminated: {hit}"))
        else:
            kept.append(it)
    return kept, removed, notes
