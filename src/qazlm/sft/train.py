"""`qazlm sft`: supervised fine-tuning of any causal LM folder through TRL's SFTTrainer.

Loss on assistant tokens only (`assistant_only_loss` with the template's `{% generation %}` spans, each
`<|im_end|>` included), best-fit packing without attention across conversations (position ids restart per
conversation; transformers builds a block-diagonal mask from them; without FlashAttention, conversations that open
alike share one copy of the opening), full fine-tuning or LoRA merged on save.
The output folder: `final/` (a Hugging Face model folder + `qazlm_lineage.json`), `checkpoints/` (resume
points), `metrics.jsonl`, `tb/`, the stage record last. See docs/sft.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.sft.config import SftConfig

STAGE = "sft"
PENDING = "sft_config.json"     # the config a run started with: a rerun resumes only with the same one
LINEAGE = "qazlm_lineage.json"
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt")  # trainer_state.json is written last
RESULTS = ("checkpoints", "final", "tb", "plots", "metrics.jsonl", "qazlm_stage.json", "rejected.jsonl",
           "summary.json")   # what --force clears (and *_report.json/.md)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def world_size() -> int:
    """Processes of the torchrun job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def last_complete_checkpoint(folder: Path) -> Path | None:
    """The newest `checkpoint-N` whose trainer_state.json (saved after the weights, optimizer and RNG state)
    parses; newer, half-written ones left by a kill are removed so the trainer never loads or rotates them."""
    if not folder.is_dir():
        return None
    found = sorted((p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in found:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            if all((ckpt / f).exists() for f in CHECKPOINT_FILES):
                return ckpt
        except (OSError, ValueError):
            pass
        if is_main_process():
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def sft_args(cfg: SftConfig, out: Path, device: str, has_heldout: bool):
    """trl.SFTConfig from ours. bf16, gradient checkpointing and logging are set explicitly: TRL 1.16 turns on
    bf16 and checkpointing even on CPU."""
    from trl import SFTConfig

    evaluate = has_heldout and cfg.eval_steps > 0
    return SFTConfig(
        output_dir=str(out / "checkpoints"), learning_rate=cfg.lr, num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, lr_scheduler_type=cfg.schedule, warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, data_seed=cfg.seed,
        logging_steps=cfg.logging_steps, logging_first_step=True, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, eval_strategy="steps" if evaluate else "no",
        eval_steps=cfg.eval_steps if evaluate else None, report_to="none", disable_tqdm=False,
        use_cpu=device == "cpu", bf16=device == "cuda", fp16=False, gradient_checkpointing=False,
        activation_checkpointing=False,
        max_length=cfg.max_len, packing=cfg.packing, packing_strategy="bfd", padding_free=cfg.packing,
        assistant_only_loss=True, dataset_num_proc=None, dataloader_num_workers=0, save_only_model=False)


def lora_config(cfg: SftConfig):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")


def build_trainer(cfg: SftConfig, model, tok, train: list[dict], held: list[dict], out: Path, device: str):
    """The TRL trainer with qazlm's callbacks: metrics.jsonl, TensorBoard in OUT/tb, a quiet progress bar."""
    from datasets import Dataset

    from qazlm.sft.callbacks import TokenCounter, counting_collator, make_trainer_class, quiet_progress
    from qazlm.sft.packing import row_packed_collator, use_packed_attention, uses_flash_attention

    trainer = make_trainer_class()(
        model=model, args=sft_args(cfg, out, device, bool(held)), processing_class=tok,
        train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(held) if held else None,
        peft_config=lora_config(cfg))
    trainer.counter = TokenCounter()
    trainer.shared_saved = 0
    if cfg.packing and not uses_flash_attention(trainer.model):
        trainer.data_collator = row_packed_collator(tok.pad_token_id)
        use_packed_attention(model)
        share_openings(trainer, tok, cfg)
    trainer.data_collator = counting_collator(trainer.data_collator)
    quiet_progress(trainer)
    if is_main_process():
        add_tensorboard(trainer, out)
    return trainer


def add_tensorboard(trainer, out: Path) -> None:
    """TensorBoard event files in OUT/tb (also where the writer reopens for a final held-out evaluation)."""
    from transformers.integrations import TensorBoardCallback

    tensorboard = TensorBoardCallback()
    tensorboard.logging_dir = str(out / "tb")
    trainer.add_callback(tensorboard)


def share_openings(trainer, tok, cfg: SftConfig) -> None:
    """Conversations that open alike (the same tool definitions, the same first request) share one copy of the
    opening in their packed row (`qazlm.sft.packing.fork_shared_openings`); rows carry their position ids."""
    from qazlm.sft.packing import fork_shared_openings
    from qazlm.tokenizer.special_tokens import IM_START, token_id

    im_start = token_id(tok, IM_START)
    if im_start is None:
        return
    trainer.train_dataset, trainer.shared_saved = fork_shared_openings(trainer.train_dataset, im_start, cfg.max_len)
    if trainer.eval_dataset is not None:
        trainer.eval_dataset = fork_shared_openings(trainer.eval_dataset, im_start, cfg.max_len)[0]
    trainer._signature_columns = ["input_ids", "labels", "seq_lengths", "position_ids"]


def dataset_stats(dataset) -> dict:
    """Rows, tokens and supervised (label != -100) tokens of a prepared TRL dataset; an all-zero mask is an
    error (training would learn nothing without a word)."""
    tokens = supervised = 0
    for row in dataset:
        tokens += len(row["input_ids"])
        supervised += sum(1 for x in row["labels"] if x != -100)
    return {"rows": len(dataset), "tokens": tokens, "supervised_tokens": supervised}


def prepare_out(out: Path, cfg, force: bool, log, stage: str = STAGE) -> bool:
    """True when OUT already holds this exact run (skip). A finished run, or one with checkpoints to resume,
    with other settings is refused without `force`; with it, the old results go. A run that stopped before
    its first checkpoint (e.g. a wrong data path) holds nothing worth keeping and is simply started over."""
    from qazlm.io import clean_temp, write_json
    from qazlm.runs import config_changes, read_record

    clean_temp(out)
    wanted = json.loads(json.dumps(dataclasses.asdict(cfg)))
    done = read_record(out)
    started = json.loads((out / PENDING).read_text(encoding="utf-8")) if (out / PENDING).is_file() else None
    stale = done is None and started is not None and not any((out / "checkpoints").glob("checkpoint-*"))
    if stale:
        started = None  # a run that failed or died before its first checkpoint: nothing to keep or resume
    old = done if done is not None else started
    changes = config_changes(old, wanted) if old is not None else []
    if done is not None and not changes and not force and (out / "final" / LINEAGE).is_file():
        log(f"{stage}: {out} is up to date (same config); skipping (--force to retrain)")
        return True
    if changes and not force:
        raise QazlmError(f"{out}: holds a {stage} run with other settings ({'; '.join(changes[:3])}"
                         f"{'; ...' if len(changes) > 3 else ''}); pass --force to replace it, or choose another -o")
    if force or changes or stale:   # every result of the old run: a new run that fails must not show old figures
        for path in [*(out / name for name in RESULTS), *out.glob("*_report.json"), *out.glob("*_report.md")]:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    write_json(out / PENDING, wanted)
    return False


def tokens_before(out: Path, step: int) -> int:
    """Tokens trained up to `step` according to metrics.jsonl (a resumed run keeps counting from there)."""
    from qazlm.io import read_jsonl

    rows = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("step", 0) <= step and "tokens" in r]
    return int(rows[-1]["tokens"]) if rows else 0


def check_context(model, kind: str, cfg: SftConfig) -> None:
    """Rows longer than the model's context would train positions it was never built for (transformers' RoPE
    extrapolates silently) and the saved model could not read them back: one error naming the fixes."""
    context = getattr(model.config, "max_position_embeddings", None)
    if context and cfg.max_len > context:
        fix = (f"pretrain with [pretrain] model_overrides = {{ max_seq_len = {cfg.max_len} }}" if kind == "qazlm"
               else "use a model with a longer context")
        raise QazlmError(f"[sft] max_len = {cfg.max_len} is longer than the context of {cfg.model} ({context} tokens); "
                         f"lower max_len, or {fix}")


def run_sft(cfg: SftConfig, force: bool = False, log=print, callbacks: list | None = None) -> dict:
    """Fine-tune `cfg.model` on `cfg.data` into `cfg.out_dir`; returns the run summary (steps, tokens, tokens/s,
    s/step, wall time, losses, padding waste). A rerun resumes from the last complete checkpoint;
    `callbacks` (extra transformers TrainerCallbacks) are for tests and benchmarks."""
    from qazlm.runs import output_lock

    out = Path(cfg.out_dir)
    lock, log = (output_lock(out, STAGE), log) if is_main_process() else (contextlib.nullcontext(), quiet)
    with torchrun_group(cfg.device), lock:
        if rank_zeros_answer(is_main_process() and prepare_out(out, cfg, force, log)):
            return json.loads((out / "final" / LINEAGE).read_text(encoding="utf-8"))["summary"]
        return _train(cfg, out, log, callbacks or [])


def quiet(*_) -> None:
    """The log of ranks other than 0: one copy of each line is enough."""


@contextlib.contextmanager
def torchrun_group(device: str):
    """Under torchrun, the job's process group for the block: joined first (accelerate's state, which the trainer
    reuses), so that the ranks can wait for rank 0 to prepare the output folder before any of them reads it; left
    together at the end (a rank that exits while another still talks to it aborts that one)."""
    if world_size() == 1:
        yield
        return
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState(cpu=device == "cpu")
    yield
    dist.barrier()
    dist.destroy_process_group()


def rank_zeros_answer(value):
    """Rank 0's `value` on every process of a torchrun job, after rank 0 computed it (a barrier): the output folder
    is prepared (cleared by --force, or found finished) by rank 0 alone, and every rank must act on that."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train(cfg: SftConfig, out: Path, log, callbacks: list) -> dict:
    from qazlm.runs import resolve_device

    t_start = time.perf_counter()
    quiet_libraries()
    device = resolve_device(cfg.device, "[sft]")
    model, kind, tok, train, held, rejected = _load_inputs(cfg, device, log)
    trainer = build_trainer(cfg, model, tok, train, held, out, device)
    stats = {**dataset_stats(trainer.train_dataset), "shared_openings": trainer.shared_saved}
    if stats["supervised_tokens"] == 0:
        raise QazlmError(f"{cfg.data}: no token of any conversation is marked for training (all-zero assistant "
                         f"masks after max_len = {cfg.max_len} tokens); check the chat template's "
                         "{% generation %} spans or raise max_len")
    resume = last_complete_checkpoint(out / "checkpoints")
    step0 = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    metrics, logger = _attach_metrics(trainer, out, resume, step0,
                                      lambda: header(cfg, trainer, stats, len(train), len(held), kind, device))
    for cb in callbacks:
        trainer.add_callback(cb)
    shared = f" ({trainer.shared_saved:,} more in shared openings, computed once)" if trainer.shared_saved else ""
    log(f"sft: {cfg.model} ({kind}, {device}) on {len(train):,} conversations -> {stats['rows']:,} "
        f"{'packed rows' if cfg.packing else 'sequences'}, {stats['supervised_tokens']:,} of {stats['tokens']:,} "
        f"tokens{shared} trained on"
        f"{'; LoRA r=' + str(cfg.lora.r) if cfg.lora.enabled else '; full fine-tuning'}"
        f"{f'; resuming from {resume.name}' if resume else ''}")
    try:
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        train_s = time.perf_counter() - t0
        bad = [(s, v) for s, v in metrics.losses if not math.isfinite(v)]
        if bad:
            raise QazlmError(f"[sft] loss became {bad[0][1]} at step {bad[0][0]}; lower lr (now {cfg.lr:g}) or "
                             "check the data")
        heldout_loss = final_heldout_loss(trainer) if held else None
    finally:
        if logger is not None:
            logger.close()
    summary = make_summary(cfg, trainer, metrics, result, stats, train_s, heldout_loss, out, step0, rejected)
    summary["wall_s"] = time.perf_counter() - t_start
    if is_main_process():
        _save(cfg, trainer, tok, out, kind, summary, rejected)
        log(summary_line(summary))
    return summary


def final_heldout_loss(trainer) -> float:
    """The held-out loss of the trained model: the evaluation the trainer ran at its last step when eval_steps
    divides it (not run and logged a second time), else a new one."""
    last = [r for r in trainer.state.log_history if "eval_loss" in r and r.get("step") == trainer.state.global_step]
    return float(last[-1]["eval_loss"]) if last else float(trainer.evaluate()["eval_loss"])


def _load_inputs(cfg: SftConfig, device: str, log) -> tuple:
    """(model, kind, tokenizer, train, held-out, set-aside conversations), every check that needs them done: the
    template trains assistant tokens, the model's context holds max_len, LoRA targets match modules."""
    from qazlm.sft.load import (check_lora_targets, check_template, load_chat_tokenizer, load_model, read_sft_data,
                                set_aside_overlong)

    train, held, rejected = read_sft_data(cfg.data, cfg.max_heldout)
    model, kind = load_model(cfg.model, device)
    tok = load_chat_tokenizer(cfg.model, kind, cfg.chat_template)
    check_template(tok, train[0]["messages"], cfg.model)
    check_context(model, kind, cfg)
    train, too_long = set_aside_overlong(tok, train, cfg.max_len)
    if not train:
        raise QazlmError(f"{cfg.data}: every conversation is longer than max_len = {cfg.max_len} tokens; raise max_len")
    if too_long:
        log(f"sft: {len(too_long)} conversations longer than max_len = {cfg.max_len} tokens set aside (rejected.jsonl)")
    if cfg.lora.enabled:
        check_lora_targets(model, cfg.lora.target_modules, cfg.model)
    return model, kind, tok, train, held, rejected + too_long


def _attach_metrics(trainer, out: Path, resume, step0: int, make_header):
    """The metrics callback (losses, tokens) and, on the main process, its metrics.jsonl logger, continued on a
    resume (tokens counted so far read back) or started with the run's header record."""
    from qazlm.sft.callbacks import MetricsCallback
    from qazlm.train.monitor import MetricsLogger

    logger = MetricsLogger(out, tensorboard=False, resume_step=step0 if resume else None) if is_main_process() else None
    metrics = MetricsCallback(logger, trainer.counter, tokens_before(out, step0) if resume else 0)
    if logger is not None:
        trainer.add_callback(metrics)
        if not resume:
            logger.log(0, make_header())
    return metrics, logger


def _save(cfg: SftConfig, trainer, tok, out: Path, kind: str, summary: dict, rejected: list) -> None:
    from qazlm.io import write_json
    from qazlm.runs import write_record

    if rejected:
        write_jsonl(out / "rejected.jsonl", rejected)
    save_final(trainer, tok, out / "final", lineage(cfg, kind, summary))
    write_record(out, STAGE, dataclasses.asdict(cfg))
    write_json(out / "summary.json", summary)


def quiet_libraries() -> None:
    """transformers/TRL/datasets info chatter (map progress bars, tokenizer notes) would bury the summary."""
    import datasets
    import transformers

    warnings.filterwarnings("ignore", message=r".*is deprecated and will be removed in v6", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def header(cfg: SftConfig, trainer, stats: dict, n_train: int, n_held: int, kind: str, device: str) -> dict:
    model = trainer.model
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": params, "trainable_params": trainable, "conversations": n_train, "heldout_conversations": n_held,
            "rows": stats["rows"], "tokens_per_epoch": stats["tokens"], "supervised_tokens": stats["supervised_tokens"],
            "shared_opening_tokens": stats["shared_openings"],
            "steps": trainer.args.max_steps if trainer.args.max_steps > 0 else None, "model_kind": kind,
            "device": device, "processes": trainer.accelerator.num_processes, "packing": cfg.packing,
            "lora": cfg.lora.enabled}


def make_summary(cfg, trainer, metrics, result, stats, train_s, heldout_loss, out, step0, rejected) -> dict:
    steps = int(result.global_step)
    done = max(steps - step0, 1)
    losses = [v for _, v in metrics.losses]
    import torch
    import transformers
    import trl

    from qazlm import __version__

    try:
        import peft
        peft_version = peft.__version__
    except ImportError:  # pragma: no cover - peft is a dependency
        peft_version = None
    return {"steps": steps, "resumed_from_step": step0 or None, "tokens": metrics.tokens_before + trainer.counter.real,
            "tokens_this_run": trainer.counter.real, "tokens_per_s": trainer.counter.real / max(train_s, 1e-9),
            "s_per_step": train_s / done, "train_s": train_s, "train_loss": float(result.training_loss),
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "heldout_loss": heldout_loss, "padding_waste": trainer.counter.pad_share,
            "rows": stats["rows"], "supervised_tokens_per_epoch": stats["supervised_tokens"],
            "tokens_per_epoch": stats["tokens"], "shared_opening_tokens_per_epoch": stats["shared_openings"],
            "set_aside": len(rejected), "out": str(out / "final"),
            "versions": {"qazlm": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "trl": trl.__version__, "peft": peft_version}}


def lineage(cfg: SftConfig, kind: str, summary: dict) -> dict:
    """Where the model came from: the parent model and data (paths + fingerprints), settings, the run."""
    from qazlm.model.io import files_sha256, weights_sha256

    data = Path(cfg.data)
    card = data / "card.json"
    card_counts = json.loads(card.read_text(encoding="utf-8")).get("conversations") if card.is_file() else None
    data_files = [p for p in (data / "train.jsonl", data / "heldout.jsonl") if p.is_file()]
    return {"format": "qazlm-sft-lineage-v1", "stage": STAGE,
            "parent": {"path": str(Path(cfg.model).resolve()), "kind": kind,
                       "fingerprint": weights_sha256(cfg.model, kind)},
            "data": {"path": str(data.resolve()), "counts": card_counts, "fingerprint": files_sha256(data_files)},
            "config": dataclasses.asdict(cfg), "summary": summary}


def save_final(trainer, tok, final: Path, info: dict) -> None:
    """A plain Hugging Face model folder (LoRA merged), the tokenizer with its chat template, generation stopping
    at <|im_end|> too, and the lineage; built in a temp folder and swapped in."""
    from qazlm.io import atomic_dir, write_json
    from qazlm.tokenizer.special_tokens import IM_END, token_id

    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    ids = [i for i in (token_id(tok, IM_END), tok.eos_token_id) if i is not None]
    if getattr(model, "generation_config", None) is not None:  # a reward model (sequence classification) has none
        model.generation_config.eos_token_id = list(dict.fromkeys(ids))
        model.generation_config.pad_token_id = tok.pad_token_id
    with atomic_dir(final) as tmp:
        model.float().save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / LINEAGE, info)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    from qazlm.io import atomic_write

    with atomic_write(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def summary_line(s: dict) -> str:
    held = f", held-out loss {s['heldout_loss']:.4f}" if s["heldout_loss"] is not None else ""
    return (f"sft: {s['steps']} steps, {s['tokens_per_s']:,.0f} tokens/s ({s['s_per_step']:.2f} s/step), "
            f"train loss {s['final_loss']:.4f}{held}, padding waste {100 * s['padding_waste']:.1f}% -> {s['out']}")
