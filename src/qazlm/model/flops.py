"""Parameter and FLOP accounting, GPU peak table and MFU (model FLOPs utilisation)."""

from __future__ import annotations

from qazlm.model.config import ModelConfig

# Dense bf16 tensor-core peak (FLOP/s), no sparsity; from the vendors' data sheets.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "A10": 125e12,
}


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts without building the model: embedding (incl. untied head) and the rest."""
    d, hd = cfg.d_model, cfg.head_dim
    attn = d * cfg.n_heads * hd * 2 + d * cfg.n_kv_heads * hd * 2 + (2 * hd if cfg.qk_norm else 0)
    mlp = 3 * d * cfg.ffn_dim
    per_layer = attn + mlp + 2 * d
    non_embedding = cfg.n_layers * per_layer + d
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (matmul params incl. the output head) + causal attention scores
    (12 * layers * heads * head_dim * seq_len, the PaLM/nanochat convention)."""
    counts = param_counts(cfg)
    matmul = counts["non_embedding"] + cfg.vocab_size * cfg.d_model
    return 6.0 * matmul + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len


def device_peak_flops(device_name: str) -> float | None:
    """Peak bf16 FLOP/s of a GPU by its torch.cuda.get_device_name(), or None when unknown."""
    name = device_name.upper()
    for key in sorted(GPU_PEAK_BF16, key=len, reverse=True):
        if key.upper() in name:
            return GPU_PEAK_BF16[key]
    return None


def mfu(tokens_per_s: float, flops_per_tok: float, device: str | float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None when the device peak is unknown (e.g. CPU).

    `device` is a GPU name (torch.cuda.get_device_name(), looked up in GPU_PEAK_BF16) or a peak in FLOP/s
    (e.g. one measured on the machine)."""
    peak = device_peak_flops(device) if isinstance(device, str) else device
    if not peak:
        return None
    return tokens_per_s * flops_per_tok / peak


def param_table(vocab_size: int = 64000) -> str:
    """Markdown table of every preset's parameter counts at `vocab_size` (pasted into docs/model.md)."""
    from qazlm.model.presets import PRESETS, preset

    rows = ["| preset | d_model | layers | heads (kv) | head_dim | ffn | embedding | non-embedding | total | "
            "train FLOPs/token @ seq |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in PRESETS:
        cfg = preset(name, vocab_size)
        c = param_counts(cfg)
        rows.append(f"| {name} | {cfg.d_model} | {cfg.n_layers} | {cfg.n_heads} ({cfg.n_kv_heads}) | {cfg.head_dim} "
                    f"| {cfg.ffn_dim} | {c['embedding'] / 1e6:.1f}M | {c['non_embedding'] / 1e6:.1f}M | "
                    f"{c['total'] / 1e6:.1f}M | {flops_per_token(cfg, cfg.max_seq_len) / 1e9:.2f} GFLOP @ "
                    f"{cfg.max_seq_len} |")
    return "\n".join(rows)
