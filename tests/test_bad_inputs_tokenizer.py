"""Bad input to `qazlm tokenizer train / sweep / compare`, through the real CLI: one clear line, exit 2.

Each case once gave a traceback, a silently wrong result, or failed only after the work was done.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_harness import assert_one_line_error, run_cli
from qazlm.paths import flores_path
from qazlm.runs import LOCK_NAME


@pytest.fixture(scope="module")
def no_pairs(tmp_path_factory) -> Path:
    """Text with no byte pair at all (one-letter ASCII words): BPE can learn no merge from it."""
    root = tmp_path_factory.mktemp("no_pairs")
    (root / "kk").mkdir()
    (root / "kk" / "a.txt").write_text("a\nb\nc\nd\n", encoding="utf-8")
    return root


@pytest.fixture()
def blocker(tmp_path) -> Path:
    """A regular file: no folder can be created below it, whoever runs the test (root included)."""
    path = tmp_path / "somefile"
    path.write_text("not a folder\n")
    return path


def _train(corpus: Path, out: Path, *extra) -> list[str]:
    return ["tokenizer", "train", str(corpus), "--vocab-size", "400", "-q", "-o", str(out), *extra]


TRAIN_CASES = [  # (extra argv, regex of the error line)
    (["--max-bytes", "-1"], r"max_bytes = -1: must be >= 1"),
    (["--max-bytes", "0"], r"max_bytes = 0: must be >= 1"),
    (["--vocab-size", "100"], r"vocab_size = 100: must be > 330"),
    (["--min-frequency", "0"], r"min_frequency = 0: must be >= 1"),
    (["--mix", "kk=nan,ru=0.5,en=0.5"], r"share of 'kk' must be in \(0, 1\]"),
]


@pytest.mark.parametrize("extra,match", TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES])
def test_train_bad_options(extra, match, corpus, tmp_path, capfd):
    out = tmp_path / "tok"
    assert_one_line_error(_train(corpus, out, *extra), capfd, match=match)
    assert not out.exists()  # refused before anything was written


def test_train_no_merges_says_give_more_text(no_pairs, tmp_path, capfd):
    out = tmp_path / "tok"
    assert_one_line_error(_train(no_pairs, out, "--mix", "kk=1"), capfd, match=r"learned no merges.*give more text")
    assert not (out / "tokenizer.json").exists()


def test_train_unwritable_output_fails_before_training(corpus, blocker, capfd):
    assert_one_line_error(_train(corpus, blocker / "out"), capfd,
                          match=r"somefile/out: cannot write to the output folder")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder anyway (the file case above "
                                               "covers an unwritable path for root too)")
def test_train_read_only_folder(corpus, tmp_path, capfd):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        assert_one_line_error(_train(corpus, ro / "tok"), capfd, match=r"cannot write to the output folder")
    finally:
        ro.chmod(0o700)


def test_train_refuses_a_folder_with_other_files(corpus, tmp_path, capfd):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    assert_one_line_error(_train(corpus, out), capfd, match=r"project: holds files that are not a tokenizer's "
                                                            r"\(e.g. 'notes.txt'\)")
    assert (out / "notes.txt").read_text() == "mine\n"


def test_train_into_a_folder_in_use(corpus, tmp_path, capfd):
    """Another process holds the output folder's run lock: the second run stops before training."""
    out = tmp_path / "tok"
    out.mkdir()
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out / LOCK_NAME)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert_one_line_error(_train(corpus, out), capfd, match=r"tok: in use by another qazlm run")
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "tokenizer.json").exists()
    fd = os.open(out / LOCK_NAME, os.O_RDWR)  # the dead holder's lock is free again
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


SWEEP_CASES = [
    (["--workers", "0"], r"sweep workers = 0: must be >= 1"),
    (["--vocab-sizes", "100", "400"], r"sweep vocab size = 100: must be > 330"),
    (["--max-bytes", "-5"], r"max_bytes = -5: must be >= 1"),
    (["--vocab-sizes", "600", "--recommend-vocab", "900"], r"--recommend-vocab 900: not among the swept sizes \[600\]"),
]


