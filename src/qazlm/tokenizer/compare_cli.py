"""`qazlm tokenizer compare`: measure any tokenizers on kk/ru/en text (table, CSV, JSON, PNG charts)."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

EPILOG = """examples:
  qazlm tokenizer compare ../shared/tokenizers/* runs/tok --flores devtest --out runs/compare
  qazlm tokenizer compare ours=runs/tok gpt4o=../shared/tokenizers/gpt4o/o200k_base.tiktoken \\
      --parallel newstest2019-ref.kaz_Cyrl.txt newstest2019-ref.rus_Cyrl.txt newstest2019-ref.eng_Latn.txt
  qazlm tokenizer compare runs/tok --mono kk=data/sample/kk ru=data/sample/ru --limit 2000

Tokenizer specs: HF folder or tokenizer.json, *.tiktoken (+ pattern.json beside it), tekken*.json,
SentencePiece *.model, or a hub id org/name (online only); prefix NAME= to label one.
"""


def register(tsub) -> None:
    from qazlm.cli import HelpFormatter

    p = tsub.add_parser("compare", help="compare tokenizers on kk/ru/en text", formatter_class=HelpFormatter,
                        description=__doc__, epilog=EPILOG)
    p.add_argument("tokenizers", nargs="+", metavar="TOKENIZER", help="[NAME=]path or hub id")
    src = p.add_argument_group("text (one of)")
    src.add_argument("--flores", choices=["dev", "devtest"], help="FLORES+ kk/ru/en (parallel)")
    src.add_argument("--parallel", nargs="+", metavar="[LANG=]FILE",
                     help="line-aligned files, one per language (FLORES+/NTREX names or LANG=FILE; en needed "
                          "for the premium)")
    src.add_argument("--mono", nargs="+", metavar="LANG=PATH", help="monolingual files/folders (no premium)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N lines per language")
    p.add_argument("--d-model", type=int, default=1024, help="model width for the embedding-parameter cost")
    p.add_argument("--untied", action="store_true", help="untied input/output embeddings (x2 params)")
    p.add_argument("--byte-budget", type=float, default=1e9, help="bytes of text per language -> training tokens")
    p.add_argument("--context", type=int, default=4096, help="context length (tokens) -> words that fit")
    p.add_argument("--no-morph", action="store_true", help="skip the Kazakh morpheme-boundary alignment")
    p.add_argument("--lexicon", default=None,
                   help="Hunspell kk .dic (with .aff beside it); default ../shared/data/lexicon/kk_KZ.dic")
    p.add_argument("--out", default=None, help="write compare.{csv,json,md} and PNG charts here")
    p.add_argument("--charts-dir", default=None, help="write the PNG charts here instead of --out")
    p.set_defaults(func=run)


def parse_tokenizer_arg(arg: str) -> tuple[str | None, str]:
    """`name=path` -> (name, path) unless the whole arg is an existing path."""
    head, sep, tail = arg.partition("=")
    if sep and head and "/" not in head and not Path(arg).exists():
        return head, tail
    return None, arg


def gather_text(args, limit: int | None) -> tuple[dict[str, list[str]], bool, str]:
    from qazlm.errors import QazlmError
    from qazlm.tokenizer.compare import flores_files, read_mono, read_parallel, split_lang_arg

    chosen = [x for x in (args.flores, args.parallel, args.mono) if x]
    if len(chosen) != 1:
        raise QazlmError("give exactly one text source: --flores dev|devtest, --parallel FILES or --mono LANG=PATH")
    if args.flores:
        return read_parallel(flores_files(args.flores), limit), True, f"FLORES+ {args.flores}"
    if args.parallel:
        files: dict[str, str] = {}
        for item in args.parallel:
            lang, path = split_lang_arg(item)
            if lang in files:
                raise QazlmError(f"{path}: a second file for language {lang!r} ({files[lang]}); one per language")
            files[lang] = path
        return read_parallel(files, limit), True, "parallel: " + ", ".join(files.values())
    mono: dict[str, list[str]] = {}
    for item in args.mono:
        lang, sep, path = item.partition("=")
        if not sep:
            raise QazlmError(f"--mono {item}: write it as LANG=PATH (e.g. kk=data/sample/kk)")
        from qazlm.io import expand_inputs

        mono.setdefault(lang, []).extend(str(f) for f in expand_inputs([path]))
    return read_mono(mono, limit), False, "monolingual: " + ", ".join(args.mono)


def run(args: argparse.Namespace) -> int:
    """Options and text are checked first, then `--out`'s run lock is taken (proving it writable), then the
    tokenizers are loaded and measured."""
    from qazlm.runs import output_lock
    from qazlm.tokenizer.compare import CompareOptions

    t0 = time.perf_counter()
    opts = CompareOptions(d_model=args.d_model, tied=not args.untied, byte_budget=args.byte_budget,
                          context=args.context, morphology=not args.no_morph, lexicon=args.lexicon, limit=args.limit)
    text = gather_text(args, opts.limit)
    with output_lock(args.out, "tokenizer compare") if args.out else contextlib.nullcontext():
        return _measure(args, opts, text, t0)


def _measure(args: argparse.Namespace, opts, text: tuple[dict[str, list[str]], bool, str], t0: float) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from dataclasses import asdict

    from qazlm.tokenizer.charts import write_charts
    from qazlm.tokenizer.compare import compare, cost_table, markdown_table, write_outputs
    from qazlm.tokenizer.loaders import load_tokenizer

    texts, parallel, source = text
    specs = [parse_tokenizer_arg(a) for a in args.tokenizers]
    console = Console(stderr=True)
    rows: list[dict] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task("tokenizers", total=len(specs))
        for name, spec in specs:
            bar.update(task, description=f"load {name or spec}")
            tok = load_tokenizer(spec, name)
            bar.update(task, description=f"measure {tok.name}")
            rows += compare([tok], texts, parallel, opts)
            bar.advance(task)
    seconds = time.perf_counter() - t0
    n_lines = {lang: len(v) for lang, v in texts.items()}
    report = "\n\n".join([
        f"Text: {source} ({', '.join(f'{k} {v} lines' for k, v in n_lines.items())})",
        markdown_table(rows),
        cost_table(rows, opts),
    ]) + "\n"
    print(report)
    if args.out or args.charts_dir:
        meta = {"source": source, "lines": n_lines, "parallel": parallel, "seconds": round(seconds, 2),
                "options": asdict(opts)}
        if args.out:
            paths = write_outputs(rows, args.out, meta, report)
            console.print(f"wrote {', '.join(str(p) for p in paths.values())}")
        charts = write_charts(rows, args.charts_dir or args.out)
        if charts:
            console.print(f"wrote {', '.join(str(p) for p in charts)}")
    console.print(f"compared {len(specs)} tokenizers x {len(texts)} languages in {seconds:.1f} s")
    return 0
