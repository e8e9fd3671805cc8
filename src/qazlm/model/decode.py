"""Incremental decoding for qazlm's Transformer: the generation path, separate from the training forward.

Why a second forward: training keeps the module layout of transformers' Qwen3 (separate q/k/v and
gate/up weights, so export is a copy). Decoding one token at a time on a CPU is bound by per-op overhead
and by how fast the weights stream through the matmuls, not by FLOPs. This path runs over fused weights:
one q|k|v and one gate|up matmul per layer (4 matmuls instead of 7), q and k normed and rotated together,
RMSNorm weights folded into the next matmul's rows (RMSNorm(x) @ W == rms(x) @ (diag(w) W)), residual
adds folded into the matmul (`addmm`), the KV cache written through per-layer views: ~30 kernels per
layer instead of ~48, in a flat loop without module calls. Weights are stored transposed ([in, out]):
BLAS then runs `x @ W` without a transposed operand, faster for a few rows on CPU. The element-wise
math otherwise follows transformers' Qwen3 in the same order; the folded norm weights and the BLAS
kernels round differently in the last bit, so greedy output matches `transformers.generate` token for
token (tested, and checked in every benchmark row) but logits are equal only to ~1e-6. The copies cost
memory (all matrices once more), which is why the training model does not keep them.

    dec = Decoder.for_model(model)          # cached on the model until its weights change
    cache = dec.new_cache(batch, max_len)
    logits = dec(prompt_ids, cache, mask)   # [B, V] logits of the last position; then one token at a time
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qazlm.model.kv_cache import KVCache


@dataclass
class _Layer:
    wqkv: torch.Tensor     # [d, (H + 2*KV) * hd]: q, k, v projections side by side (all weights are [in, out])
    qk_norm: torch.Tensor | None  # [H + KV, hd]: q_norm weight per q head, then k_norm weight per kv head
    wo: torch.Tensor
    wgu: torch.Tensor      # [d, 2 * ffn]: gate then up
    wdown: torch.Tensor


class Decoder:
    """Fused-weight snapshot of a Transformer for generation (inference only; weights are copies)."""

    def __init__(self, model):
        cfg = model.cfg
        self.cfg = cfg
        self.H, self.KV, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        with torch.no_grad():
            self.layers = []
            for block in model.layers:
                att, mlp = block.self_attn, block.mlp
                qk_norm = None
                if cfg.qk_norm:
                    qk_norm = torch.cat([att.q_norm.weight.expand(self.H, -1), att.k_norm.weight.expand(self.KV, -1)])
                self.layers.append(_Layer(
                    wqkv=_in_out(att.q_proj.weight, att.k_proj.weight, att.v_proj.weight,
                                 norm=block.input_layernorm.weight),
                    qk_norm=qk_norm, wo=_in_out(att.o_proj.weight),
                    wgu=_in_out(mlp.gate_proj.weight, mlp.up_proj.weight, norm=block.post_attention_layernorm.weight),
                    wdown=_in_out(mlp.down_proj.weight)))
            self.embed = model.embed_tokens.weight.detach()
            self.head = _in_out(model.output_weight(), norm=model.norm.weight)
            # `transformer.apply_rope` with its rotate_half minus sign folded into the sin table (first half
            # negated): the step then rotates with x * cos + swap_halves(x) * sin, one kernel less per layer
            half = self.hd // 2
            self.cos = model.rope_cos.to(self.embed.dtype)
            self.sin = torch.cat((-model.rope_sin[:, :half], model.rope_sin[:, half:]), dim=-1).to(self.embed.dtype)
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self._compiled = None  # None: not asked; False: compiling failed; else the compiled `_forward`
        self._compiled_threads = 0

    @staticmethod
    def for_model(model) -> Decoder:
        """The model's Decoder, rebuilt only when a parameter changed since (in-place updates bump versions)."""
        versions = tuple(p._version for p in model.parameters())
        cached = getattr(model, "_qazlm_decoder", None)
        if cached is None or cached[0] != versions:
            cached = (versions, Decoder(model))
            object.__setattr__(model, "_qazlm_decoder", cached)  # not a submodule: no state-dict entry
        return cached[1]

    @staticmethod
    def release(model) -> None:
        """Drop the cached Decoder (its weight copies): a training loop that samples between steps calls this."""
        model.__dict__.pop("_qazlm_decoder", None)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(batch, max_len, self.cfg, self.device, self.dtype)

    def compile(self) -> Decoder:
        """Compile the one-token step with inductor (C++ wrapper), for long generations and servers.

        The eager step launches ~250 small kernels between the matmuls; compiled, they are fused. The price
        is a one-off compile (much shorter in later processes: inductor keeps its cache on disk) plus one
        recompile when the context length first changes; figures in docs/benchmarks.md. Prompts (several tokens) stay eager. The C++ kernels keep
        the torch thread count they were compiled with, so a call under another count runs eagerly. Needs
        a C++ compiler on CPU; if compiling fails, one line on stderr and the eager step from then on.
        """
        if self._compiled is None:
            self._compiled_threads = torch.get_num_threads()
            self._compiled = torch.compile(self._forward, dynamic=None, fullgraph=True,
                                           options={"cpp_wrapper": True})
        return self

    def __call__(self, ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Feed `ids` [B, T] after the cached positions; float32 logits [B, V] of the last position.

        `attention_mask` [B, past + T] (1 = token, 0 = left padding) is needed only when the batch has
        padding; positions then count real tokens only, as in transformers.
        """
        cache.check_room(ids.shape[1])
        if self._compiled and ids.shape[1] == 1 and torch.get_num_threads() == self._compiled_threads:
            try:
                return self._compiled(ids, cache, attention_mask)
            except Exception as err:  # no C++ compiler, an op inductor cannot lower, ...: stay eager
                self._compiled = False
                reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                print(f"qazlm: compiling the decode step failed ({reason}); decoding eagerly", file=sys.stderr)
        return self._forward(ids, cache, attention_mask)

    def _forward(self, ids: torch.Tensor, cache: KVCache, attention_mask: torch.Tensor | None) -> torch.Tensor:
        B, T = ids.shape
        H, KV = self.H, self.KV
        past = cache.length
        if attention_mask is not None:
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:past + T]
            cos, sin = self.cos[positions].unsqueeze(2), self.sin[positions].unsqueeze(2)  # [B, T, 1, hd]
        else:
            cos, sin = self.cos[past:past + T, None], self.sin[past:past + T, None]  # [T, 1, hd]
        mask = attention_bias(attention_mask, past, T, ids.device)
        x = F.embedding(ids.reshape(-1), self.embed)  # [B*T, d]: 2-D, so residual adds fold into addmm
        for layer, k_all, v_all in zip(self.layers, cache.k_layers, cache.v_layers):
            q, k_new, v_new = self._qkv(x, layer, cos, sin, B, T)
            k_all[:, :, past:past + T] = k_new  # this step's keys/values into the layer's cache
            v_all[:, :, past:past + T] = v_new
            k, v = k_all[:, :, :past + T], v_all[:, :, :past + T]
            if mask is None:  # no padding: prefill is causal, a single new token sees every cached key
                y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=KV != H)
            else:
                y = self._masked_attention(q, k, v, mask)
            x = self._out_and_mlp(x, y, layer, B, T)
        cache.advance(T)
        return self._head(x, B, T)

    def _qkv(self, x, layer: _Layer, cos, sin, B: int, T: int):
        """(q [B, H, T, hd], k and v [B, KV, T, hd]) of one layer, q and k normed and rotated."""
        H, KV, hd, eps = self.H, self.KV, self.hd, self.cfg.rms_eps
        half = hd // 2
        qkv = (_rms(x, eps) @ layer.wqkv).view(B, T, H + 2 * KV, hd)
        qk = qkv[:, :, :H + KV]
        if layer.qk_norm is not None:
            qk = _rms(qk, eps) * layer.qk_norm
        qk = qk * cos + torch.cat((qk[..., half:], qk[..., :half]), dim=-1) * sin
        qk = qk.transpose(1, 2)  # [B, H + KV, T, hd]
        return qk[:, :H], qk[:, H:], qkv[:, :, H + KV:].transpose(1, 2)

    def _masked_attention(self, q, k, v, mask):
        """Attention under an explicit mask. On CPU the kernel shares k/v across query heads itself
        (`enable_gqa`, faster than expanding them); masked GQA falls back to the math kernel on CUDA, so
        k/v are expanded once there instead."""
        if q.device.type == "cpu":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.KV != self.H)
        if self.KV != self.H:
            k, v = k.repeat_interleave(self.H // self.KV, dim=1), v.repeat_interleave(self.H // self.KV, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def _out_and_mlp(self, x, y, layer: _Layer, B: int, T: int):
        """The attention output projection and the MLP, each added to the residual stream `x` [B*T, d]."""
        eps = self.cfg.rms_eps
        x = torch.addmm(x, y.transpose(1, 2).reshape(B * T, self.H * self.hd), layer.wo)
        gate, up = (_rms(x, eps) @ layer.wgu).chunk(2, dim=-1)
        return torch.addmm(x, F.silu(gate) * up, layer.wdown)

    def _head(self, x, B: int, T: int):
        x = x.view(B, T, -1)[:, -1]  # only the last position goes through the head
        return (_rms(x, self.cfg.rms_eps) @ self.head).float()


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm without its weight (folded into the next matmul), in transformers' Qwen3 order."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _in_out(*weights: torch.Tensor, norm: torch.Tensor | None = None) -> torch.Tensor:
    """nn.Linear weights ([out, in]) stacked along `out`, stored as one contiguous [in, sum(out)] matrix;
    `norm`, the weight of the RMSNorm before them, scales the rows (RMSNorm(x) @ W == rms(x) @ (w * W))."""
    w = torch.cat([w.detach() for w in weights])
    if norm is not None:
        w = w * norm.detach()
    return w.t().contiguous()


def attention_bias(attention_mask: torch.Tensor | None, past: int, T: int, device) -> torch.Tensor | None:
    """None (plain causal, or a single new token without padding: the fast paths) or a boolean
    [B, 1, T, past+T] mask for cache/padding.

    Every position may attend to itself, so rows of left padding stay finite (no NaN leaks into v).
    """
    if attention_mask is None and (past == 0 or T == 1):
        return None
    S = past + T
    q_pos = torch.arange(past, S, device=device).unsqueeze(1)
    k_pos = torch.arange(S, device=device).unsqueeze(0)
    allowed = (k_pos <= q_pos).unsqueeze(0)  # [1, T, S]
    if attention_mask is not None:
        allowed = (allowed & attention_mask[:, None, :S].bool()) | (k_pos == q_pos)
    return allowed.unsqueeze(1)
