"""Open any model folder for evaluation: ours (`qazlm_model.json`) or Hugging Face (`config.json`).

Everything downstream (bits per byte, lm-eval tasks, generation, and later chat and the server) sees the
same `LoadedLM`: a callable `input_ids -> float32 logits [B, T, V]` plus the torch module behind it, so our
checkpoints and existing HF models are scored and sampled by the same code, side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from qazlm.errors import QazlmError


@dataclass
class LoadedLM:
    """A causal LM as a function from token ids to float32 logits."""

    module: Any
    kind: str        # "qazlm" or "hf"
    max_len: int     # longest sequence the model accepts

    def __call__(self, input_ids):
        from qazlm.infer.scoring import logits

        return logits(self.module, input_ids)

    @property
    def device(self):
        return next(self.module.parameters()).device


class Loaded(NamedTuple):
    model: LoadedLM
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


def quiet_torchao() -> None:
    """torchao (behind transformers' quantized folders) logs a warning per CUDA extension it cannot load on a
    CPU-only machine, and torch one per enum it registers: noise, not news."""
    import logging

    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


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


def with_chat_template(tok, kind: str):
    """`tok` with the one chat template when it comes from our own folder without one: our tokenizers reserve
    the ChatML tokens, so a folder written from them chats as is."""
    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, IM_START

    if kind == "qazlm" and not tok.chat_template and IM_START in tok.get_vocab():
        tok.chat_template = CHAT_TEMPLATE
    return tok


def load_model(path: str | Path, device: str = "cpu", tokenizer: str | Path | None = None) -> Loaded:
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

        quiet_torchao()
        try:
            module = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise QazlmError(f"{path}: cannot load the HF model ({e}); check config.json and the weights") from None
        module.to(device)
        if str(device) == "cpu":
            from qazlm.infer.int4_cpu import use_cpu_int4_kernel

            use_cpu_int4_kernel(module)  # `qazlm quantize` int4 folders: the packed kernel, not a dequantize per call
        max_len = int(getattr(module.config, "max_position_embeddings", 2048) or 2048)
        vocab = int(module.config.vocab_size)
    check_vocab_match(tok, vocab, tokenizer or path)
    module.eval()
    return Loaded(LoadedLM(module, kind, max_len), tok, model_name(path))


def check_vocab_match(tokenizer, model_vocab: int, where) -> None:
    """A tokenizer and a model belong together when every token id has an embedding and the model has few
    unused rows (models pad their vocabulary to a round size: Qwen2.5 keeps ~400 spare rows of 152k)."""
    n = len(tokenizer)
    if n > model_vocab or n < 0.95 * model_vocab:
        raise QazlmError(f"{where}: tokenizer has {n:,} tokens but the model {model_vocab:,}; this tokenizer "
                         "belongs to another model, pass the model's own --tokenizer")
