"""`qazlm sft-data` on bad input, through the real CLI: one line naming the flag, key or file and the fix,
exit 2, never a traceback."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from cli_harness import assert_one_line_error  # noqa: E402

CASES = [  # (extra argv, regex the error line must match)
    (["--per-task", "0"], r"per_task = 0: must be >= 1"),
    (["--per-task", "nan"], r"per_task.*whole number"),
    (["--per-task", "many"], r"per_task.*whole number"),
    (["--heldout-fraction", "1.5"], r"heldout_fraction = 1.5: must be"),
    (["--heldout-fraction", "inf"], r"heldout_fraction = inf: expected a finite number"),
    (["--lang-shares", "kk=0.9,ru=0.9"], r"lang_shares sum to 1.8; they must sum to 1"),
    (["--lang-shares", "kk=nan,ru=0.5,en=0.5"], r"lang_shares.kk = nan: expected a finite number"),
    (["--lang-shares", "kk=-0.5,ru=1,en=0.5"], r"lang_shares.kk = -0.5: must be >= 0"),
    (["--lang-shares", "de=1"], r"unknown language 'de'"),
    (["--lang-shares", "kk"], r"lang_shares: expected k=v"),
    (["--tasks", "translate"], r"unknown task 'translate'; did you mean 'translation'"),
    (["--tasks", ""], r"nothing to build"),
    (["--decontaminate", "mmlu"], r"decontaminate: unknown set 'mmlu'"),
    (["--external", "{tmp}/missing.jsonl"], r"missing.jsonl: file not found"),
    (["--tasks", "identity", "--external", "hf:{tmp}/no-such-dataset"], r"cannot load it offline"),
    (["--config", "{tmp}/missing.toml"], r"missing.toml: config file not found"),
    (["--config", "{tmp}/bad.toml"], r"unknown key 'per_tsk'; did you mean 'per_task'"),
    (["--set", "seed=-1"], r"seed = -1: must be >= 0"),
    (["--tasks", "count_words", "--set", "corpus_dir={tmp}/empty"], r"no \*\.txt\.gz files"),
    (["--tasks", "morph_lemma", "--set", "lexicon={tmp}/none.dic"], r"none.dic: Hunspell lexicon not found"),
]


@pytest.mark.parametrize("extra, match", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_one_line(extra, match, tmp_path, capfd):
    (tmp_path / "bad.toml").write_text("[sft_data]\nper_tsk = 3\n")
    (tmp_path / "empty" / "kk").mkdir(parents=True)
    argv = ["sft-data", "-o", str(tmp_path / "out"), "--per-task", "2", "--decontaminate", ""]
    assert_one_line_error(argv + [a.format(tmp=tmp_path) for a in extra], capfd, match=match)


def test_unwritable_output_folder(tmp_path, capfd):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(["sft-data", "-o", tmp_path / "file" / "out", "--tasks", "identity"], capfd,
                          match=r"cannot write to the output folder")
