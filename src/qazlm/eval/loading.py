"""Open any model folder for evaluation: ours (`qazlm_model.json`) or Hugging Face (`config.json`).

Everything downstream (bpb, lm-eval tasks, generation) sees the same `EvalModel`: a callable
`input_ids -> logits [B, T, V]` plus the torch module behind it, so our checkpoints and existing HF models
are scored by the same code, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from qazlm.errors import QazlmError


@dataclass
class EvalModel:
    """A causal LM as a function from token ids to float32 logits."""

    module: Any
    kind: str        # "qazlm" or "hf"
    max_len: int     # longest sequence the model accepts

    def __call__(self, input_ids):
        out = self.module(input_ids)
        logits = out.logits if hasattr(out, "logits") else out
        return logits.float()

    @property
    def device(self):
        return next(self.module.parameters()).device


class Loaded(NamedTuple):
    model: EvalModel
    tokenizer: Any
    name: str


def model_kind(path: str | Path) -> str:
    """'qazlm' or 'hf' for a model folder; a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise QazlmError(f"{path}: model folder not found; give a qazlm checkpoint or an HF model folder")
    if (path / "qazlm_model.json").exists():
        return "qazlm"
    if (path / "config.json").exists():
        return "hf"
    raise QazlmError(f"{path}: neither qazlm_model.json nor config.json inside; "
                     "pass a folder written by `qazlm pretrain` / `qazlm export hf`, or a Hugging Face model folder")


def model_name(path: str | Path) -> str:
    """A short display name: `run/final` or `run/step_000100` for checkpoints, the folder name otherwise."""
    path = Path(path).resolve()
    if path.name == "final" or path.name.startswith(("step", "ckpt", "checkpoint")):
        run = next((p.name for p in path.parents if p.name not in ("pretrain", "checkpoints")), "")
        return f"{run}/{path.name}"
    return path.name


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    path = Path(path)
    if not ((path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists()):
        raise QazlmError(f"{path}: no tokenizer files (tokenizer.json) in the folder; pass --tokenizer DIR")
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise QazlmError(f"{path}: cannot load the tokenizer ({e}); check tokenizer.json") from None
    return tok


def load_for_eval(path: str | Path, device: str = "cpu", tokenizer: str | Path | None = None) -> Loaded:
    """(model, tokenizer, name) for our model folder or an HF folder, in eval mode on `device`."""
    path = Path(path)
    kind = model_kind(path)
    tok = load_tokenizer(tokenizer or path)
    if kind == "qazlm":
        from qazlm.model.io import load_model_folder

        module = load_model_folder(path, device=device)
        max_len = int(module.cfg.max_seq_len)
        vocab = int(module.cfg.vocab_size)
    else:
        import torch
        from transformers import AutoModelForCausalLM

        try:
            module = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise QazlmError(f"{path}: cannot load the HF model ({e}); check config.json and the weights") from None
        module.to(device)
        max_len = int(getattr(module.config, "max_position_embeddings", 2048) or 2048)
        vocab = int(module.config.vocab_size)
    if len(tok) > vocab:
        raise QazlmError(f"{tokenizer or path}: tokenizer has {len(tok)} tokens but the model only {vocab}; "
                         "this tokenizer belongs to another model, pass the model's own --tokenizer")
    module.eval()
    return Loaded(EvalModel(module, kind, max_len), tok, model_name(path))
