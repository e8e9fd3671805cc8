"""Model hyper-parameters: one dataclass, saved next to every checkpoint as `qazlm_model.json`."""

from __future__ import annotations

import dataclasses
import numbers

from qazlm.config import check_fields
from qazlm.errors import QazlmError

WHOLE = {"vocab_size": ">= 1", "d_model": ">= 1", "n_layers": ">= 1", "n_heads": ">= 1", "n_kv_heads": ">= 1",
         "head_dim": ">= 2", "ffn_dim": ">= 1", "max_seq_len": ">= 2"}
POSITIVE = {"rope_theta": "> 0", "rms_eps": "> 0"}
SWITCHES = ("tie_embeddings", "qk_norm")


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
        """Every field checked here, so a bad value is one clear error however the config was built
        (preset + model_overrides, qazlm_model.json, an HF config.json, code), not a traceback in torch."""
        self._check_types()
        check_fields(self, "model ", {**WHOLE, **POSITIVE})
        self.rope_theta, self.rms_eps = float(self.rope_theta), float(self.rms_eps)
        if self.n_heads % self.n_kv_heads:
            raise QazlmError(f"model n_heads = {self.n_heads} must be a multiple of n_kv_heads = {self.n_kv_heads} "
                             "(grouped-query attention shares each key/value head among n_heads/n_kv_heads heads)")
        if self.head_dim % 2:
            raise QazlmError(f"model head_dim = {self.head_dim} must be even (RoPE rotates pairs of dimensions)")

    def _check_types(self) -> None:
        """Whole numbers where a count is meant, true/false for switches (a string "no" would be truthy)."""
        for name in WHOLE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise QazlmError(f"model {name} = {value!r}: expected a whole number")
            setattr(self, name, int(value))
        for name in SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise QazlmError(f"model {name} = {getattr(self, name)!r}: expected true or false")
