"""Packed batches that keep each packed row a row of its own.

TRL's best-fit ("bfd") packing fills rows of up to `max_len` tokens with whole conversations and records each
row's `seq_lengths`. Its padding-free collator then flattens the whole batch into ONE row: ideal for
FlashAttention's variable-length kernels, but with sdpa/eager attention transformers builds a dense
(batch*max_len)^2 block-diagonal mask, so attention costs batch^2 times more than needed. Without FlashAttention
we therefore collate the same packed rows as a [batch, longest row] tensor with position ids restarting at every
conversation and no attention mask: transformers' masking_utils then finds the conversations from the position
ids (`find_packed_sequence_indices`) and lets each token attend only inside its own conversation.
"""

from __future__ import annotations


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
