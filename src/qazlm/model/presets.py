"""Named model sizes. Parameter counts at vocab 64k are in docs/model.md (`qazlm.model.flops.param_table`).

Shapes follow the Qwen3/SmolLM2 families: head_dim 64 for the CPU sizes, 128 with widths that are multiples
of 128 for the GPU sizes (good tensor-core tiles), GQA to keep the KV cache small, SwiGLU width ~3x d_model.
"""

from __future__ import annotations

import dataclasses

from qazlm.errors import QazlmError
from qazlm.model.config import ModelConfig

PRESETS: dict[str, dict] = {
    # a few M params: tests and the 2-core CPU demo
    "tiny": dict(d_model=192, n_layers=4, n_heads=3, n_kv_heads=1, head_dim=64, ffn_dim=512, max_seq_len=512),
    # ~30M at a 32k-48k vocab: the CPU demo for users with time
    "small": dict(d_model=384, n_layers=8, n_heads=6, n_kv_heads=2, head_dim=64, ffn_dim=1152, max_seq_len=1024),
    "200m": dict(d_model=1024, n_layers=12, n_heads=8, n_kv_heads=4, head_dim=128, ffn_dim=3072,
                 max_seq_len=2048, rope_theta=100000.0),
    "350m": dict(d_model=1280, n_layers=16, n_heads=10, n_kv_heads=5, head_dim=128, ffn_dim=3456,
                 max_seq_len=2048, rope_theta=100000.0),
    "500m": dict(d_model=1536, n_layers=16, n_heads=12, n_kv_heads=4, head_dim=128, ffn_dim=4096,
                 max_seq_len=2048, rope_theta=100000.0),
}


def preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    """The ModelConfig of preset `name` for a tokenizer of `vocab_size`, with optional field overrides."""
    if name not in PRESETS:
        raise QazlmError(f"unknown model preset {name!r}; choose one of {', '.join(PRESETS)}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = set(overrides) - fields
    if bad:
        raise QazlmError(f"unknown model field(s) {sorted(bad)}; valid: {', '.join(sorted(fields))}")
    return ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
