"""Bad model folders, checkpoints and model settings, through the real CLI (`export hf`, `import hf`, `generate`,
`pretrain`): one error line each, exit 2, no traceback.

Each row was once a traceback, a silently wrong result (a damaged model loading and scoring NaN), or worse
(a crafted train_state.pt running its code on resume).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from cli_harness import assert_one_line_error

VOCAB = 64


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer_dir):
    """A good tiny model folder (with tokenizer), a copy with damaged weights, its HF export and broken HF
    copies, and a plain token file for two-step pretraining runs."""
    from transformers import AutoTokenizer

    from qazlm.model.hf import export_hf
    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model
    from test_model import overwrite_middle

    root = tmp_path_factory.mktemp("bad_model")
    vocab = len(AutoTokenizer.from_pretrained(tiny_tokenizer_dir))
    model = build_model(preset("tiny", vocab, n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16,
                               ffn_dim=64, max_seq_len=64), seed=0)
    save_model_folder(model, root / "good", tiny_tokenizer_dir)
    shutil.copytree(root / "good", root / "corrupt")
    overwrite_middle(root / "corrupt" / "model.safetensors")
    export_hf(root / "good", root / "hf")
    for name, edit in [("hf_badjson", lambda c: "{oops"),
                       ("hf_nolayers", lambda c: json.dumps({**json.loads(c), "num_hidden_layers": 0})),
                       ("hf_missing", lambda c: json.dumps({k: v for k, v in json.loads(c).items()
                                                            if k != "hidden_size"}))]:
        shutil.copytree(root / "hf", root / name)
        (root / name / "config.json").write_text(edit((root / "hf" / "config.json").read_text()))
    shutil.copytree(root / "hf", root / "hf_truncated")
    weights = root / "hf_truncated" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    (root / "empty").mkdir()
    (root / "a_run").mkdir()
    (root / "a_run" / "metrics.jsonl").write_text("{}\n")
    np.save(root / "tokens.npy", (np.arange(4000, dtype=np.int32) * 7919) % VOCAB)
    return root


CASES = [  # (argv with {root}/{tmp} placeholders, expected regex of the error line)
    (["export", "hf", "{root}/missing", "-o", "{tmp}/x"], r"missing: no such model folder"),
    (["export", "hf", "{root}/empty", "-o", "{tmp}/x"], r"empty: not a qazlm model folder, no qazlm_model.json"),
    (["export", "hf", "{root}/hf", "-o", "{tmp}/x"], r"hf: not a qazlm model folder.*use `qazlm import hf`"),
    (["export", "hf", "{root}/corrupt", "-o", "{tmp}/x"], r"corrupt/model.safetensors: checksum mismatch"),
    (["export", "hf", "{root}/good", "-o", "{root}/a_run"], r"a_run: folder exists and is not a Hugging Face"),
    (["generate", "{root}/corrupt", "Сәлем"], r"corrupt/model.safetensors: checksum mismatch"),
    (["eval", "{root}/corrupt", "--no-bpb", "--samples", "1", "-o", "{tmp}/ev"],
     r"corrupt/model.safetensors: checksum mismatch"),
    (["import", "hf", "{root}/missing", "-o", "{tmp}/x"], r"missing: no such folder"),
    (["import", "hf", "{root}/good", "-o", "{tmp}/x"], r"good: no config.json; not a Hugging Face model"),
    (["import", "hf", "{root}/hf_badjson", "-o", "{tmp}/x"], r"hf_badjson/config.json: invalid JSON"),
    (["import", "hf", "{root}/hf_nolayers", "-o", "{tmp}/x"], r"config.json: model n_layers = 0: must be >= 1"),
    (["import", "hf", "{root}/hf_missing", "-o", "{tmp}/x"], r"config.json: missing hidden_size"),
    (["import", "hf", "{root}/hf_truncated", "-o", "{tmp}/x"], r"model.safetensors: cannot read the weights"),
    (["import", "hf", "{root}/hf", "-o", "{root}/a_run"], r"a_run: folder exists and is not a qazlm model"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=[c[1][:40] for c in CASES])
def test_bad_model_inputs(folders, tmp_path, capfd, argv, match):
    argv = [a.format(root=folders, tmp=tmp_path) for a in argv]
    assert_one_line_error(argv, capfd, match=match)
    assert (folders / "a_run" / "metrics.jsonl").exists()  # an output folder that is not a model is never replaced


def _pretrain(folders, out, *extra):
    return ["pretrain", "--config", "recipes/tiny.toml", "--data", folders / "tokens.npy", "--out", out, "--no-plot",
            "--set", f"model_overrides.vocab_size={VOCAB}", "--set", "model_overrides.n_layers=1",
            "--set", "seq_len=16", "--set", "global_batch_tokens=64", "--set", "micro_batch=4", "--set", "steps=2",
            "--set", "eval_every=-1", "--set", "tensorboard=false", "--set", "prefetch=0", *extra]


@pytest.mark.parametrize("override, match", [
    ("model_overrides.n_layers=0", r"n_layers = 0: must be >= 1"),
    ("model_overrides.n_kv_heads=2", r"n_heads = 3 must be a multiple of n_kv_heads = 2"),
    ("model_overrides.head_dim=63", r"head_dim = 63 must be even"),
    ("model_overrides.rope_theta=nan", r"rope_theta = nan: expected a finite number"),
    ("model_overrides.qk_norm=\"no\"", r"qk_norm = 'no': expected true or false"),
])
def test_bad_model_overrides(folders, tmp_path, capfd, repo_root, monkeypatch, override, match):
    monkeypatch.chdir(repo_root)
    assert_one_line_error(_pretrain(folders, tmp_path / "out", "--set", override), capfd, match=match)


class Payload:
    """Pickles as "call open(marker, 'w')": what a crafted train_state.pt would run when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_refuses_a_pickle_payload_and_cleans_leftovers(folders, tmp_path, capfd, repo_root, monkeypatch):
    """A train_state.pt that would run code is refused before anything runs; the killed-write leftovers of
    the output folder are removed first, whatever the resume then decides."""
    import torch

    from qazlm.io import TMP_PREFIX
    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model

    monkeypatch.chdir(repo_root)
    ckpts = tmp_path / "out" / "checkpoints"
    step = save_model_folder(build_model(preset("tiny", VOCAB, n_layers=1, max_seq_len=16)), ckpts / "step_000001")
    marker = tmp_path / "payload-ran"
    torch.save({"step": 1, "optimizer": Payload(marker), "rng": {}}, step / "train_state.pt")
    for name in (f"{TMP_PREFIX}step_000002.k3j", "..tmp_step_000002_7.abc", ".tmp_step_000002_7"):
        (ckpts / name).mkdir()
    assert_one_line_error(_pretrain(folders, tmp_path / "out"), capfd,
                          match=r"step_000001/train_state.pt: cannot read: holds more than tensors")
    assert not marker.exists()
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_000001"]
