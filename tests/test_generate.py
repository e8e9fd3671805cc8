"""Generation: greedy == transformers.generate, batch == one-by-one, sampling knobs, stops, streaming, chat."""

from __future__ import annotations

import pytest
from test_eval_helpers import make_hf_folder, make_our_folder

from qazlm.errors import QazlmError

PROMPTS = ["Қазақстан Республикасы", "Россия является крупнейшей", "The cat"]


@pytest.fixture(scope="module")
def hf(tmp_path_factory, tiny_tokenizer_dir):
    from qazlm.infer.loading import load_model

    return load_model(make_hf_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("hf")))


@pytest.fixture(scope="module")
def ours(tmp_path_factory, tiny_tokenizer_dir):
    from qazlm.infer.loading import load_model

    folder = make_our_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("ours") / "final")
    return folder, load_model(folder)


def hf_greedy(hf_model, tok, prompt_ids, n):
    import torch

    out = hf_model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                            max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=tok.pad_token_id)
    return out[0, len(prompt_ids):].tolist()


def test_greedy_matches_transformers_generate_hf(hf):
    from qazlm.infer.engine import SamplingParams, encode_prompts, generate_ids

    ids = encode_prompts(hf.tokenizer, PROMPTS)
    got = generate_ids(hf.model, ids, SamplingParams(max_new_tokens=12), pad_id=hf.tokenizer.pad_token_id)
    for p, g in zip(ids, got):
        assert g == hf_greedy(hf.model.module, hf.tokenizer, p, 12)


def test_hf_qwen3_folder_decodes_through_our_decoder(hf, monkeypatch):
    """An HF Qwen3/Llama folder (our SFT and DPO output) is stepped by our Decoder over the same tensors — one
    Transformer view kept per model, the same greedy tokens as transformers' own forward; rows longer than its
    RoPE table (128 here; transformers extends RoPE silently) and unconvertible models stay on transformers."""
    import qazlm.model.hf as hf_mod
    from qazlm.infer import engine
    from qazlm.infer.engine import SamplingParams, encode_prompts, generate_ids

    module = hf.model.module
    assert isinstance(engine.make_stepper(module, 2, 64, "cpu"), engine._OurStepper)
    assert hf_mod.ours_for(module) is hf_mod.ours_for(module)  # built once, not per generate call
    assert isinstance(engine.make_stepper(module, 2, 129, "cpu"), engine._HFStepper)
    ids = encode_prompts(hf.tokenizer, PROMPTS)
    params = SamplingParams(max_new_tokens=12, repetition_penalty=1.3)
    ours = generate_ids(hf.model, ids, params, pad_id=hf.tokenizer.pad_token_id)
    monkeypatch.setattr(hf_mod, "ours_for", lambda model: None)
    assert isinstance(engine.make_stepper(module, 2, 64, "cpu"), engine._HFStepper)
    assert generate_ids(hf.model, ids, params, pad_id=hf.tokenizer.pad_token_id) == ours


def test_greedy_matches_transformers_on_exported_model(ours, tmp_path):
    """Our Transformer + KVCache vs transformers.generate on the `export_hf` copy: identical tokens."""
    from transformers import AutoModelForCausalLM

    from qazlm.infer.engine import SamplingParams, encode_prompts, generate_ids
    from qazlm.model.hf import export_hf

    folder, loaded = ours
    export_hf(folder, tmp_path / "hf")
    ref_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    ids = encode_prompts(loaded.tokenizer, PROMPTS)
    got = generate_ids(loaded.model, ids, SamplingParams(max_new_tokens=16), pad_id=loaded.tokenizer.pad_token_id)
    for p, g in zip(ids, got):
        assert g == hf_greedy(ref_model, loaded.tokenizer, p, 16)
    assert len(set(map(tuple, got))) > 1  # not a degenerate model


@pytest.mark.parametrize("penalty", [1.0, 1.3])   # 1.3: the demo's chat evaluation, batched over padded prompts
@pytest.mark.parametrize("which", ["hf", "ours"])
def test_batch_equals_single(which, penalty, request):
    from qazlm.infer.engine import generate

    loaded = request.getfixturevalue(which)
    loaded = loaded[1] if which == "ours" else loaded
    kw = dict(max_new_tokens=10, repetition_penalty=penalty)
    batch = generate(loaded.model, loaded.tokenizer, PROMPTS, **kw)
    single = [generate(loaded.model, loaded.tokenizer, [p], **kw)[0] for p in PROMPTS]
    assert batch == single
    assert all(batch)


