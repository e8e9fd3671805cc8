"""`[pretrain]` settings as one dataclass: every knob of a run lives in the recipe, unknown keys are errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from qazlm.config import check_fields
from qazlm.errors import QazlmError

SCHEDULES = ("cosine", "wsd")
TRI_STATE = ("auto", "true", "false")  # compile / activation_checkpointing (TOML booleans read as "true"/"false")


@dataclass
class PretrainConfig:
    # model: a preset name plus ModelConfig field overrides, e.g. {n_layers = 4}
    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # data: a qazlm-tokens-v1 folder (meta.json), or a plain .bin (with data_dtype) / .npy token file
    data: str = ""
    data_dtype: str = "uint16"
    tokenizer: str = ""                 # HF tokenizer folder; default: the one named in meta.json
    val_data: str = ""                  # folder with val/{kk,ru,en}.jsonl.gz; default: FLORES+ dev
    out_dir: str = "runs/pretrain"
    # batch: global batch in tokens = micro_batch * seq_len * accumulation * world_size
    seq_len: int = 256
    global_batch_tokens: int = 8192
    micro_batch: int = 8
    # optimisation
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 50
    schedule: str = "cosine"            # cosine | wsd (warmup-stable-decay)
    decay_fraction: float = 0.2         # wsd: share of steps spent decaying at the end
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    steps: int = 0                      # 0 -> derived from token_budget
    token_budget: int = 0
    # intervals in steps (0 = never)
    log_every: int = 10
    eval_every: int = 100                # 0 = only at the end, -1 = never (no bpb, no samples)
    ckpt_every: int = 100
    keep_last_k: int = 3
    sample_every: int = 0               # sampled generations in kk/ru/en; 0 = only at the end
    sample_tokens: int = 32
    eval_docs: int = 64                 # held-out documents per language for bits-per-byte
    eval_max_len: int = 256
    # systems
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    dtype: str = "auto"                 # auto (fp32 on CPU, bf16 autocast on CUDA) | fp32 | bf16
    compile: str = "auto"               # auto (on for CUDA) | true | false
    activation_checkpointing: str = "auto"  # auto (off; on for CUDA when the model has >= 24 layers) | true | false
    parallel: str = "ddp"               # ddp | fsdp (only used under torchrun with world_size > 1)
    num_threads: int = 0                # torch CPU threads; 0 = torch's default
    prefetch: int = 2                   # batches prepared ahead by a background thread
    seed: int = 1337
    tensorboard: bool = True
    wandb: bool = False                 # offline-safe: WANDB_MODE=offline unless set
    resume: bool = True                 # continue from the latest checkpoint in out_dir
    max_steps_this_run: int = 0         # stop (after checkpointing) after this many steps; for tests/preemption

    def __post_init__(self):
        check_fields(self, "[pretrain] ", {
            "seq_len": ">= 2", "global_batch_tokens": ">= 1", "micro_batch": ">= 1", "lr": "> 0", "min_lr": ">= 0",
            "warmup_steps": ">= 0", "decay_fraction": ">= 0, <= 1", "weight_decay": ">= 0", "beta1": ">= 0, < 1",
            "beta2": ">= 0, < 1", "eps": "> 0", "grad_clip": ">= 0", "steps": ">= 0", "token_budget": ">= 0",
            "log_every": ">= 0", "eval_every": ">= -1", "ckpt_every": ">= 0", "keep_last_k": ">= 0",
            "sample_every": ">= 0", "sample_tokens": ">= 1", "eval_docs": ">= 1", "eval_max_len": ">= 4",
            "num_threads": ">= 0", "prefetch": ">= 0", "max_steps_this_run": ">= 0"})
        if self.min_lr > self.lr:
            raise QazlmError(f"[pretrain] min_lr = {self.min_lr} is above lr = {self.lr}; lower min_lr")
        for name, allowed in (("schedule", SCHEDULES), ("parallel", ("ddp", "fsdp")), ("dtype", ("auto", "fp32", "bf16")),
                              ("compile", TRI_STATE), ("activation_checkpointing", TRI_STATE),
                              ("data_dtype", ("uint16", "uint32", "int32", "int64"))):
            if str(getattr(self, name)).lower() not in allowed:
                raise QazlmError(f"[pretrain] {name} = {getattr(self, name)!r}: use one of {', '.join(allowed)}")
        if self.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise QazlmError(f"[pretrain] device = {self.device!r}: use auto, cpu, cuda or cuda:N")




def tri_state(value: str, auto: bool) -> bool:
    """'auto' | 'true' | 'false' (also bools from TOML; anything else is refused by PretrainConfig) -> bool."""
    v = str(value).lower()
    return auto if v == "auto" else v == "true"
