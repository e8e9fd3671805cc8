"""`qazlm tokenizer sweep`: which language mixture makes a fair tokenizer, at which vocab size?

One BPE training per (mixture, variant) at the largest vocab; smaller vocabs are its first k ids
(`train.truncate_tokenizer`: BPE merges are greedy, so this equals training at k). Trainings run in a
process pool and are cached under a hash of (inputs, mixture, vocab, options). Everything is evaluated on
FLORES+ dev (devtest is kept for reporting). Recommended mixture = lowest worst-case premium vs English
at the chosen vocab, among mixtures that keep English fertility within `max_en_loss` (5%) of the best
English fertility in the grid (otherwise the rule simply starves English).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import atomic_write, read_lines, write_json, write_text

DEFAULT_MIXES = ("kk=0.34,ru=0.33,en=0.33", "kk=0.4,ru=0.3,en=0.3", "kk=0.25,ru=0.375,en=0.375",
                 "kk=0.3,ru=0.4,en=0.3", "kk=0.5,ru=0.3,en=0.2", "kk=0.35,ru=0.45,en=0.2", "kk=0.3,ru=0.5,en=0.2",
                 "kk=0.4,ru=0.45,en=0.15")
DEFAULT_VOCABS = (16000, 32000, 48000, 64000)
EVAL_LANGS = ("kk", "ru", "en")


@dataclasses.dataclass
class SweepConfig:
    inputs: list[str] = dataclasses.field(default_factory=lambda: ["data/sample"])
    mixes: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_MIXES))
    vocab_sizes: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_VOCABS))
    pattern: str = "qwen2"
    min_frequency: int = 2
    max_bytes: int | None = None
    balance: str = "upsample"
    morph_variant: bool = False
    workers: int = 2
    split: str = "dev"
    recommend_vocab: int | None = None
    # Premium is relative to English, so starving English always lowers it. Only mixtures whose English
    # fertility is within this fraction of the grid's best English fertility may be recommended.
    max_en_loss: float | None = 0.05
    truncate: bool = True


def _metrics():
    """Word counting / fertility / premium from the shared metrics module (fallback until it lands)."""
    try:
        from qazlm.tokenizer.metrics import count_words, fertility, premium
    except ImportError:  # pragma: no cover - only before qazlm.tokenizer.metrics exists
        def count_words(text: str) -> int:
            return len(text.split())

        def fertility(n_tokens: int, n_words: int) -> float:
            return n_tokens / max(n_words, 1)

        def premium(tokens_lang, tokens_en):
            import statistics

            return sum(tokens_lang) / max(sum(tokens_en), 1), statistics.median(
                a / b for a, b in zip(tokens_lang, tokens_en) if b)
    return count_words, fertility, premium


def cache_key(cfg_dict: dict, fingerprint: str) -> str:
    blob = json.dumps({"inputs": fingerprint, **cfg_dict}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_job(cfg_dict: dict, out_dir: str, counts: dict[str, int]) -> dict:
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    return train_tokenizer(TokenizerTrainConfig(**cfg_dict), out_dir, counts=counts, show_progress=False)


def load_eval_text(split: str) -> dict[str, list[str]]:
    """FLORES+ `split` lines per language, normalized like training text (line-aligned)."""
    from qazlm.paths import flores_path
    from qazlm.text.normalize import normalize_text

    texts = {lang: [normalize_text(x) for x in read_lines(flores_path(split, lang))] for lang in EVAL_LANGS}
    n = {len(v) for v in texts.values()}
    if len(n) != 1:
        raise QazlmError(f"{flores_path(split, 'kk')}: FLORES+ {split} files are not line-aligned ({n})")
    return texts


def evaluate_tokenizer(tok, texts: dict[str, list[str]]) -> dict:
    """Fertility per language and premium (total tokens vs English on the same parallel lines)."""
    count_words, fertility, premium = _metrics()
    counts = {lang: [len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False)]
              for lang, lines in texts.items()}
    out: dict[str, float] = {}
    for lang, lines in texts.items():
        out[f"fertility_{lang}"] = fertility(sum(counts[lang]), sum(count_words(x) for x in lines))
        if lang != "en":
            out[f"premium_{lang}"] = premium(counts[lang], counts["en"])[0]
    out["max_premium"] = max(v for k, v in out.items() if k.startswith("premium_"))
    return out


def run_sweep(cfg: SweepConfig, out_dir: str | Path, docs_dir: str | Path | None = None,
              cache_dir: str | Path | None = None) -> dict:
    from tokenizers import Tokenizer
    from tqdm import tqdm

    from qazlm.tokenizer.mixture import count_bytes, files_by_language, inputs_fingerprint, parse_mix
    from qazlm.tokenizer.train import TokenizerTrainConfig, save_tokenizer_folder, truncate_tokenizer

    t0 = time.time()
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out / "cache"
    if not cfg.mixes or not cfg.vocab_sizes:
        raise QazlmError("sweep: give at least one mixture and one vocab size")
    mixes = [",".join(f"{k}={v:g}" for k, v in parse_mix(m).items()) for m in cfg.mixes]
    vocabs = sorted(set(cfg.vocab_sizes))
    files = files_by_language(cfg.inputs)
    fingerprint = inputs_fingerprint(files)
    texts = load_eval_text(cfg.split)

    # one training per (mixture, variant[, vocab]); cached by content hash
    jobs: dict[tuple[str, bool, int], tuple[dict, Path]] = {}
    for mix in mixes:
        for morph in ([False, True] if cfg.morph_variant else [False]):
            for v in ([max(vocabs)] if cfg.truncate else vocabs):
                tc = TokenizerTrainConfig(inputs=[str(x) for x in cfg.inputs], vocab_size=v, mix=mix,
                                          pattern=cfg.pattern, min_frequency=cfg.min_frequency,
                                          max_bytes=cfg.max_bytes, morph=morph, balance=cfg.balance)
                tc.validate()
                d = dataclasses.asdict(tc)
                jobs[(mix, morph, v)] = (d, cache / cache_key(d, fingerprint))
    todo = {k: j for k, j in jobs.items() if not (j[1] / "tokenizer.json").exists()}
    print(f"sweep: {len(jobs)} trainings ({len(jobs) - len(todo)} cached), {len(vocabs)} vocab sizes, "
          f"FLORES+ {cfg.split}", flush=True)
    if todo:
        counts = {lang: count_bytes(fs)[0] for lang, fs in files.items()}
        if cfg.workers > 1 and len(todo) > 1:
            import multiprocessing as mp

            with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) as pool:
                futs = [pool.submit(_train_job, d, str(p), counts) for d, p in todo.values()]
                for f in tqdm(as_completed(futs), total=len(futs), desc="training", unit="tok"):
                    f.result()
        else:
            for d, p in tqdm(list(todo.values()), desc="training", unit="tok"):
                _train_job(d, str(p), counts)

    rows = []
    best_tok: dict[tuple, object] = {}
    for (mix, morph, trained_v), (_, path) in tqdm(list(jobs.items()), desc="evaluating", unit="tok"):
        tok_json = (path / "tokenizer.json").read_text(encoding="utf-8")
        for v in (vocabs if cfg.truncate else [trained_v]):
            tok = truncate_tokenizer(tok_json, v) if v < trained_v else Tokenizer.from_str(tok_json)
            rows.append({"mix": mix, "variant": "morph" if morph else "bpe", "vocab": v,
                         **{k: round(x, 4) for k, x in evaluate_tokenizer(tok, texts).items()}})
            best_tok[(mix, morph, v)] = (tok, path)

    rec_vocab = cfg.recommend_vocab or max(vocabs)
    if rec_vocab not in vocabs:
        raise QazlmError(f"--recommend-vocab {rec_vocab}: not among the swept sizes {vocabs}")
    pool_rows = [r for r in rows if r["vocab"] == rec_vocab and r["variant"] == "bpe"]
    if cfg.max_en_loss:
        best_en = min(r["fertility_en"] for r in pool_rows)
        pool_rows = [r for r in pool_rows if r["fertility_en"] <= best_en * (1 + cfg.max_en_loss) + 1e-9]
    rec = min(pool_rows, key=lambda r: (r["max_premium"], r["fertility_kk"]))
    tok, path = best_tok[(rec["mix"], False, rec_vocab)]
    info = json.loads((path / "training_info.json").read_text(encoding="utf-8"))
    info.update(vocab_size=rec_vocab, truncated_from=info["vocab_size"], sweep_split=cfg.split)
    info["config"]["vocab_size"] = rec_vocab
    save_tokenizer_folder(tok, out / "recommended", info)

    result = {"split": cfg.split, "vocab_sizes": vocabs, "mixes": mixes, "pattern": cfg.pattern,
              "recommended": rec, "recommended_dir": str(out / "recommended"), "rows": rows,
              "seconds": round(time.time() - t0, 1)}
    write_json(out / "sweep.json", result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(out / "sweep.csv", buf.getvalue())
    md = render_markdown(result, cfg)
    write_text(out / "sweep.md", md)
    plot_sweep(rows, out / "tokenizer_sweep.png")
    if docs_dir:
        docs = Path(docs_dir)
        write_text(docs / "tokenizer_sweep.md", md.replace("](tokenizer_sweep.png)", "](img/tokenizer_sweep.png)"))
        plot_sweep(rows, docs / "img" / "tokenizer_sweep.png")
    print(md)
    print(f"sweep done in {result['seconds']}s -> {out} (recommended tokenizer: {out / 'recommended'})")
    return result


def render_markdown(result: dict, cfg: SweepConfig) -> str:
    rec = result["recommended"]
    guard = (f" among mixtures whose English fertility is within {cfg.max_en_loss:.0%} of the best one — without "
             "that guard the rule just starves English" if cfg.max_en_loss else "")
    lines = [f"# Tokenizer mixture x vocab sweep (FLORES+ {result['split']})", "",
             f"Generated by `qazlm tokenizer sweep {' '.join(map(str, cfg.inputs))}` (pattern {cfg.pattern}, "
             f"min_frequency {cfg.min_frequency}, balance {cfg.balance}). Fertility = tokens per whitespace word; premium = tokens of the "
             "language / English tokens on the same FLORES+ lines. Mixtures are shares of training bytes "
             "(upsample: all text is used and scarcer languages are repeated up to their share; downsample: "
             "the scarcest language is used once, the others are thinned). "
             "Smaller vocabs are the first k ids of the largest training (identical to training at k).", "",
             f"**Recommended mixture at vocab {rec['vocab']}: `{rec['mix']}`** (lowest worst-case premium "
             f"{rec['max_premium']:.3f}{guard}; fertility kk {rec['fertility_kk']:.3f}, ru {rec['fertility_ru']:.3f}, "
             f"en {rec['fertility_en']:.3f}).", "",
             "| mixture | variant | vocab | fert kk | fert ru | fert en | premium kk | premium ru | max premium |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(result["rows"], key=lambda r: (r["variant"], r["mix"], r["vocab"])):
        mark = " **(rec.)**" if r is rec or (r["mix"] == rec["mix"] and r["vocab"] == rec["vocab"]
                                              and r["variant"] == rec["variant"]) else ""
        lines.append(f"| {r['mix']}{mark} | {r['variant']} | {r['vocab']} | {r['fertility_kk']:.3f} | "
                     f"{r['fertility_ru']:.3f} | {r['fertility_en']:.3f} | {r['premium_kk']:.3f} | "
                     f"{r['premium_ru']:.3f} | {r['max_premium']:.3f} |")
    lines += ["", "![fertility and max premium vs vocab](tokenizer_sweep.png)", ""]
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: str | Path) -> None:
    """Fertility per language and max premium vs vocab size, one line per mixture (dashed: MorphBPE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fertility_kk", "kk tokens/word"), ("fertility_ru", "ru tokens/word"),
              ("fertility_en", "en tokens/word"), ("max_premium", "max premium vs en")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    series = sorted({(r["mix"], r["variant"]) for r in rows})
    colors = {m: f"C{i}" for i, m in enumerate(sorted({m for m, _ in series}))}
    for ax, (key, title) in zip(axes, panels):
        for mix, variant in series:
            pts = sorted((r["vocab"], r[key]) for r in rows if r["mix"] == mix and r["variant"] == variant)
            ax.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], marker="o", color=colors[mix],
                    linestyle="--" if variant == "morph" else "-", label=f"{mix} {variant}")
        ax.set_title(title)
        ax.set_xlabel("vocab (k)")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