def test_sampling_is_seeded_and_top_k_1_is_greedy(hf):
    from qazlm.infer.engine import generate

    kw = dict(max_new_tokens=12, temperature=1.0)
    a = generate(hf.model, hf.tokenizer, PROMPTS, seed=1, **kw)
    assert a == generate(hf.model, hf.tokenizer, PROMPTS, seed=1, **kw)
    assert a != generate(hf.model, hf.tokenizer, PROMPTS, seed=2, **kw)
    greedy = generate(hf.model, hf.tokenizer, PROMPTS, max_new_tokens=12)
    assert generate(hf.model, hf.tokenizer, PROMPTS, top_k=1, seed=3, **kw) == greedy
    assert generate(hf.model, hf.tokenizer, PROMPTS, top_p=1e-6, seed=3, **kw) == greedy


def test_pick_next_filters():
    import torch

    from qazlm.infer.sampling import SamplingParams, pick_next

    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    seen = torch.tensor([[0]])
    # repetition penalty 10 pushes the seen token 0 (2.0 -> 0.2) below token 1 (HF semantics)
    assert pick_next(logits, seen, SamplingParams(repetition_penalty=10.0), None).item() == 1
    # nothing generated yet: nothing penalized (the prompt's own tokens never are)
    assert pick_next(logits, seen[:, :0], SamplingParams(repetition_penalty=10.0), None).item() == 0
    g = torch.Generator().manual_seed(0)
    draws = {pick_next(logits, seen, SamplingParams(temperature=1.0, top_k=2), g).item() for _ in range(200)}
    assert draws == {0, 1}
    draws = {pick_next(logits, seen, SamplingParams(temperature=1.0, top_p=0.8), g).item() for _ in range(200)}
    assert draws == {0, 1}  # p(0)=.61, p(0)+p(1)=.84 >= .8: token 2 and 3 are cut


def test_repetition_penalty_reduces_repeats(hf):
    from qazlm.infer.engine import encode_prompts, generate_ids, SamplingParams

    ids = encode_prompts(hf.tokenizer, PROMPTS)
    plain = generate_ids(hf.model, ids, SamplingParams(max_new_tokens=30), pad_id=1)
    pen = generate_ids(hf.model, ids, SamplingParams(max_new_tokens=30, repetition_penalty=3.0), pad_id=1)
    dup = lambda rows: sum(len(r) - len(set(r)) for r in rows)  # noqa: E731
    assert dup(pen) < dup(plain)


def test_repetition_penalty_counts_the_reply_only(hf, monkeypatch):
    """A chat prompt holds <|im_end|> and the words an answer must copy: the penalty never sees the prompt."""
    from qazlm.infer import engine
    from qazlm.infer.sampling import pick_next

    seen_per_step = []
    monkeypatch.setattr(engine, "pick_next", lambda logits, seen, *a: seen_per_step.append(seen.tolist()) or
                        pick_next(logits, seen, *a))
    ids = engine.encode_prompts(hf.tokenizer, PROMPTS[:2])
    out = engine.generate_ids(hf.model, ids, engine.SamplingParams(max_new_tokens=4, repetition_penalty=1.5),
                              pad_id=1)
    assert seen_per_step[0] == [[], []]
    assert seen_per_step[-1] == [row[:len(seen_per_step) - 1] for row in out]


def test_stop_strings_tokens_and_streaming(hf):
    from qazlm.infer.engine import generate

    full = generate(hf.model, hf.tokenizer, [PROMPTS[0]], max_new_tokens=20)[0]
    assert len(full) > 6
    stop = full[3:5]
    cut = generate(hf.model, hf.tokenizer, [PROMPTS[0]], max_new_tokens=20, stop=[stop])[0]
    assert cut == full[:full.index(stop)]
    pieces = []
    streamed = generate(hf.model, hf.tokenizer, [PROMPTS[0]], max_new_tokens=20, stream=lambda r, t: pieces.append(t))[0]
    assert "".join(pieces) == streamed == full and len(pieces) > 1
    first = hf.tokenizer(full, add_special_tokens=False)["input_ids"][1]
    short = generate(hf.model, hf.tokenizer, [PROMPTS[0]], max_new_tokens=20, stop_token_ids=[first])[0]
    assert len(short) < len(full) and full.startswith(short)


