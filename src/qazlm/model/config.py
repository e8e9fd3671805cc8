"""Model hyper-parameters: one dataclass, saved next to every checkpoint as `qazlm_model.json`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ModelConfig:
    """A Qwen3-style decoder (Llama-style when `qk_norm` is off). Names follow the HF config they export to."""

    vocab_size: int = 32000
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 64
    ffn_dim: int = 768
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    tie_embeddings: bool = True
    qk_norm: bool = True

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even (RoPE rotates pairs)")
