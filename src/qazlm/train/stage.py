"""Pipeline stage `[pretrain]`: train on `<run>/data/tokens`, write `<run>/pretrain/` (checkpoints/,
metrics.jsonl, tensorboard/, plots/, final/). Skipped when `final/` exists and was trained with the same
settings, unless --force; with other settings the run resumes from its checkpoints (which refuse another model
shape or batch geometry with one line)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from qazlm.config import from_dict
from qazlm.train.config import PretrainConfig


def fill_run_paths(cfg: PretrainConfig, run_out: Path) -> PretrainConfig:
    """Default data/val/out paths from the run folder layout (explicit settings win)."""
    data_stage = run_out / "data"
    return dataclasses.replace(
        cfg,
        data=cfg.data or str(data_stage / "tokens"),
        val_data=cfg.val_data or (str(data_stage) if (data_stage / "val").is_dir() else ""),
        out_dir=cfg.out_dir if cfg.out_dir != PretrainConfig.out_dir else str(run_out / "pretrain"),
    )


def run_stage(section: dict, ctx) -> None:
    from qazlm.runs import output_lock, write_record
    from qazlm.train.plot import plot_run
    from qazlm.train.trainer import train

    cfg = from_dict(PretrainConfig, ctx.with_run_defaults(section), f"{ctx.recipe_path}[pretrain]")
    cfg = dataclasses.replace(fill_run_paths(cfg, ctx.out_dir), out_dir=str(ctx.stage_dir("pretrain")))
    out = Path(cfg.out_dir)
    if (out / "final" / "qazlm_model.json").exists() and ctx.skip("pretrain", dataclasses.asdict(cfg), out):
        return
    with output_lock(out, "pretrain"):
        if ctx.force:
            shutil.rmtree(out / "checkpoints", ignore_errors=True)
            shutil.rmtree(out / "final", ignore_errors=True)
        if train(cfg) is not None:
            for p in plot_run(cfg.out_dir):
                print(f"pretrain: wrote {p}")
            write_record(out, "pretrain", dataclasses.asdict(cfg))
