"""One run per output folder, stage records and skip decisions, ordinary file permissions (qazlm.runs, qazlm.io)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_harness import assert_one_line_error

from qazlm.errors import QazlmError
from qazlm.runs import LOCK_NAME, RunConfig, RunContext, is_locked, output_lock, read_record, write_record

HOLD = """
import sys, time
from qazlm.runs import output_lock
with output_lock(sys.argv[1], "pretrain"):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def held(tmp_path):
    """`tmp_path/out` locked by another live process (as a concurrent run would hold it)."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_run_is_refused_naming_the_holder(held):
    out, proc = held
    with pytest.raises(QazlmError, match=rf"in use by another qazlm run \(pid {proc.pid} on .+, pretrain started "):
        with output_lock(out, "pretrain"):
            pass


def test_second_pretrain_through_the_cli_exits_with_one_line(held, capfd):
    out, proc = held
    recipe = out.parent / "r.toml"
    recipe.write_text('[run]\nout_dir = "x"\n[pretrain]\nmodel = "tiny"\nsteps = 2\n')
    import numpy as np

    np.save(out.parent / "tokens.npy", np.arange(5000, dtype=np.int32) % 300)
    assert_one_line_error(["pretrain", "--config", recipe, "--data", out.parent / "tokens.npy", "--out", out,
                           "--set", "model_overrides.vocab_size=300"], capfd, match=f"pid {proc.pid}")
    assert not (out / "metrics.jsonl").exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "stage": "pretrain",
                                              "started": "2026-01-01T00:00:00"}))  # left by a kill -9
    with output_lock(out, "data"):
        assert is_locked(out)
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not is_locked(out)


def test_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with output_lock(tmp_path, "pretrain"):
        with output_lock(tmp_path, "pretrain"):  # the pipeline stage, then the trainer it calls
            assert is_locked(tmp_path)
        assert is_locked(tmp_path)
    assert not is_locked(tmp_path)


def test_unwritable_output_folder_fails_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(QazlmError, match="cannot write to the output folder"):
        with output_lock(blocker / "out", "eval"):
            pytest.fail("the block must not run")


def test_skip_only_when_the_recorded_config_is_the_requested_one(tmp_path, capsys):
    ctx = RunContext(RunConfig(out_dir=str(tmp_path)), recipe_path=Path("r.toml"))
    cfg = {"lr": 0.003, "model": {"n_layers": 4}, "paths": ("a", "b")}
    assert not ctx.skip("pretrain", cfg)  # nothing recorded yet
    write_record(ctx.stage_dir("pretrain"), "pretrain", cfg)
    assert read_record(ctx.stage_dir("pretrain")) == {"lr": 0.003, "model": {"n_layers": 4}, "paths": ["a", "b"]}
    assert ctx.skip("pretrain", cfg)
    assert not ctx.skip("pretrain", {**cfg, "model": {"n_layers": 2}})
    assert "model.n_layers: 4 -> 2" in capsys.readouterr().out
    assert not RunContext(ctx.run, ctx.recipe_path, force=True).skip("pretrain", cfg)


def test_run_seed_reaches_every_stage_the_same_way():
    ctx = RunContext(RunConfig(seed=7), recipe_path=Path("r.toml"))
    assert ctx.with_run_defaults({})["seed"] == 7
    assert ctx.with_run_defaults({"seed": 3})["seed"] == 3  # the stage's own seed wins


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_atomic_writes_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    from qazlm.io import atomic_dir, atomic_write

    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "meta.json") as f:
            f.write("{}")
        with atomic_dir(tmp_path / "final") as tmp:
            (tmp / "w.bin").write_bytes(b"1")
            (tmp / "sub").mkdir()
            (tmp / "sub" / "private.safetensors").write_bytes(b"2")
            os.chmod(tmp / "sub" / "private.safetensors", 0o600)  # what safetensors does whatever the umask
    finally:
        os.umask(old)
    assert (tmp_path / "meta.json").stat().st_mode & 0o777 == file_mode
    assert (tmp_path / "final").stat().st_mode & 0o777 == dir_mode
    for name in ("w.bin", "sub/private.safetensors"):
        assert (tmp_path / "final" / name).stat().st_mode & 0o777 == file_mode


def test_atomic_dir_replaces_and_a_failed_write_leaves_the_old_folder(tmp_path):
    from qazlm.io import TMP_PREFIX, atomic_dir, clean_temp

    with atomic_dir(tmp_path / "m") as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "m") as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("killed")
    assert (tmp_path / "m" / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    (tmp_path / f"{TMP_PREFIX}m.abc").mkdir()  # what a kill -9 would leave
    assert clean_temp(tmp_path) and [p.name for p in tmp_path.iterdir()] == ["m"]


def test_invalid_utf8_names_the_exact_line(tmp_path):
    from qazlm.io import iter_lines

    path = tmp_path / "t.txt"
    path.write_bytes(("ok line\n" * 3000).encode() + b"bad \xff byte\nmore\n")  # past the first 8 KB chunk
    with pytest.raises(QazlmError, match=r"t\.txt:3001: invalid UTF-8"):
        list(iter_lines(path))


def test_recipe_with_a_misspelled_table_is_an_error(tmp_path, capfd):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nout_dir = "x"\n[pretrian]\nsteps = 2\n')
    assert_one_line_error(["pretrain", "--config", recipe], capfd, match=r"unknown table \[pretrian\]; did you mean \[pretrain\]")
    assert_one_line_error(["run", recipe], capfd, match=r"unknown table \[pretrian\]")


def test_is_locked_is_false_after_the_holder_dies(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    assert is_locked(tmp_path)
    proc.kill()
    proc.wait()
    deadline = time.time() + 5
    while is_locked(tmp_path) and time.time() < deadline:
        time.sleep(0.05)
    assert not is_locked(tmp_path)
