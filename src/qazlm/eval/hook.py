"""In-training evaluation: bits per byte per language every N steps, optional lm-eval tasks at the end.

The pretraining loop owns the schedule; this only bundles the texts and settings so each call is one line:

    hook = InTrainingEval(tokenizer, every=200)              # FLORES+ dev, first 64 sentences per language
    ...
    if (scores := hook.maybe_run(step, model)) is not None:  # {"kk": bpb, "ru": bpb, "en": bpb}
        logger.log(step, {f"val/bpb_{k}": v for k, v in scores.items()})
    ...
    hook.final_tasks(model, ["sib200_kk", "kkcopa_kk"], limit=50)

FLORES+ *dev* is the default (tune on dev, report on devtest); pass `texts_by_lang` to use the data
stage's `val/{lang}.jsonl.gz` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def default_texts(split: str = "dev", limit: int = 64) -> dict[str, list[str]]:
    from qazlm.eval.texts import flores_texts, set_lang

    return {set_lang(name): texts[:limit] for name, texts in flores_texts(split).items()}


@dataclass
class InTrainingEval:
    tokenizer: object
    every: int = 200
    texts_by_lang: dict[str, list[str]] = field(default_factory=dict)
    max_len: int = 256
    batch_size: int = 8
    device: str = "cpu"

    def __post_init__(self):
        if not self.texts_by_lang:
            self.texts_by_lang = default_texts()

    def run(self, model) -> dict[str, float]:
        """bpb per language now (model mode is restored afterwards)."""
        from qazlm.eval.bpb import bpb_per_language

        res = bpb_per_language(model, self.tokenizer, self.texts_by_lang, max_len=self.max_len,
                               batch_size=self.batch_size, device=self.device)
        return {lang: r["bpb"] for lang, r in res.items()}

    def maybe_run(self, step: int, model) -> dict[str, float] | None:
        """`run` when `step` is a multiple of `every` (and > 0), else None."""
        if self.every <= 0 or step <= 0 or step % self.every:
            return None
        return self.run(model)

    def final_tasks(self, model, tasks: list[str], *, limit: int | None = 50, num_fewshot: int = 0,
                    data_dir: str | None = None) -> dict:
        """lm-eval tasks at the end of training ({task: {"metric", "value", ...} or {"skipped": reason}})."""
        from qazlm.eval.harness import run_tasks

        return run_tasks(model, self.tokenizer, tasks, data_dir=data_dir, num_fewshot=num_fewshot, limit=limit,
                         batch_size=self.batch_size, device=self.device, max_len=self.max_len)
