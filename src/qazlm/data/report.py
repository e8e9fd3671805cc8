"""`qazlm data report`: what happened to the corpus, step by step (markdown + JSON + PNG).

Sources of truth: datatrove's per-stage stats.json (Tally counters and `dropped_<reason>` counters),
the rejects/ folders (examples), and the tokenization summary. The invariant
documents read = documents kept (train + val) + documents removed (all reasons) is checked here.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import save_png, write_json, write_text

STEP_NAMES = {  # datatrove step name fragment -> report name (order = pipeline order)
    "unreadable": "unreadable", "language id": "langid", "boilerplate": "boilerplate",
    "quality": "quality", "decontamination": "decontam", "MinHash stage 4": "minhash",
}
# Count points: documents/chars (and tokens, at the last two) per language and source after each step. The
# values are the keys of summary.json's "steps" and of the datatrove `Tally` counters; their digit prefix keeps
# pipeline order. READ..AFTER_MINHASH are counted by `steps.Tally` inside datatrove, the rest by finalize.
READ, AFTER_LANGID, AFTER_QUALITY = "0_read", "1_langid", "2_quality"
AFTER_DECONTAM, AFTER_MINHASH = "3_decontam", "4_minhash"
AFTER_EXACT, TRAIN, VAL = "5_exact", "6_train", "6_val"
FINALIZE_STEPS = (AFTER_EXACT, TRAIN, VAL)
KEPT_STEPS = (TRAIN, VAL)  # every kept document is counted in exactly one of these
STEP_LABELS = {READ: "read", AFTER_LANGID: "after langid", AFTER_QUALITY: "after boilerplate+quality",
               AFTER_DECONTAM: "after decontam", AFTER_MINHASH: "after minhash", AFTER_EXACT: "after exact dedup",
               TRAIN: "train (unique)", VAL: "val"}


def _load_stats(folder: Path) -> list[dict]:
    """Per-task stats files summed step by step (datatrove's stats.json only covers the tasks of the
    last invocation, so after a resumed run it would miss the tasks completed earlier)."""
    merged: list[dict] = []
    for path in sorted((folder / "stats").glob("*.json")):
        for i, st in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            if i >= len(merged):
                merged.append({"name": st.get("name", ""), "stats": defaultdict(float)})
            for k, v in st.get("stats", {}).items():
                merged[i]["stats"][k] += v["total"] if isinstance(v, dict) else v
    return merged


def collect(out: Path) -> dict:
    """Counts per step/language/source, removal reasons, PII and line counters from datatrove stats."""
    steps: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
    removed: dict = defaultdict(dict)
    counters: dict = {}
    docs_in = 0
    for stage in ("filter", "dedup"):
        for st in _load_stats(out / "logs" / stage):
            name, total = st["name"], st["stats"]
            if "corpus reader" in name:
                docs_in += int(total.get("documents", 0))
            for key, value in total.items():
                if key.count("|") == 3:
                    label, lang, src, what = key.split("|")
                    steps[label][lang][src][what] = int(value)
            step = next((v for k, v in STEP_NAMES.items() if k in name), None)
            if step == "minhash":
                if total.get("dropped"):
                    removed["minhash"]["near_duplicate"] = int(total["dropped"])
            elif step:
                for key, value in total.items():
                    if key.startswith("dropped_"):
                        removed[step][key.removeprefix("dropped_")] = int(value)
            if "PII" in name or "boilerplate" in name:
                counters.update({f"{'pii' if 'PII' in name else 'boilerplate'}_{k}": int(v) for k, v in total.items()
                                 if k.startswith(("docs_", "lines_"))})
    return {"documents_in": docs_in, "steps": steps, "removed": removed, "counters": counters}


def reject_examples(out: Path, per_reason: int = 3, chars: int = 160) -> dict:
    examples: dict = defaultdict(lambda: defaultdict(list))
    for folder in sorted((out / "rejects").glob("*")):
        for path in sorted(folder.glob("*.jsonl.gz")):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                for line in f:
                    d = json.loads(line)
                    reason = d.get("metadata", {}).get("filter_reason") or "near_duplicate"
                    bucket = examples[folder.name][reason]
                    if len(bucket) < per_reason:
                        bucket.append({"id": d.get("id"), "text": d.get("text", "")[:chars]})
    return examples


def _plots(out: Path, summary: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    hist = summary.get("token_length_hist", {})
    bins = hist.get("bins", [])
    langs = [k for k in hist if k != "bins"]
    if langs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        width = 0.8 / len(langs)
        for i, lang in enumerate(langs):
            ax.bar([x + i * width for x in range(len(bins))], hist[lang], width=width, label=lang)
        ax.set_xticks(range(len(bins)), [f"≥{b}" for b in bins], rotation=45)
        ax.set_xlabel("document length (tokens)")
        ax.set_ylabel("documents (train, unique)")
        ax.set_yscale("log")
        ax.legend()
        ax.set_title("Document lengths after cleaning")
        fig.tight_layout()
        save_png(fig, out / "report" / "data_lengths.png")
        files.append("data_lengths.png")
    steps = summary["steps"]
    labels = [s for s in STEP_LABELS if s in steps and s != VAL]
    langs = sorted({lang for s in labels for lang in steps[s]})
    if langs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for lang in langs:
            ax.plot(range(len(labels)), [sum(v.get("docs", 0) for v in steps[s].get(lang, {}).values()) for s in labels],
                    marker="o", label=lang)
        ax.set_xticks(range(len(labels)), [STEP_LABELS[s] for s in labels], rotation=25, ha="right")
        ax.set_ylabel("documents")
        ax.set_title("Documents per language through the pipeline")
        ax.legend()
        fig.tight_layout()
        save_png(fig, out / "report" / "data_funnel.png")
        files.append("data_funnel.png")
    return files


def build_report(out: Path, summary: dict) -> dict:
    """Merge datatrove stats into `summary`, check the invariant, write report.md / PNGs; return summary."""
    out = Path(out)
    (out / "report").mkdir(parents=True, exist_ok=True)
    c = collect(out)
    steps = c["steps"]
    for label, by_lang in summary.get("final_counts", {}).items():
        steps[label] = by_lang
    removed = c["removed"]
    if summary.get("exact_duplicates_removed"):
        removed["exact_dedup"]["exact_duplicate"] = summary["exact_duplicates_removed"]
    n_removed = sum(sum(r.values()) for r in removed.values())
    kept = sum(v.get("docs", 0) for s in KEPT_STEPS for by_src in steps.get(s, {}).values()
               for v in by_src.values())
    summary.update({
        "documents_in": c["documents_in"], "documents_kept": kept, "documents_removed": n_removed,
        "invariant_ok": c["documents_in"] == kept + n_removed,
        "steps": json.loads(json.dumps(steps)), "removed": json.loads(json.dumps(removed)),
        "counters": c["counters"], "examples": json.loads(json.dumps(reject_examples(out))),
    })
    summary.pop("final_counts", None)
    summary["plots"] = _plots(out, summary)
    write_text(out / "report" / "report.md", to_markdown(summary))
    return summary


def to_markdown(s: dict) -> str:
    lines = ["# Corpus report", "",
             f"Documents read: **{s['documents_in']:,}** = kept {s['documents_kept']:,} (train + val) + removed "
             f"{s['documents_removed']:,} → invariant {'holds' if s['invariant_ok'] else '**BROKEN**'}.", "",
             "## Documents per language and source, step by step", "",
             "| step | lang | source | docs | chars | tokens |", "|---|---|---|---:|---:|---:|"]
    for label in STEP_LABELS:
        for lang, by_src in sorted(s["steps"].get(label, {}).items()):
            for src, v in sorted(by_src.items()):
                lines.append(f"| {STEP_LABELS[label]} | {lang} | {src} | {v.get('docs', 0):,} | {v.get('chars', 0):,} | "
                             f"{v.get('tokens', '') if v.get('tokens') is None else format(v['tokens'], ',')} |")
    lines += ["", "## Removed documents by step and reason", "", "| step | reason | docs | example |", "|---|---|---:|---|"]
    for step, reasons in s["removed"].items():
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            ex = s["examples"].get(step, {}).get(reason, [])
            text = (ex[0]["text"].replace("|", "\\|").replace("\n", " ")[:100] if ex else "")
            lines.append(f"| {step} | {reason} | {n:,} | {text} |")
    if s.get("counters"):
        lines += ["", "Edits without removal: " + ", ".join(f"{k} = {v:,}" for k, v in sorted(s["counters"].items()))]
    lines += ["", "## Final mixture (train split)", "",
              "| source | lang | weight | unique tokens | epochs | train tokens |", "|---|---|---:|---:|---:|---:|"]
    for m in s["mixture"]:
        lines.append(f"| {m['source']} | {m['lang']} | {m['weight']} | {m['unique_tokens']:,} | {m['epochs']} | "
                     f"{m['train_tokens']:,} |")
    lines += ["", "| lang | train tokens | share | target | val docs | val tokens |", "|---|---:|---:|---:|---:|---:|"]
    for lang, v in s["languages"].items():
        val = s["val"].get(lang, {})
        lines.append(f"| {lang} | {v['train_tokens']:,} | {v['share']:.3f} | {v['target']} | {val.get('docs', 0):,} | "
                     f"{val.get('tokens', 0):,} |")
    lines += ["", f"Tokenizer: `{s['tokenizer']}` (vocab {s['vocab_size']:,}, {s['dtype']}, document separator id "
              f"{s['doc_sep_id']}).", ""]
    decontam = s.get("decontamination") or {}
    used = ", ".join(f"{name} ({n:,} items)" for name, n in decontam.get("used", {}).items()) or "none"
    lines += [f"Decontaminated against: {used}" + (f"; asked for but absent here: {', '.join(decontam['missing'])}"
                                                    if decontam.get("missing") else "") + ".", ""]
    lines += [f"![{p}]({p})" for p in s.get("plots", [])]
    return "\n".join(lines) + "\n"


def load_summary(out: str | Path) -> dict:
    path = Path(out) / "report" / "summary.json"
    if not path.exists():
        raise QazlmError(f"{path}: no report yet; run `qazlm data prepare --config ...` first")
    return json.loads(path.read_text(encoding="utf-8"))


def regenerate(out: str | Path) -> dict:
    """Rebuild report.md/PNGs from a finished run (e.g. after editing this module)."""
    s = load_summary(out)
    if "steps" in s:
        s["final_counts"] = {k: v for k, v in s["steps"].items() if k in FINALIZE_STEPS}
    s = build_report(Path(out), s)
    write_json(Path(out) / "report" / "summary.json", s)
    return s