@pytest.mark.parametrize("extra,match", SWEEP_CASES, ids=[" ".join(c[0]) for c in SWEEP_CASES])
def test_sweep_bad_options(extra, match, corpus, tmp_path, capfd):
    out = tmp_path / "sweep"
    assert_one_line_error(["tokenizer", "sweep", str(corpus), "-o", str(out), *extra], capfd, match=match)
    assert not (out / "cache").exists()     # refused before any training


# ------------------------------------------------------------------------------------------------ compare

def _flores(tmp_path: Path, n: int = 40, shift: str | None = None, at: int = 0) -> list[str]:
    """The first `n` FLORES+ devtest lines per language as --parallel files; `shift` loses line `at` of one
    file (the same count: the next line moves up), so from there on that file is one line out of step."""
    paths = []
    for lang, code in (("kk", "kaz_Cyrl"), ("ru", "rus_Cyrl"), ("en", "eng_Latn")):
        with gzip.open(flores_path("devtest", lang), "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()[:n + 1]
        lines = lines[:at] + lines[at + 1:] if lang == shift else lines[:n]
        path = tmp_path / f"devtest.{code}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(str(path))
    return paths


COMPARE_OPTION_CASES = [
    (["--d-model", "0"], r"--d-model = 0: must be >= 1"),
    (["--byte-budget", "nan"], r"--byte-budget = nan: expected a finite number"),
    (["--byte-budget=-1e9"], r"--byte-budget = -1000000000.0: must be > 0"),
    (["--context", "-5"], r"--context = -5: must be >= 1"),
    (["--limit", "0"], r"--limit = 0: must be >= 1"),
    (["--limit", "-3"], r"--limit = -3: must be >= 1"),
]


@pytest.mark.parametrize("extra,match", COMPARE_OPTION_CASES, ids=[" ".join(c[0]) for c in COMPARE_OPTION_CASES])
def test_compare_bad_options(extra, match, tmp_path, tiny_tokenizer_dir, capfd):
    argv = ["tokenizer", "compare", str(tiny_tokenizer_dir), "--parallel", *_flores(tmp_path), "--no-morph", *extra]
    assert_one_line_error(argv, capfd, match=match)


@pytest.mark.parametrize("shift", ["ru", "en"])
def test_compare_catches_a_file_shifted_by_one_line(shift, tmp_path, tiny_tokenizer_dir, capfd):
    files = _flores(tmp_path, shift=shift)
    argv = ["tokenizer", "compare", str(tiny_tokenizer_dir), "--parallel", *files, "--no-morph"]
    code = {"ru": "rus_Cyrl", "en": "eng_Latn"}[shift]
    assert_one_line_error(argv, capfd, match=rf"devtest\.{code}\.txt: not line-aligned with .*devtest\.kaz_Cyrl\.txt"
                                             r".*line i matches line i\+1")


def test_compare_catches_a_line_lost_in_the_middle(tmp_path, tiny_tokenizer_dir, capfd):
    files = _flores(tmp_path, n=600, shift="ru", at=350)
    assert_one_line_error(["tokenizer", "compare", str(tiny_tokenizer_dir), "--parallel", *files, "--no-morph"],
                          capfd, match=r"rus_Cyrl\.txt: not line-aligned .* from about line (3|4)\d\d, its line i "
                                       r"matches line i\+1")


def test_compare_aligned_flores_passes(tmp_path, tiny_tokenizer_dir, capfd):
    code, out, err = run_cli(["tokenizer", "compare", str(tiny_tokenizer_dir), "--parallel", *_flores(tmp_path),
                              "--no-morph", "--limit", "10"], capfd)
    assert code == 0, err
    assert "kk 10 lines" in out


def test_compare_unwritable_out(tmp_path, tiny_tokenizer_dir, blocker, capfd):
    argv = ["tokenizer", "compare", str(tiny_tokenizer_dir), "--parallel", *_flores(tmp_path), "--no-morph",
            "--out", str(blocker / "out")]
    assert_one_line_error(argv, capfd, match=r"somefile/out: cannot write to the output folder")
