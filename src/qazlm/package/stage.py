"""Pipeline stage `[package]`: the run's last model (quantized, else chat, else base) and the `[gguf]` stage's
files -> `<run>/package/`, a Hub-ready folder with a model card generated from this run's records
(`qazlm package`'s own code)."""

from __future__ import annotations

from pathlib import Path

from qazlm.config import from_dict
from qazlm.package.config import PackageConfig

STAGE = "package"


def stage_config(section: dict, ctx) -> PackageConfig:
    table = ctx.fixed_out_dir(section, STAGE, "qazlm package MODEL -o OUT")
    gguf = gguf_files(ctx.stage_dir("gguf"))
    model = ctx.last_model("quantize", "dpo", "sft", "pretrain")
    data = {"model": str(model), "run": str(ctx.out_dir), "gguf": gguf, **table}
    return from_dict(PackageConfig, data, f"{ctx.recipe_path}[package]")


def gguf_files(folder: Path) -> list[str]:
    """The model files the [gguf] stage's report lists, if it ran (not the importance matrix beside them)."""
    from qazlm.package.facts import read_json

    report = read_json(folder / "gguf_report.json") or {"files": {}}
    return sorted(str(folder / f["file"]) for f in report["files"].values())


def run_stage(section: dict, ctx) -> None:
    from qazlm.package.package import run_package

    run_package(stage_config(section, ctx), force=ctx.force)
