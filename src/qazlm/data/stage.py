"""Pipeline stage `[data]`: prepare the corpus into <run>/data with the tokenizer of <run>/tokenizer.

The section is a DataConfig (see recipes/data/sample.toml); without `sources` it uses the bundled
sample corpus (data/sample/{kk,ru,en}).
"""

from __future__ import annotations

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


def run_stage(section: dict, ctx) -> None:
    from qazlm.data.prepare import prepare

    section = dict(section)
    section.setdefault("out_dir", str(ctx.stage_dir("data")))
    section.setdefault("tokenizer", str(ctx.stage_dir("tokenizer")))
    section.setdefault("seed", ctx.run.seed)
    cfg = from_dict(DataConfig, section, f"{ctx.recipe_path}[data]")
    if not cfg.sources:
        cfg.sources = sample_sources()
    s = prepare(cfg, force=ctx.force)
    print(f"data: {s['documents_in']:,} docs read, {s['documents_kept']:,} kept; train {s['train']['tokens']:,} "
          f"tokens, val {sum(v['tokens'] for v in s['val'].values()):,} tokens -> {cfg.out_dir}/tokens")
