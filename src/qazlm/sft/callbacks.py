"""What an SFT run reports: metrics.jsonl in pretraining's schema (so `qazlm plot OUT` works), padding waste
of the batches actually trained on, and a progress bar with ETA that does not print a dict every step."""

from __future__ import annotations

import math
import time

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


class TokenCounter:
    """Real and padded tokens of the training micro-batches (of every process), counted where the trainer
    computes the loss."""

    def __init__(self):
        self.real = 0
        self.total = 0

    def add(self, real: int, total: int) -> None:
        self.real += real
        self.total += total

    @property
    def pad_share(self) -> float:
        return 1 - self.real / self.total if self.total else 0.0


REAL_KEY = "qazlm_real_tokens"


def counting_collator(collate):
    """Wrap the trainer's collator: each batch also carries how many of its tokens are real (the examples'
    lengths), so padding waste is measured on the batches trained on, packed or not."""
    import torch

    def wrapped(examples):
        batch = collate(examples)
        batch[REAL_KEY] = torch.tensor(sum(len(ex["input_ids"]) for ex in examples))
        return batch

    return wrapped


def summed_over_processes(accelerator, counts: list[int]) -> list[int]:
    """`counts` summed over the processes of a torchrun job (a collective: every rank takes the same steps)."""
    if accelerator.num_processes == 1:
        return counts
    import torch

    mine = torch.tensor(counts, device=accelerator.device)
    return accelerator.gather(mine).view(-1, len(counts)).sum(0).tolist()


def count_trained_tokens(trainer, counter: TokenCounter) -> None:
    """Count the real tokens (those the attention masks mark) of every batch `trainer` takes a training step on:
    for TRL's DPO and reward trainers, whose batches carry no count of their own. Counted at the step, not in the
    collator, which the data loader runs one batch ahead (and for reference log-probs and evaluation too)."""
    step = trainer.training_step

    def counted(model, inputs, *args, **kwargs):
        masks = [v for k, v in inputs.items() if k.endswith("attention_mask") and hasattr(v, "numel")]
        counter.add(*summed_over_processes(trainer.accelerator, [int(sum(int(m.sum()) for m in masks)),
                                                                int(sum(m.numel() for m in masks))]))
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = counted


def make_trainer_class():
    """SFTTrainer that takes the real-token count off each batch before the model sees it, and on devices
    without Triton projects only the trained positions through the LM head (`labelled_positions_loss`)."""
    from trl import SFTTrainer
    from trl.kernels.chunked_logprob import _use_triton

    class CountingSFTTrainer(SFTTrainer):
        counter: TokenCounter

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            real = inputs.pop(REAL_KEY, None)
            if real is not None and model.training:
                self.counter.add(*summed_over_processes(self.accelerator, [int(real), inputs["input_ids"].numel()]))
            if not return_outputs and not _use_triton(inputs["input_ids"].device) and not self.aux_loss_enabled \
                    and self.accelerator.num_processes == 1:
                # Several processes: the model is wrapped (DDP), and only the wrapper's own forward arms the
                # gradient all-reduce; a call into the inner model would leave each rank training its own copy.
                return labelled_positions_loss(self, model, inputs, num_items_in_batch)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return CountingSFTTrainer


BACKBONE_INPUTS = ("input_ids", "attention_mask", "position_ids")


