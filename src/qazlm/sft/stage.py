"""Pipeline stage `[sft]`: fine-tune `<run>/pretrain/final` on `<run>/sft_data` into `<run>/sft/` with
`qazlm sft`'s own code (`qazlm.sft.train.run_sft`: the same lock, resume, skip and record rules).

Every key of `qazlm sft` is allowed in the table; `model` and `data` default to the run's folders, `seed` to
`[run] seed`; `out_dir` is fixed by the run layout (setting it is an error).
"""

from __future__ import annotations

from qazlm.config import from_dict
from qazlm.sft.config import SftConfig

STAGE = "sft"


def stage_config(section: dict, ctx) -> SftConfig:
    """The [sft] table as a validated config reading the run's model and data, writing `<run>/sft`."""
    table = ctx.fixed_out_dir(section, STAGE, "qazlm sft MODEL --data DIR -o OUT")
    data = ctx.with_run_defaults(table, model=str(ctx.stage_dir("pretrain") / "final"),
                                 data=str(ctx.stage_dir("sft_data")))
    return from_dict(SftConfig, data, f"{ctx.recipe_path}[sft]")


def run_stage(section: dict, ctx) -> None:
    from qazlm.sft.train import run_sft

    run_sft(stage_config(section, ctx), force=ctx.force)
