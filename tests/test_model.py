"""The model: shapes, init, the chunked training loss, fused decoder + KV cache == full forward, left-padded
batches, presets and parameter counts."""

import dataclasses
import json

import pytest
import torch

from qazlm.errors import QazlmError
from qazlm.model.flops import flops_per_token, param_counts
from qazlm.model.io import load_model_folder, save_model_folder
from qazlm.model.decode import Decoder
from qazlm.model.presets import PRESETS, preset
from qazlm.model.transformer import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(preset("tiny", 500, n_layers=2, max_seq_len=64), seed=0).eval()


def test_meta_init_and_counts(model):
    assert not any(p.is_meta for p in model.parameters())
    assert param_counts(model.cfg)["total"] == model.num_params()
    assert param_counts(model.cfg)["non_embedding"] == model.num_params(non_embedding=True)
    assert flops_per_token(model.cfg, 64) > 6 * model.num_params(non_embedding=True)


def test_loss_near_uniform_at_init(model):
    x = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 500, (2, 32), generator=torch.Generator().manual_seed(1))
    loss = model(x, y).item()
    assert abs(loss - torch.log(torch.tensor(500.0)).item()) < 0.1
    y[:, :16] = -100  # ignored positions change the mean, not the validity
    assert torch.isfinite(model(x, y))


def test_chunked_loss_equals_cross_entropy_of_the_full_logits(monkeypatch):
    """The training loss makes the logits a chunk of rows at a time, with the gradients in the same pass: loss,
    d/dx and d/dweight equal PyTorch's cross-entropy of the whole logits, ignored targets included, across chunk
    edges (7 rows a chunk here); without gradients only the loss; every target ignored is nan, as PyTorch's."""
    import torch.nn.functional as F

    import qazlm.model.transformer as T

    monkeypatch.setattr(T, "CHUNK_ELEMENTS", 7 * 50)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(40, 8, generator=g, requires_grad=True), torch.randn(50, 8, generator=g, requires_grad=True)
    t = torch.randint(0, 50, (40,), generator=g)
    t[::3] = -100
    want = F.cross_entropy(F.linear(x, w), t, ignore_index=-100)
    want_grads = torch.autograd.grad(2 * want, (x, w))
    got = T.linear_cross_entropy(x, w, t)
    got_grads = torch.autograd.grad(2 * got, (x, w))
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and got.item() == pytest.approx(6.7973, abs=1e-4)
    for a, b in zip(got_grads, want_grads):
        assert torch.allclose(a, b, atol=1e-6)
    with torch.no_grad():
        assert T.linear_cross_entropy(x, w, t).item() == pytest.approx(want.item(), rel=1e-6)
    assert torch.isnan(T.linear_cross_entropy(x, w, torch.full_like(t, -100)))


def test_inputs_embeds_is_the_token_embedding_path(model):
    """The one core change the multimodal experiment needs: features spliced in as embeddings."""
    x = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(model(inputs_embeds=model.embed_tokens(x)), model(x))
        embeds = model.embed_tokens(x)
        embeds[:, :4] = torch.randn(2, 4, embeds.shape[-1], generator=torch.Generator().manual_seed(3))
        assert not torch.equal(model(inputs_embeds=embeds)[:, 4:], model(x)[:, 4:])   # later tokens see them
    assert torch.isfinite(model(targets=x, inputs_embeds=model.embed_tokens(x)))
    for bad in ({}, {"input_ids": x, "inputs_embeds": model.embed_tokens(x)}):
        with pytest.raises(ValueError, match="exactly one"):
            model(**bad)


@torch.no_grad()
def test_decoder_incremental_equals_full_forward(model):
    """Prefill + one token at a time through the fused Decoder == the training forward's logits."""
    x = torch.randint(0, 500, (2, 20), generator=torch.Generator().manual_seed(0))
    full = model(x)
    dec = Decoder.for_model(model)
    cache = dec.new_cache(2, 32)
    steps = [dec(x[:, :12], cache)] + [dec(x[:, t:t + 1], cache) for t in range(12, 20)]
    assert torch.allclose(torch.stack(steps, 1), full[:, 11:], atol=1e-5)
    dec(x[:, :12], cache)  # 32 positions: full
    with pytest.raises(ValueError, match="KV cache full: 33 positions > max_len 32"):
        dec(x[:, :1], cache)
    assert Decoder.for_model(model) is dec  # cached while the weights are unchanged...
    model.norm.weight.add_(0.0)
    assert Decoder.for_model(model) is not dec  # ...and rebuilt after an in-place update
    Decoder.release(model)
    assert "_qazlm_decoder" not in model.__dict__  # a training loop frees the copies after sampling


