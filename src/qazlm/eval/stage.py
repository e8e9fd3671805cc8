"""Pipeline stage `[eval]`: evaluate the pretrained model and write the report into `<run>/eval/`.

Defaults keep the tiny demo under a minute on 2 cores: bpb on the first 200 FLORES+ devtest sentences per
language (+ the data stage's validation text when present), two small tasks with `limit = 50`, one greedy
sample per language. Raise the limits in the recipe for a real evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import from_dict
from qazlm.errors import QazlmError
from qazlm.eval.evaluate import EvalSettings


@dataclass
class EvalStageConfig(EvalSettings):
    model: str = ""                      # model folder; default <run>/pretrain/final
    compare: list[str] = field(default_factory=list)  # more folders (e.g. HF models) evaluated beside it
    checkpoints: bool = False            # also score <run>/pretrain/**/step_* (bpb only) for the curve
    use_val: bool = True                 # add the data stage's val/{lang}.jsonl.gz to the bpb sets
    bpb_limit: int | None = 200
    tasks: list[str] = field(default_factory=lambda: ["sib200_kk", "kkcopa_kk"])
    limit: int | None = 50
    max_len: int = 256
    sample_tokens: int = 32


def _checkpoints(pretrain: Path) -> list[Path]:
    from qazlm.eval.evaluate import checkpoint_step

    found = [p.parent for p in pretrain.rglob("qazlm_model.json") if checkpoint_step(p.parent) is not None]
    return sorted(found, key=checkpoint_step)


def run_stage(section: dict, ctx) -> None:
    cfg = from_dict(EvalStageConfig, section, f"{ctx.recipe_path}[eval]")
    out_dir = ctx.stage_dir("eval")
    if (out_dir / "report.json").exists() and not ctx.force:
        print(f"eval: {out_dir / 'report.json'} exists; skipping (use --force to redo)")
        return
    model = Path(cfg.model) if cfg.model else ctx.stage_dir("pretrain") / "final"
    if not model.exists():
        raise QazlmError(f"{model}: no model to evaluate; run the pretrain stage first or set eval.model")
    steps = [p for p in _checkpoints(ctx.stage_dir("pretrain")) if p.resolve() != model.resolve()] \
        if cfg.checkpoints else []
    models = steps + [model] + [Path(p) for p in cfg.compare]
    val = ctx.stage_dir("data") / "val"
    if cfg.use_val and val.is_dir() and any(val.glob("*.jsonl.gz")) and str(ctx.stage_dir("data")) not in cfg.bpb:
        cfg.bpb = [*cfg.bpb, str(ctx.stage_dir("data"))]
    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.__dataclass_fields__})
    if settings.seed == EvalSettings.seed:
        settings.seed = ctx.run.seed
    from qazlm.eval.evaluate import evaluate_models
    from qazlm.eval.report import write_report

    tok_stage = next(iter(sorted(ctx.stage_dir("tokenizer").rglob("tokenizer.json"))), None) \
        if ctx.stage_dir("tokenizer").is_dir() else None
    result = evaluate_models(list(dict.fromkeys(models)), settings, bpb_only=tuple(steps),
                             fallback_tokenizer=tok_stage.parent if tok_stage else None)
    for path in write_report(result, out_dir):
        print(f"eval: wrote {path}")
