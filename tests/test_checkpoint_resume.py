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
    with pytest.raises(QazlmError, match="train_state.pt: cannot read"):
        train(PretrainConfig(**base, model_overrides={"n_layers": 1}))
