"""`qazlm quantize`: torchao-quantized folders that transformers, `qazlm generate` and `qazlm eval` load, close
to their fp32 parent; the check's numbers; skip/rebuild; the pipeline stage."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_eval_helpers import make_hf_folder, make_our_folder  # noqa: E402

from qazlm.quantize.config import QuantizeConfig  # noqa: E402
from qazlm.quantize.quantize import run_quantize  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("quantize")
    return {"ours": make_our_folder(tiny_tokenizer_dir, root / "ours"),
            "hf": make_hf_folder(tiny_tokenizer_dir, root / "hf")}


@pytest.fixture(scope="module")
def int8_ours(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "q"
    report = run_quantize(QuantizeConfig(model=str(models["ours"]), out_dir=str(out), scheme="int8-weight",
                                         check_sentences=4), log=lambda *_: None)
    return out, report


def test_int8_folder_is_a_transformers_model_with_int8_weights(int8_ours, models):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qazlm.model.hf import to_transformers

    out, report = int8_ours
    final = out / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "torchao"
    with safe_open(str(final / "model.safetensors"), "pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "I8" in dtypes                                 # int8 data on disk, not fp32 copies
    q = AutoModelForCausalLM.from_pretrained(final, local_files_only=True).eval()
    assert type(q.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"
    assert report["quantized_linear_layers"] == 4 * 7        # tiny: 4 layers x (q, k, v, o, gate, up, down)
    ref = to_transformers(models["ours"])
    ids = torch.tensor([[1, 5, 9, 200, 31, 7, 64, 12]])
    with torch.no_grad():
        a, b = ref(ids).logits, q(ids).logits
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    tok = AutoTokenizer.from_pretrained(final)
    assert "<|im_start|>assistant" in tok.apply_chat_template([{"role": "user", "content": "Сәлем"}],
                                                              tokenize=False, add_generation_prompt=True)
    lineage = json.loads((final / "qazlm_lineage.json").read_text())
    assert lineage["format"] == "qazlm-quantize-lineage-v1" and lineage["parent"]["kind"] == "qazlm"
    assert lineage["parent"]["fingerprint"] and lineage["config"]["scheme"] == "int8-weight"


def test_a_quantized_folder_packages_with_its_table_and_reloads(int8_ours, tmp_path):
    """The demo packages its int8 folder: the card follows the lineage to the fp32 parent, says what torchao
    did and that it is needed, shows this copy against fp32 per language, and the shipped folder (weights,
    generation config, chat template) loads in transformers with its int8 weights."""
    from huggingface_hub import ModelCard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qazlm.package.config import PackageConfig
    from qazlm.package.package import run_package

    out, report = int8_ours
    manifest = run_package(PackageConfig(model=str(out / "final"), out_dir=str(tmp_path / "pkg")), log=lambda *_: None)
    card = ModelCard.load(tmp_path / "pkg" / "README.md")
    assert {"torchao", "quantized"} <= set(card.data.tags) and "transformers (needs `torchao` installed)" in card.text
    assert "Weights quantized with torchao (int8-weight:" in card.text
    assert "- Quantization (torchao): int8-weight" in card.text
    kk = report["check"]["kk"]
    assert f"| kk | {kk['bpb_ref']:.4f} | {kk['bpb_test']:.4f} | {kk['delta_pct']:+.2f}% |" in card.text
    assert {"generation_config.json", "model.safetensors", "config.json"} <= set(manifest["files"])
    q = AutoModelForCausalLM.from_pretrained(tmp_path / "pkg", local_files_only=True)
    assert type(q.model.layers[0].self_attn.q_proj.weight).__name__ == "Int8Tensor"
    assert "<|im_start|>assistant" in AutoTokenizer.from_pretrained(tmp_path / "pkg").apply_chat_template(
        [{"role": "user", "content": "Сәлем"}], tokenize=False, add_generation_prompt=True)


def test_the_command_quantizes_and_generate_chats_with_the_result(models, tmp_path, capfd):
    """`qazlm quantize MODEL -o OUT --scheme ...` through the command line, then `qazlm generate OUT/final ...
    --chat` on it, as the docs show them."""
    from cli_harness import run_cli

    out = tmp_path / "q"
    code, _, err = run_cli(["quantize", models["hf"], "-o", out, "--scheme", "int8-dynamic", "--check-sentences", "2"],
                           capfd)
    assert code == 0, err
    report = json.loads((out / "quantize_report.json").read_text())
    assert report["scheme"] == "int8-dynamic"
    code, printed, err = run_cli(["generate", out / "final", "Сәлем!", "--chat", "--max-new-tokens", "4"], capfd)
    assert code == 0 and "Сәлем!" in printed, err


def test_int8_check_numbers(int8_ours):
    _, report = int8_ours
    check = report["check"]
    assert set(check) == {"kk", "ru", "en"}
    for c in check.values():
        assert c["tokens"] > 20
        assert abs(c["delta_pct"]) < 1.0 and c["kl"] < 1e-2 and c["top1"] > 0.9
    assert report["weight_bytes"] < report["fp32_weight_bytes"]


def test_quantized_folder_generates_and_scores(int8_ours, models, tiny_tokenizer_dir):
    import torch

    from qazlm.infer.engine import SamplingParams, generate_ids
    from qazlm.infer.loading import load_model
    from qazlm.infer.scoring import bits_per_byte

    out, report = int8_ours
    q, tok, _ = load_model(out / "final")
    ref, _, _ = load_model(models["ours"])
    assert q.kind == "hf"
    prompt = tok("Қазақстан Республикасы", add_special_tokens=False)["input_ids"]
    ours = generate_ids(q, [prompt], SamplingParams(max_new_tokens=8), stop_token_ids=())[0]
    with torch.no_grad():  # the engine's KV-cache loop over the quantized module = transformers.generate
        theirs = q.module.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                                   pad_token_id=0)[0, len(prompt):].tolist()
    assert ours == theirs
    fp32 = generate_ids(ref, [prompt], SamplingParams(max_new_tokens=8), stop_token_ids=())[0]
    assert ours[:2] == fp32[:2]
    from qazlm.quantize.quantize import check_texts

    kk = check_texts(4)["kk"]
    assert bits_per_byte(q, tok, kk)["bpb"] == pytest.approx(report["check"]["kk"]["bpb_test"], rel=1e-5)
    assert bits_per_byte(ref, tok, kk)["bpb"] == pytest.approx(report["check"]["kk"]["bpb_ref"], rel=1e-5)


def test_int4_keeps_a_weight_already_on_a_4bit_grid():
    """A group whose values are min + k * step (k = 0..15, as in a Q4_1 GGUF) comes back exactly; an integer
    zero point (IntxWeightOnlyConfig's own choice) would shift it by up to half a step."""
    import torch

    from qazlm.quantize.quantize import int4_float_zero

    gen = torch.Generator().manual_seed(0)
    low, step = torch.randn(8, 4, 1, generator=gen), torch.rand(8, 4, 1, generator=gen) / 10 + 0.01
    k = torch.randint(0, 16, (8, 4, 32), generator=gen)
    k[..., 0], k[..., 1] = 0, 15                                           # every group spans its whole range
    weight = (low + k * step).reshape(8, 128)
    q = int4_float_zero(weight, 32)
    assert torch.allclose(q.dequantize(), weight, atol=1e-5)
    assert int(q.qdata.min()) == -8 and int(q.qdata.max()) == 7


def test_int4_on_hf_folder_then_skip_and_rebuild(models, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "q"
    logs = []
    cfg = QuantizeConfig(model=str(models["hf"]), out_dir=str(out), scheme="int4-weight", group_size=32,
                         check_sentences=2)
    first = run_quantize(cfg, log=logs.append)
    q = AutoModelForCausalLM.from_pretrained(out / "final", local_files_only=True)
    w = q.model.layers[0].mlp.down_proj.weight
    assert type(w).__name__ == "IntxUnpackedToInt8Tensor"
    assert int(w.qdata.min()) >= -8 and int(w.qdata.max()) <= 7          # int4 values
    assert w.scale.shape[-1] == w.shape[1] // 32                          # one scale per 32 input columns
    assert w.zero_point.dtype == torch.float32                            # float offsets, not rounded ones
    ref = AutoModelForCausalLM.from_pretrained(models["hf"], local_files_only=True).model.layers[0].mlp.down_proj
    groups = ref.weight.detach().reshape(w.shape[0], -1, 32)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    error = (w.dequantize() - ref.weight).abs().reshape(w.shape[0], -1, 32).amax(-1)
    assert bool((error <= step / 2 + 1e-6).all())                         # within half a step of its own group
    from qazlm.infer.int4_cpu import Bf16Int4Linear
    from qazlm.infer.loading import load_model

    ids = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 64]])
    with torch.inference_mode():
        slow = q(ids).logits                                              # transformers: dequantize per call
        fast = load_model(out / "final").model                            # ours on a CPU: the packed kernel
        packed = fast.module.model.layers[0].mlp.down_proj
        assert isinstance(packed.forward, Bf16Int4Linear) and packed.weight.numel() == 0
        assert sum(isinstance(m.forward, Bf16Int4Linear) for m in fast.module.modules()) == first[
            "quantized_linear_layers"]
        x = torch.randn(3, w.shape[1])
        exact = torch.nn.functional.linear(x.to(torch.bfloat16).float(), w.dequantize())
        assert torch.allclose(packed(x), exact, atol=2e-2 * float(exact.abs().max()))  # bf16 scales, same grid
        fast_logits = fast(ids)
        assert (fast_logits - slow).abs().max() < 0.05 * slow.abs().max()  # bf16 activations, 2 layers deep
        assert int((fast_logits.argmax(-1) == slow.argmax(-1)).sum()) >= 7
    from qazlm.infer.engine import SamplingParams, generate_ids

    # the engine decodes it on transformers' path (no Transformer view of packed layers), as many tokens as asked
    assert len(generate_ids(fast, [[5, 17, 42]], SamplingParams(max_new_tokens=6), stop_token_ids=())[0]) == 6
    assert first["parent_kind"] == "hf" and first["group_size"] == 32
    run_quantize(cfg, log=logs.append)
    assert "up to date" in logs[-1]
    import shutil

    parent = tmp_path / "parent"  # same path, retrained weights: quantized again, not skipped
    shutil.copytree(models["hf"], parent)
    run_quantize(QuantizeConfig(**{**cfg.__dict__, "model": str(parent)}), log=logs.append)
    sd = AutoModelForCausalLM.from_pretrained(parent, local_files_only=True).state_dict()
    with torch.no_grad():
        sd["model.norm.weight"].mul_(2.0)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"}, str(parent / "model.safetensors"))
    run_quantize(QuantizeConfig(**{**cfg.__dict__, "model": str(parent)}), log=logs.append)
    assert "parent_sha256" in logs[-2] and "rebuilding" in logs[-2]
    again = run_quantize(QuantizeConfig(**{**cfg.__dict__, "model": str(parent), "scheme": "int8-dynamic"}),
                         log=logs.append)
    assert any("settings changed" in line for line in logs) and again["scheme"] == "int8-dynamic"
    assert json.loads((out / "qazlm_stage.json").read_text())["config"]["scheme"] == "int8-dynamic"
    assert not list(out.glob(".qazlm-tmp-*"))


