"""`qazlm tokenizer sweep`: which language mixture makes a fair tokenizer, at which vocab size?

One BPE training per (mixture, variant) at the largest vocab; smaller vocabs are its first k ids
(`train.truncate_tokenizer`: BPE merges are greedy, so this equals training at k). Trainings run in a
process pool and are cached under a hash of (inputs, mixture, vocab, options). Everything is evaluated on
FLORES+ dev (devtest is kept for reporting).

Recommended mixture, at the chosen vocab: the one that meets every target (tokens/word per language,
premium vs English per language) with the largest relative margin on dev — or, when none meets them all,
the one whose worst miss is smallest; ties go to the lowest worst-case premium. Why not just "lowest
worst-case premium": premium is relative to English, so that rule starves English (its tokens/word rises
as its share falls and every premium drops); a margin to all targets balances both ends, and the largest
margin on dev is the pick most likely to hold on devtest.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from qazlm.config import check_fields, check_value
from qazlm.errors import QazlmError
from qazlm.io import read_lines, save_png, write_json, write_text
from qazlm.runs import output_lock

DEFAULT_MIXES = ("kk=0.34,ru=0.33,en=0.33", "kk=0.4,ru=0.3,en=0.3", "kk=0.2,ru=0.45,en=0.35",
                 "kk=0.25,ru=0.5,en=0.25", "kk=0.3,ru=0.5,en=0.2", "kk=0.35,ru=0.5,en=0.15",
                 "kk=0.3,ru=0.55,en=0.15", "kk=0.35,ru=0.55,en=0.1")
DEFAULT_VOCABS = (16000, 32000, 48000, 64000)
EVAL_LANGS = ("kk", "ru", "en")
# the project's targets (issue 2, reported on devtest): upper bounds, used for the recommendation on dev and
# drawn as dotted lines on the charts
TARGETS = {"fertility_kk": 1.75, "fertility_ru": 1.85, "fertility_en": 1.45, "premium_kk": 1.0, "premium_ru": 1.15}


@dataclasses.dataclass
class SweepConfig:
    inputs: list[str] = dataclasses.field(default_factory=lambda: ["data/sample"])
    mixes: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_MIXES))
    vocab_sizes: list[int] = dataclasses.field(default_factory=lambda: list(DEFAULT_VOCABS))
    pattern: str = "llama3"
    min_frequency: int = 2
    max_bytes: int | None = None
    balance: str = "upsample"
    morph_variant: bool = False
    workers: int = 2
    split: str = "dev"
    recommend_vocab: int | None = None
    targets: dict[str, float] = dataclasses.field(default_factory=lambda: dict(TARGETS))  # upper bounds
    truncate: bool = True

    def __post_init__(self) -> None:
        from qazlm.tokenizer.train import BASE_VOCAB

        check_fields(self, "sweep ", {"workers": ">= 1", "recommend_vocab": f"> {BASE_VOCAB}"})
        for v in self.vocab_sizes:
            check_value("sweep vocab size", v, f"> {BASE_VOCAB}")
        if not self.mixes or not self.vocab_sizes:
            raise QazlmError("sweep: give at least one mixture and one vocab size")
        metrics = {f"fertility_{lang}" for lang in EVAL_LANGS} | {f"premium_{lang}" for lang in EVAL_LANGS
                                                                  if lang != "en"}
        unknown = sorted(set(self.targets) - metrics)
        if unknown:
            raise QazlmError(f"sweep targets: unknown metric(s) {unknown}; choose from {', '.join(sorted(metrics))}")
        if self.recommend_vocab and self.recommend_vocab not in self.vocab_sizes:
            raise QazlmError(f"--recommend-vocab {self.recommend_vocab}: not among the swept sizes "
                             f"{sorted(set(self.vocab_sizes))}")


def cache_key(cfg_dict: dict, fingerprint: str) -> str:
    """Training options + the inputs' fingerprint (paths, sizes, mtimes): new or edited text retrains."""
    blob = json.dumps({"input_fingerprint": fingerprint, **cfg_dict}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _train_job(cfg_dict: dict, out_dir: str, counts: dict[str, int] | None) -> dict:
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    return train_tokenizer(TokenizerTrainConfig(**cfg_dict), out_dir, counts=counts, show_progress=False)


def _eval_cache(folder: Path, split: str) -> Path:
    return folder / f"eval_{split}.json"


def _is_done(folder: Path, split: str, vocabs: list[int]) -> bool:
    f = _eval_cache(folder, split)
    return f.exists() and all(str(v) in json.loads(f.read_text(encoding="utf-8")) for v in vocabs)


def _job(cfg_dict: dict, out_dir: str, counts: dict[str, int] | None, vocabs: list[int], split: str) -> dict:
    """Train (unless cached) and evaluate the first-k-ids tokenizer for every k in `vocabs` (cached too)."""
    from tokenizers import Tokenizer

    from qazlm.tokenizer.train import is_complete, truncate_tokenizer

    folder = Path(out_dir)
    if not is_complete(folder):
        _train_job(cfg_dict, out_dir, counts)
    cache = _eval_cache(folder, split)
    done = json.loads(cache.read_text(encoding="utf-8")) if cache.exists() else {}
    need = [v for v in vocabs if str(v) not in done]
    if need:
        texts = load_eval_text(split)
        tok_json = (folder / "tokenizer.json").read_text(encoding="utf-8")
        trained = cfg_dict["vocab_size"]
        for v in need:
            tok = truncate_tokenizer(tok_json, v) if v < trained else Tokenizer.from_str(tok_json)
            done[str(v)] = {k: round(x, 4) for k, x in evaluate_tokenizer(tok, texts).items()}
        write_json(cache, done)
    return {v: done[str(v)] for v in vocabs}


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
    from qazlm.tokenizer.metrics import count_words, fertility, premium

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
    """The whole sweep, holding OUTPUT's run lock (each cached training locks its own cache folder)."""
    with output_lock(out_dir, "tokenizer sweep"):
        return _run_sweep(cfg, Path(out_dir), docs_dir, cache_dir)


def _run_sweep(cfg: SweepConfig, out: Path, docs_dir: str | Path | None, cache_dir: str | Path | None) -> dict:
    from qazlm.tokenizer.mixture import files_by_language, parse_mix

    t0 = time.time()
    mixes = [",".join(f"{k}={v:g}" for k, v in parse_mix(m).items()) for m in cfg.mixes]
    vocabs = sorted(set(cfg.vocab_sizes))
    files = files_by_language(cfg.inputs)
    jobs = _plan(cfg, mixes, vocabs, files, Path(cache_dir) if cache_dir else out / "cache")
    results = _train_and_evaluate(cfg, jobs, vocabs, files)
    rows = [{"mix": mix, "variant": "morph" if morph else "bpe", "vocab": v, **metrics}
            for (mix, morph, _), per_vocab in results.items() for v, metrics in per_vocab.items()]
    rows.sort(key=lambda r: (r["variant"], r["mix"], r["vocab"]))
    for r in rows:
        r["target_margin"] = target_margin(r, cfg.targets)
    rec = _save_recommended(cfg, rows, jobs, cfg.recommend_vocab or max(vocabs), out / "recommended")
    result = {"split": cfg.split, "vocab_sizes": vocabs, "mixes": mixes, "pattern": cfg.pattern,
              "recommended": rec, "recommended_dir": str(out / "recommended"), "rows": rows,
              "seconds": round(time.time() - t0, 1)}
    md = _write_outputs(cfg, result, out, docs_dir)
    print(md)
    print(f"sweep done in {result['seconds']}s -> {out} (recommended tokenizer: {out / 'recommended'})")
    return result


def _plan(cfg: SweepConfig, mixes: list[str], vocabs: list[int], files: dict, cache: Path) -> dict:
    """(mixture, morph variant, vocab) -> (training options, cache folder): one training per mixture and
    variant at the largest vocab when smaller ones are truncations, else one per vocab too."""
    from qazlm.tokenizer.mixture import inputs_fingerprint
    from qazlm.tokenizer.train import TokenizerTrainConfig

    fingerprint = inputs_fingerprint(files)
    jobs: dict[tuple[str, bool, int], tuple[dict, Path]] = {}
    for mix in mixes:
        for morph in ([False, True] if cfg.morph_variant else [False]):
            for v in ([max(vocabs)] if cfg.truncate else vocabs):
                tc = TokenizerTrainConfig(inputs=[str(x) for x in cfg.inputs], vocab_size=v, mix=mix,
                                          pattern=cfg.pattern, min_frequency=cfg.min_frequency,
                                          max_bytes=cfg.max_bytes, morph=morph, balance=cfg.balance)
                d = dataclasses.asdict(tc)
                jobs[(mix, morph, v)] = (d, cache / cache_key(d, fingerprint))
    return jobs


def _train_and_evaluate(cfg: SweepConfig, jobs: dict, vocabs: list[int], files: dict) -> dict:
    """Each job's metrics per vocab size: trained (or read from the cache) and scored on FLORES+ `cfg.split`,
    in a process pool when more than one needs work."""
    from tqdm import tqdm

    from qazlm.tokenizer.mixture import count_bytes
    from qazlm.tokenizer.train import is_complete

    trained = sum(is_complete(p) for _, p in jobs.values())
    todo = {k for k, (_, p) in jobs.items() if not _is_done(p, cfg.split, vocabs)}
    print(f"sweep: {len(jobs)} trainings ({trained} cached), {len(vocabs)} vocab sizes, FLORES+ {cfg.split}",
          flush=True)
    counts = None
    if len(jobs) > trained:
        counts = {lang: count_bytes(fs)[0] for lang, fs in files.items()}
    args = {k: (d, str(p), counts, vocabs if cfg.truncate else [d["vocab_size"]], cfg.split)
            for k, (d, p) in jobs.items()}
    results: dict[tuple, dict] = {}
    if cfg.workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(_job, *args[k]): k for k in todo}
            for f in tqdm(as_completed(futs), total=len(futs), desc="train+eval", unit="tok"):
                results[futs[f]] = f.result()
    for k in tqdm([k for k in jobs if k not in results], desc="train+eval", unit="tok", disable=not todo):
        results[k] = _job(*args[k])
    return results


