"""Pre-allocated key/value cache for incremental decoding (one tensor pair per layer, no re-allocation)."""

from __future__ import annotations

import torch

from qazlm.model.config import ModelConfig


class KVCache:
    """Keys/values of past positions: [batch, n_kv_heads, max_len, head_dim] per layer.

    `qazlm.model.decode.Decoder` writes each layer's new positions at `length` (through the per-layer
    views `k_layers`/`v_layers`, made once: indexing the 5-D tensor every step costs more than the copy),
    then advances `length` once per forward.
    """

    def __init__(self, batch: int, max_len: int, cfg: ModelConfig, device="cpu", dtype=torch.float32):
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k_layers = torch.zeros(shape, device=device, dtype=dtype).unbind(0)  # one allocation each
        self.v_layers = torch.zeros(shape, device=device, dtype=dtype).unbind(0)
        self.max_len = max_len
        self.length = 0

    def check_room(self, n: int) -> None:
        if self.length + n > self.max_len:
            raise ValueError(f"KV cache full: {self.length + n} positions > max_len {self.max_len}")

    def advance(self, n: int) -> None:
        self.length += n
