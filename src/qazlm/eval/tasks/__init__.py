"""qazlm's lm-eval task suite: which tasks exist, which local files each needs, and its chance level.

The task definitions themselves are the lm-eval YAML files in this folder (loaded by
`lm_eval.tasks.TaskManager(include_path=TASK_DIR)`); this registry only lets `qazlm eval` skip a task
whose data is missing (one line saying why) and print a random-chance baseline beside each score.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASK_DIR = Path(__file__).parent


@dataclass(frozen=True)
class TaskInfo:
    files: tuple[str, ...]      # paths relative to the eval data folder that must exist
    metric: str                 # the headline metric in reports
    chance: float | None        # random-guess score for that metric (None: no meaningful chance level)
    lang: str                   # kk / ru / en / a pair like kk-en
    what: str                   # one line for reports and docs


def _flores(*langs: str) -> tuple[str, ...]:
    codes = {"kk": "kaz_Cyrl", "ru": "rus_Cyrl", "en": "eng_Latn"}
    return tuple(f"flores_plus/{split}.{codes[lang]}.gz" for lang in langs for split in ("dev", "devtest"))


TASKS: dict[str, TaskInfo] = {}
for _lang, _code in (("kk", "kaz_Cyrl"), ("ru", "rus_Cyrl"), ("en", "eng_Latn")):
    TASKS[f"qazlm_sib200_{_lang}"] = TaskInfo(
        tuple(f"sib200/{_code}/{f}" for f in ("labels.txt", "train.tsv", "dev.tsv", "test.tsv")), "acc", 1 / 7,
        _lang, "SIB-200 topic classification of a FLORES sentence (7 topics)")
    TASKS[f"qazlm_belebele_{_lang}"] = TaskInfo((f"belebele/{_code}.jsonl",), "acc", 0.25, _lang,
                                                "Belebele reading comprehension (4 options; user-provided data)")
    TASKS[f"qazlm_flores_bpb_{_lang}"] = TaskInfo(_flores(_lang)[1:], "bits_per_byte", None, _lang,
                                                  "bits per byte on FLORES+ devtest via lm-eval (lower is better)")
TASKS["qazlm_kkcopa_kk"] = TaskInfo(("kk/kkcopa.jsonl",), "acc", 0.5, "kk", "kkCOPA cause/effect, Kazakh")
TASKS["qazlm_kkcopa_en"] = TaskInfo(("kk/kkcopa.jsonl",), "acc", 0.5, "en", "kkCOPA cause/effect, the English originals")
TASKS["qazlm_nis_math"] = TaskInfo(("kk/nis_math.jsonl",), "acc", 0.25, "kk", "NIS school math in Kazakh (a-d)")
TASKS["qazlm_kkwikispell"] = TaskInfo(("kk/kkwikispell.jsonl",), "acc", 0.5, "kk",
                                      "prefers the correctly spelled Kazakh sentence over its misspelled copy")
TASKS["qazlm_wic_kk"] = TaskInfo(("kk/wic_kazakh.jsonl",), "acc", 0.5, "kk",
                                 "WiC-Kazakh: is a word used in the same sense in two sentences (no/yes)")
TASKS["qazlm_kazmmlu"] = TaskInfo(("kazmmlu",), "acc", 0.25, "kk", "KazMMLU knowledge exam (user-provided data)")
for _src, _tgt in (("kk", "en"), ("en", "kk"), ("kk", "ru"), ("ru", "kk"), ("en", "ru"), ("ru", "en")):
    TASKS[f"qazlm_flores_{_src}_{_tgt}"] = TaskInfo(_flores(_src, _tgt), "chrf", None, f"{_src}-{_tgt}",
                                                    f"FLORES+ translation {_src}->{_tgt}, chrF (sacrebleu)")

GROUPS = {
    "qazlm_sib200": [t for t in TASKS if t.startswith("qazlm_sib200_")],
    "qazlm_kkcopa": ["qazlm_kkcopa_kk", "qazlm_kkcopa_en"],
    "qazlm_flores_mt": [t for t in TASKS if t.startswith("qazlm_flores_") and "bpb" not in t],
    "qazlm_flores_bpb": [t for t in TASKS if t.startswith("qazlm_flores_bpb_")],
    "qazlm_belebele": [t for t in TASKS if t.startswith("qazlm_belebele_")],
    "qazlm_kk": ["qazlm_kkcopa_kk", "qazlm_nis_math", "qazlm_kkwikispell", "qazlm_wic_kk", "qazlm_kazmmlu"],
}
GROUPS["all"] = list(TASKS)


def expand_tasks(names: list[str]) -> list[str]:
    """Task and group names (comma lists allowed) to task names, in order, without duplicates."""
    from qazlm.errors import QazlmError

    out: list[str] = []
    for item in (n.strip() for name in names for n in name.split(",")):
        if not item:
            continue
        found = GROUPS.get(item) or ([item] if item in TASKS else None)
        if found is None and f"qazlm_{item}" in TASKS:
            found = [f"qazlm_{item}"]
        if found is None and f"qazlm_{item}" in GROUPS:
            found = GROUPS[f"qazlm_{item}"]
        if found is None:
            import difflib

            close = difflib.get_close_matches(item, list(TASKS) + list(GROUPS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "; see `qazlm eval --list-tasks`"
            raise QazlmError(f"task {item!r}: unknown{hint}")
        out += [t for t in found if t not in out]
    return out


def missing_data(task: str, data_dir: Path) -> str | None:
    """None if the task's files exist under `data_dir`, else a one-line reason to skip it."""
    for rel in TASKS[task].files:
        path = data_dir / rel
        if not path.exists() or (path.is_dir() and not any(path.glob("*.jsonl"))):
            return f"{path} not found"
    return None
