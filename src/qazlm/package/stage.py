"""Pipeline stage `[package]`: the run's last model (quantized, else chat, else base) and the `[gguf]` stage's
files -> `<run>/package/`, a Hub-ready folder with a model card generated from this run's records
(`qazlm package`'s own code)."""

from __future__ import annotations

from qazlm.config import from_dict
from qazlm.errors import QazlmError
from qazlm.package.config import PackageConfig

STAGE = "package"


def stage_config(section: dict, ctx) -> PackageConfig:
    if "out_dir" in section:
        raise QazlmError(f"{ctx.recipe_path}[package] out_dir: not settable in a recipe; the stage always writes "
                         f"{ctx.stage_dir(STAGE)} (use `qazlm package MODEL -o OUT` for another folder)")
    found = [ctx.stage_dir(s) / "final" for s in ("quantize", "sft", "pretrain")]
    model = next((p for p in found if p.is_dir()), found[-1])
    gguf = sorted(str(p) for p in ctx.stage_dir("gguf").glob("*.gguf"))  # the [gguf] stage's files, if it ran
    data = {"model": str(model), "run": str(ctx.out_dir), "gguf": gguf, **section, "out_dir": str(ctx.stage_dir(STAGE))}
    return from_dict(PackageConfig, data, f"{ctx.recipe_path}[package]")


def run_stage(section: dict, ctx) -> None:
    from qazlm.package.package import run_package

    run_package(stage_config(section, ctx), force=ctx.force)