def _save_recommended(cfg: SweepConfig, rows: list[dict], jobs: dict, vocab: int, folder: Path) -> dict:
    """Pick the BPE mixture with the best target margin at `vocab` (module docstring) and save its tokenizer,
    truncated to `vocab`, as a tokenizer folder; returns its row."""
    from tokenizers import Tokenizer

    from qazlm.tokenizer.train import save_tokenizer_folder, truncate_tokenizer

    rec = max((r for r in rows if r["vocab"] == vocab and r["variant"] == "bpe"),
              key=lambda r: (r["target_margin"], -r["max_premium"]))
    (d, path), = [j for (mix, morph, _), j in jobs.items() if mix == rec["mix"] and not morph
                  and (cfg.truncate or j[0]["vocab_size"] == vocab)]
    tok_json = (path / "tokenizer.json").read_text(encoding="utf-8")
    tok = truncate_tokenizer(tok_json, vocab) if vocab < d["vocab_size"] else Tokenizer.from_str(tok_json)
    info = json.loads((path / "training_info.json").read_text(encoding="utf-8"))
    info.update(vocab_size=vocab, truncated_from=info["vocab_size"], sweep_split=cfg.split)
    info["config"]["vocab_size"] = vocab
    save_tokenizer_folder(tok, folder, info)
    return rec


