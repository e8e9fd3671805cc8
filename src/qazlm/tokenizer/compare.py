"""`qazlm tokenizer compare` engine: read eval text, run every tokenizer through `metrics.evaluate`, tabulate.

Text comes either as line-aligned parallel files (premium vs English is only defined there) or as
monolingual files. Everything is kept in memory: eval sets are small (FLORES+ devtest = 1,012 lines).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

from qazlm.config import check_value
from qazlm.errors import QazlmError
from qazlm.io import iter_lines, read_lines, write_json, write_text
from qazlm.paths import FLORES_CODES, LANGS, flores_path

CODE_TO_LANG = {code: lang for lang, code in FLORES_CODES.items()}
# FLORES+ `devtest.kaz_Cyrl.gz`, NTREX `newstest2019-ref.kaz_Cyrl.txt`: the language is the xxx_Xxxx code
FILE_LANG = re.compile(r"(?:^|[._-])([a-z]{3}_[A-Z][a-z]{3})(?:[._-]|$)")


@dataclass
class CompareOptions:
    d_model: int = 1024           # width for the embedding-parameter cost
    tied: bool = True             # tied input/output embeddings (untied doubles the cost)
    byte_budget: float = 1e9      # bytes of text per language -> training tokens
    context: int = 4096           # context length in tokens -> words that fit
    morphology: bool = True       # token vs morpheme boundary P/R/F1 for Kazakh
    lexicon: str | None = None    # Hunspell .dic (default ../shared/data/lexicon/kk_KZ.dic)
    limit: int | None = None      # use only the first N lines per language (None: all)

    def __post_init__(self) -> None:
        """The one check of the comparison options (named by their CLI flags), however they were built."""
        for flag, value, rule in (("--d-model", self.d_model, ">= 1"), ("--byte-budget", self.byte_budget, "> 0"),
                                  ("--context", self.context, ">= 1"), ("--limit", self.limit, ">= 1")):
            check_value(flag, value, rule)


def lang_of_file(path: str | Path) -> str:
    """kk/ru/en (or the raw code) from a FLORES+/NTREX-style file name."""
    m = FILE_LANG.search(Path(path).name)
    if not m:
        raise QazlmError(f"{path}: cannot tell the language from the file name; write it as LANG=PATH "
                         "(e.g. kk=ref.kk.txt) or use FLORES+/NTREX names like devtest.kaz_Cyrl.gz")
    return CODE_TO_LANG.get(m.group(1), m.group(1))


def split_lang_arg(arg: str) -> tuple[str, str]:
    """`kk=path` -> ("kk", "path"); a bare path -> (language from its name, path)."""
    head, sep, tail = arg.partition("=")
    if sep and head and "/" not in head and not Path(arg).exists():
        return head, tail
    return lang_of_file(arg), arg


def read_parallel(files: dict[str, str | Path], limit: int | None = None) -> dict[str, list[str]]:
    """Line-aligned files -> {lang: lines}; a length mismatch or an empty file is an error naming the file."""
    if not files:
        raise QazlmError("no text given; pass --flores dev|devtest, --parallel FILES or --mono FILES")
    texts: dict[str, list[str]] = {}
    for lang, path in files.items():
        lines = read_lines(path)
        while lines and not lines[-1].strip():
            lines.pop()
        if not any(x.strip() for x in lines):
            raise QazlmError(f"{path}: empty file; give a file with one sentence per line")
        texts[lang] = lines
    ref_lang, ref = next(iter(texts.items()))
    for lang, lines in texts.items():
        if len(lines) != len(ref):
            raise QazlmError(f"{files[lang]}: {len(lines)} lines but {files[ref_lang]} has {len(ref)}; "
                             "parallel files must be line-aligned (same number of lines)")
    check_alignment(texts, files)
    keep = [i for i in range(len(ref)) if any(texts[lang][i].strip() for lang in texts)]
    if limit:
        keep = keep[:limit]
    return {lang: [lines[i] for i in keep] for lang, lines in texts.items()}


# Misalignment check: the lengths of translations correlate strongly line by line (Pearson r of log character
# lengths ~0.9 on FLORES+), while a shift by one line drops r to ~0.1. Files are checked in windows of about
# WINDOW lines (a line lost in the middle shifts only the rest), each against the first file at offsets up to
# ±MAX_OFFSET; a window whose best offset correlates clearly better than 0 is an error.
MIN_LINES, WINDOW, MAX_OFFSET, MIN_R, MIN_GAIN = 20, 100, 3, 0.5, 0.15


def _lagged_r(x, y, k: int) -> float:
    """Pearson r of x[i + k] with y[i] (0 when either side is constant)."""
    import numpy as np

    a, b = (x[k:], y[:len(y) - k]) if k >= 0 else (x[:k], y[-k:])
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def check_alignment(texts: dict[str, list[str]], files: dict[str, str | Path]) -> None:
    """Raise when a parallel file is shifted against the first one (same line count, lines out of step)."""
    import numpy as np

    (ref_lang, ref), *others = texts.items()
    if len(ref) < MIN_LINES:
        return
    log_len = {lang: np.log1p([len(x) for x in lines]) for lang, lines in texts.items()}
    windows = np.array_split(np.arange(len(ref)), max(1, len(ref) // WINDOW))
    for lang, _ in others:
        for idx in windows:
            x, y = log_len[ref_lang][idx], log_len[lang][idx]
            r = {k: _lagged_r(x, y, k) for k in range(-MAX_OFFSET, MAX_OFFSET + 1)}
            k = max((k for k in r if k), key=r.get)
            if r[k] >= MIN_R and r[k] - r[0] >= MIN_GAIN:
                raise QazlmError(f"{files[lang]}: not line-aligned with {files[ref_lang]}: from about line "
                                 f"{idx[0] + 1}, its line i matches line i{k:+d} there (length correlation "
                                 f"{r[k]:.2f} vs {r[0]:.2f} as given); add or remove {abs(k)} line(s) so the "
                                 "files line up")


def read_mono(files: dict[str, list[str | Path]], limit: int | None = None) -> dict[str, list[str]]:
    """Monolingual text (plain/jsonl/gz), non-empty lines only, up to `limit` per language."""
    out: dict[str, list[str]] = {}
    for lang, paths in files.items():
        lines: list[str] = []
        for p in paths:
            for line in iter_lines(p):
                if limit and len(lines) >= limit:
                    break
                lines.append(line)
            if not lines:
                raise QazlmError(f"{p}: empty file; give a file with text lines")
        out[lang] = lines
    return out


def flores_files(split: str) -> dict[str, Path]:
    if split not in ("dev", "devtest"):
        raise QazlmError(f"--flores {split}: expected dev or devtest")
    return {lang: flores_path(split, lang) for lang in LANGS}


def morph_fn(opts: CompareOptions):
    """Token vs morpheme boundary alignment (Hunspell lexicon), or None when off or the lexicon is absent."""
    if not opts.morphology:
        return None
    from qazlm.tokenizer.morphology import HunspellSegmenter, boundary_alignment, default_lexicon, get_segmenter

    lexicon = opts.lexicon or str(default_lexicon())
    if not opts.lexicon and not Path(lexicon).exists():
        return None  # no shared lexicon on this machine: drop the morphology columns rather than fail
    seg: HunspellSegmenter = get_segmenter(lexicon)
    return lambda tok, words, max_words: boundary_alignment(tok, words, max_words, seg)


def compare(tokenizers: list, texts: dict[str, list[str]], parallel: bool, opts: CompareOptions,
            progress=None) -> list[dict]:
    """One row per tokenizer x language with every metric (definitions in qazlm.tokenizer.metrics)."""
    from qazlm.tokenizer.metrics import evaluate

    morph = morph_fn(opts)
    rows = []
    for tok in tokenizers:
        result = evaluate(tok, texts, parallel, d_model=opts.d_model, tied=opts.tied,
                          byte_budget=opts.byte_budget, morph=morph)
        for lang, m in result.items():
            rows.append({"tokenizer": tok.name, "vocab_size": tok.vocab_size, "lang": lang, **m,
                         "context_words": opts.context / m["fertility"] if m["fertility"] else math.nan})
        if progress:
            progress(tok)
    return rows


# ----------------------------------------------------------------------------------------------- output

COLUMNS = [  # (key, header, format)
    ("tokenizer", "tokenizer", "{}"), ("vocab_size", "vocab", "{:,}"), ("lang", "lang", "{}"),
    ("fertility", "tok/word", "{:.2f}"), ("chars_per_token", "chars/tok", "{:.2f}"),
    ("bytes_per_token", "bytes/tok", "{:.2f}"), ("premium_total", "premium", "{:.2f}"),
    ("premium_median", "prem. med", "{:.2f}"), ("split_ge2", "words ≥2", "{:.1%}"),
    ("split_ge4", "words ≥4", "{:.1%}"), ("vocab_utilization", "vocab used", "{:.2%}"),
    ("fallback_rate", "unk/byte", "{:.2%}"), ("byte_token_rate", "byte tok", "{:.1%}"),
    ("roundtrip_exact", "round trip", "{:.1%}"),
    ("renyi_efficiency", "Rényi 2.5", "{:.3f}"), ("morph_f1", "morph F1", "{:.2f}"),
    ("encode_mb_s", "MB/s", "{:.2f}"),
]


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    """Main per tokenizer x language table (columns with no value anywhere are dropped)."""
    cols = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    out = ["| " + " | ".join(h for _, h, _ in cols) + " |",
           "|" + "|".join("---" if k in ("tokenizer", "lang") else "---:" for k, _, _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |")
    return "\n".join(out)


def cost_table(rows: list[dict], opts: CompareOptions) -> str:
    """Per tokenizer: embedding parameters at d_model, training tokens for the byte budget, context reach."""
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    by_tok: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_tok.setdefault(r["tokenizer"], {})[r["lang"]] = r
    tied = "tied" if opts.tied else "untied"
    head = (["tokenizer", "vocab", f"embedding params (d={opts.d_model}, {tied})"]
            + [f"{lang} tokens / {opts.byte_budget / 1e9:g} GB" for lang in langs]
            + [f"{lang} words in {opts.context} ctx" for lang in langs])
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, per in by_tok.items():
        any_row = next(iter(per.values()))
        cells = [name, f"{any_row['vocab_size']:,}", f"{any_row['embedding_params'] / 1e6:.1f} M"]
        cells += [_fmt(per[lang]["train_tokens"] / 1e9, "{:.2f} B") if lang in per else "–" for lang in langs]
        cells += [_fmt(per[lang]["context_words"], "{:,.0f}") if lang in per else "–" for lang in langs]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_outputs(rows: list[dict], out_dir: str | Path, meta: dict, report_md: str) -> dict[str, Path]:
    """compare.csv, compare.json and compare.md in out_dir (atomic writes)."""
    out = Path(out_dir)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in keys})
    paths = {"csv": out / "compare.csv", "json": out / "compare.json", "md": out / "compare.md"}
    write_text(paths["csv"], buf.getvalue())
    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    write_json(paths["json"], {**meta, "rows": clean})
    write_text(paths["md"], report_md)
    return paths


def flores_report(specs: list[str], split: str = "devtest", out_dir: str | Path | None = None,
                  limit: int | None = None, opts: CompareOptions | None = None) -> str:
    """One call for other stages (e.g. the pipeline's tokenizer stage): compare `specs` ([NAME=]path) on
    FLORES+ `split`, write compare.{csv,json,md} + charts into `out_dir` (if given), return the markdown."""
    from qazlm.tokenizer.charts import write_charts
    from qazlm.tokenizer.loaders import load_tokenizer

    opts = opts or CompareOptions()
    if limit is not None:
        opts = dataclasses.replace(opts, limit=limit)
    texts = read_parallel(flores_files(split), opts.limit)
    rows: list[dict] = []
    for spec in specs:
        head, sep, tail = spec.partition("=")
        named = sep and head and "/" not in head and not Path(spec).exists()
        rows += compare([load_tokenizer(tail if named else spec, head if named else None)], texts, True, opts)
    report = "\n\n".join([f"Text: FLORES+ {split} ({len(texts['kk'])} lines per language)",
                          markdown_table(rows), cost_table(rows, opts)]) + "\n"
    if out_dir is not None:
        write_outputs(rows, out_dir, {"source": f"FLORES+ {split}", "parallel": True}, report)
        write_charts(rows, out_dir)
    return report
