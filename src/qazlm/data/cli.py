"""`qazlm data prepare|report`: raw kk/ru/en text -> clean, deduplicated, mixed, tokenized shards."""

from __future__ import annotations

from pathlib import Path

PREPARE_EPILOG = """examples:
  qazlm data prepare --config recipes/data/sample.toml --set tokenizer=runs/tiny/tokenizer
  qazlm data prepare --config recipes/data/fineweb2_kk_ru_en.toml --set executor.tasks=64
  qazlm data prepare --config recipes/data/sample.toml --force     # redo everything
  qazlm data prepare --config recipes/tiny.toml --section data     # a run recipe's [data] stage alone

Reruns skip datatrove tasks that completed; a killed run picks up where it stopped. A folder made with
other settings is refused (the changes are listed): use --force, or another out_dir.
With --section data (a run recipe's stage table), defaults are those of `qazlm run`: out_dir <run>/data,
tokenizer <run>/tokenizer, the bundled sample as sources; `--set run.out_dir=...` sets the run folder.
Outputs: <out_dir>/tokens (shards), val/, rejects/, report/ (report.md, summary.json, PNGs)."""

REPORT_EPILOG = """examples:
  qazlm data report runs/data-sample              # markdown on stdout
  qazlm data report runs/tiny/data --json         # the JSON summary"""


def load_prepare_config(path: str, section: str | None, overrides: list[str] | None):
    """The DataConfig of `data prepare`: a data recipe (optionally one table of it) plus `--set`, or, for
    `--section data`, a run recipe's [data] stage with the run layout's defaults (the same as `qazlm run`)."""
    from qazlm.config import from_dict, load_config
    from qazlm.data.config import DataConfig
    from qazlm.data.stage import stage_config
    from qazlm.runs import RunConfig, RunContext, read_recipe

    if section != "data":
        return load_config(DataConfig, path, section=section, overrides=overrides)
    # keys are relative to [data] unless they name a table: run.out_dir=..., data.tokenizer=...
    scoped = [o if o.startswith(("run.", "data.")) else f"data.{o}" for o in overrides or []]
    recipe = read_recipe(path, scoped)
    ctx = RunContext(run=from_dict(RunConfig, recipe.get("run", {}), f"{path}[run]"), recipe_path=Path(path))
    return stage_config(recipe.get("data", {}), ctx, f"{path}[data]")


def _prepare(args) -> int:
    from qazlm.data.prepare import prepare

    cfg = load_prepare_config(args.config, args.section, args.set)
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
    pp.add_argument("--section", default=None, help="read the config from this table; `data`: a run recipe's "
                    "[data] stage, e.g. recipes/tiny.toml, with the defaults of `qazlm run`")
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
