"""Pipeline stages that evaluate chat model folders with an `qazlm eval` mode's own code:

- `[tool_eval]`: function calling on `<run>/sft_data`'s held-out and unseen-tool conversations
  (`qazlm eval --tools`) -> `<run>/tool_eval/`; default models `<run>/sft/final` and, when it exists,
  `<run>/dpo/final` (the model the demo ships).
- `[safety_eval]`: safe-response rate on the sensitive-questions set and over-refusal on `<run>/sft_data`'s
  held-out prompts (`qazlm eval --safety`) -> `<run>/safety_eval/`; default models `<run>/sft/final` and, when
  it exists, `<run>/dpo/final`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qazlm.config import from_dict
from qazlm.errors import QazlmError


def run_model_eval(section: dict, ctx, stage: str, settings_cls, evaluate, report: str, defaults: list[Path]) -> None:
    """Settings from the table (+ `models`), a skip when the record (settings + model fingerprints) matches,
    else `evaluate(models, settings, out_dir)` under the folder's lock, then the record."""
    from qazlm.eval.stage import model_fingerprint
    from qazlm.runs import output_lock, write_record

    table = {"sft_data": str(ctx.stage_dir("sft_data")), **section}
    models = [Path(m) for m in table.pop("models", [])] or [m for m in defaults if m.is_dir()] or defaults[:1]
    settings = from_dict(settings_cls, table, f"{ctx.recipe_path}[{stage}]")
    missing = [m for m in models if not m.is_dir()]
    if missing:
        raise QazlmError(f"[{stage}] {missing[0]}: model folder not found; run the sft stage first or set "
                         f"{stage}.models")
    out_dir = ctx.stage_dir(stage)
    record = {**dataclasses.asdict(settings), "models": {str(m): model_fingerprint(m) for m in models}}
    if ctx.skip(stage, record, out_dir):
        return
    with output_lock(out_dir, stage):
        evaluate(models, settings, out_dir)
        print(f"{stage}: wrote {out_dir / report}")
        write_record(out_dir, stage, record)


def run_tool_eval(section: dict, ctx) -> None:
    from qazlm.eval.tools import ToolEvalSettings, evaluate_tools

    run_model_eval(section, ctx, "tool_eval", ToolEvalSettings, evaluate_tools, "tools_report.md",
                   [ctx.stage_dir("sft") / "final", ctx.stage_dir("dpo") / "final"])


def run_safety_eval(section: dict, ctx) -> None:
    from qazlm.eval.safety import SafetySettings, evaluate_safety

    run_model_eval(section, ctx, "safety_eval", SafetySettings, evaluate_safety, "safety_report.md",
                   [ctx.stage_dir("sft") / "final", ctx.stage_dir("dpo") / "final"])
