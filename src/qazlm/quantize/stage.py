"""Pipeline stage `[quantize]`: `<run>/dpo/final` (else `sft/final`, else `pretrain/final`) -> `<run>/quantize/final`
with `qazlm quantize`'s own code (same lock, skip and record rules).

Every key of `qazlm quantize` is allowed in the table; `model` defaults to the run's chat model when it
exists (the [sft] stage ran), else the base model; `out_dir` is fixed by the run layout (setting it is an error).
"""

from __future__ import annotations

from qazlm.config import from_dict
from qazlm.quantize.config import QuantizeConfig

STAGE = "quantize"


def stage_config(section: dict, ctx) -> QuantizeConfig:
    table = ctx.fixed_out_dir(section, STAGE, "qazlm quantize MODEL -o OUT")
    data = {"model": str(ctx.last_model("dpo", "sft", "pretrain")), **table}
    return from_dict(QuantizeConfig, data, f"{ctx.recipe_path}[quantize]")


def run_stage(section: dict, ctx) -> None:
    from qazlm.quantize.quantize import run_quantize

    run_quantize(stage_config(section, ctx), force=ctx.force)
