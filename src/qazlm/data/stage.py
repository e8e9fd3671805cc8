"""Pipeline stage `[data]`: prepare the corpus into <run>/data with the tokenizer of <run>/tokenizer.

The section is a DataConfig (see recipes/data/sample.toml); without `sources` it uses the bundled
sample corpus (data/sample/{kk,ru,en}). `qazlm data prepare --config RECIPE --section data` applies the same
defaults (`stage_config`). The stage is skipped only when <run>/data holds a completed run with exactly these
settings; when they changed, it is redone from scratch.
"""

from __future__ import annotations

from pathlib import Path

from qazlm.config import from_dict
from qazlm.data.config import DataConfig, SourceConfig
from qazlm.paths import SAMPLE_DIR

# Line-per-document files, except books, whose paragraphs (blank-line separated) are the documents.
BOOKS = {"robinson_crusoe", "dostoevsky_idiot", "tinyshakespeare"}


def sample_sources() -> list[SourceConfig]:
    out = []
    for lang in ("kk", "ru", "en"):
        for f in sorted((SAMPLE_DIR / lang).glob("*.txt.gz")):
            name = f.name.removesuffix(".txt.gz")
            out.append(SourceConfig(name=name, paths=[str(f)], lang=lang,
                                    format="txt_blank" if name in BOOKS else "txt"))
    return out


def stage_config(section: dict, ctx, where: str) -> DataConfig:
    """A run recipe's [data] table with the run layout's defaults: out_dir <run>/data, tokenizer <run>/tokenizer,
    the run seed, the bundled sample as sources. One function for `qazlm run` and `data prepare --section data`."""
    section = ctx.with_run_defaults(section, out_dir=str(ctx.stage_dir("data")),
                                    tokenizer=str(ctx.stage_dir("tokenizer")))
    cfg = from_dict(DataConfig, section, where)
    if not cfg.sources:
        cfg.sources = sample_sources()
    return cfg


def run_stage(section: dict, ctx) -> None:
    from qazlm.data.prepare import previous_settings, prepare, run_record
    from qazlm.data.shards import is_complete
    from qazlm.runs import config_changes, output_lock, read_record

    cfg = stage_config(section, ctx, f"{ctx.recipe_path}[data]")
    out = Path(cfg.out_dir)
    with output_lock(out, "data"):
        record = run_record(cfg)
        if is_complete(out / "tokens") and ctx.skip("data", record, out):
            return
        old = previous_settings(out)
        changed = old is not None and bool(config_changes(old, record))
        if changed and read_record(out) is None:  # (a completed run's changes were printed by ctx.skip)
            print(f"data: {out} holds an unfinished run with other settings; redoing it from scratch")
        s = prepare(cfg, force=ctx.force or changed)
    print(f"data: {s['documents_in']:,} docs read, {s['documents_kept']:,} kept; train {s['train']['tokens']:,} "
          f"tokens, val {sum(v['tokens'] for v in s['val'].values()):,} tokens -> {cfg.out_dir}/tokens")