def test_chat_template_fallback_is_chatml(hf):
    from qazlm.infer.chat import format_chat

    text = format_chat(hf.tokenizer, "Сәлем", system="Сен көмекшісің")
    assert text == "<|im_start|>system\nСен көмекшісің<|im_end|>\n<|im_start|>user\nСәлем<|im_end|>\n<|im_start|>assistant\n"


def test_generate_errors(hf):
    from qazlm.infer.engine import generate

    with pytest.raises(QazlmError, match="max_new_tokens"):
        generate(hf.model, hf.tokenizer, ["x"], max_new_tokens=0)
    with pytest.raises(QazlmError, match="unsupported model"):
        generate(object(), hf.tokenizer, ["x"], max_new_tokens=2)


def test_generate_cli(hf, capsys):
    from qazlm.cli import main

    path = hf.model.module.name_or_path
    assert main(["generate", path, "The cat", "--max-new-tokens", "5", "--json"]) == 0
    assert '"prompt": "The cat"' in capsys.readouterr().out
    assert main(["generate", path, "The cat", "--max-new-tokens", "5", "--stream"]) == 0
    assert capsys.readouterr().out.startswith(">>> The cat\n")
    assert main(["generate", path + "_missing", "x"]) == 2
    assert "model folder not found" in capsys.readouterr().err


def test_argmax_rows_equals_torch_argmax_with_ties_and_nan():
    import torch

    from qazlm.infer.sampling import argmax_rows

    g = torch.Generator().manual_seed(0)
    for V in (32000, 640, 1000, 7):  # blocks of 256, of 128, then plain argmax
        x = torch.randn(5, V, generator=g)
        x[1, V // 3] = x[1, V - 1] = 50.0          # tie: the first index wins
        x[2, :] = 1.0                               # all equal
        x[3, V // 2] = float("nan")                 # NaN counts as the maximum, as in torch.argmax
        x[4, V - 1] = 99.0                          # maximum in the last block
        assert torch.equal(argmax_rows(x), x.argmax(-1)), V


def _fresh_tiny_model(seed=0):
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model

    return build_model(preset("tiny", 500, n_layers=2, max_seq_len=64), seed=seed).eval()


def test_compiled_decode_step_equals_eager():
    """`compile=True` (inductor, C++ wrapper) gives the eager tokens, unpadded and left-padded batches."""
    from qazlm.infer.engine import SamplingParams, generate_ids
    from qazlm.model.decode import Decoder

    model = _fresh_tiny_model()
    prompts = [[5, 17, 42, 99, 3], [8, 250, 7], [300, 301, 302, 303, 304]]
    params = SamplingParams(max_new_tokens=8)
    # batch 1, then 2 without padding (the batch size turns dynamic), then 3 with left padding (the masked path)
    batches = [prompts[:1], [prompts[0], prompts[2]], prompts]
    eager = [generate_ids(model, b, params) for b in batches]
    compiled = [generate_ids(model, b, params, compile=True) for b in batches]
    assert Decoder.for_model(model)._compiled  # the compiled step ran; it did not fall back to eager
    assert compiled == eager


def test_compile_failure_falls_back_to_eager_with_one_line(monkeypatch, capsys):
    import torch

    from qazlm.infer.engine import SamplingParams, generate_ids

    def broken_compile(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found\ndetails...")
        return run

    model = _fresh_tiny_model(seed=1)
    eager = generate_ids(model, [[5, 17, 42]], SamplingParams(max_new_tokens=5))
    from qazlm.model.decode import Decoder
    Decoder.release(model)
    monkeypatch.setattr(torch, "compile", broken_compile)
    assert generate_ids(model, [[5, 17, 42]], SamplingParams(max_new_tokens=5), compile=True) == eager
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "compiling the decode step failed (no C++ compiler found)" in err
