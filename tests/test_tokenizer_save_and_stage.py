"""Tokenizer folders are swapped in whole, keep their run lock, and the pipeline stage records its settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qazlm.io import TMP_PREFIX
from qazlm.runs import LOCK_NAME, STAGE_RECORD, RunConfig, RunContext, read_record
from qazlm.tokenizer import train as train_mod
from qazlm.tokenizer.train import TokenizerTrainConfig, is_complete, train_tokenizer


def _cfg(corpus: Path, vocab: int = 400) -> TokenizerTrainConfig:
    return TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=vocab)


def _die_mid_save(monkeypatch) -> None:
    """Make the save write tokenizer.json and then die, as a kill would."""
    def write_half(tok, out, info):
        (out / "tokenizer.json").write_text(tok.to_str(), encoding="utf-8")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_write_tokenizer_files", write_half)


def test_killed_save_leaves_the_old_tokenizer(tmp_path, corpus, monkeypatch):
    out = tmp_path / "tok"
    train_tokenizer(_cfg(corpus, 400), out, show_progress=False)
    before = (out / "tokenizer.json").read_bytes()
    _die_mid_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(_cfg(corpus, 450), out, show_progress=False)
    assert is_complete(out) and (out / "tokenizer.json").read_bytes() == before
    assert json.loads((out / "training_info.json").read_text())["vocab_size"] == 400
    assert not list(tmp_path.glob(f"{TMP_PREFIX}*"))


def test_killed_first_save_leaves_no_tokenizer(tmp_path, corpus, monkeypatch):
    out = tmp_path / "tok"
    _die_mid_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer(_cfg(corpus), out, show_progress=False)
    assert not is_complete(out) and not (out / "tokenizer.json").exists()


def test_retrain_keeps_the_lock_inode_and_cleans_leftovers(tmp_path, corpus):
    out = tmp_path / "tok"
    train_tokenizer(_cfg(corpus), out, show_progress=False)
    inode = (out / LOCK_NAME).stat().st_ino
    stale = tmp_path / f"{TMP_PREFIX}tok.abcd1234"      # what a killed save of `tok` leaves beside it
    other = tmp_path / f"{TMP_PREFIX}other.abcd1234"    # someone else's: left alone
    stale.mkdir()
    other.mkdir()
    (out / "compare").mkdir()                           # the pipeline stage's comparison: allowed
    train_tokenizer(_cfg(corpus, 450), out, show_progress=False)
    assert (out / LOCK_NAME).stat().st_ino == inode     # the held lock stayed on the folder's final path
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, "special_tokens_map.json", "tokenizer.json",
                                                            "tokenizer_config.json", "training_info.json"])


def test_too_little_text_for_the_vocab_warns(tmp_path, corpus, capfd):
    train_tokenizer(_cfg(corpus, 60000), tmp_path / "tok", show_progress=False)
    err = capfd.readouterr().err
    assert "warning: learned only" in err and "of the 60,000 tokens" in err


def test_stage_records_skips_and_retrains_on_change(tmp_path, corpus, capsys):
    from qazlm.tokenizer.stage import run_stage

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=tmp_path / "r.toml")
    out = ctx.stage_dir("tokenizer")
    section = {"inputs": [str(corpus)], "vocab_size": 400, "compare_with": []}
    run_stage(section, ctx)
    assert read_record(out)["vocab_size"] == 400 and (out / "compare" / "compare.md").exists()
    capsys.readouterr()
    run_stage(section, ctx)
    assert "skipping" in capsys.readouterr().out
    run_stage({**section, "vocab_size": 420}, ctx)
    assert "vocab_size: 400 -> 420" in capsys.readouterr().out
    assert read_record(out)["vocab_size"] == 420
    os.remove(out / STAGE_RECORD)                       # a run killed before its record: trained again
    mtime = (out / "tokenizer.json").stat().st_mtime_ns
    run_stage({**section, "vocab_size": 420}, ctx)
    assert (out / "tokenizer.json").stat().st_mtime_ns != mtime and read_record(out) is not None
