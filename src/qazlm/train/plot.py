"""`qazlm plot RUN`: PNG curves from a run's metrics.jsonl (loss, bpb per language vs unigram, LR, grad norm,
tokens/s). Reads only the JSON lines, so it works on a run that is still training."""

from __future__ import annotations

from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import save_png

LANG_COLORS = {"kk": "tab:blue", "ru": "tab:red", "en": "tab:green"}


def find_metrics(run: str | Path) -> Path:
    """metrics.jsonl of a run folder, its pretrain/ stage folder, or the file itself."""
    run = Path(run)
    for cand in (run, run / "metrics.jsonl", run / "pretrain" / "metrics.jsonl"):
        if cand.is_file():
            return cand
    raise QazlmError(f"{run}: no metrics.jsonl (looked in RUN/ and RUN/pretrain/); pass a pretraining output folder")


def series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def plot_run(run: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qazlm.io import read_jsonl

    path = find_metrics(run)
    records = read_jsonl(path)
    if not records:
        raise QazlmError(f"{path}: empty; the run has not logged a step yet")
    out = Path(out_dir) if out_dir else path.parent / "plots"
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def simple(key: str, title: str, fname: str, logy: bool = False) -> None:
        xs, ys = series(records, key)
        if not xs:
            return
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(xs, ys)
        ax.set(xlabel="step", title=title)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        save_png(fig, out / fname)
        written.append(out / fname)

    simple("loss", "training loss (nats/token)", "loss.png")
    simple("lr", "learning rate", "lr.png")
    simple("grad_norm", "gradient norm (before clipping)", "grad_norm.png", logy=True)
    simple("tokens_per_s", "throughput (tokens/s)", "tokens_per_s.png")

    def per_language(prefix: str, ylabel: str, title: str, fname: str, baseline: str = "") -> None:
        """One line per language of the `prefix + lang` metrics; `baseline + lang` (if logged) dashed beside."""
        langs = sorted({k.removeprefix(prefix) for r in records for k in r if k.startswith(prefix)})
        if not langs:
            return
        fig, ax = plt.subplots(figsize=(7, 4))
        for lang in langs:
            color = LANG_COLORS.get(lang)
            ax.plot(*series(records, prefix + lang), marker="o", label=f"{lang} model" if baseline else lang,
                    color=color)
            _, base = series(records, baseline + lang) if baseline else ([], [])
            if base:
                ax.axhline(base[-1], linestyle="--", color=color, alpha=0.7, label=f"{lang} unigram")
        ax.set(xlabel="step", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save_png(fig, out / fname)
        written.append(out / fname)

    per_language("val/bpb_", "bits per byte", "validation bits per byte by language", "val_bpb.png",
                 baseline="unigram_bpb/")
    per_language("val/copy_gain_", "nats/token saved on a repeated span",
                 "in-context copying (rises when induction heads form)", "val_copy.png")
    return written
