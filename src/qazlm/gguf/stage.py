"""Pipeline stage `[gguf]`: `<run>/dpo/final` (else `sft/final`, else `pretrain/final`) -> `<run>/gguf/*.gguf` with
`qazlm export gguf`'s own code (same lock, skip and record rules).

Every key of `qazlm export gguf` is allowed in the table; `model` defaults to the run's chat model when it
exists, else the base model (GGUF files are quantized by llama.cpp itself, so the fp32 model is the source,
not the torchao one); `out_dir` is fixed by the run layout.
"""

from __future__ import annotations

from qazlm.config import from_dict
from qazlm.gguf.config import GGUFConfig

STAGE = "gguf"


def stage_config(section: dict, ctx) -> GGUFConfig:
    table = ctx.fixed_out_dir(section, STAGE, "qazlm export gguf MODEL -o OUT")
    data = {"model": str(ctx.last_model("dpo", "sft", "pretrain")), "name": ctx.run.name, **table}
    return from_dict(GGUFConfig, data, f"{ctx.recipe_path}[gguf]")


def run_stage(section: dict, ctx) -> None:
    from qazlm.gguf.export import run_gguf

    run_gguf(stage_config(section, ctx), force=ctx.force)
