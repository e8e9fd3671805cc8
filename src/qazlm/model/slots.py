"""Decoding in slots, for continuous batching: every sequence owns a row of the KV cache and its own length.

`qazlm.model.decode.Decoder` runs a batch that starts and ends together (one shared cache length). A server
adds and retires sequences at every step instead, so here each slot keeps its own length: one forward feeds
tokens [A, T] to A chosen slots, each at its own positions (RoPE per row), writes their keys/values at those
positions of their rows, and lets each new token attend to its own slot's first `length + t + 1` positions
only. A prompt is prefilled into one slot (in chunks, while the other slots keep decoding in their own calls);
decode steps take every live slot at once. Retiring a slot is setting its length to 0: its old entries are
never read again. The layer math is the Decoder's own (`_qkv`, `_out_and_mlp`), so a slot decodes exactly
what the Decoder decodes for the same sequence alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qazlm.model.decode import Decoder


class SlotCache:
    """Keys/values [slots, n_kv_heads, max_len, head_dim] per layer and a length per slot."""

    def __init__(self, decoder: Decoder, slots: int, max_len: int):
        cfg = decoder.cfg
        shape = (cfg.n_layers, slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k_layers = torch.zeros(shape, device=decoder.device, dtype=decoder.dtype).unbind(0)
        self.v_layers = torch.zeros(shape, device=decoder.device, dtype=decoder.dtype).unbind(0)
        self.lengths = [0] * slots
        self.max_len = max_len

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0


def slot_step(decoder: Decoder, ids: torch.Tensor, slots: list[int], cache: SlotCache) -> torch.Tensor:
    """Feed `ids` [A, T] to `slots` (A distinct slots, each continuing at its own length); float32 logits
    [A, V] of each slot's last new position."""
    A, T = ids.shape
    starts = torch.tensor([cache.lengths[s] for s in slots], device=ids.device)
    if int(starts.max()) + T > cache.max_len:
        raise ValueError(f"slot cache full: {int(starts.max()) + T} positions > max_len {cache.max_len}")
    positions = starts[:, None] + torch.arange(T, device=ids.device)            # [A, T]
    cos, sin = decoder.cos[positions].unsqueeze(2), decoder.sin[positions].unsqueeze(2)  # [A, T, 1, hd]
    width = int(starts.max()) + T
    mask = (torch.arange(width, device=ids.device) <= positions[:, :, None]).unsqueeze(1)  # [A, 1, T, width]
    rows = torch.tensor(slots, device=ids.device)
    cells = (rows[:, None].expand(A, T), positions)  # where each new position lives in the cache
    # Slots in one run (the batcher orders them) are read as a view; any other set is gathered (a copy).
    run = slice(slots[0], slots[0] + A) if slots == list(range(slots[0], slots[0] + A)) else rows
    x = F.embedding(ids.reshape(-1), decoder.embed)
    for layer, k_all, v_all in zip(decoder.layers, cache.k_layers, cache.v_layers):
        q, k_new, v_new = decoder._qkv(x, layer, cos, sin, A, T)
        k_all[cells[0], :, cells[1]] = k_new.transpose(1, 2)  # [A, T, KV, hd] into (slot, position)
        v_all[cells[0], :, cells[1]] = v_new.transpose(1, 2)
        y = decoder._masked_attention(q, k_all[run, :, :width], v_all[run, :, :width], mask)
        x = decoder._out_and_mlp(x, y, layer, A, T)
    for s in slots:
        cache.lengths[s] += T
    return decoder._head(x, A, T)
