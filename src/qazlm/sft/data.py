"""`qazlm sft-data`: build a trilingual chat instruction set (messages JSONL), its card and held-out split.

Output folder: train.jsonl, heldout.jsonl (per task, by a hash of each item's source unit, so the same
FLORES line or word never sits on both sides within a task), rejected.jsonl (set-aside conversations with
a reason), card.md + card.json (counts per task x language x source, licences, removals) and the stage
record. Same config and seed -> byte-identical files.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import check_fields, check_value
from qazlm.data.decontam import KNOWN_SETS
from qazlm.errors import QazlmError
from qazlm.paths import LANGS
from qazlm.sft import followups, kazakh, safety, tasks, tooluse
from qazlm.sft.card import write_card
from qazlm.sft.clean import decontaminate, dedup, is_clean, near_dedup_external
from qazlm.sft.formats import read_external

STAGE = "sft-data"
TASKS = {  # name -> (function, languages it is built in)
    "translation": (tasks.translation, LANGS), "multiturn": (tasks.multiturn, LANGS),
    "topic": (tasks.topic, LANGS), "system_language": (tasks.system_language, LANGS),
    "system_persona": (tasks.system_persona, LANGS), "system_short": (tasks.system_short, LANGS),
    "identity": (tasks.identity, LANGS), "count_words": (tasks.count_words, LANGS),
    "fill_gap": (tasks.fill_gap, LANGS), "continue": (tasks.continue_text, LANGS),
    "reorder": (tasks.reorder, LANGS),
    "script_latin": (kazakh.script_latin, ("kk",)), "script_cyrillic": (kazakh.script_cyrillic, ("kk",)),
    "homoglyph": (kazakh.homoglyph, ("kk",)), "morph_segment": (kazakh.morph_segment, ("kk",)),
    "morph_lemma": (kazakh.morph_lemma, ("kk",)), "morph_inflect": (kazakh.morph_inflect, LANGS),
    "title": (tasks.title, LANGS), "keywords": (tasks.keywords, LANGS),
    "count_sentences": (tasks.count_sentences, LANGS),
    "followup_shorter": (followups.followup_shorter, LANGS), "followup_latin": (followups.followup_latin, LANGS),
    "followup_count": (followups.followup_count, LANGS),
    "tool_simple": (tooluse.tool_simple, LANGS), "tool_multiple": (tooluse.tool_multiple, LANGS),
    "tool_parallel": (tooluse.tool_parallel, LANGS), "tool_irrelevant": (tooluse.tool_irrelevant, LANGS),
    "safety_refusal": (safety.safety_refusal, LANGS),
    "alpaca_ru": (lambda c, n: tasks.alpaca(c, n, "ru"), ("ru",)),
    "alpaca_en": (lambda c, n: tasks.alpaca(c, n, "en"), ("en",)),
}
NON_COMMERCIAL = {"alpaca_en"}
DEFAULT_TASKS = [t for t in TASKS if t not in NON_COMMERCIAL]
DEFAULT_DECONTAM = list(KNOWN_SETS)   # every evaluation set qazlm knows


@dataclass
class SftDataConfig:
    """[sft_data] table / `qazlm sft-data` flags (every field; see docs/sft.md)."""
    out_dir: str = "runs/sft-data"
    tasks: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))
    per_task: int = 200                     # conversations per task (before dedup/decontamination)
    task_sizes: dict[str, int] = field(default_factory=dict)   # per_task of named tasks: {safety_refusal = 400}
    lang_shares: dict[str, float] = field(default_factory=lambda: {"kk": 0.5, "ru": 0.25, "en": 0.25})
    heldout_fraction: float = 0.1           # per task
    seed: int = 0
    model_name: str = "Qazlm"               # the identity task's answer
    external: list[str] = field(default_factory=list)   # local .jsonl files or hf:NAME datasets
    decontaminate: list[str] = field(default_factory=lambda: list(DEFAULT_DECONTAM))
    corpus_dir: str | None = None           # kk/ru/en/*.txt.gz; None: the bundled data/sample
    lexicon: str | None = None              # kk_KZ.dic; None: ../shared/data/lexicon

    def __post_init__(self):
        check_fields(self, "[sft_data] ", {"per_task": ">= 1", "heldout_fraction": ">= 0, < 1", "seed": ">= 0"})
        for name in [*self.tasks, *self.task_sizes]:
            if name not in TASKS:
                close = difflib.get_close_matches(name, list(TASKS), n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(TASKS)}"
                where = "tasks" if name in self.tasks else "task_sizes"
                raise QazlmError(f"[sft_data] {where}: unknown task {name!r}; {hint}")
        self._check_task_sizes()
        if not self.tasks and not self.external:
            raise QazlmError("[sft_data] tasks = [] and no external data: nothing to build; name some tasks")
        self._check_shares()
        self._check_sources()

    def _check_sources(self) -> None:
        """Names and files are checked before any work, so a typo costs nothing."""
        from qazlm.data.decontam import check_known_sets
        from qazlm.sft.formats import HUB_PREFIX

        check_known_sets(self.decontaminate, "[sft_data]")
        for spec in self.external:
            if not spec.startswith(HUB_PREFIX) and not Path(spec).is_file():
                raise QazlmError(f"[sft_data] external: {spec}: file not found; give a local .jsonl (messages, "
                                 f"ShareGPT or Alpaca records) or {HUB_PREFIX}NAME for a Hub dataset")

    def _check_task_sizes(self) -> None:
        """A size for a task the mix does not build would be silently ignored: refuse it instead."""
        for name, size in self.task_sizes.items():
            if name not in self.tasks:
                raise QazlmError(f"[sft_data] task_sizes.{name}: {name} is not in tasks, so nothing would use "
                                 "this size; add it to tasks or drop the size")
            check_value(f"[sft_data] task_sizes.{name}", size, ">= 1")

    def _check_shares(self) -> None:
        for lang, share in self.lang_shares.items():
            if lang not in LANGS:
                raise QazlmError(f"[sft_data] lang_shares: unknown language {lang!r}; use kk, ru, en")
            check_value(f"[sft_data] lang_shares.{lang}", share, ">= 0, <= 1")
        total = sum(self.lang_shares.values())
        if abs(total - 1) > 0.01:
            raise QazlmError(f"[sft_data] lang_shares sum to {total:g}; they must sum to 1 "
                             "(e.g. kk=0.5,ru=0.25,en=0.25)")


def split_counts(total: int, shares: dict[str, float], langs: tuple[str, ...]) -> dict[str, int]:
    """`total` split over `langs` by their shares (renormalized to the task's languages; largest remainder)."""
    weights = {lang: shares.get(lang, 0.0) for lang in langs}
    mass = sum(weights.values())
    if mass <= 0:
        return {}
    exact = {lang: total * w / mass for lang, w in weights.items()}
    counts = {lang: int(x) for lang, x in exact.items()}
    for lang in sorted(exact, key=lambda x: (counts[x] - exact[x], x))[:total - sum(counts.values())]:
        counts[lang] += 1
    return {lang: n for lang, n in counts.items() if n}


def build_task(cfg: SftDataConfig, name: str) -> list[dict]:
    fn, langs = TASKS[name]
    ctx = tasks.TaskContext(rng=random.Random(f"{cfg.seed}:{name}"), corpus_dir=cfg.corpus_dir,
                            model_name=cfg.model_name, lexicon=cfg.lexicon, clean=is_clean(cfg.decontaminate))
    return fn(ctx, split_counts(cfg.task_sizes.get(name, cfg.per_task), cfg.lang_shares, langs))


def external_items(cfg: SftDataConfig) -> tuple[list[dict], list[dict]]:
    """(usable items, rejected records with reasons) of the external sources."""
    kept, rejected = [], []
    for spec in cfg.external:
        for where, result in read_external(spec):
            if isinstance(result, str):
                rejected.append({"source": spec, "where": where, "reason": result})
            else:
                kept.append({"messages": result, "task": "external", "lang": "und", "source": spec, "key": where})
    return kept, rejected


def is_heldout(key: str, fraction: float) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2 ** 64 < fraction


def split_heldout(items: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """Per task: items whose source unit hashes below `fraction`; at least one unit when the task has 2+
    units (all items of a unit go to the same side)."""
    train, held = [], []
    by_task: dict[str, list[dict]] = {}
    for it in items:
        by_task.setdefault(it["task"], []).append(it)
    for group in by_task.values():
        h = [it for it in group if is_heldout(it["key"], fraction)]
        if fraction > 0 and not h and len({it["key"] for it in group}) >= 2:
            first = min((it["key"] for it in group), key=lambda k: hashlib.blake2b(k.encode()).digest())
            h = [it for it in group if it["key"] == first]
        ids = {id(x) for x in h}
        held += h
        train += [it for it in group if id(it) not in ids]
    return train, held


def build(cfg: SftDataConfig) -> dict:
    """Generate, dedup, decontaminate and split; returns {train, heldout, rejected, notes}."""
    notes: list[str] = []
    items = [it for name in cfg.tasks for it in build_task(cfg, name)]
    made = {it["task"] for it in items}
    for name in cfg.tasks:
        if name not in made:
            notes.append(f"task {name}: no items (its source is absent on this machine)")
    ext, rejected = external_items(cfg)
    items, dups = dedup(items + ext)
    items, near = near_dedup_external(items)
    items, contaminated, eval_notes = decontaminate(items, cfg.decontaminate)
    notes += eval_notes
    train, held = split_heldout(items, cfg.heldout_fraction)
    random.Random(cfg.seed).shuffle(train)
    return {"train": train, "heldout": held, "rejected": rejected + dups + near + contaminated, "notes": notes}


def to_line(it: dict) -> str:
    return json.dumps({k: it[k] for k in ("messages", "tools", "task", "lang", "source") if k in it},
                      ensure_ascii=False)


UNSEEN_TOOLS = "tools_unseen.jsonl"   # evaluation only: conversations with tools no training item offers


def write_unseen_tools(out: Path, cfg: SftDataConfig) -> int:
    """When the mix has tool tasks: the function-calling evaluation's unseen-tool conversations."""
    from qazlm.io import atomic_write

    tool_sizes = [cfg.task_sizes.get(t, cfg.per_task) for t in cfg.tasks if t.startswith("tool_")]
    if not tool_sizes:
        (out / UNSEEN_TOOLS).unlink(missing_ok=True)
        return 0
    per_lang = max(4, max(tool_sizes) // 20)   # follows the largest tool task, as `--task-sizes` may set it
    items = tooluse.unseen_items(random.Random(f"{cfg.seed}:unseen"), per_lang, cfg.model_name)
    with atomic_write(out / UNSEEN_TOOLS) as f:
        for it in items:
            f.write(to_line(it) + "\n")
    return len(items)


def run(cfg: SftDataConfig, force: bool = False) -> dict:
    """Build the folder under its run lock; skip when its record equals this config (unless `force`)."""
    from qazlm.io import atomic_write, clean_temp
    from qazlm.runs import config_changes, output_lock, read_record, write_record

    out = Path(cfg.out_dir)
    wanted = dataclasses.asdict(cfg)
    with output_lock(out, STAGE):
        clean_temp(out)
        old = read_record(out)
        if old is not None and not force and not config_changes(old, json.loads(json.dumps(wanted))):
            print(f"sft-data: {out} is up to date (same config); --force to rebuild")
            return json.loads((out / "card.json").read_text(encoding="utf-8"))
        result = build(cfg)
        for name in ("train", "heldout", "rejected"):
            with atomic_write(out / f"{name}.jsonl") as f:
                for it in result[name]:
                    f.write((json.dumps(it, ensure_ascii=False) if name == "rejected" else to_line(it)) + "\n")
        write_unseen_tools(out, cfg)
        card = write_card(out, cfg, result, NON_COMMERCIAL)
        write_record(out, STAGE, wanted)
    return card