def labelled_positions_loss(trainer, model, inputs: dict, num_items_in_batch=None):
    """TRL's loss (token-summed NLL over the labelled positions, its entropy and token-accuracy metrics), with the
    vocabulary projection run on the labelled positions only.

    TRL's fused LM head drops the unlabelled positions only where Triton runs (CUDA/XPU); elsewhere its torch
    fallback projects every position of the batch, prompts and system turns included, in tiles, and projects them
    again in the backward. With loss on assistant tokens only, most positions are unlabelled, and the projection is
    most of a small model's compute: on a CPU this costs several times the step (docs/sft.md, speed)."""
    import torch
    import torch.nn.functional as F

    core = trainer.accelerator.unwrap_model(model)
    core = core.get_base_model() if hasattr(core, "get_base_model") else core  # PEFT: the LoRA-injected model
    backbone = getattr(core, core.base_model_prefix)
    hidden = backbone(**{k: inputs[k] for k in BACKBONE_INPUTS if k in inputs}, use_cache=False).last_hidden_state
    labels = inputs["labels"][:, 1:]
    mask = labels != -100
    log_p = core.get_output_embeddings()(hidden[:, :-1][mask]).float().log_softmax(-1)
    targets = labels[mask]
    nll_sum = F.nll_loss(log_p, targets, reduction="sum")
    loss = nll_sum / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    if trainer.args.average_tokens_across_devices and num_items_in_batch is not None:
        loss = loss * (trainer.accelerator.num_processes // trainer.get_tp_size())
    with torch.no_grad():
        gather = trainer.accelerator.gather_for_metrics
        n = gather(mask.sum()).sum()
        entropy = gather(-(log_p.exp() * log_p).sum()).sum()
        correct = gather((log_p.argmax(-1) == targets).sum()).sum()
    mode = "train" if model.training else "eval"
    trainer._metrics[mode]["entropy"].append((entropy / n).item() if n > 0 else 0.0)
    trainer._metrics[mode]["mean_token_accuracy"].append((correct / n).item() if n > 0 else 0.0)
    if mode == "train":
        mask_in = inputs.get("attention_mask")
        seen = mask_in.sum() if mask_in is not None else torch.tensor(inputs["input_ids"].numel())
        trainer._total_train_tokens += int(gather(seen).sum()) // trainer._tp_size
    trainer._metrics[mode]["num_tokens"] = [trainer._total_train_tokens]
    return loss


class MetricsCallback(TrainerCallback):
    """Trainer logs -> metrics.jsonl rows (step, loss, lr, grad_norm, tokens_per_s, tokens, pad_share, ...;
    held-out loss as `heldout_loss`), through pretraining's MetricsLogger."""

    def __init__(self, logger, counter: TokenCounter, tokens_before: int = 0):
        self.logger, self.counter = logger, counter
        self.tokens_before = tokens_before      # tokens trained before a resume (from metrics.jsonl)
        self.window = (time.perf_counter(), 0, 0)  # (time, real tokens, step) at the last log
        self.losses: list[tuple[int, float]] = []
        self.heldout: list[tuple[int, float]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.window = (time.perf_counter(), self.counter.real, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs, step = logs or {}, state.global_step
        if "eval_loss" in logs:
            self.heldout.append((step, float(logs["eval_loss"])))
            self.logger.log(step, {"heldout_loss": float(logs["eval_loss"])})
            return
        if "loss" not in logs:
            return
        t0, real0, step0 = self.window
        now = time.perf_counter()
        rec = {"loss": float(logs["loss"]), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
               "tokens_per_s": (self.counter.real - real0) / max(now - t0, 1e-9),
               "s_per_step": (now - t0) / max(step - step0, 1),
               "tokens": self.tokens_before + self.counter.real, "pad_share": self.counter.pad_share,
               "token_accuracy": logs.get("mean_token_accuracy"), "epoch": logs.get("epoch")}
        self.losses.append((step, rec["loss"]))
        self.logger.log(step, {k: v for k, v in rec.items() if v is not None})
        self.window = (now, self.counter.real, step)
        if not math.isfinite(rec["loss"]):
            control.should_training_stop = True


class QuietProgress(ProgressCallback):
    """transformers' tqdm bar (steps, elapsed, ETA) with the latest loss as its postfix instead of a printed
    dict per log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)


def quiet_progress(trainer) -> None:
    """A progress bar with ETA instead of transformers' own (which prints a dict at every log step)."""
    from transformers.trainer_callback import ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(QuietProgress())
