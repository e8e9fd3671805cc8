"""Packed batches that keep each packed row a row of its own, and attention that runs per conversation.

TRL's best-fit ("bfd") packing fills rows of up to `max_len` tokens with whole conversations and records each
row's `seq_lengths`. Its padding-free collator then flattens the whole batch into ONE row: ideal for
FlashAttention's variable-length kernels, but with sdpa/eager attention transformers builds a dense
(batch*max_len)^2 block-diagonal mask, so attention costs batch^2 times more than needed. Without FlashAttention
we therefore collate the same packed rows as a [batch, longest row] tensor with position ids restarting at every
conversation and no attention mask: transformers' masking_utils then finds the conversations from the position
ids (`find_packed_sequence_indices`) and lets each token attend only inside its own conversation.

Even so, sdpa with that block-diagonal mask computes every row's full max_len^2 scores and cannot skip the masked
blocks. `packed_sdpa` (registered as the attention implementation PACKED_SDPA, set on the model by `qazlm sft`
whenever it uses the row collator) cuts the packed rows back into their conversations and runs plain causal sdpa
on conversations of similar length together: the same outputs, at the cost of each conversation's own length.

A conversation may also fork: where its position ids drop to a value p > 0, a second branch starts that sees
the first branch's positions below p and itself, not the rest of the first branch. The reward model lays out a
preference pair that way (prompt + chosen reply, then the rejected reply positioned right after the prompt), so
the prompt both sides share is computed once; forked conversations run through sdpa with their explicit mask.
"""

from __future__ import annotations

PACKED_SDPA = "qazlm_packed_sdpa"
WIDTH_STEP = 64   # conversations are grouped by length rounded up to this; one sdpa call per group


def uses_flash_attention(model) -> bool:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "") or ""
    return "flash" in impl


def row_packed_collator(pad_token_id: int):
    """Collate TRL-packed examples (input_ids, labels, seq_lengths) into [batch, longest] rows.

    Padding gets position 0 at every slot (each pad token is a one-token "conversation" of its own, label -100),
    and the first token of every conversation is never a target (it would be predicted from the previous
    conversation's last token), as in TRL's padding-free collator."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def collate(examples):
        batch = base(examples)
        batch.pop("attention_mask", None)  # with a mask present, transformers would not look for packed sequences
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch

    return collate


def use_packed_attention(model) -> None:
    """Register PACKED_SDPA with transformers (its masks are sdpa's, for any call that is not a packed batch) and
    switch the model to it. The implementation is not saved in config.json: loaded folders use sdpa again."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)
    model.set_attn_implementation(PACKED_SDPA)


def conversations(position_ids, batch: int, length: int):
    """(first token, length, forked) of every conversation in the flattened [batch * length] packed batch, or None
    when each row holds a single unforked conversation (plain causal attention is then exact and cheaper to call).
    `forked` marks the conversations whose positions drop to a non-zero value somewhere (module docstring)."""
    import torch

    flat = position_ids.expand(batch, length).flatten()
    starts = flat == 0
    starts[0::length] = True
    drops = torch.zeros_like(starts)
    drops[1:] = (flat[1:] != flat[:-1] + 1) & ~starts[1:]
    first = starts.nonzero().flatten()
    if len(first) == batch and not drops.any():
        return None
    forked = torch.zeros(len(first), dtype=torch.bool, device=first.device)
    forked[starts.long().cumsum(0)[drops] - 1] = True
    return first, torch.diff(first, append=first.new_tensor([batch * length])), forked


def fork_mask(positions, inside):
    """[n, w, w] attention mask of forked conversations gathered into [n, w] blocks (`positions`, with `inside`
    marking each block's own tokens): a token sees the earlier tokens of its own branch, and the first branch's
    tokens below the position its branch starts at. Every token sees itself, so no row is empty."""
    import torch

    n, w = positions.shape
    index = torch.arange(w, device=positions.device)
    new = torch.zeros_like(inside)
    new[:, 1:] = positions[:, 1:] != positions[:, :-1] + 1
    branch = new.long().cumsum(-1)
    start = torch.where(new, index, 0).cummax(-1).values          # where each token's branch begins
    fork_at = positions.gather(1, start).masked_fill(branch == 0, 0)
    same = branch[:, :, None] == branch[:, None, :]
    trunk = (branch[:, None, :] == 0) & (positions[:, None, :] < fork_at[:, :, None])
    causal = index[None, :] <= index[:, None]
    return (causal & inside[:, None, :] & (same | trunk)) | torch.eye(w, dtype=torch.bool, device=positions.device)


def packed_sdpa(module, query, key, value, attention_mask, position_ids=None, **kwargs):
    """transformers attention function: causal sdpa inside each packed conversation, found from the position ids.

    Conversations are gathered into [n, width] blocks (width = length rounded up to WIDTH_STEP); the tail of a
    block reads the next conversation's tokens, which no earlier query can see under the causal mask, and only
    each conversation's own positions are written back. One-token conversations (padding) attend to themselves:
    their output is their value. Anything else — generation with a cache, a sliding window, an unpacked batch —
    goes to transformers' sdpa unchanged."""
    import torch
    import torch.nn.functional as F
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    found = None
    if position_ids is not None and key.shape[2] == length and kwargs.get("sliding_window") is None:
        found = conversations(position_ids, batch, length)
    if found is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)
    first, lengths, forked = found
    q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value))
    flat_positions = position_ids.expand(batch, length).flatten()
    out = v.repeat_interleave(heads // v.shape[1], dim=1)   # right for one-token conversations; the rest is replaced
    width = (lengths + WIDTH_STEP - 1) // WIDTH_STEP * WIDTH_STEP
    for fork in (False, True):
        for w in width[(lengths > 1) & (forked == fork)].unique().tolist():
            group = ((width == w) & (lengths > 1) & (forked == fork)).nonzero().flatten()
            offsets = torch.arange(w, device=first.device)
            index = (first[group, None] + offsets).clamp(max=batch * length - 1)
            inside = offsets < lengths[group, None]
            mask = fork_mask(flat_positions[index], inside)[:, None] if fork else None
            o = F.scaled_dot_product_attention(q[index].transpose(1, 2), k[index].transpose(1, 2),
                                               v[index].transpose(1, 2), attn_mask=mask,
                                               dropout_p=kwargs.get("dropout", 0.0), is_causal=not fork,
                                               scale=kwargs.get("scaling"), enable_gqa=k.shape[1] != heads)
            out = out.index_put((index[inside],), o.transpose(1, 2)[inside])
    return out.view(batch, length, heads, dim), None