def _write_outputs(cfg: SweepConfig, result: dict, out: Path, docs_dir: str | Path | None) -> str:
    """sweep.json, sweep.csv, sweep.md and the chart under `out` (and under docs/ when asked); returns the
    markdown."""
    rows = result["rows"]
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
    return md


def target_margin(row: dict, targets: dict[str, float]) -> float:
    """Smallest relative margin to the targets (upper bounds): > 0 when all are met, < 0 by the worst miss."""
    return min((bound - row[key]) / bound for key, bound in targets.items())


def render_markdown(result: dict, cfg: SweepConfig) -> str:
    rec = result["recommended"]
    bounds = ", ".join(f"{k.replace('fertility_', 'tokens/word ').replace('premium_', 'premium ')} ≤ {v:g}"
                       for k, v in cfg.targets.items())
    verdict = "meets every target" if rec["target_margin"] >= 0 else "misses its worst target by the least"
    lines = [f"# Tokenizer mixture x vocab sweep (FLORES+ {result['split']})", "",
             f"Generated by `qazlm tokenizer sweep {' '.join(map(str, cfg.inputs))}"
             f"{' --morph-variant' if cfg.morph_variant else ''}` (pattern {cfg.pattern}, "
             f"min_frequency {cfg.min_frequency}, balance {cfg.balance}). Fertility = tokens per whitespace word; "
             "premium = tokens of the language / English tokens on the same FLORES+ lines. Mixtures are shares of training bytes "
             "(upsample: all text is used and scarcer languages are repeated up to their share; downsample: "
             "the scarcest language is used once, the others are thinned). "
             "Smaller vocabs are the first k ids of the largest training (identical to training at k).", "",
             f"**Recommended mixture at vocab {rec['vocab']}: `{rec['mix']}`** — of the grid it {verdict} with the "
             f"largest margin ({rec['target_margin']:+.1%}; targets: {bounds}): tokens/word kk "
             f"{rec['fertility_kk']:.3f}, ru {rec['fertility_ru']:.3f}, en {rec['fertility_en']:.3f}; premium kk "
             f"{rec['premium_kk']:.3f}, ru {rec['premium_ru']:.3f}. \"Margin\" is the smallest relative slack to "
             "any target (negative: the worst miss).", "",
             "| mixture | variant | vocab | fert kk | fert ru | fert en | premium kk | premium ru | max premium | margin |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(result["rows"], key=lambda r: (r["variant"], r["mix"], r["vocab"])):
        mark = " **(rec.)**" if r is rec or (r["mix"] == rec["mix"] and r["vocab"] == rec["vocab"]
                                              and r["variant"] == rec["variant"]) else ""
        lines.append(f"| {r['mix']}{mark} | {r['variant']} | {r['vocab']} | {r['fertility_kk']:.3f} | "
                     f"{r['fertility_ru']:.3f} | {r['fertility_en']:.3f} | {r['premium_kk']:.3f} | "
                     f"{r['premium_ru']:.3f} | {r['max_premium']:.3f} | {r['target_margin']:+.1%} |")
    if cfg.morph_variant:
        lines += ["", "Variant `morph` = MorphBPE: during training Kazakh words are cut into morphemes "
                  "(`qazlm.tokenizer.morphology.segment_word`) and no merge may cross a cut; the saved tokenizer "
                  "uses the standard pre-tokenizer. Dashed lines in the chart."]
    lines += ["", "![fertility and max premium vs vocab](tokenizer_sweep.png)", ""]
    return "\n".join(lines)


def plot_sweep(rows: list[dict], path: str | Path) -> None:
    """Fertility per language and max premium vs vocab size, one line per mixture (dashed: MorphBPE)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fertility_kk", "kk tokens/word"), ("fertility_ru", "ru tokens/word"),
              ("fertility_en", "en tokens/word"), ("max_premium", "max premium vs en")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 5))
    series = sorted({(r["mix"], r["variant"]) for r in rows})
    colors = {m: f"C{i}" for i, m in enumerate(sorted({m for m, _ in series}))}
    for ax, (key, title) in zip(axes, panels):
        for mix, variant in series:
            pts = sorted((r["vocab"], r[key]) for r in rows if r["mix"] == mix and r["variant"] == variant)
            ax.plot([p[0] / 1000 for p in pts], [p[1] for p in pts], marker="o", color=colors[mix],
                    linestyle="--" if variant == "morph" else "-", label=f"{mix} {variant}")
        bound = TARGETS.get(key) or (max(v for k, v in TARGETS.items() if k.startswith("premium_"))
                                     if key == "max_premium" else None)
        if bound:
            ax.axhline(bound, color="gray", linestyle=":", linewidth=1, label="target")
        ax.set_title(title)
        ax.set_xlabel("vocab (k)")
        ax.grid(alpha=0.3)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    save_png(fig, path)
