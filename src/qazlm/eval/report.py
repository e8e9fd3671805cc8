"""Write an evaluation (from `qazlm.eval.evaluate`) as report.json + report.md + PNG plots.

Baselines sit beside every number: a character-unigram bpb per text set (a model must beat it to have
learned anything beyond letter frequencies) and the random-chance score of every task.
"""

from __future__ import annotations

from pathlib import Path

from qazlm.io import save_png, write_json, write_text


def _millions(n) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}M"  # a served model's size is not known


def _fmt(v, digits=3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _copy_section(models: list[dict]) -> list[str]:
    sets = list(dict.fromkeys(k for m in models for k in m.get("copy", {})))
    if not sets:
        return []
    span = next(c["span"] for m in models for c in m.get("copy", {}).values())
    lines = ["", "## In-context copying", "",
             f"Each document's first {span} tokens, then the same tokens again: loss per token (nats) on the first "
             "occurrence → on the repeat, and the share of repeats reproduced exactly (greedy). A model with induction "
             "heads predicts the repeat almost for free; one without scores it like new text, and cannot carry text "
             "from a prompt into an answer (script conversion, inflection, tool arguments, a label from a list).", "",
             "| model | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for m in (m for m in models if m.get("copy")):
        lines.append(f"| {m['name']} | " + " | ".join(_copy_cell(m["copy"].get(s)) for s in sets) + " |")
    return lines


def _copy_cell(c: dict | None) -> str:
    return "—" if c is None else f"{c['first_loss']:.2f} → {c['repeat_loss']:.2f}; {c['exact_repeat']:.0%}"


def markdown(result: dict) -> str:
    models, base = result["models"], result["baselines"]
    sets = list(dict.fromkeys(k for m in models for k in m["bpb"]))
    lines = ["# qazlm evaluation", ""]
    lines += ["| model | kind | params | step | window (tokens) |", "|---|---|---:|---:|---:|"]
    lines += [f"| {m['name']} | {m['kind']} | {_millions(m['params'])} | {_fmt(m['step'], 0)} | "
              f"{m.get('max_len', '—')} |" for m in models]
    if sets:
        lines += ["", "## Bits per byte (lower is better)", "",
                  "Total negative log-likelihood over the UTF-8 bytes of each set, in bits: comparable across "
                  "tokenizers. *unigram* = a character-unigram model fit on FLORES+ dev.", "",
                  "| model | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
        for m in models:
            lines.append(f"| {m['name']} | " + " | ".join(_fmt(m["bpb"].get(s, {}).get("bpb")) for s in sets) + " |")
        lines.append("| *unigram baseline* | " + " | ".join(_fmt(base["unigram_bpb"].get(s)) for s in sets) + " |")
    lines += _copy_section(models)
    tasks = list(dict.fromkeys(t for m in models for t in m["tasks"]))
    if tasks:
        lines += ["", f"## Tasks (lm-eval-harness, {result['settings'].get('num_fewshot', 0)}-shot"
                  + (f", first {result['settings']['limit']} items" if result["settings"].get("limit") else "") + ")",
                  "", "| task | metric | chance | " + " | ".join(m["name"] for m in models) + " |",
                  "|---|---|---:|" + "---:|" * len(models)]
        skipped = {}
        for t in tasks:
            first = next((m["tasks"][t] for m in models if "value" in m["tasks"].get(t, {})), None)
            if first is None:
                skipped[t] = next(m["tasks"][t].get("skipped") for m in models if t in m["tasks"])
                continue
            vals = [_fmt(m["tasks"].get(t, {}).get("value")) for m in models]
            lines.append(f"| {t} | {first['metric']} | {_fmt(first['chance'])} | " + " | ".join(vals) + " |")
        if skipped:
            lines += ["", "Skipped:"] + [f"- {t}: {why}" for t, why in skipped.items()]
    if any(m["samples"] for m in models):
        lines += ["", "## Generation samples (greedy, repetition penalty 1.3)"]
        for m in (m for m in models if m["samples"]):
            lines += ["", f"### {m['name']}"]
            for lang, items in m["samples"].items():
                for it in items:
                    out = it["output"].replace("\n", " ⏎ ")
                    lines.append(f"- **{lang}** `{it['prompt']}` → {out}")
    lines += ["", "Plots: `bpb.png` (per-language bars)" + (", `tasks.png`" if tasks else "")
              + (", `bpb_curve.png` (over training steps)" if _curve_models(models) else ""), ""]
    return "\n".join(lines)


def _curve_models(models: list[dict]) -> list[dict]:
    by_step: dict[int, dict] = {}
    for m in models:  # one point per step (a final model may repeat its last checkpoint's step)
        if m["step"] is not None and m["bpb"]:
            by_step.setdefault(m["step"], m)
    return [by_step[s] for s in sorted(by_step)] if len(by_step) >= 2 else []


def plots(result: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models, base, written = result["models"], result["baselines"], []
    sets = list(dict.fromkeys(k for m in models for k in m["bpb"]))
    if sets:
        bars = [(m["name"], [m["bpb"].get(s, {}).get("bpb", np.nan) for s in sets]) for m in models]
        bars.append(("unigram baseline", [base["unigram_bpb"].get(s, np.nan) for s in sets]))
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(sets) + 2), 4))
        width = 0.8 / len(bars)
        for i, (label, vals) in enumerate(bars):
            ax.bar(np.arange(len(sets)) + i * width, vals, width, label=label,
                   hatch="//" if label == "unigram baseline" else None, alpha=0.6 if label == "unigram baseline" else 1)
        ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=15)
        ax.set_ylabel("bits per byte (lower is better)")
        ax.set_title("Bits per byte per language")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_png(fig, out_dir / "bpb.png")
        written.append(out_dir / "bpb.png")
    tasks = [t for t in dict.fromkeys(t for m in models for t in m["tasks"])
             if any("value" in m["tasks"].get(t, {}) and m["tasks"][t]["metric"] == "acc" for m in models)]
    if tasks:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4))
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            ax.bar(np.arange(len(tasks)) + i * width, [m["tasks"].get(t, {}).get("value", np.nan) for t in tasks],
                   width, label=m["name"])
        for j, t in enumerate(tasks):
            chance = base["chance"].get(t)
            if chance is not None:
                ax.hlines(chance, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles="--",
                          label="random chance" if j == 0 else None)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2, [t.removeprefix("qazlm_") for t in tasks], rotation=20)
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.set_title("Downstream tasks (lm-eval-harness)")
        fig.tight_layout()
        save_png(fig, out_dir / "tasks.png")
        written.append(out_dir / "tasks.png")
    curve = _curve_models(models)
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [m["step"] for m in curve]
        for s in sets:
            ax.plot(steps, [m["bpb"].get(s, {}).get("bpb", np.nan) for m in curve], marker="o", label=s)
            if s in base["unigram_bpb"]:
                ax.axhline(base["unigram_bpb"][s], linestyle=":", linewidth=1, color=ax.lines[-1].get_color())
        ax.set_xlabel("training step")
        ax.set_ylabel("bits per byte (dotted: unigram)")
        ax.set_title("Bits per byte over training")
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_png(fig, out_dir / "bpb_curve.png")
        written.append(out_dir / "bpb_curve.png")
    return written


def write_report(result: dict, out_dir: str | Path) -> list[Path]:
    """report.json, report.md and the PNGs into `out_dir`; report.json is written last (= complete)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = plots(result, out_dir)
    write_text(out_dir / "report.md", markdown(result))
    write_json(out_dir / "report.json", result)
    return [out_dir / "report.md", out_dir / "report.json", *written]
