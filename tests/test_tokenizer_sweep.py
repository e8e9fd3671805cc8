"""Sweep: truncation equals training at the smaller vocab, tiny grid end to end, cache hit, recommendation."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os

import pytest

from qazlm.cli import main
from qazlm.tokenizer import sweep as sweep_mod
from qazlm.tokenizer.sweep import SweepConfig, run_sweep
from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer, truncate_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_lines):
    root = tmp_path_factory.mktemp("sweep_corpus")
    for lang, lines in sample_lines.items():
        (root / lang).mkdir()
        with gzip.open(root / lang / "part.txt.gz", "wt", encoding="utf-8") as f:
            f.write("\n".join(lines[:250]) + "\n")
    return root


def test_truncated_large_equals_trained_small(tmp_path, corpus, sample_lines):
    from tokenizers import Tokenizer

    big, small = tmp_path / "big", tmp_path / "small"
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=1600), big, show_progress=False)
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=800), small, show_progress=False)
    cut = truncate_tokenizer((big / "tokenizer.json").read_text(encoding="utf-8"), 800)
    ref = Tokenizer.from_file(str(small / "tokenizer.json"))
    assert cut.get_vocab() == ref.get_vocab()
    cut_merges = json.loads(cut.to_str())["model"]["merges"]
    assert cut_merges == json.loads(ref.to_str())["model"]["merges"]
    text = sample_lines["kk"][300:340] + sample_lines["en"][300:340]
    assert [e.ids for e in cut.encode_batch(text)] == [e.ids for e in ref.encode_batch(text)]


def test_tiny_sweep_outputs_cache_and_recommendation(tmp_path, corpus, monkeypatch, capsys):
    cfg = SweepConfig(inputs=[str(corpus)], mixes=["kk=0.4,ru=0.3,en=0.3", "kk=0.6,ru=0.2,en=0.2"],
                      vocab_sizes=[600, 900], workers=2)
    result = run_sweep(cfg, tmp_path / "sw", docs_dir=tmp_path / "docs")
    rows = result["rows"]
    assert len(rows) == 4 and {r["vocab"] for r in rows} == {600, 900}
    for r in rows:
        assert r["max_premium"] == max(r["premium_kk"], r["premium_ru"])
        assert 1 < r["fertility_kk"] < 10 and r["premium_kk"] > 0
    # larger vocab never costs more tokens for the same mixture
    by = {(r["mix"], r["vocab"]): r for r in rows}
    for mix in result["mixes"]:
        assert by[(mix, 900)]["fertility_kk"] <= by[(mix, 600)]["fertility_kk"]
    rec = result["recommended"]
    at_900 = [r for r in rows if r["vocab"] == 900]
    assert rec["vocab"] == 900 and rec["target_margin"] == max(r["target_margin"] for r in at_900)
    worst = max(rec["fertility_kk"] / 1.75, rec["fertility_ru"] / 1.85, rec["fertility_en"] / 1.45,
                rec["premium_kk"] / 1.0, rec["premium_ru"] / 1.15)
    assert rec["target_margin"] == pytest.approx(1 - worst)  # margin = smallest relative slack to the targets
    for name in ("sweep.json", "sweep.csv", "sweep.md", "tokenizer_sweep.png", "recommended/tokenizer.json"):
        assert (tmp_path / "sw" / name).exists(), name
    assert (tmp_path / "docs" / "img" / "tokenizer_sweep.png").stat().st_size > 10_000
    assert "Recommended mixture" in (tmp_path / "docs" / "tokenizer_sweep.md").read_text()
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(tmp_path / "sw" / "recommended")) == 900

    # second call: everything cached, no training at all
    def boom(*a, **k):
        raise AssertionError("retrained despite cache")

    monkeypatch.setattr(sweep_mod, "_train_job", boom)
    capsys.readouterr()
    assert main(["tokenizer", "sweep", str(corpus), "--mixes", *cfg.mixes, "--vocab-sizes", "600", "900",
                 "-o", str(tmp_path / "sw")]) == 0  # the CLI, all cached
    assert "(2 cached)" in capsys.readouterr().out
    again = json.loads((tmp_path / "sw" / "sweep.json").read_text(encoding="utf-8"))
    assert again["rows"] == rows and again["recommended"] == rec
    # targets steer the pick: an English-only target recommends the mixture with the best English fertility,
    # a Kazakh-only one the best Kazakh fertility (both from the cache)
    en_only = run_sweep(dataclasses.replace(cfg, targets={"fertility_en": 1.45}), tmp_path / "sw")
    assert en_only["recommended"]["fertility_en"] == min(r["fertility_en"] for r in at_900)
    kk_only = run_sweep(dataclasses.replace(cfg, targets={"fertility_kk": 1.75}), tmp_path / "sw")
    assert kk_only["recommended"]["fertility_kk"] == min(r["fertility_kk"] for r in at_900)
    capsys.readouterr()
    assert main(["tokenizer", "sweep", str(corpus), "--target", "tokens_kk=2", "-o", str(tmp_path / "sw")]) == 2
    assert "unknown metric(s) ['tokens_kk']" in capsys.readouterr().err


def test_sweep_cli_bad_vocab_for_recommendation(tmp_path, corpus, capsys):
    code = main(["tokenizer", "sweep", str(corpus), "--mixes", "kk=0.5,ru=0.7", "-o", str(tmp_path / "x")])
    assert code == 2 and "sum to 1.2" in capsys.readouterr().err


def test_cache_key_changes_when_an_input_file_does(tmp_path, corpus):
    """A new or edited training file must retrain, not reuse a stale tokenizer from the cache."""
    import shutil

    from qazlm.tokenizer.mixture import files_by_language, inputs_fingerprint
    from qazlm.tokenizer.sweep import cache_key

    root = tmp_path / "c"
    shutil.copytree(corpus, root)
    options = dataclasses.asdict(TokenizerTrainConfig(inputs=[str(root)], vocab_size=600, mix="kk=0.4,ru=0.3,en=0.3"))
    key = lambda: cache_key(options, inputs_fingerprint(files_by_language([str(root)])))  # noqa: E731
    before = key()
    assert key() == before
    with gzip.open(root / "en" / "more.txt.gz", "wt", encoding="utf-8") as f:
        f.write("A new English file.\n")
    assert key() != before
