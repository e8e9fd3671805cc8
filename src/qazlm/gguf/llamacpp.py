"""llama.cpp through llama-cpp-python: open a GGUF, tokenize, score, quantize.

Scoring keeps the KV cache in f32 (llama.cpp's default is f16), so an f32 GGUF is compared with our fp32 model
on equal terms; the quantized files are then compared with the f32 GGUF, as llama.cpp's own
`perplexity --kl-divergence` does.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from qazlm.errors import QazlmError

# type name -> llama_cpp.LLAMA_FTYPE_* (what llama_model_quantize makes from the f32 file)
FTYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q6_k": "MOSTLY_Q6_K",
          "q5_k_m": "MOSTLY_Q5_K_M", "q4_k_m": "MOSTLY_Q4_K_M", "q4_0": "MOSTLY_Q4_0"}


def quiet_llama_cpp():
    """llama_cpp, with llama.cpp's own log (per-tensor quantizer lines, loader notes) limited to errors."""
    import llama_cpp
    from llama_cpp import _logger

    _logger.set_verbose(False)
    return llama_cpp


def threads() -> int:
    return max(1, len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def open_gguf(path: Path, *, n_ctx: int = 512, vocab_only: bool = False, logits_all: bool = True):
    """A llama_cpp.Llama over `path` (quiet; f32 KV cache; closed on exit); an unreadable file is one line."""
    llama_cpp = quiet_llama_cpp()

    with tempfile.TemporaryFile() as log, native_stderr(log):  # loader notes (e.g. n_ctx vs training) stay quiet
        try:
            llm = llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, vocab_only=vocab_only,
                                  logits_all=logits_all, n_threads=threads(), n_threads_batch=threads(),
                                  type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
        except (ValueError, RuntimeError) as e:
            llm, error = None, e
    if llm is None:
        raise QazlmError(f"{path}: llama.cpp cannot load it ({error}); is it a complete GGUF file?")
    try:
        yield llm
    finally:
        llm.close()


def tokenize(llm, text: str) -> list[int]:
    """llama.cpp's ids for `text`, special tokens parsed and no BOS added: what transformers'
    `tokenizer(text, add_special_tokens=False)` must give."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


class Scorer:
    """`scorer(ids [B, T]) -> logits [B, T, V]`: a GGUF model in the shape `qazlm.infer.scoring.logits` takes,
    one row at a time through a fresh KV cache."""

    def __init__(self, llm):
        self.llm = llm

    def __call__(self, input_ids):
        import torch

        rows = []
        for row in input_ids.tolist():
            self.llm.reset()
            self.llm.eval(row)
            rows.append(torch.from_numpy(self.llm.scores[:len(row)].copy()))
        return torch.stack(rows)


def quantize(f32_path: Path, out_path: Path, type_name: str, imatrix=None, output_type: str = "") -> None:
    """llama.cpp's quantizer (llama-quantize) from the f32 file; k-quants fall back to a legacy type for tensors
    whose rows are not a multiple of 256, as llama-quantize does. `imatrix`: a qazlm.gguf.imatrix.Imatrix
    (llama-quantize --imatrix); `output_type`: f16/q8_0 for the output tensor (--output-tensor-type)."""
    from qazlm.gguf.config import OUTPUT_TYPES
    from qazlm.gguf.imatrix import as_quantize_param

    llama_cpp = quiet_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{FTYPES[type_name]}")
    params.nthread = threads()
    if OUTPUT_TYPES[output_type]:
        params.output_tensor_type = getattr(llama_cpp, f"GGML_TYPE_{OUTPUT_TYPES[output_type]}")
    if imatrix is not None:
        params.imatrix, buffers = as_quantize_param(imatrix)  # noqa: F841 (buffers: alive until the call returns)
    with tempfile.TemporaryFile() as log, native_stderr(log):
        status = llama_cpp.llama_model_quantize(str(f32_path).encode(), str(out_path).encode(), params)
        log.seek(0)
        last = (log.read().decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
    if status != 0:
        raise QazlmError(f"{f32_path}: llama.cpp could not quantize it to {type_name} ({last})")


@contextlib.contextmanager
def native_stderr(file):
    """Send what C code writes to stderr (llama-quantize's per-tensor fallback notes) to `file` meanwhile."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
