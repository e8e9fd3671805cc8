"""Pipeline stage `[sft_data]`: build the chat instruction set into `<run>/sft_data/` with `qazlm sft-data`'s
own code (`qazlm.sft.data.run`: the same lock, record and byte-identical output).

Every key of `qazlm sft-data` is allowed in the table except `out_dir` (the stage folder is fixed by the
run layout); `seed` defaults to the recipe's `[run] seed`. A small `per_task` keeps a demo run fast.
"""

from __future__ import annotations

import dataclasses

from qazlm.config import from_dict
from qazlm.sft.data import SftDataConfig

STAGE = "sft_data"


def stage_config(section: dict, ctx) -> SftDataConfig:
    """The [sft_data] table as a validated config writing into `<run>/sft_data`."""
    data = ctx.with_run_defaults(ctx.fixed_out_dir(section, STAGE, "qazlm sft-data -o DIR"))
    return from_dict(SftDataConfig, data, f"{ctx.recipe_path}[sft_data]")


def run_stage(section: dict, ctx) -> None:
    from qazlm.sft.data import run

    cfg = stage_config(section, ctx)
    if ctx.skip(STAGE, dataclasses.asdict(cfg), cfg.out_dir):
        return
    card = run(cfg, force=ctx.force)
    c = card["conversations"]
    print(f"sft_data: {c['train']:,} train, {c['heldout']:,} held-out conversations, {c['rejected']:,} set aside "
          f"-> {cfg.out_dir} (card: {cfg.out_dir}/card.md)")
