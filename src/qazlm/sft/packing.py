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
preference pair that way (prompt + chosen reply, then the rejected reply positioned right after the prompt), and
SFT rows lay out conversations that open alike that way (`fork_shared_openings`), so what they share is computed
once by every layer's projections and MLP; in attention, each branch runs as a causal sequence of its own with the
first branch's tokens below p in front (their keys and values, computed once, are read again).
"""

from __future__ import annotations

PACKED_SDPA = "qazlm_packed_sdpa"
WIDTH_STEP = 64   # conversations are grouped by length rounded up to this; one sdpa call per group
MIN_SHARED = 16   # an opening shorter than this is not worth a fork


def uses_flash_attention(model) -> bool:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", "") or ""
    return "flash" in impl


def row_packed_collator(pad_token_id: int):
    """Collate TRL-packed examples (input_ids, labels, seq_lengths; position_ids when `fork_shared_openings` made
    them) into [batch, longest] rows.

    Padding gets position 0 at every slot (each pad token is a one-token "conversation" of its own, label -100),
    and the first token of every conversation is never a target (it would be predicted from the previous
    conversation's last token), as in TRL's padding-free collator."""
    import torch
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, padding_free=False, return_position_ids=True)

    def collate(examples):
        given = [torch.as_tensor(ex.pop("position_ids")) for ex in examples] if "position_ids" in examples[0] else None
        batch = base(examples)
        batch.pop("attention_mask", None)  # with a mask present, transformers would not look for packed sequences
        if given is not None:
            batch["position_ids"] = torch.nn.utils.rnn.pad_sequence(given, batch_first=True, padding_value=0)
        batch["labels"][batch["position_ids"] == 0] = -100
        return batch

    return collate


def opening(ids: list[int], labels: list[int], im_start: int) -> tuple[int, ...]:
    """A conversation's opening turn (its tokens before the second turn starts: the system prompt with the tool
    definitions, or the first user request) when it is long enough to share and trains nothing, else ()."""
    second = next((i for i in range(1, len(ids)) if ids[i] == im_start), 0)
    if second < MIN_SHARED or any(x != -100 for x in labels[:second]):
        return ()
    return tuple(ids[:second])


def forked_sequences(sequences: list[tuple[list[int], list[int]]], max_len: int, im_start: int) -> list[dict]:
    """Conversations (input_ids, labels) as training sequences in which conversations that open alike share one
    copy of the opening: the first one whole, each other one's remaining tokens after it, positioned right after
    the opening (`packed_sdpa` lets them see it and not each other). Each sequence holds at most `max_len` tokens;
    the rest stay as they are. The same loss and gradients as training each conversation alone."""
    groups: dict[tuple, list[int]] = {}
    for i, (ids, labels) in enumerate(sequences):
        groups.setdefault(opening(ids, labels, im_start), []).append(i)
    out = []
    for key, members in groups.items():
        if not key or len(members) == 1:
            out += [{"input_ids": sequences[i][0], "labels": sequences[i][1],
                     "position_ids": list(range(len(sequences[i][0])))} for i in members]
            continue
        shared, forks = len(key), []
        for i in sorted(members, key=lambda i: -len(sequences[i][0])):          # first fit, longest first
            ids, labels = sequences[i]
            fork = next((f for f in forks if len(f["input_ids"]) + len(ids) - shared <= max_len), None)
            if fork is None:
                forks.append({"input_ids": list(ids), "labels": list(labels), "position_ids": list(range(len(ids)))})
                continue
            fork["input_ids"] += ids[shared:]
            fork["labels"] += [-100] + labels[shared + 1:]        # a branch's first token follows another branch
            fork["position_ids"] += list(range(shared, len(ids)))
        out += forks
    return out


def fork_shared_openings(dataset, im_start: int, max_len: int):
    """TRL's packed dataset (rows of conversations: input_ids, labels, seq_lengths) re-packed with TRL's best-fit
    packer after `forked_sequences`: rows then carry position_ids, which `row_packed_collator` passes on. Returns
    (dataset, tokens saved)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    sequences = []
    for row in dataset:
        start = 0
        for n in row.get("seq_lengths") or [len(row["input_ids"])]:
            sequences.append((row["input_ids"][start:start + n], row["labels"][start:start + n]))
            start += n
    forked = forked_sequences(sequences, max_len, im_start)
    saved = sum(len(ids) for ids, _ in sequences) - sum(len(f["input_ids"]) for f in forked)
    return pack_dataset(Dataset.from_list(forked), max_len, "bfd"), saved


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


def branch_pieces(flat_positions, first, lengths, forked) -> list[tuple[list[int], int]]:
    """Each branch of the forked conversations as a causal sequence of its own: (its indices in the flattened batch,
    preceded by the first branch's tokens below the position it starts at; how many of those leading indices it
    borrows). The first branch borrows none."""
    pieces = []
    for start, n in zip(first[forked].tolist(), lengths[forked].tolist()):
        pos = flat_positions[start:start + n].tolist()
        cuts = [0] + [i for i in range(1, n) if pos[i] != pos[i - 1] + 1] + [n]
        for a, b in zip(cuts, cuts[1:]):
            pieces.append((list(range(start, start + pos[a])) + list(range(start + a, start + b)), pos[a]))
    return pieces


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
    out = v.repeat_interleave(heads // v.shape[1], dim=1)   # right for one-token conversations; the rest is replaced
    plain = (lengths > 1) & ~forked
    width = (lengths + WIDTH_STEP - 1) // WIDTH_STEP * WIDTH_STEP
    groups = []                                             # (flat indices [n, w], rows written back [n, w])
    for w in width[plain].unique().tolist():
        members = ((width == w) & plain).nonzero().flatten()
        offsets = torch.arange(w, device=first.device)
        groups.append(((first[members, None] + offsets).clamp(max=batch * length - 1),
                       offsets < lengths[members, None]))
    if forked.any():
        groups += fork_groups(branch_pieces(position_ids.expand(batch, length).flatten(), first, lengths, forked),
                              first.device)
    for index, write in groups:
        o = F.scaled_dot_product_attention(q[index].transpose(1, 2), k[index].transpose(1, 2),
                                           v[index].transpose(1, 2), dropout_p=kwargs.get("dropout", 0.0),
                                           is_causal=True, scale=kwargs.get("scaling"), enable_gqa=k.shape[1] != heads)
        out = out.index_put((index[write],), o.transpose(1, 2)[write])
    return out.view(batch, length, heads, dim), None


def fork_groups(pieces: list[tuple[list[int], int]], device) -> list:
    """`branch_pieces` gathered by width (rounded up to WIDTH_STEP) into (flat indices [n, w], rows written back
    [n, w]) blocks: a block's tail repeats its last index, which no earlier query sees under the causal mask; only a
    branch's own tokens are written back (the first branch's tokens it borrows are that branch's to write)."""
    import torch

    by_width: dict[int, list] = {}
    for index, borrowed in pieces:
        by_width.setdefault(-(-len(index) // WIDTH_STEP) * WIDTH_STEP, []).append((index, borrowed))
    groups = []
    for w, members in by_width.items():
        index = torch.tensor([ix + [ix[-1]] * (w - len(ix)) for ix, _ in members], device=device)
        offsets = torch.arange(w, device=device)
        lo = torch.tensor([b for _, b in members], device=device)[:, None]
        hi = torch.tensor([len(ix) for ix, _ in members], device=device)[:, None]
        groups.append((index, (offsets >= lo) & (offsets < hi)))
    return groups
