"""Checkpoints: a training process killed with SIGKILL resumes onto exactly the uninterrupted loss curve;
a checkpoint of another model config is refused with one clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_support import losses, make_tokens, write_recipe

HERE = Path(__file__).parent
SETTINGS = dict(seq_len=64, global_batch_tokens=1024, micro_batch=8, steps=24, warmup_steps=2, lr=3e-3,
                eval_every=-1, ckpt_every=4, keep_last_k=2, log_every=1, tensorboard=False, num_threads=1)


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, tiny_tokenizer_dir, sample_lines):
    return make_tokens(tmp_path_factory.mktemp("tok") / "tokens", tiny_tokenizer_dir, sample_lines)


def _pretrain(recipe: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, str(HERE / "test_train_support.py"), "pretrain", "--config", str(recipe),
                             "--no-plot"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_kill9_resume_reproduces_the_loss_curve_exactly(tmp_path, tokens_dir):
    straight = write_recipe(tmp_path / "a.toml", data=str(tokens_dir), out_dir=str(tmp_path / "a"), **SETTINGS)
    killed = write_recipe(tmp_path / "b.toml", data=str(tokens_dir), out_dir=str(tmp_path / "b"), **SETTINGS)
    proc_a = _pretrain(straight)
    out_a = proc_a.communicate(timeout=120)[0]
    assert proc_a.returncode == 0, out_a

    proc = _pretrain(killed)
    ckpts = tmp_path / "b" / "checkpoints"
    deadline = time.time() + 120
    while not (ckpts / "step_000008").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "b" / "final").exists()              # really interrupted mid-run
    assert max(losses(tmp_path / "b" / "metrics.jsonl")) < 24

    proc_b = _pretrain(killed)
    out_b = proc_b.communicate(timeout=120)[0]
    assert proc_b.returncode == 0, out_b
    assert "resumed from" in out_b
    a, b = losses(tmp_path / "a" / "metrics.jsonl"), losses(tmp_path / "b" / "metrics.jsonl")
    assert sorted(a) == sorted(b) == list(range(1, 25))         # each step logged once after the resume
    assert a == b                                               # bit-for-bit the same curve
    assert a[24] < a[1]
    kept = sorted(p.name for p in ckpts.iterdir())
    assert kept == ["step_000020", "step_000024"]               # keep_last_k = 2, no temp folders left


def test_foreign_checkpoint_is_a_clear_error(tmp_path, tokens_dir):
    from qazlm.errors import QazlmError
    from qazlm.train.config import PretrainConfig
    from qazlm.train.trainer import train

    base = dict(data=str(tokens_dir), out_dir=str(tmp_path / "run"), seq_len=32, global_batch_tokens=256,
                micro_batch=8, steps=2, eval_every=-1, ckpt_every=1, tensorboard=False, prefetch=0)
    train(PretrainConfig(**base, max_steps_this_run=1, model_overrides={"n_layers": 1}))
    assert (tmp_path / "run" / "checkpoints" / "step_000001").is_dir()
    with pytest.raises(QazlmError, match=r"step_000001: checkpoint is from another model config \(n_layers=1"):
        train(PretrainConfig(**base, model_overrides={"n_layers": 2}))
    with pytest.raises(QazlmError, match="micro_batch|rows_per_step"):
        train(PretrainConfig(**{**base, "micro_batch": 4, "global_batch_tokens": 128},
                             model_overrides={"n_layers": 1}))
    (tmp_path / "run" / "checkpoints" / "step_000001" / "train_state.pt").write_bytes(b"garbage")
    with pytest.raises(QazlmError, match="train_state.pt: checksum mismatch"):
        train(PretrainConfig(**base, model_overrides={"n_layers": 1}))


# --- the checkpoint format itself (no training loop: a 1-layer model, a few ms per step) ---------------------

class Payload:
    """Pickles as "call open(marker, 'w')": what a crafted train_state.pt would run when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny(seed: int):
    """A 1-layer model and its AdamW after one step (so the optimizer has state to restore)."""
    import torch

    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model

    cfg = preset("tiny", 64, n_layers=1, d_model=32, n_heads=2, n_kv_heads=1, head_dim=16, ffn_dim=64, max_seq_len=16)
    model = build_model(cfg, seed=seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed))
    model(ids, ids).backward()
    opt.step()
    return model, opt


def _save(root: Path, step: int, model, opt) -> Path:
    import numpy as np

    from qazlm.train import checkpoint as ckpt

    return ckpt.save(root, step, model=model, raw_model=model, optimizer=opt,
                     extra={"tokens_seen": np.int64(7 * step)}, is_main=True)  # numpy scalars are stored plain


def _draws() -> tuple:
    import random

    import numpy as np
    import torch

    return random.random(), float(np.random.rand()), float(np.random.randn()), torch.rand(3).tolist()


def test_resume_restores_model_optimizer_and_rng_exactly(tmp_path):
    import random

    import numpy as np
    import torch

    from qazlm.train import checkpoint as ckpt

    model, opt = _tiny(0)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    np.random.randn()  # numpy caches the second gaussian of a pair: that part of its state must survive too
    path = _save(tmp_path / "ckpts", 1, model, opt)
    expected = _draws()
    torch.load(path / ckpt.STATE_FILE, weights_only=True)  # tensors and plain data only
    fresh, fresh_opt = _tiny(5)
    _draws()
    state = ckpt.load(path, model=fresh, raw_model=fresh, optimizer=fresh_opt)
    assert _draws() == expected and state["step"] == 1 and type(state["tokens_seen"]) is int
    assert state["tokens_seen"] == 7
    with pytest.raises(TypeError, match=r"train_state\['where'\] is a PosixPath"):
        ckpt.to_plain({"where": Path("x")})  # refused before writing, not on resume
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    saved, restored = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    assert saved.keys() == restored.keys()
    for k in saved:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved[k][name], restored[k][name])


