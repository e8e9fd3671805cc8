"""Pre-allocated key/value cache for incremental decoding (one tensor pair per layer, no re-allocation)."""

from __future__ import annotations

import torch

from qazlm.model.config import ModelConfig


class KVCache:
    """Keys/values of past positions: [batch, n_kv_heads, max_len, head_dim] per layer.

    `qazlm.model.decode.Decoder` writes the new positions of every layer, then advances `length` once per forward.
    """

    def __init__(self, batch: int, max_len: int, cfg: ModelConfig, device="cpu", dtype=torch.float32):
        shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's k/v ([B, KV, T, hd]) for `layer`; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} positions > max_len {self.max_len}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n
