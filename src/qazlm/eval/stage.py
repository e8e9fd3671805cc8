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


def model_fingerprint(folder: Path) -> str:
    """Identifies a model folder's contents cheaply (its config file, weight sizes and times): the eval
    stage is redone when the model it scored was retrained."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(folder.glob("*")):
        if f.is_file() and (f.suffix == ".safetensors" or f.name in ("qazlm_model.json", "config.json")):
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if f.suffix == ".json":
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_stage(section: dict, ctx) -> None:
    import dataclasses

    from qazlm.eval.evaluate import evaluate_models
    from qazlm.eval.report import write_report
    from qazlm.runs import output_lock, write_record

    cfg = from_dict(EvalStageConfig, ctx.with_run_defaults(section), f"{ctx.recipe_path}[eval]")
    out_dir = ctx.stage_dir("eval")
    model = Path(cfg.model) if cfg.model else ctx.stage_dir("pretrain") / "final"
    if not model.exists():
        raise QazlmError(f"{model}: no model to evaluate; run the pretrain stage first or set eval.model")
    steps = [p for p in _checkpoints(ctx.stage_dir("pretrain")) if p.resolve() != model.resolve()] \
        if cfg.checkpoints else []
    models = list(dict.fromkeys(steps + [model] + [Path(p) for p in cfg.compare]))
    val = ctx.stage_dir("data") / "val"
    if cfg.use_val and val.is_dir() and any(val.glob("*.jsonl.gz")) and str(ctx.stage_dir("data")) not in cfg.bpb:
        cfg.bpb = [*cfg.bpb, str(ctx.stage_dir("data"))]
    record = {**dataclasses.asdict(cfg), "models": {str(m): model_fingerprint(m) for m in models}}
    if ctx.skip("eval", record, out_dir):
        return
    settings = EvalSettings(**{k: getattr(cfg, k) for k in EvalSettings.__dataclass_fields__})
    tok_stage = ctx.stage_dir("tokenizer") if (ctx.stage_dir("tokenizer") / "tokenizer.json").exists() else None
    with output_lock(out_dir, "eval"):
        result = evaluate_models(models, settings, bpb_only=tuple(steps), fallback_tokenizer=tok_stage)
        for path in write_report(result, out_dir):
            print(f"eval: wrote {path}")
        write_record(out_dir, "eval", record)
