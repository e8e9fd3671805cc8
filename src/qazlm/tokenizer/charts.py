"""PNG charts of a comparison: grouped bars per language (fertility) and the premium vs English."""

from __future__ import annotations

import math
from pathlib import Path

from qazlm.io import save_png


def _grouped_bars(rows: list[dict], key: str, title: str, ylabel: str, path: Path, langs: list[str],
                  ref_line: float | None = None) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["tokenizer"] for r in rows))
    value = {(r["tokenizer"], r["lang"]): r.get(key) for r in rows}
    if not any(v is not None and not math.isnan(v) for v in value.values()):
        return None
    width = 0.8 / max(1, len(langs))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2), 4.2))
    for j, lang in enumerate(langs):
        ys = [value.get((n, lang)) for n in names]
        ys = [float("nan") if y is None else y for y in ys]
        xs = [i + (j - (len(langs) - 1) / 2) * width for i in range(len(names))]
        bars = ax.bar(xs, ys, width, label=lang)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    if ref_line is not None:
        ax.axhline(ref_line, color="black", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title="language")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)


def write_charts(rows: list[dict], out_dir: str | Path, prefix: str = "tokenizer_compare") -> list[Path]:
    """`<prefix>_fertility.png` (tokens/word) and `<prefix>_premium.png` (non-English vs English)."""
    out = Path(out_dir)
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    written = [_grouped_bars(rows, "fertility", "Tokens per word (lower = cheaper)", "tokens / word",
                             out / f"{prefix}_fertility.png", langs)]
    non_en = [lang for lang in langs if lang != "en"]
    if non_en and any("premium_total" in r for r in rows):
        written.append(_grouped_bars(rows, "premium_total", "Premium vs English on parallel text (1.0 = parity)",
                                     "tokens / English tokens", out / f"{prefix}_premium.png", non_en, 1.0))
    return [p for p in written if p]
