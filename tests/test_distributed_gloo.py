"""torchrun on CPU (gloo, 2 processes): the loss curve equals one process with the same global batch, for
DDP and FSDP2 (`fully_shard` runs on gloo/CPU in torch 2.13); checkpoints of a 2-process FSDP run are
ordinary full checkpoints that a single process resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_train_support import losses, make_tokens, write_recipe

HERE = Path(__file__).parent
SETTINGS = dict(seq_len=32, global_batch_tokens=512, micro_batch=8, steps=4, warmup_steps=1, lr=3e-3,
                eval_every=-1, ckpt_every=2, log_every=1, tensorboard=False, num_threads=1, prefetch=1,
                model_overrides={"n_layers": 2})


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, tiny_tokenizer_dir, sample_lines):
    return make_tokens(tmp_path_factory.mktemp("tok") / "tokens", tiny_tokenizer_dir, sample_lines)


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _run(args: list[str], nproc: int = 1) -> str:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] \
        if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, str(HERE / "test_train_support.py"), "pretrain", "--no-plot", *args],
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def single(tmp_path_factory, tokens_dir):
    out = tmp_path_factory.mktemp("one")
    recipe = write_recipe(out / "r.toml", data=str(tokens_dir), out_dir=str(out / "run"), **SETTINGS)
    import torch

    from qazlm.train.cli import load_pretrain_config
    from qazlm.train.trainer import train

    threads = torch.get_num_threads()
    try:
        train(load_pretrain_config(str(recipe)))        # in this process: a world of one
    finally:
        torch.set_num_threads(threads)
    return losses(out / "run" / "metrics.jsonl"), recipe


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, single, parallel):
    ref, recipe = single
    out = _run(["--config", str(recipe), "--out", str(tmp_path / "run"), "--set", f'parallel="{parallel}"'], nproc=2)
    assert "accum 1 x world 2" in out                       # really 2 ranks; the single run had accum 2
    got = losses(tmp_path / "run" / "metrics.jsonl")
    assert sorted(got) == sorted(ref) == [1, 2, 3, 4]
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-5)
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
    if parallel == "fsdp":  # the gathered full checkpoint resumes in a single process
        import torch

        from qazlm.model.io import load_model_folder

        a = load_model_folder(tmp_path / "run" / "final").state_dict()
        b = load_model_folder(Path(recipe).parent / "run" / "final").state_dict()
        assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
