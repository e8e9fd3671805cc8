"""Pipeline stage `[pretrain]`: train on `<run>/data/tokens`, write `<run>/pretrain/` (checkpoints/,
metrics.jsonl, tensorboard/, plots/, final/). Skipped when `final/` exists, unless --force."""

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
    from qazlm.train.plot import plot_run
    from qazlm.train.trainer import train

    cfg = from_dict(PretrainConfig, section, f"{ctx.recipe_path}[pretrain]")
    if "seed" not in section:
        cfg.seed = ctx.run.seed
    cfg = fill_run_paths(cfg, ctx.out_dir)
    cfg = dataclasses.replace(cfg, out_dir=str(ctx.stage_dir("pretrain")))
    final = Path(cfg.out_dir) / "final"
    if (final / "qazlm_model.json").exists() and not ctx.force:
        print(f"pretrain: {final} exists; skipping (use --force to retrain)")
        return
    if ctx.force:
        shutil.rmtree(Path(cfg.out_dir) / "checkpoints", ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)
    if train(cfg) is not None:
        for p in plot_run(cfg.out_dir):
            print(f"pretrain: wrote {p}")
