"""Pipeline stage `[chat_eval]`: the base model (`<run>/pretrain/final`) beside the chat models (`<run>/sft/final`
and, when the run has one, `<run>/dpo/final`, the model the demo ships) as chat models, on the held-out split of
`<run>/sft_data`, SIB-200 test and FLORES+ devtest -> `<run>/chat_eval/`.

A model folder that is not there is skipped with a note (e.g. before the SFT stage has run); with none, the
stage stops with one line. Defaults keep the tiny demo's three models under two minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import from_dict
from qazlm.errors import QazlmError
from qazlm.eval.chat import ChatEvalSettings

STAGE = "chat_eval"


@dataclass
class ChatEvalStageConfig(ChatEvalSettings):
    models: list[str] = field(default_factory=list)   # default: <run>/pretrain/final and <run>/sft/final
    tokenizer: str = ""                               # for model folders without tokenizer files


def stage_models(cfg: ChatEvalStageConfig, ctx, log=print) -> tuple[list[Path], list[str | None]]:
    """(folders, report labels): the configured ones, else base, SFT and DPO of this run, absent ones skipped."""
    if cfg.models:
        return [Path(p) for p in cfg.models], [None] * len(cfg.models)
    wanted = [(ctx.stage_dir(stage) / "final", f"{name} ({stage}/final)")
              for stage, name in (("pretrain", "base"), ("sft", "sft"), ("dpo", "dpo"))]
    found = [(p, label) for p, label in wanted if p.is_dir()]
    for p, label in wanted:
        if not p.is_dir():
            log(f"chat_eval: note: {p} not found; {label.split()[0]} model skipped")
    if not found:
        raise QazlmError(f"[chat_eval] no model to evaluate: none of {', '.join(str(p) for p, _ in wanted)} exists; "
                         "run the pretrain/sft stages first or set chat_eval.models")
    return [p for p, _ in found], [label for _, label in found]


def run_stage(section: dict, ctx) -> None:
    from qazlm.eval.chat import evaluate_chat
    from qazlm.eval.chat_report import write_chat_report
    from qazlm.eval.stage import model_fingerprint
    from qazlm.runs import output_lock, write_record

    cfg = from_dict(ChatEvalStageConfig, ctx.with_run_defaults(section), f"{ctx.recipe_path}[{STAGE}]")
    if not cfg.sft_data and {"heldout", "multiturn"} & set(cfg.sets):
        cfg.sft_data = str(ctx.stage_dir("sft_data"))
        if not (Path(cfg.sft_data) / "heldout.jsonl").is_file():
            raise QazlmError(f"{cfg.sft_data}/heldout.jsonl not found; run the sft_data stage first or set "
                             "chat_eval.sft_data")
    out_dir = ctx.stage_dir(STAGE)
    models, labels = stage_models(cfg, ctx)
    record = {**dataclasses.asdict(cfg), "models": {str(m): model_fingerprint(m) for m in models}}
    if ctx.skip(STAGE, record, out_dir):
        return
    settings = ChatEvalSettings(**{k: getattr(cfg, k) for k in ChatEvalSettings.__dataclass_fields__})
    tok_stage = ctx.stage_dir("tokenizer") if (ctx.stage_dir("tokenizer") / "tokenizer.json").exists() else None
    with output_lock(out_dir, STAGE):
        result = evaluate_chat(models, settings, labels=labels, tokenizer=cfg.tokenizer or None,
                               fallback_tokenizer=tok_stage)
        for path in write_chat_report(result, out_dir):
            print(f"chat_eval: wrote {path}")
        write_record(out_dir, STAGE, record)
