"""`qazlm data prepare|report`: raw kk/ru/en text -> clean, deduplicated, mixed, tokenized shards."""

from __future__ import annotations

from pathlib import Path

PREPARE_EPILOG = """examples:
  qazlm data prepare --config recipes/data/sample.toml --set tokenizer=runs/tiny/tokenizer
  qazlm data prepare --config recipes/data/fineweb2_kk_ru_en.toml --set executor.tasks=64
  qazlm data prepare --config recipes/data/sample.toml --force     # redo everything

Reruns skip datatrove tasks that completed; a killed run picks up where it stopped.
Outputs: <out_dir>/tokens (shards), val/, rejects/, report/ (report.md, summary.json, PNGs)."""

REPORT_EPILOG = """examples:
  qazlm data report runs/data-sample              # markdown on stdout
  qazlm data report runs/tiny/data --json         # the JSON summary"""


def _prepare(args) -> int:
    from qazlm.config import load_config
    from qazlm.data.config import DataConfig
    from qazlm.data.prepare import prepare

    cfg = load_config(DataConfig, args.config, section=args.section, overrides=args.set)
    summary = prepare(cfg, force=args.force)
    if summary.get("status") == "submitted":
        return 0
    print(f"\nqazlm data: {summary['documents_in']:,} documents read, {summary['documents_kept']:,} kept, "
          f"{summary['documents_removed']:,} removed; train {summary['train']['tokens']:,} tokens -> "
          f"{Path(cfg.out_dir) / 'tokens'}; report: {Path(cfg.out_dir) / 'report' / 'report.md'}")
    return 0


def _report(args) -> int:
    import json

    from qazlm.data.report import load_summary, regenerate, to_markdown

    summary = regenerate(args.out_dir) if args.rebuild else load_summary(args.out_dir)
    print(json.dumps(summary, ensure_ascii=False, indent=2) if args.json else to_markdown(summary))
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("data", help="prepare training data (clean, dedup, mix, tokenize) and report on it",
                       formatter_class=HelpFormatter, description=__doc__)
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    pp = dsub.add_parser("prepare", help="run the corpus pipeline from a data recipe", formatter_class=HelpFormatter,
                         description="Read sources, normalize, language-ID, quality-filter, remove boilerplate, "
                                     "MinHash/exact dedup, scrub PII, decontaminate, mix and tokenize (datatrove).",
                         epilog=PREPARE_EPILOG)
    pp.add_argument("--config", required=True, help="data recipe TOML, e.g. recipes/data/sample.toml")
    pp.add_argument("--section", default=None, help="read the config from this table (e.g. data in recipes/tiny.toml)")
    pp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. executor.tasks=8")
    pp.add_argument("--force", action="store_true", help="delete previous outputs and redo every step")
    pp.set_defaults(func=_prepare)

    pr = dsub.add_parser("report", help="show the report of a prepared data folder", formatter_class=HelpFormatter,
                         description="Documents/tokens per language and source after each step, removal reasons "
                                     "with examples, length histograms, final mixture.", epilog=REPORT_EPILOG)
    pr.add_argument("out_dir", help="the out_dir of a `data prepare` run")
    pr.add_argument("--json", action="store_true", help="print the JSON summary instead of markdown")
    pr.add_argument("--rebuild", action="store_true", help="rebuild report.md and the PNGs from the logs first")
    pr.set_defaults(func=_report)