def test_checkpoint_written_before_plain_rng_states_still_resumes(tmp_path):
    """Older train_state.pt files held numpy's RNG tuple (an ndarray) and no checksum: still accepted."""
    import json
    import random

    import numpy as np
    import torch

    from qazlm.train import checkpoint as ckpt

    model, opt = _tiny(0)
    path = _save(tmp_path / "ckpts", 1, model, opt)
    legacy = torch.load(path / ckpt.STATE_FILE, weights_only=True)
    np.random.seed(4)
    legacy["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(legacy, path / ckpt.STATE_FILE)
    meta = json.loads((path / "qazlm_model.json").read_text())
    del meta["sha256"]
    (path / "qazlm_model.json").write_text(json.dumps(meta))
    expected = _draws()
    fresh, fresh_opt = _tiny(1)
    ckpt.load(path, model=fresh, raw_model=fresh, optimizer=fresh_opt)
    assert _draws() == expected


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_payload_in_train_state_is_refused_without_running(tmp_path, writer):
    import contextlib
    import json
    import pickle

    import torch

    from qazlm.errors import QazlmError
    from qazlm.model.io import sha256_file
    from qazlm.train import checkpoint as ckpt

    model, opt = _tiny(0)
    path = _save(tmp_path / "ckpts", 1, model, opt)
    marker = tmp_path / "payload-ran"
    crafted = {"step": 1, "optimizer": Payload(marker), "rng": {}}
    with open(path / ckpt.STATE_FILE, "wb") as f:
        torch.save(crafted, f) if writer == "torch.save" else pickle.dump(crafted, f)
    meta = json.loads((path / "qazlm_model.json").read_text())  # whoever can write the file can write this
    meta["sha256"]["train_state.pt"] = sha256_file(path / ckpt.STATE_FILE)
    (path / "qazlm_model.json").write_text(json.dumps(meta))
    fresh, fresh_opt = _tiny(1)
    with pytest.raises(QazlmError, match=r"step_000001/train_state.pt: cannot read: holds more than tensors"):
        ckpt.load(path, model=fresh, raw_model=fresh, optimizer=fresh_opt)
    assert not marker.exists()
    with contextlib.suppress(RuntimeError):  # the old loader: the payload is live (then torch may complain)
        torch.load(path / ckpt.STATE_FILE, weights_only=False)
    assert marker.exists()


def test_damaged_checkpoint_files_are_refused_by_checksum(tmp_path):
    from qazlm.errors import QazlmError
    from qazlm.train import checkpoint as ckpt
    from test_model import overwrite_middle

    model, opt = _tiny(0)
    path = _save(tmp_path / "ckpts", 1, model, opt)
    fresh, fresh_opt = _tiny(1)
    for name in ("train_state.pt", "model.safetensors"):
        good = (path / name).read_bytes()
        overwrite_middle(path / name)
        with pytest.raises(QazlmError, match=rf"step_000001/{name}: checksum mismatch.*delete this step folder"):
            ckpt.load(path, model=fresh, raw_model=fresh, optimizer=fresh_opt)
        (path / name).write_bytes(good)
    ckpt.load(path, model=fresh, raw_model=fresh, optimizer=fresh_opt)


KILLED_WRITE = """
import os, sys
sys.path.insert(0, {tests!r})
import qazlm.model.io
from test_checkpoint_resume import _save, _tiny
model, opt = _tiny(0)
qazlm.model.io.sha256_file = lambda path: os._exit(3)  # killed after the weights and train state are written
_save({root!r}, 2, model, opt)
"""


def test_leftovers_of_killed_checkpoint_writes_are_removed(tmp_path):
    """One temp folder per write, named with the shared prefix; the next run's clean_partial removes it and
    every older temp name (the old `..tmp_step_*` folders were never removed)."""
    from qazlm.io import TMP_PREFIX
    from qazlm.model.io import load_model_folder
    from qazlm.train import checkpoint as ckpt

    root = tmp_path / "ckpts"
    _save(root, 1, *_tiny(0))
    code = KILLED_WRITE.format(tests=str(HERE), root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    (left,) = [p for p in root.iterdir() if p.name.startswith(TMP_PREFIX)]
    assert {"model.safetensors", "train_state.pt"} <= {p.name for p in left.iterdir()}
    for name in (".tmp_step_000002_11", "..tmp_step_000002_11.x8k2", "..tmp_step_000002_11..old",
                 ".old_step_000002_11", f"{TMP_PREFIX}old-step_000001-11"):
        (root / name).mkdir()
        (root / name / "model.safetensors").write_bytes(b"x" * 100)
    assert ckpt.latest(root).name == "step_000001"
    removed = ckpt.clean_partial(root)
    assert len(removed) == 6
    assert [p.name for p in root.iterdir()] == ["step_000001"]
    load_model_folder(root / "step_000001")
