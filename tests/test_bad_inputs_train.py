"""Bad inputs to `qazlm pretrain` and `qazlm run`, through the real CLI: one error line each, exit 2, no traceback.

Each row was once a traceback, a crash after the first step, or a silently wrong run.
"""

from __future__ import annotations

import numpy as np
import pytest
from cli_harness import assert_one_line_error

VOCAB = 300


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A recipe and a plain token file (ids < VOCAB) for a two-step `tiny` run."""
    root = tmp_path_factory.mktemp("bad_train")
    np.save(root / "tokens.npy", (np.arange(20_000, dtype=np.int32) * 7919) % VOCAB)
    bad = np.arange(20_000, dtype=np.int32) % VOCAB
    bad[5000] = VOCAB + 12  # a shard made with another tokenizer
    np.save(root / "bad_ids.npy", bad)
    (root / "recipe.toml").write_text(
        '[run]\nout_dir = "unused"\n[pretrain]\nmodel = "tiny"\nseq_len = 32\nglobal_batch_tokens = 256\n'
        'micro_batch = 8\nsteps = 2\neval_every = -1\nckpt_every = 0\ntensorboard = false\nprefetch = 0\n')
    (root / "no_pretrain.toml").write_text('[run]\nout_dir = "unused"\n[tokenizer]\nvocab_size = 1000\n')
    (root / "a_file").write_text("not a folder")
    return root


CASES = [  # (extra --set overrides or flags, expected regex of the error line)
    (["--set", "lr=nan"], r"lr = nan: expected a finite number"),
    (["--set", "lr=-1"], r"lr = -1(\.0)?: must be > 0"),
    (["--set", "min_lr=0.1"], r"min_lr = 0.1 is above lr"),
    (["--set", "global_batch_tokens=0"], r"global_batch_tokens = 0: must be >= 1"),
    (["--set", "global_batch_tokens=100"], r"not a multiple of micro_batch \* seq_len"),
    (["--set", "grad_clip=nan"], r"grad_clip = nan"),
    (["--set", "micro_batch=0"], r"micro_batch = 0: must be >= 1"),
    (["--set", "seq_len=1"], r"seq_len = 1: must be >= 2"),
    (["--set", "steps=-3"], r"steps = -3: must be >= 0"),
    (["--set", "eval_every=-2"], r"eval_every = -2: must be >= -1"),
    (["--set", "eval_max_len=3"], r"eval_max_len = 3: must be >= 4"),   # a span and its repeat need 4
    (["--set", "warmup_steps=inf"], r"warmup_steps: expected a whole number, got inf"),
    (["--set", "steps=2.5"], r"steps: expected a whole number, got 2.5"),
    (["--set", "schedule=linear"], r"schedule = 'linear': use one of cosine, wsd"),
    (["--set", "device=gpu"], r"device = 'gpu'"),
    (["--set", "compile=maybe"], r"compile = 'maybe'"),
    (["--set", "model=huge"], r"unknown model preset 'huge'"),
    (["--set", "model_overrides.n_layer=2"], r"unknown key\(s\) \['n_layer'\]"),
    (["--set", "lrr=1"], r"unknown key 'lrr'; did you mean 'lr'"),
]


@pytest.mark.parametrize("extra, match", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_pretrain_settings(setup, tmp_path, capfd, extra, match):
    assert_one_line_error(["pretrain", "--config", setup / "recipe.toml", "--data", setup / "tokens.npy",
                           "--out", tmp_path / "out", "--set", f"model_overrides.vocab_size={VOCAB}", *extra],
                          capfd, match=match)


def test_token_id_outside_the_vocabulary(setup, tmp_path, capfd):
    """Used to fail deep inside the embedding (index out of range) with a traceback."""
    assert_one_line_error(["pretrain", "--config", setup / "recipe.toml", "--data", setup / "bad_ids.npy",
                           "--out", tmp_path / "out", "--set", f"model_overrides.vocab_size={VOCAB}",
                           "--set", "steps=200"], capfd, match=rf"token id {VOCAB + 12} is outside the model's vocabulary")


def test_recipe_without_a_pretrain_table(setup, tmp_path, capfd):
    assert_one_line_error(["pretrain", "--config", setup / "no_pretrain.toml", "--data", setup / "tokens.npy"],
                          capfd, match=r"no \[pretrain\] table")


def test_missing_token_file(setup, tmp_path, capfd):
    assert_one_line_error(["pretrain", "--config", setup / "recipe.toml", "--data", tmp_path / "nope.npy",
                           "--out", tmp_path / "out"], capfd, match=r"nope\.npy: token file not found")


def test_unwritable_output_folder_fails_before_training(setup, capfd):
    assert_one_line_error(["pretrain", "--config", setup / "recipe.toml", "--data", setup / "tokens.npy",
                           "--out", setup / "a_file" / "out", "--set", f"model_overrides.vocab_size={VOCAB}"],
                          capfd, match=r"cannot write to the output folder")


def test_run_with_a_bad_override(setup, capfd):
    assert_one_line_error(["run", setup / "recipe.toml", "--set", "pretrain.lr=nan"], capfd, match="lr = nan")
