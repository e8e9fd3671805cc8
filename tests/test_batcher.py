"""Continuous batching: requests that arrive at different steps, outnumber the slots, sample with their own
seeds or get cancelled decode exactly what `generate_ids` gives each alone — for our models (one batched
forward per step) and transformers models (a cache per slot)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qazlm.errors import QazlmError  # noqa: E402
from qazlm.infer.batcher import ContinuousBatcher, QueueFull  # noqa: E402
from qazlm.infer.sampling import SamplingParams  # noqa: E402

PROMPTS = [[5, 17, 300, 42], [9, 8, 7, 6, 5, 4, 3, 2, 1, 11, 12, 13, 14], [100], [3, 1, 4, 1, 5, 9, 2, 6],
           [2, 7, 1, 8, 2, 8]]
STOP = frozenset({0})


@pytest.fixture(scope="module", params=["ours", "hf"])
def model(request, tmp_path_factory, tiny_tokenizer_dir):
    from test_eval_helpers import make_hf_folder, make_our_folder

    from qazlm.infer.loading import load_model

    root = tmp_path_factory.mktemp("batcher")
    make = make_our_folder if request.param == "ours" else make_hf_folder
    loaded = load_model(make(tiny_tokenizer_dir, root / request.param))
    loaded.model.tokenizer = loaded.tokenizer  # for the grammar test
    return loaded.model


def alone(model, prompt, params):
    from qazlm.infer.engine import generate_ids

    return generate_ids(model, [prompt], params, stop_token_ids=sorted(STOP))[0]


@pytest.mark.parametrize("mode", ["greedy", "sampled", "penalized"])
def test_staggered_requests_decode_as_alone(model, mode):
    sampled = mode == "sampled"   # penalized: greedy with the repetition penalty, over the reply as the engine's
    params = [SamplingParams(max_new_tokens=12, temperature=0.9 if sampled else 0.0, top_p=0.95 if sampled else None,
                             repetition_penalty=1.5 if mode == "penalized" else 1.0, seed=i)
              for i in range(len(PROMPTS))]
    batcher = ContinuousBatcher(model, slots=2, max_len=64, prefill_chunk=3)  # fewer slots than requests
    reqs = [batcher.submit(PROMPTS[0], params[0], STOP)]
    for i in range(1, len(PROMPTS)):  # one more request every other step, while others decode
        batcher.step()
        batcher.step()
        reqs.append(batcher.submit(PROMPTS[i], params[i], STOP))
    batcher.run_until_idle()
    assert batcher.idle()
    for i, req in enumerate(reqs):
        assert req.done.is_set() and req.finish in ("stop", "length")
        assert req.tokens == alone(model, PROMPTS[i], params[i]), i


def test_cancel_frees_the_slot_and_a_full_queue_refuses(model):
    batcher = ContinuousBatcher(model, slots=1, max_len=64, max_queue=1)
    params = SamplingParams(max_new_tokens=30)
    first = batcher.submit(PROMPTS[0], params, STOP)
    batcher.submit(PROMPTS[3], params, STOP)  # the free slot takes one at the next step, the queue the other
    with pytest.raises(QueueFull, match="queue full"):
        batcher.submit(PROMPTS[2], params, STOP)
    batcher.cancel(batcher.waiting[-1])
    batcher.step()
    second = batcher.submit(PROMPTS[1], params, STOP)
    with pytest.raises(QueueFull, match="queue full"):
        batcher.submit(PROMPTS[2], params, STOP)
    batcher.cancel(first)
    assert first.finish == "cancelled" and first.done.is_set()
    batcher.run_until_idle()
    assert second.tokens == alone(model, PROMPTS[1], params)
    with pytest.raises(QazlmError, match="exceeds the context"):
        batcher.submit(PROMPTS[1], SamplingParams(max_new_tokens=60), STOP)


def test_each_request_keeps_its_own_grammar(model):
    import json

    from jsonschema import validate

    from qazlm.infer.constrain import Constraint, schema_regex

    tok = model.tokenizer
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "w": {"type": "string"}},
              "required": ["ok", "w"]}  # an unbounded string: the grammar closes it within the token budget
    eos = tok.eos_token_id
    params = SamplingParams(max_new_tokens=60, temperature=1.0, seed=7)
    batcher = ContinuousBatcher(model, slots=3, max_len=96)
    free = batcher.submit(PROMPTS[3], params, STOP)
    forced = [batcher.submit(p, params, {eos}, constraint=Constraint(tok, schema_regex(schema), eos, 1))
              for p in PROMPTS[:2]]
    batcher.run_until_idle()
    for req in forced:
        assert req.finish == "stop"
        validate(json.loads(tok.decode(req.tokens)), schema)
    assert free.tokens == alone(model, PROMPTS[3], params)  # its neighbours' grammars do not touch it


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_hf_models_decode_their_slots_as_our_transformer(arch):
    """A Qwen3/Llama HF model (our SFT output, SmolLM2) is batched through our Transformer holding the same
    tensors — same logits; what has no exact counterpart (RoPE scaling, non-float32 weights) stays HF."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    from qazlm.infer.batcher import _HFSlots, _OurSlots
    from qazlm.model.hf import as_ours

    kind, make = (Qwen3Config, Qwen3ForCausalLM) if arch == "qwen3" else (LlamaConfig, LlamaForCausalLM)
    common = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=arch == "llama",
                  rope_theta=50000.0, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    hf = make(kind(**common, **({"head_dim": 16} if arch == "qwen3" else {}))).eval()
    ours = as_ours(hf)
    ids = torch.tensor([[5, 17, 230, 41, 9, 100, 3]])
    with torch.no_grad():
        assert torch.allclose(ours(ids), hf(ids).logits, atol=1e-5)
    assert ours.embed_tokens.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()  # shared, not copied
    assert isinstance(ContinuousBatcher(hf, slots=2, max_len=64).backend, _OurSlots)
    scaled = make(kind(**common, rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert as_ours(scaled) is None and as_ours(hf.to(torch.bfloat16)) is None
    assert isinstance(ContinuousBatcher(scaled, slots=2, max_len=64).backend, _HFSlots)
