"""Pipeline stage `[tool_eval]`: the chat model (`<run>/sft/final`) on function calling, with the held-out and
unseen-tool conversations of `<run>/sft_data` -> `<run>/tool_eval/` (`qazlm eval --tools`'s own code)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import from_dict
from qazlm.errors import QazlmError
from qazlm.eval.tools import ToolEvalSettings

STAGE = "tool_eval"


@dataclass
class ToolEvalStageConfig(ToolEvalSettings):
    models: list[str] = field(default_factory=list)   # default: <run>/sft/final


def run_stage(section: dict, ctx) -> None:
    from qazlm.eval.stage import model_fingerprint
    from qazlm.eval.tools import evaluate_tools
    from qazlm.runs import output_lock, write_record

    cfg = from_dict(ToolEvalStageConfig, {"sft_data": str(ctx.stage_dir("sft_data")), **section},
                    f"{ctx.recipe_path}[{STAGE}]")
    models = [Path(m) for m in cfg.models] or [ctx.stage_dir("sft") / "final"]
    missing = [m for m in models if not m.is_dir()]
    if missing:
        raise QazlmError(f"[{STAGE}] {missing[0]}: model folder not found; run the sft stage first or set "
                         f"{STAGE}.models")
    out_dir = ctx.stage_dir(STAGE)
    record = {**dataclasses.asdict(cfg), "models": {str(m): model_fingerprint(m) for m in models}}
    if ctx.skip(STAGE, record, out_dir):
        return
    settings = ToolEvalSettings(**{k: getattr(cfg, k) for k in ToolEvalSettings.__dataclass_fields__})
    with output_lock(out_dir, STAGE):
        evaluate_tools(models, settings, out_dir)
        print(f"{STAGE}: wrote {out_dir / 'tools_report.md'}")
        write_record(out_dir, STAGE, record)
