"""Back-of-envelope cost of a pretraining run: tokens, FLOPs, hours and memory per preset and GPU count.

FLOPs = 6 * N * D (+ attention 12 * L * d * T per token), time = FLOPs / (GPUs * peak * MFU). Memory per GPU
for AdamW in mixed precision: fp32 params + grads + two moments = 16 bytes/param (DDP), divided by the GPU
count under FSDP, plus activations (rough: 34 * T * d * L bytes per sequence without checkpointing, a tenth
of that with it).
"""

from __future__ import annotations

from dataclasses import dataclass

H100_BF16 = 989e12


@dataclass
class Estimate:
    preset: str
    params: int
    non_embedding: int
    tokens: int
    flops: float
    gpus: int
    hours: float
    mem_ddp_gb: float
    mem_fsdp_gb: float


def estimate(preset_name: str, *, vocab_size: int = 65536, tokens: int | None = None, gpus: int = 1,
             seq_len: int = 2048, micro_batch: int = 8, mfu: float = 0.40, peak: float = H100_BF16) -> Estimate:
    """Cost of training `preset_name` on `tokens` (default: Chinchilla 20 tokens/param)."""
    from qazlm.model.flops import flops_per_token, param_counts
    from qazlm.model.presets import preset

    cfg = preset(preset_name, vocab_size)
    counts = param_counts(cfg)
    params, non_embed = counts["total"], counts["non_embedding"]
    tokens = tokens or 20 * params
    flops = flops_per_token(cfg, seq_len) * tokens
    hours = flops / (gpus * peak * mfu) / 3600
    states = 16 * params / 1e9
    acts = micro_batch * 34 * seq_len * cfg.d_model * cfg.n_layers / 1e9 \
        + micro_batch * seq_len * cfg.vocab_size * 6 / 1e9  # bf16 logits + fp32 loss
    return Estimate(preset_name, params, non_embed, tokens, flops, gpus, hours, states + acts, states / gpus + acts)


def table(presets=("small", "200m", "350m", "500m"), gpu_counts=(1, 8, 16), **kwargs) -> str:
    """Markdown table of `estimate` for each preset and GPU count."""
    rows = ["| preset | params (non-emb.) | tokens (20/param) | FLOPs | GPUs | hours @40% MFU H100 | "
            "mem/GPU DDP | mem/GPU FSDP |", "|---|---|---|---|---|---|---|---|"]
    for name in presets:
        for g in gpu_counts:
            e = estimate(name, gpus=g, **kwargs)
            rows.append(f"| {name} | {e.params / 1e6:.0f}M ({e.non_embedding / 1e6:.0f}M) | {e.tokens / 1e9:.1f}B | "
                        f"{e.flops:.2e} | {g} | {e.hours:.2f} | {e.mem_ddp_gb:.0f} GB | {e.mem_fsdp_gb:.0f} GB |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
