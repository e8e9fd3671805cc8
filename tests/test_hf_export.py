"""HF export/import: the exported folder loads in transformers without remote code, logits match ours."""

import json
import subprocess
import sys

import pytest
import torch

from qazlm.errors import QazlmError
from qazlm.model.hf import export_hf, import_hf
from qazlm.model.io import load_model_folder, save_model_folder
from qazlm.model.presets import preset
from qazlm.model.transformer import build_model


@pytest.mark.parametrize("tie, qk_norm, arch", [(True, True, "Qwen3ForCausalLM"), (False, True, "Qwen3ForCausalLM"),
                                               (True, False, "LlamaForCausalLM")])
def test_export_parity_on_real_text(tmp_path, tiny_tokenizer_dir, sample_lines, tie, qk_norm, arch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = preset("tiny", len(tok), n_layers=2, tie_embeddings=tie, qk_norm=qk_norm, max_seq_len=128)
    ours = build_model(cfg, seed=0).eval()
    save_model_folder(ours, tmp_path / "ours", tiny_tokenizer_dir)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    assert type(hf).__name__ == arch
    texts = [sample_lines["kk"][0], sample_lines["ru"][1], sample_lines["en"][2]]
    batch = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=64)
    with torch.no_grad():
        for ids in batch["input_ids"]:
            ids = ids[ids != tok.pad_token_id][None]
            assert (ours(ids) - hf(ids).logits).abs().max().item() < 1e-4
    assert hf.config.eos_token_id == tok.eos_token_id
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == [arch] and config["torch_dtype"] == "float32" and config["rope_theta"] > 0
    assert (tmp_path / "hf" / "generation_config.json").exists() and (tmp_path / "hf" / "tokenizer.json").exists()
    # round trip back into our format
    import_hf(tmp_path / "hf", tmp_path / "back")
    back = load_model_folder(tmp_path / "back")
    x = batch["input_ids"][:1]
    assert torch.equal(back(x), ours(x))
    assert (tmp_path / "back" / "tokenizer.json").exists()


def test_import_rejects_other_architectures(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 10}')
    with pytest.raises(QazlmError, match="model_type 'gpt2' is not supported"):
        import_hf(tmp_path, tmp_path / "out")


def test_cli_export_errors_are_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qazlm.cli", "export", "hf", str(tmp_path), "-o", str(tmp_path / "x")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "not a qazlm model folder" in out.stderr and "Traceback" not in out.stderr


def test_import_rejects_mismatched_weights_and_missing_files(tmp_path):

    save_model_folder(build_model(preset("tiny", 300, n_layers=1, max_seq_len=32), seed=0), tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "hf")
    cfg_path = tmp_path / "hf" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["intermediate_size"] += 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(QazlmError, match="another model configuration.*mlp"):
        import_hf(tmp_path / "hf", tmp_path / "out")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(QazlmError, match="no \\*.safetensors"):
        import_hf(tmp_path / "hf", tmp_path / "out")
    with pytest.raises(QazlmError, match="no config.json"):
        import_hf(tmp_path / "ours", tmp_path / "out")


def _modes(folder):
    """{name: permission bits} of a folder and everything in it."""
    import os
    import stat

    return {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in [folder, *folder.iterdir()]}


@pytest.mark.parametrize("umask, dir_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)],
                         ids=["umask022", "umask077"])
def test_written_folders_follow_the_umask(tmp_path, tiny_tokenizer_dir, umask, dir_mode, file_mode):
    """mkdtemp (0700) and safetensors (0600) used to make every model owner-only, whatever the umask."""
    import os

    from qazlm.train import checkpoint as ckpt

    model = build_model(preset("tiny", 1000, n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16,
                               ffn_dim=64, max_seq_len=16), seed=0)
    opt = torch.optim.AdamW(model.parameters())
    old = os.umask(umask)
    try:
        folders = [save_model_folder(model, tmp_path / "m", tiny_tokenizer_dir),
                   export_hf(tmp_path / "m", tmp_path / "hf"),
                   ckpt.save(tmp_path / "ckpts", 1, model=model, raw_model=model, optimizer=opt, extra={},
                             is_main=True, tokenizer_dir=tiny_tokenizer_dir)]
    finally:
        os.umask(old)
    for folder in folders:
        modes = _modes(folder)
        assert modes.pop(folder.name) == dir_mode, folder
        assert "model.safetensors" in modes and "tokenizer.json" in modes
        assert set(modes.values()) == {file_mode}, (folder, {k: oct(v) for k, v in modes.items()})


def test_export_refuses_to_replace_a_folder_that_is_not_an_export(tmp_path):
    """The atomic swap replaces the whole output folder: `-o runs/tiny` must not delete a run."""
    save_model_folder(build_model(preset("tiny", 300, n_layers=1, max_seq_len=32), seed=0), tmp_path / "ours")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(QazlmError, match=r"run: folder exists and is not a Hugging Face model folder"):
        export_hf(tmp_path / "ours", tmp_path / "run")
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    export_hf(tmp_path / "ours", tmp_path / "hf")
    export_hf(tmp_path / "ours", tmp_path / "hf")  # an earlier export is replaced
    with pytest.raises(QazlmError, match=r"run: folder exists and is not a qazlm model folder"):
        import_hf(tmp_path / "hf", tmp_path / "run")
