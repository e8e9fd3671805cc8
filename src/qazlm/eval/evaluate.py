"""Evaluate several models/checkpoints the same way: bpb per text set, lm-eval tasks, generation samples.

Shared by `qazlm eval` and the pipeline's eval stage; the result is one JSON-able dict that
`qazlm.eval.report` turns into markdown + PNG.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError


@dataclass
class EvalSettings:
    """What `qazlm eval` runs (also the `[eval]` recipe table, plus `model`/`compare` there)."""

    bpb: list[str] = field(default_factory=lambda: ["flores:devtest"])  # text sets for bits per byte
    bpb_limit: int | None = None        # first N documents of each set (None: all)
    tasks: list[str] = field(default_factory=list)  # lm-eval task/group names, see `--list-tasks`
    num_fewshot: int = 0
    limit: int | None = None            # first N items of each task (None: all)
    data_dir: str | None = None         # eval data folder (default ../shared/data/eval)
    max_len: int = 512                  # tokens per scored window (capped by the model's max_seq_len)
    batch_size: int = 8
    samples: int = 1                    # generation samples per language in the report
    sample_tokens: int = 48
    device: str = "auto"                # auto: cuda when there is one, else cpu
    seed: int = 1234

    def __post_init__(self):
        from qazlm.runs import resolve_device

        self.device = resolve_device(self.device, "eval:")
        check_fields(self, "eval: ", {"bpb_limit": ">= 1", "num_fewshot": ">= 0", "limit": ">= 1", "max_len": ">= 4",
                                      "batch_size": ">= 1", "samples": ">= 0", "sample_tokens": ">= 1"})


def checkpoint_step(path: str | Path) -> int | None:
    """Training step of a checkpoint: from its folder name (step_000100, checkpoint-100) or a "step" field
    in one of its small JSON files (e.g. a final checkpoint's training state)."""
    import json

    path = Path(path)
    m = re.search(r"(?:step|checkpoint|ckpt)[_-]?(\d+)$", path.name)
    if m:
        return int(m.group(1))
    for f in sorted(path.glob("*.json")) if path.is_dir() else []:
        if f.stat().st_size > 100_000:
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and isinstance(data.get("step"), int) and not isinstance(data["step"], bool):
            return data["step"]
    return None


def evaluate_served(url: str, s: EvalSettings, log=print) -> dict:
    """lm-eval tasks on a model behind an OpenAI-compatible server (lm-eval's local-completions client).
    Bits per byte and generation samples need the weights, so they are left to the model folder's own eval."""
    from qazlm.eval.harness import run_lm_tasks, served_lm

    lm, model_id, max_len = served_lm(url, batch_size=s.batch_size, max_len=s.max_len)
    if s.bpb or s.samples:
        log(f"  {url}: a served model gets --tasks only (bits per byte and samples need the model folder)")
    out = {"name": model_id, "path": url, "kind": "served", "step": None, "params": None, "max_len": max_len,
           "bpb": {}, "copy": {}, "tasks": {}, "samples": {}}
    if s.tasks:
        import requests

        try:
            out["tasks"] = run_lm_tasks(lm, s.tasks, data_dir=s.data_dir, num_fewshot=s.num_fewshot, limit=s.limit,
                                        seed=s.seed, log=lambda m: log(f"  {m}"))
        except requests.RequestException as e:
            raise QazlmError(f"eval: {url} failed a request ({e}); check the server's log, or lower --batch-size") \
                from None
    return out


def evaluate_model(path: str | Path, s: EvalSettings, texts: dict[str, list[str]], *, tokenizer=None,
                   fallback_tokenizer=None, copy: bool = True, log=print) -> dict:
    """All evaluations of one model folder (or served model's URL) -> {"name", "path", "kind", "step", "bpb",
    "copy", "tasks", "samples"}; `copy=False` (checkpoints scored for the bpb curve) skips the copy probe."""
    import torch

    from qazlm.eval.harness import is_served

    if is_served(path):
        return evaluate_served(str(path), s, log)

    from qazlm.eval.harness import run_tasks
    from qazlm.infer.engine import SAMPLE_PROMPTS, generate
    from qazlm.infer.loading import load_model
    from qazlm.infer.scoring import bits_per_byte, copy_score

    torch.manual_seed(s.seed)
    if tokenizer is None and fallback_tokenizer and not (Path(path) / "tokenizer.json").exists():
        tokenizer = fallback_tokenizer  # e.g. a checkpoint saved without its tokenizer: use the run's
    loaded = load_model(path, device=s.device, tokenizer=tokenizer)
    model, tok = loaded.model, loaded.tokenizer
    max_len = min(s.max_len, model.max_len)
    if max_len < s.max_len:
        log(f"  {loaded.name}: scoring windows of {max_len} tokens, the model's context (max_len {s.max_len} asked)")
    n_params = sum(p.numel() for p in model.module.parameters())
    out = {"name": loaded.name, "path": str(path), "kind": model.kind, "step": checkpoint_step(path),
           "params": n_params, "max_len": max_len, "bpb": {}, "copy": {}, "tasks": {}, "samples": {}}
    for name, docs in texts.items():
        t0 = time.time()
        out["bpb"][name] = bits_per_byte(model, tok, docs, max_len=max_len, batch_size=s.batch_size,
                                         device=s.device, progress=True)
        log(f"  {loaded.name} bpb {name}: {out['bpb'][name]['bpb']:.4f} ({len(docs)} docs, {time.time() - t0:.1f}s)")
        if not copy:
            continue
        c = out["copy"][name] = copy_score(model, tok, docs, max_len=max_len, batch_size=s.batch_size,
                                           device=s.device)
        log(f"  {loaded.name} copy {name}: loss {c['first_loss']:.2f} -> {c['repeat_loss']:.2f} nats/token on the "
            f"repeat, {c['exact_repeat']:.0%} of {c['n_spans']} spans repeated exactly")
    if s.tasks:
        out["tasks"] = run_tasks(model, tok, s.tasks, data_dir=s.data_dir, num_fewshot=s.num_fewshot,
                                 limit=s.limit, batch_size=s.batch_size, device=s.device, max_len=max_len,
                                 seed=s.seed, log=lambda m: log(f"  {m}"))
        for task, r in out["tasks"].items():
            if "value" in r:
                log(f"  {loaded.name} {task}: {r['metric']}={r['value']:.4f} (chance {r['chance']})")
    if s.samples:
        for lang, prompts in SAMPLE_PROMPTS.items():
            prompts = prompts[:s.samples]
            texts_out = generate(model, tok, prompts, max_new_tokens=min(s.sample_tokens, max_len // 2),
                                 temperature=0.0, repetition_penalty=1.3, device=s.device)
            out["samples"][lang] = [{"prompt": p, "output": o} for p, o in zip(prompts, texts_out)]
    return out


def evaluate_models(paths: list[str | Path], s: EvalSettings, *, tokenizer=None, log=print,
                    bpb_only: tuple = (), fallback_tokenizer=None) -> dict:
    """Evaluate every model on the same text sets and tasks; adds unigram and chance baselines.
    Models in `bpb_only` (e.g. intermediate checkpoints for the curve) get bits per byte only."""
    import dataclasses

    from qazlm.eval.tasks import TASKS, expand_tasks
    from qazlm.heldout import load_bpb_sets, unigram_baselines

    if not paths:
        raise QazlmError("eval: no model folders given")
    if not (s.bpb or s.tasks or s.samples):
        raise QazlmError("eval: nothing to do (no --bpb sets, no --tasks, --samples 0); ask for at least one")
    texts = load_bpb_sets(s.bpb, s.bpb_limit) if s.bpb else {}
    models = []
    for n, path in enumerate(paths, 1):
        log(f"[{n}/{len(paths)}] evaluating {path}")
        light = str(path) in map(str, bpb_only)
        models.append(evaluate_model(path, dataclasses.replace(s, tasks=[], samples=0) if light else s, texts,
                                     tokenizer=tokenizer, fallback_tokenizer=fallback_tokenizer, copy=not light,
                                     log=log))
    tasks = expand_tasks(s.tasks) if s.tasks else []
    if not s.samples and not any(m["bpb"] or any("value" in r for r in m["tasks"].values()) for m in models):
        reasons = "; ".join(f"{t}: {r['skipped']}" for t, r in models[0]["tasks"].items() if "skipped" in r)
        raise QazlmError(f"eval: no scores produced, every task was skipped ({reasons}); check --data-dir")
    return {"format": "qazlm-eval-v1", "settings": {k: v for k, v in vars(s).items()},
            "baselines": {"unigram_bpb": unigram_baselines(texts),
                          "chance": {t: TASKS[t].chance for t in tasks}},
            "models": models}
