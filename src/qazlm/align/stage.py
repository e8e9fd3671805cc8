"""Pipeline stages `[pref_data]`, `[rm]` and `[dpo]`: pairs from `<run>/sft_data`, a reward model from
`<run>/sft/final`, and DPO of `<run>/sft/final` judged by `<run>/rm/final` — each with its command's own code
(same lock, skip, resume and record rules). `out_dir` is fixed by the run layout; `seed` defaults to `[run]`'s.
"""

from __future__ import annotations

from qazlm.config import from_dict


def pref_data_config(section: dict, ctx):
    from qazlm.align.pairs import PrefDataConfig

    table = ctx.fixed_out_dir(section, "pref_data", "qazlm pref-data -o DIR")
    data = ctx.with_run_defaults(table, sft_data=str(ctx.stage_dir("sft_data")))
    return from_dict(PrefDataConfig, data, f"{ctx.recipe_path}[pref_data]")


def rm_config(section: dict, ctx):
    from qazlm.align.reward import RmConfig

    table = ctx.fixed_out_dir(section, "rm", "qazlm rm train MODEL --data DIR -o OUT")
    data = ctx.with_run_defaults(table, model=str(ctx.last_model("sft", "pretrain")),
                                 data=str(ctx.stage_dir("pref_data")))
    return from_dict(RmConfig, data, f"{ctx.recipe_path}[rm]")


def dpo_config(section: dict, ctx):
    from qazlm.align.dpo import DpoConfig

    table = ctx.fixed_out_dir(section, "dpo", "qazlm dpo MODEL --data DIR -o OUT")
    rm = ctx.stage_dir("rm") / "final"
    data = ctx.with_run_defaults(table, model=str(ctx.stage_dir("sft") / "final"),
                                 data=str(ctx.stage_dir("pref_data")), reward_model=str(rm) if rm.is_dir() else "")
    return from_dict(DpoConfig, data, f"{ctx.recipe_path}[dpo]")


def run_pref_data(section: dict, ctx) -> None:
    from qazlm.align.pairs import run

    run(pref_data_config(section, ctx), force=ctx.force)


def run_rm(section: dict, ctx) -> None:
    from qazlm.align.reward import run_rm as train

    train(rm_config(section, ctx), force=ctx.force)


def run_dpo(section: dict, ctx) -> None:
    from qazlm.align.dpo import run_dpo as train

    train(dpo_config(section, ctx), force=ctx.force)
