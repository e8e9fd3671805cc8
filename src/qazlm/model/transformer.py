"""The qazlm decoder: Qwen3 architecture (RMSNorm, RoPE, SwiGLU, GQA, QK-norm) in lean PyTorch.

Module names are those of transformers' Qwen3ForCausalLM (minus the `model.` prefix), so export is a
rename-free copy of the state dict and a parity test can compare logits directly.

Training and scoring use this module's forward (whole sequences, causal); generation goes through
`qazlm.model.decode.Decoder`, a fused-weight copy with a KV cache.

Build models with `build_model(cfg, device, seed)`: the one place that constructs on the meta device and
materialises where the model will live (training, loading a folder, HF import and checkpoints all use it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from qazlm.model.config import ModelConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in float32 (as Qwen3RMSNorm), scaled by a learned weight."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_tables(cfg: ModelConfig, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [max_seq_len, head_dim] in float32, halves duplicated (the HF `rotate_half` layout)."""
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, device=device, dtype=torch.float32)
                                         / cfg.head_dim))
    t = torch.arange(cfg.max_seq_len, device=device, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, T, hd] (the SDPA layout, as in transformers); cos/sin: [B or 1, T, hd]."""
    cos, sin = cos.unsqueeze(1).to(x.dtype), sin.unsqueeze(1).to(x.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(B, T, self.n_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # SDPA's native GQA: no expanded copies of k/v (as transformers)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.d_model, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


# rows of logits per chunk in `linear_cross_entropy`: 2^23 floats (32 MiB), e.g. 524 rows at a 16k vocabulary
CHUNK_ELEMENTS = 1 << 23


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `x @ weight.T` against `targets` (-100 = ignore), the logits made and dropped a
    chunk of rows at a time, with the gradients computed in the same pass (softmax - one-hot, times x or weight).

    The full [tokens, vocab] logits are never held: in float32 they are 131 MiB for one 2,048-token step at a
    16k vocabulary and 4 GiB for 16k tokens at 64k, and every pass over them (log-softmax, its backward, the
    zeroed gradient) is a trip through memory. Chunked, the softmax is made once and becomes the gradient in
    place, and no pass covers more than 32 MiB (docs/pretraining.md, "Optimisation")."""

    @staticmethod
    def forward(ctx, x, weight, targets):
        valid = targets != -100
        count = valid.sum()
        scale = valid / count.clamp(min=1)          # d(mean loss)/d(row loss), 0 for ignored rows
        safe = targets.clamp(min=0).unsqueeze(1)
        grad_x, grad_w = torch.empty_like(x), torch.zeros_like(weight)
        loss = x.new_zeros((), dtype=torch.float32)
        rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
        for s in range(0, x.shape[0], rows):
            xs, ts = x[s:s + rows], safe[s:s + rows]
            logits = (xs @ weight.t()).float()
            target = logits.gather(1, ts).squeeze(1)
            top = logits.amax(dim=-1, keepdim=True)
            grad = logits.sub_(top).exp_()                                # in place of the logits from here on
            total = grad.sum(dim=-1, keepdim=True)
            log_normalizer = (top + total.log()).squeeze(1)               # logsumexp of the row's logits
            loss += ((log_normalizer - target) * valid[s:s + rows]).sum()
            grad.div_(total)                                              # the softmax: one exp per logit
            grad.scatter_add_(1, ts, torch.full_like(ts, -1, dtype=grad.dtype))
            grad = grad.mul_(scale[s:s + rows].unsqueeze(1)).to(x.dtype)
            torch.mm(grad, weight, out=grad_x[s:s + rows])
            grad_w.addmm_(grad.t(), xs)
        ctx.save_for_backward(grad_x, grad_w)
        return loss / count                                               # nan when every target is ignored

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, grad_w * grad_loss, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`F.cross_entropy(F.linear(x, weight).float(), targets, ignore_index=-100)` for x [N, d], without the
    [N, vocab] logits in memory at once. Without gradients (evaluation) only the loss is computed."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets)
    valid = targets != -100
    rows = max(1, CHUNK_ELEMENTS // weight.shape[0])
    total = sum(F.cross_entropy((x[s:s + rows] @ weight.t()).float(), targets[s:s + rows], ignore_index=-100,
                                reduction="sum") for s in range(0, x.shape[0], rows))
    return total / valid.sum()


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.rms_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.activation_checkpointing = False

    @torch.no_grad()
    def init_weights(self, std: float = 0.02) -> None:
        """Explicit init (also after `to_empty()` from meta): N(0, 0.02) for embeddings and projections,
        residual outputs (o_proj, down_proj) scaled by 1/sqrt(2*n_layers) as in GPT-2/nanoGPT, norms to 1."""
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)
        cos, sin = rope_tables(self.cfg, device=self.rope_cos.device)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None):
        """Logits [B, T, V] (float32), or the mean cross-entropy when `targets` is given (-100 = ignore).
        `inputs_embeds` [B, T, d_model] replaces the token embeddings (e.g. projected image or audio features
        spliced in by an experiment); give it or `input_ids`, not both."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Transformer.forward: give input_ids or inputs_embeds (exactly one)")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        T = x.shape[1]
        cos, sin = self.rope_cos[:T].unsqueeze(0), self.rope_sin[:T].unsqueeze(0)
        for layer in self.layers:
            if self.activation_checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        x = self.norm(x)
        if targets is not None and not torch.is_autocast_enabled(x.device.type):
            return linear_cross_entropy(x.reshape(-1, x.size(-1)), self.output_weight(), targets.reshape(-1))
        logits = F.linear(x, self.output_weight())
        if targets is None:
            return logits.float()
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)

    def num_params(self, non_embedding: bool = False) -> int:
        """All parameters, or those outside the token embedding and (untied) output head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.embed_tokens.weight.numel()
            if self.lm_head is not None:
                n -= self.lm_head.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        from qazlm.model.flops import flops_per_token

        return flops_per_token(self.cfg, seq_len)


def build_model(cfg: ModelConfig, device="cpu", seed: int | None = None) -> Transformer:
    """Construct on the meta device, materialise on `device`, and initialise explicitly (`seed`: reseed torch
    first). Meta construction allocates nothing twice, so a 500M model never exists in CPU memory before
    it reaches the GPU; loaders overwrite the initial weights but need the rope tables it computes."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model