@torch.no_grad()
def test_decoder_llama_style_untied(model):
    """No QK-norm, untied head (the `qazlm import hf` Llama case): the decoder still equals the full forward."""
    llama = build_model(preset("tiny", 500, n_layers=2, max_seq_len=64, qk_norm=False, tie_embeddings=False),
                        seed=1).eval()
    x = torch.randint(0, 500, (1, 16), generator=torch.Generator().manual_seed(4))
    dec = Decoder.for_model(llama)
    cache = dec.new_cache(1, 16)
    steps = [dec(x[:, :10], cache)] + [dec(x[:, t:t + 1], cache) for t in range(10, 16)]
    assert torch.allclose(torch.stack(steps, 1), llama(x)[:, 9:], atol=1e-5)


@torch.no_grad()
def test_decoder_left_padded_batch_equals_single(model):
    a = torch.randint(1, 500, (1, 10), generator=torch.Generator().manual_seed(2))
    b = torch.randint(1, 500, (1, 6), generator=torch.Generator().manual_seed(3))
    batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    dec = Decoder.for_model(model)
    cache = dec.new_cache(2, 16)
    out = dec(batch, cache, mask)
    nxt = torch.tensor([[7], [9]])
    step = dec(nxt, cache, torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1))
    assert torch.allclose(out[0], model(a)[0, -1], atol=1e-5)
    assert torch.allclose(out[1], model(b)[0, -1], atol=1e-5)
    assert torch.allclose(step[1], model(torch.cat([b, nxt[1:]], 1))[0, -1], atol=1e-5)
    assert torch.allclose(step[0], model(torch.cat([a, nxt[:1]], 1))[0, -1], atol=1e-5)
    assert torch.isfinite(out).all()


def test_save_load_roundtrip_and_foreign_weights(model, tmp_path):
    save_model_folder(model, tmp_path / "m")
    x = torch.randint(0, 500, (1, 8))
    assert torch.equal(load_model_folder(tmp_path / "m")(x), model(x))
    other = build_model(preset("tiny", 500, n_layers=2, d_model=128, max_seq_len=64))
    save_model_folder(other, tmp_path / "other")
    meta = json.loads((tmp_path / "m" / "qazlm_model.json").read_text())
    del meta["sha256"]  # as a folder written before checksums: the shape check still catches it
    (tmp_path / "other" / "qazlm_model.json").write_text(json.dumps(meta))
    with pytest.raises(QazlmError, match="another model configuration"):
        load_model_folder(tmp_path / "other")
    with pytest.raises(QazlmError, match="not a qazlm model folder"):
        load_model_folder(tmp_path)


def test_presets_sizes():
    totals = {name: param_counts(preset(name, 64000))["total"] / 1e6 for name in PRESETS}
    assert totals["tiny"] < 20 and 25 < totals["small"] < 45
    assert 180 < totals["200m"] < 240 and 320 < totals["350m"] < 400 and 450 < totals["500m"] < 550
    with pytest.raises(QazlmError, match="unknown model preset"):
        preset("7b", 100)


def test_bad_model_folders_are_one_clear_error(model, tmp_path):
    save_model_folder(model, tmp_path / "m")
    meta = tmp_path / "m" / "qazlm_model.json"
    good = meta.read_text()
    meta.write_text(good.replace('"d_model"', '"width"'))
    with pytest.raises(QazlmError, match="qazlm_model.json"):
        load_model_folder(tmp_path / "m")
    meta.write_text("{not json")
    with pytest.raises(QazlmError, match="invalid JSON"):
        load_model_folder(tmp_path / "m")
    meta.write_text(good)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(QazlmError, match="no model.safetensors"):
        load_model_folder(tmp_path / "m")


