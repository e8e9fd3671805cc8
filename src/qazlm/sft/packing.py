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
    definitions, or the first user request) when it is long enough to share and trains nothing, nor the second
    turn's first token (which a branch cannot predict: it follows another branch), else ()."""
    second = next((i for i in range(1, len(ids)) if ids[i] == im_start), 0)
    if second < MIN_SHARED or any(x != -100 for x in labels[:second + 1]):
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
            fork["labels"] += labels[shared:]                     # its first label is -100 (`opening`)
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


def branches(flat_positions, first, lengths, forked):
    """Every branch of the forked conversations as (its conversation's first token, its own first token, its end,
    how many of the first branch's tokens it borrows = its first position), as tensors: a branch runs as a causal
    sequence of its own, the first branch's tokens below its first position in front. The first branch borrows
    none."""
    import torch

    owner_start = torch.repeat_interleave(first, lengths)
    owner_end = torch.repeat_interleave(first + lengths, lengths)
    in_fork = torch.repeat_interleave(forked, lengths)
    cut = in_fork.clone()
    cut[1:] &= (flat_positions[1:] != flat_positions[:-1] + 1) | (owner_start[1:] != owner_start[:-1])
    begin = cut.nonzero().flatten()
    end = torch.minimum(torch.cat([begin[1:], begin.new_tensor([flat_positions.numel()])]), owner_end[begin])
    return owner_start[begin], begin, end, flat_positions[begin]


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
    real = lengths > 1
    starts, ends, groups = first[real], (first + lengths)[real], []
    if forked.any():   # whole unforked conversations and first branches run alike; later branches on their own
        owner, begin, end, borrowed = branches(position_ids.expand(batch, length).flatten(), first, lengths, forked)
        trunk, plain = borrowed == 0, ~forked[real]
        starts, ends = torch.cat([starts[plain], begin[trunk]]), torch.cat([ends[plain], end[trunk]])
        groups = branch_groups(owner[~trunk], begin[~trunk], end[~trunk], borrowed[~trunk]) if (~trunk).any() else []
    groups = causal_groups(starts, ends) + groups
    for q_index, k_index, attn_mask, write in groups:
        o = F.scaled_dot_product_attention(*(rows(t, i).transpose(1, 2) for t, i in ((q, q_index), (k, k_index),
                                                                                      (v, k_index))),
                                           attn_mask=attn_mask, dropout_p=kwargs.get("dropout", 0.0),
                                           is_causal=attn_mask is None, scale=kwargs.get("scaling"),
                                           enable_gqa=k.shape[1] != heads)
        out = out.index_put((q_index[write],), o.transpose(1, 2)[write])
    return out.view(batch, length, heads, dim), None


def rows(t, index):
    """t's rows at `index` ([n, w] -> [n, w, ...]) through index_select, whose backward adds the gradients of a row
    used several times (an opening's keys read by every branch) in a fixed order: advanced indexing's backward
    adds them in parallel on a CPU, so two runs of one training would differ in the last bits."""
    return t.index_select(0, index.flatten()).view(*index.shape, *t.shape[1:])


def rounded(n):
    return (n + WIDTH_STEP - 1) // WIDTH_STEP * WIDTH_STEP


def causal_groups(starts, ends) -> list:
    """Sequences [start, end) of the flattened batch gathered by width (length rounded up to WIDTH_STEP) into
    (indices [n, w], the same as keys, no mask: causal, rows written back [n, w]) blocks. A block's tail repeats the
    last index, which no earlier query sees under the causal mask."""
    import torch

    size, groups = ends - starts, []
    width = rounded(size)
    for w in width.unique().tolist():
        m = (width == w).nonzero().flatten()
        offsets = torch.arange(w, device=starts.device)
        index = torch.minimum(starts[m, None] + offsets, ends[m, None] - 1)
        groups.append((index, index, None, offsets < size[m, None]))
    return groups


def branch_groups(owner, begin, end, borrowed) -> list:
    """Later fork branches gathered by (query, key) widths into blocks: queries are the branch's own tokens, keys the
    first branch's tokens it borrows and then its own, under a causal mask aligned at the bottom right (query i sees
    every borrowed key and its own keys up to i). Nothing is computed for the borrowed tokens' queries."""
    import torch

    size = end - begin
    wq, wk = rounded(size), rounded(borrowed + size)
    groups = []
    for a, b in torch.stack([wq, wk], 1).unique(dim=0).tolist():
        m = ((wq == a) & (wk == b)).nonzero().flatten()
        qo, ko = torch.arange(a, device=begin.device), torch.arange(b, device=begin.device)
        lent, last = borrowed[m, None], end[m, None] - 1
        q_index = torch.minimum(begin[m, None] + qo, last)
        k_index = torch.minimum(torch.where(ko < lent, owner[m, None] + ko, begin[m, None] + ko - lent), last)
        sees = ko[None, None, :] <= lent[:, :, None] + qo[None, :, None]      # [n, a, b]
        groups.append((q_index, k_index, sees[:, None], qo < size[m, None]))
    return groups
