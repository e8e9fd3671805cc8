"""Slot decoding (continuous batching's core): sequences that join, leave and reuse slots at any step, with
chunked prefill, decode exactly what each decodes alone through the Decoder."""

from __future__ import annotations

import pytest
import torch

from qazlm.model.decode import Decoder
from qazlm.model.slots import SlotCache, slot_step

PROMPTS = [[5, 17, 300, 42], [9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12], [100], [3, 1, 4, 1, 5, 9, 2, 6]]
NEW = 10


@pytest.fixture(scope="module")
def decoder():
    from qazlm.model.presets import preset
    from qazlm.model.transformer import Transformer

    torch.manual_seed(0)
    model = Transformer(preset("tiny", 1000))
    model.init_weights()
    with torch.no_grad():  # peaked predictions: no greedy ties
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    return Decoder.for_model(model.eval())


def alone(dec, prompt):
    """(greedy tokens, logits of every step) of one sequence through the Decoder's own cache."""
    cache, tokens, logits = dec.new_cache(1, 128), [], []
    with torch.inference_mode():
        lg = dec(torch.tensor([prompt]), cache)
        for _ in range(NEW):
            logits.append(lg[0])
            tokens.append(int(lg.argmax(-1)))
            lg = dec(torch.tensor([[tokens[-1]]]), cache)
    return tokens, torch.stack(logits)


def test_joining_leaving_and_reused_slots_decode_as_alone(decoder):
    expected = [alone(decoder, p) for p in PROMPTS]
    cache = SlotCache(decoder, 3, 128)
    tokens, logits, slot_of = {}, {}, {}
    plan = {0: [1], 2: [0], 4: [2]}  # step -> requests that join (slot freed by request 0 is reused by 3)
    step = 0
    with torch.inference_mode():
        while len([r for r in tokens if len(tokens[r]) == NEW]) < len(PROMPTS):
            for r in plan.get(step, []) + ([3] if 0 in tokens and len(tokens[0]) == NEW and 3 not in tokens
                                          else []):
                free = next(s for s in range(3) if s not in slot_of.values())
                slot_of[r], tokens[r], logits[r] = free, [], []
                p = PROMPTS[r]
                for i in range(0, len(p), 3):  # chunked prefill, three tokens per call
                    lg = slot_step(decoder, torch.tensor([p[i:i + 3]]), [free], cache)
                logits[r].append(lg[0])
                tokens[r].append(int(lg.argmax(-1)))
            live = [r for r in slot_of if len(tokens[r]) < NEW]
            if live:
                lg = slot_step(decoder, torch.tensor([[tokens[r][-1]] for r in live]), [slot_of[r] for r in live],
                               cache)
                for r, row in zip(live, lg):
                    if len(tokens[r]) < NEW:
                        logits[r].append(row)
                        tokens[r].append(int(row.argmax()))
            for r in [r for r in slot_of if len(tokens[r]) == NEW]:  # finished: retire, the slot is free again
                cache.free(slot_of.pop(r))
            step += 1
    for r, (want_tokens, want_logits) in enumerate(expected):
        assert tokens[r] == want_tokens, r
        assert torch.allclose(torch.stack(logits[r][:NEW]), want_logits, atol=1e-4), r


def test_a_full_slot_is_an_error(decoder):
    cache = SlotCache(decoder, 2, 8)
    slot_step(decoder, torch.tensor([[1, 2, 3, 4, 5, 6]]), [1], cache)
    with pytest.raises(ValueError, match="slot cache full: 9 positions > max_len 8"):
        slot_step(decoder, torch.tensor([[7, 8, 9]]), [1], cache)
    assert cache.lengths == [0, 6]