def overwrite_middle(path, n=64):
    """Damage a file the way a bad disk or copy does: bytes overwritten in place, size unchanged."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(255 - b for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def test_damaged_weights_are_refused_by_checksum(model, tmp_path):
    """Same-size corruption used to load silently (eval: bpb nan, exit 0); the recorded sha256 catches it."""
    save_model_folder(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "qazlm_model.json").read_text())
    assert set(meta["sha256"]) == {"model.safetensors"}
    size = (tmp_path / "m" / "model.safetensors").stat().st_size
    overwrite_middle(tmp_path / "m" / "model.safetensors")
    assert (tmp_path / "m" / "model.safetensors").stat().st_size == size
    with pytest.raises(QazlmError, match=r"m/model.safetensors: checksum mismatch.*copy or export the model again"):
        load_model_folder(tmp_path / "m")


def test_folder_without_checksums_loads_and_a_truncated_file_is_one_error(model, tmp_path):
    save_model_folder(model, tmp_path / "m")
    meta_path = tmp_path / "m" / "qazlm_model.json"
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]  # as written before checksums existed
    meta_path.write_text(json.dumps(meta))
    x = torch.randint(0, 500, (1, 8))
    assert torch.equal(load_model_folder(tmp_path / "m")(x), model(x))
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(QazlmError, match=r"model.safetensors: cannot read the weights \(SafetensorError"):
        load_model_folder(tmp_path / "m")


@pytest.mark.parametrize("field, value, match", [
    ("n_layers", 0, r"model n_layers = 0: must be >= 1"),
    ("vocab_size", 0, r"vocab_size = 0: must be >= 1"),
    ("d_model", -4, r"d_model = -4: must be >= 1"),
    ("n_heads", 0, r"n_heads = 0: must be >= 1"),
    ("n_kv_heads", 0, r"n_kv_heads = 0: must be >= 1"),
    ("ffn_dim", 0, r"ffn_dim = 0: must be >= 1"),
    ("head_dim", 0, r"head_dim = 0: must be >= 2"),
    ("max_seq_len", 1, r"max_seq_len = 1: must be >= 2"),
    ("rope_theta", 0.0, r"rope_theta = 0.0: must be > 0"),
    ("rope_theta", float("nan"), r"rope_theta = nan: expected a finite number"),
    ("rms_eps", -1e-6, r"rms_eps = -1e-06: must be > 0"),
    ("n_kv_heads", 2, r"n_heads = 3 must be a multiple of n_kv_heads = 2"),
    ("head_dim", 63, r"head_dim = 63 must be even"),
    ("n_layers", 2.5, r"n_layers = 2.5: expected a whole number"),
    ("qk_norm", "no", r"qk_norm = 'no': expected true or false"),
])
def test_model_config_refuses_bad_values(field, value, match):
    with pytest.raises(QazlmError, match=match):
        dataclasses.replace(preset("tiny", 500), **{field: value})  # as model_overrides are applied


def test_bad_config_in_a_model_folder_names_the_file(model, tmp_path):
    save_model_folder(model, tmp_path / "m")
    meta_path = tmp_path / "m" / "qazlm_model.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_layers"] = 0
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(QazlmError, match=r"m/qazlm_model.json: model n_layers = 0: must be >= 1"):
        load_model_folder(tmp_path / "m")
    meta_path.write_text('{"format": "qazlm-model-v1", "config": 3}')
    with pytest.raises(QazlmError, match=r"qazlm_model.json: not a qazlm model description"):
        load_model_folder(tmp_path / "m")
    with pytest.raises(QazlmError, match=r"nowhere: no such model folder"):
        load_model_folder(tmp_path / "nowhere")


def test_training_forward_compiles_without_graph_breaks(model):
    """fullgraph=True raises on any graph break; the eager backend keeps the test free of C++ compilation."""
    import torch._dynamo

    torch._dynamo.reset()
    x = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    assert torch.allclose(compiled(x, x), model(x, x), atol=1e-6)


def test_mfu_and_gpu_peaks():
    from qazlm.model.flops import device_peak_flops, mfu

    assert device_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert device_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert device_peak_flops("NVIDIA H200") == 989e12
    assert device_peak_flops("NVIDIA GeForce RTX 4090") == 165e12
    assert device_peak_flops("cpu") is None and mfu(1e5, 1e9, "cpu") is None
    assert mfu(100_000, 2.0e9, "NVIDIA A100-SXM4-80GB") == pytest.approx(2e14 / 312e12)
    assert mfu(100, 1e9, 1e12) == pytest.approx(0.1)