def test_compare_texts_against_itself_and_bits_per_byte(models):
    from qazlm.infer.loading import load_model
    from qazlm.infer.scoring import bits_per_byte
    from qazlm.quantize.compare import compare_texts

    m, tok, _ = load_model(models["ours"])
    texts = ["Қазақстан — Орталық Азиядағы мемлекет.", "Москва — столица России.", "A short English line."]
    c = compare_texts(m, m, tok, texts, max_len=8)                     # several rolling windows per text
    assert c["kl"] == pytest.approx(0.0, abs=1e-7) and c["top1"] == 1.0 and c["delta_pct"] == 0.0
    assert c["bpb_ref"] == pytest.approx(bits_per_byte(m, tok, texts, max_len=8)["bpb"], rel=1e-6)
    assert c["bpb_ref"] == pytest.approx(GOLDEN_BPB, rel=1e-4)


def test_llama_perplexity_windows_score_the_second_half_of_each_chunk(models):
    """llama-perplexity's protocol: the joined texts cut into n_ctx chunks (the tail dropped), tokens
    n_ctx/2+1 .. n_ctx-1 predicted (each once, each with at least n_ctx/2 tokens of context); each chunk's first
    token becomes BOS only for a tokenizer that adds one (ours does not; llama.cpp reads the same flag)."""
    from qazlm.infer.loading import load_model
    from qazlm.infer.scoring import perplexity_windows
    from qazlm.quantize.compare import compare_texts

    m, tok, _ = load_model(models["ours"])
    texts = ["Қазақстан — Орталық Азиядағы мемлекет.", "Москва — столица России.", "A short English line."]
    stream = tok("\n".join(texts), add_special_tokens=False)["input_ids"]
    windows = perplexity_windows(tok, texts, 8)
    assert len(windows) == len(stream) // 8 >= 3 and not tok.add_bos_token
    for k, (inp, pred) in enumerate(windows):
        chunk = stream[8 * k:8 * k + 8]
        assert inp == chunk[:7] and pred == chunk[5:]
    one = tok(texts[0], add_special_tokens=False)["input_ids"]       # shorter than n_ctx: one shorter chunk
    assert perplexity_windows(tok, texts[:1], 10**6) == [(one[:-1], one[len(one) // 2 + 1:])]
    tok.add_bos_token = True                                           # Llama 3's tokenizers add a BOS
    assert [w[0][0] for w in perplexity_windows(tok, texts, 8)] == [tok.bos_token_id] * len(windows)
    tok.add_bos_token = False
    c = compare_texts(m, m, tok, texts, max_len=8, protocol="llama-perplexity")
    assert c["tokens"] == 3 * len(windows) and c["kl"] == pytest.approx(0.0, abs=1e-7) and c["top1"] == 1.0
    with pytest.raises(ValueError, match="protocol"):
        compare_texts(m, m, tok, texts, protocol="wikitext")


GOLDEN_BPB = 3.98610  # the seed-0 random `tiny` model on these three lines (pinned: scoring or windows changed if not)


def test_stage_quantizes_the_chat_model_when_there_is_one(tmp_path):
    from qazlm.errors import QazlmError
    from qazlm.quantize.stage import stage_config
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(RunConfig(out_dir=str(tmp_path)), tmp_path / "recipe.toml")
    assert stage_config({}, ctx).model == str(tmp_path / "pretrain" / "final")
    (tmp_path / "sft" / "final").mkdir(parents=True)
    cfg = stage_config({"scheme": "int4-weight"}, ctx)
    assert cfg.model == str(tmp_path / "sft" / "final") and cfg.out_dir == str(tmp_path / "quantize")
    assert stage_config({"model": "elsewhere"}, ctx).model == "elsewhere"
    with pytest.raises(QazlmError, match=r"\[quantize\] out_dir: not settable"):
        stage_config({"out_dir": "x"}, ctx)


def test_the_server_batches_a_quantized_folder_as_it_decodes_alone(int8_ours):
    """`qazlm serve` takes quantized folders: the continuous batcher (one transformers cache per slot, since
    int8 tensors have no qazlm counterpart) decodes each request as generate_ids does alone."""
    from qazlm.infer.batcher import ContinuousBatcher, _HFSlots
    from qazlm.infer.engine import SamplingParams, generate_ids
    from qazlm.infer.loading import load_model

    q, tok, _ = load_model(int8_ours[0] / "final")
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in ("Қазақстан", "Алматы қаласы", "Hello")]
    params = SamplingParams(max_new_tokens=6)
    batcher = ContinuousBatcher(q, slots=2, max_len=64)
    assert isinstance(batcher.backend, _HFSlots)
    reqs = [batcher.submit(p, params, ()) for p in prompts]
    batcher.run_until_idle()
    assert [r.tokens for r in reqs] == [generate_ids(q, [p], params, stop_token_ids=())[0] for p in prompts]
