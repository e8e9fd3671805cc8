"""Loaders and prompt helpers for qazlm's lm-eval task configs (the YAML files beside this module).

Every task reads LOCAL files under `data_dir` (default `../shared/data/eval`; `qazlm eval --data-dir`),
passed in by `qazlm.eval.harness` through the TaskManager's metadata. Nothing is downloaded.
Loaders return `{split: datasets.Dataset}` with uniform field names so the YAML prompts stay short.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

FLORES = {"kk": "kaz_Cyrl", "ru": "rus_Cyrl", "en": "eng_Latn"}
LANG_NAMES = {"kk": "Kazakh", "ru": "Russian", "en": "English"}


def data_root(data_dir: str | None = None) -> Path:
    if data_dir:
        return Path(data_dir)
    if os.environ.get("QAZLM_EVAL_DATA"):
        return Path(os.environ["QAZLM_EVAL_DATA"])
    from qazlm.paths import shared_dir

    return shared_dir() / "data" / "eval"


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def _jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


# ---------------------------------------------------------------- SIB-200 (topic classification, 7 labels)
def load_sib(data_dir=None, lang="kaz_Cyrl", **_):
    base = data_root(data_dir) / "sib200" / lang
    labels = [ln.strip() for ln in (base / "labels.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    out = {}
    for split in ("train", "dev", "test"):
        with open(base / f"{split}.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        # the files are grouped by category; FLORES sentence order mixes topics, so `--limit N` stays fair
        rows.sort(key=lambda r: int(r["index_id"]))
        out[split] = _dataset([{"text": r["text"], "choices": labels, "label": labels.index(r["category"])}
                               for r in rows])
    return out


# ---------------------------------------------------------------- kkCOPA (cause/effect, kk and en)
COPA_CONNECTORS = {"kz": {"cause": "себебі", "effect": "сондықтан"},
                   "eng": {"cause": "because", "effect": "therefore"}}


def _lower_first(s: str) -> str:
    s = s.strip()
    return s[:1].lower() + s[1:]


def load_kkcopa(data_dir=None, lang="kz", **_):
    rows = []
    for r in _jsonl(data_root(data_dir) / "kk" / "kkcopa.jsonl"):
        premise = r[f"p_contents_{lang}"].strip().rstrip(".")
        connector = COPA_CONNECTORS[lang][r["asks-for_eng"].strip()]
        rows.append({"premise": f"{premise} {connector}",
                     "choices": [" " + _lower_first(r[f"a1_contents_{lang}"]),
                                 " " + _lower_first(r[f"a2_contents_{lang}"])],
                     "label": int(r["correct_answers"]) - 1})
    return {"test": _dataset(rows)}


# ---------------------------------------------------------------- NIS_Math (kk school math, a-d)
def load_nis_math(data_dir=None, **_):
    rows = []
    for r in _jsonl(data_root(data_dir) / "kk" / "nis_math.jsonl"):
        opts = "\n".join(f"{k.upper()}. {r[k]}" for k in "abcd")
        rows.append({"query": f"Сұрақ: {r['question'].strip()}\n{opts}\nЖауап:", "choices": [" A", " B", " C", " D"],
                     "label": "abcd".index(r["correct"].strip().lower())})
    return {"test": _dataset(rows)}


# ---------------------------------------------------------------- kkWikiSpell (correct vs misspelled sentence)
def load_kkwikispell(data_dir=None, **_):
    rows = [{"choices": [r["Original Sentence"].strip(), r["Sentence with Mistake"].strip()], "label": 0}
            for r in _jsonl(data_root(data_dir) / "kk" / "kkwikispell.jsonl")
            if r["Original Sentence"].strip() != r["Sentence with Mistake"].strip()]
    return {"test": _dataset(rows)}


# ---------------------------------------------------------------- WiC-Kazakh (same sense of a word? no/yes)
def load_wic_kazakh(data_dir=None, **_):
    rows = []
    for r in _jsonl(data_root(data_dir) / "kk" / "wic_kazakh.jsonl"):
        query = (f"1-сөйлем: {r['sentence1'].strip()}\n2-сөйлем: {r['sentence2'].strip()}\n"
                 f"Сұрақ: «{r['word']}» сөзі екі сөйлемде бір мағынада қолданылған ба?\nЖауап:")
        rows.append({"query": query, "choices": [" жоқ", " иә"], "label": int(bool(r["label"]))})
    return {"test": _dataset(rows)}


# ---------------------------------------------------------------- FLORES+ (translation and bits per byte)
def load_flores_pair(data_dir=None, src="kk", tgt="en", **_):
    base = data_root(data_dir) / "flores_plus"
    out = {}
    for split, name in (("dev", "dev"), ("devtest", "devtest")):
        s, t = _lines(base / f"{split}.{FLORES[src]}.gz"), _lines(base / f"{split}.{FLORES[tgt]}.gz")
        if len(s) != len(t):
            raise ValueError(f"{base}: {split} files for {src} and {tgt} are not line-aligned")
        out[name] = _dataset([{"query": f"{LANG_NAMES[src]}: {a}\n{LANG_NAMES[tgt]}:", "target": " " + b}
                              for a, b in zip(s, t)])
    return out


def load_flores_text(data_dir=None, lang="kk", **_):
    lines = _lines(data_root(data_dir) / "flores_plus" / f"devtest.{FLORES[lang]}.gz")
    return {"test": _dataset([{"page": ln} for ln in lines if ln.strip()])}


def bpb_process_results(doc, results):
    (loglikelihood,) = results
    n_bytes = len(doc["page"].encode("utf-8"))
    return {"bits_per_byte": (loglikelihood, n_bytes), "byte_perplexity": (loglikelihood, n_bytes)}


def translation_target(doc):
    return doc["target"]


# ---------------------------------------------------------------- Belebele / KazMMLU (user-provided data)
def load_belebele(data_dir=None, lang="kaz_Cyrl", **_):
    """`<data_dir>/belebele/<lang>.jsonl` in the HF facebook/belebele format (flores_passage, question,
    mc_answer1..4, correct_answer_num)."""
    rows = []
    for r in _jsonl(data_root(data_dir) / "belebele" / f"{lang}.jsonl"):
        opts = "\n".join(f"{k}. {r[f'mc_answer{i}']}" for i, k in enumerate("ABCD", 1))
        rows.append({"query": f"{r['flores_passage'].strip()}\n{r['question'].strip()}\n{opts}\nAnswer:",
                     "choices": [" A", " B", " C", " D"], "label": int(r["correct_answer_num"]) - 1})
    return {"test": _dataset(rows)}


def load_kazmmlu(data_dir=None, **_):
    """`<data_dir>/kazmmlu/*.jsonl`, one item per line: question, options (list of 4, or keys A-D / a-d),
    answer (letter or 0-based index)."""
    rows = []
    for path in sorted((data_root(data_dir) / "kazmmlu").glob("*.jsonl")):
        for r in _jsonl(path):
            opts = r.get("options") or [r.get(k, r.get(k.lower())) for k in "ABCD"]
            ans = r["answer"]
            label = int(ans) if isinstance(ans, int) or str(ans).isdigit() else "ABCD".index(str(ans).strip().upper())
            letters = "ABCD"[:len(opts)]
            body = "\n".join(f"{k}. {o}" for k, o in zip(letters, opts))
            rows.append({"query": f"Сұрақ: {r['question'].strip()}\n{body}\nЖауап:",
                         "choices": [f" {k}" for k in letters], "label": label})
    if not rows:
        raise FileNotFoundError(f"{data_root(data_dir) / 'kazmmlu'}: no *.jsonl files")
    return {"test": _dataset(rows)}
