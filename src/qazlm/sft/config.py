"""`[sft]` table / `qazlm sft` settings: one validated dataclass (see docs/sft.md, "Training").

Every field maps onto `trl.SFTConfig` / `peft.LoraConfig` in `qazlm.sft.train`; the defaults are a full
fine-tune with packing, loss on assistant tokens only, fp32 on CPU and bf16 on CUDA.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from qazlm.config import check_fields
from qazlm.errors import QazlmError

DEVICES = ("auto", "cpu", "cuda")
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")
CHAT_TEMPLATES = ("", "qazlm")
DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """[sft.lora]: low-rank adapters (peft), merged into the weights when the model is saved."""
    enabled: bool = False                   # off: full fine-tuning
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def __post_init__(self):
        check_fields(self, "[sft.lora] ", {"r": ">= 1", "alpha": "> 0", "dropout": ">= 0, < 1"})
        if self.enabled and not self.target_modules:
            raise QazlmError("[sft.lora] target_modules = []: name the layers to adapt, e.g. q_proj,v_proj")


@dataclass
class SftConfig:
    """[sft] table / `qazlm sft` flags (every field; see docs/sft.md)."""
    model: str = ""                         # a model folder: ours (qazlm_model.json) or Hugging Face (config.json)
    data: str = ""                          # a `qazlm sft-data` folder (train.jsonl, heldout.jsonl)
    out_dir: str = "runs/sft"
    lr: float = 2e-5
    epochs: float = 3.0
    max_steps: int = -1                     # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 8                     # per device: packed rows with packing, conversations without
    grad_accum: int = 1
    max_len: int = 1024                     # tokens per packed row (or per conversation without packing)
    packing: bool = True                    # best-fit packing, attention kept inside each conversation
    warmup: float = 0.03                    # < 1: share of the steps; >= 1: a number of steps
    weight_decay: float = 0.0
    schedule: str = "cosine"
    max_grad_norm: float = 1.0
    seed: int = 0
    save_steps: int = 100                   # checkpoint every N steps under OUT/checkpoints (resume point)
    save_total_limit: int = 2               # checkpoints kept
    logging_steps: int = 1
    eval_steps: int = 0                     # held-out loss every N steps; 0: at the end only
    max_heldout: int = 200                  # held-out conversations scored (0: none)
    device: str = "auto"                    # auto (cuda when present), cpu, cuda
    chat_template: str = ""                 # "": the model's own; "qazlm": install qazlm's ChatML template
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self):
        if not self.model:
            raise QazlmError("[sft] model: not set; give the model folder to fine-tune (qazlm sft MODEL, or "
                             "model = \"runs/tiny/pretrain/final\" in [sft])")
        if not self.data:
            raise QazlmError("[sft] data: not set; give a `qazlm sft-data` folder (--data DIR, or data = \"...\" in [sft])")
        check_fields(self, "[sft] ", {
            "lr": "> 0", "epochs": "> 0", "batch_size": ">= 1", "grad_accum": ">= 1", "max_len": ">= 8",
            "warmup": ">= 0", "weight_decay": ">= 0", "max_grad_norm": "> 0", "seed": ">= 0", "save_steps": ">= 1",
            "save_total_limit": ">= 1", "logging_steps": ">= 1", "eval_steps": ">= 0", "max_heldout": ">= 0"})
        if self.max_steps == 0 or self.max_steps < -1:
            raise QazlmError(f"[sft] max_steps = {self.max_steps}: give a number of steps >= 1, or -1 to train "
                             "for `epochs`")
        if self.warmup >= 1 and not float(self.warmup).is_integer():
            raise QazlmError(f"[sft] warmup = {self.warmup}: a share of the steps is < 1, a number of steps is whole")
        self._check_choice("device", DEVICES)
        self._check_choice("schedule", SCHEDULES)
        self._check_choice("chat_template", CHAT_TEMPLATES)
        if isinstance(self.lora, dict):  # built in code with a plain dict
            self.lora = LoraSettings(**self.lora)

    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            close = difflib.get_close_matches(value, [c for c in choices if c], n=1) if name != "device" else []
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise QazlmError(f"[sft] {name} = {value!r}: {hint}choose from {', '.join(repr(c) for c in choices)}")
