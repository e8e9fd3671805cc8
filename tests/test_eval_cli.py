"""`qazlm eval` end to end (report files, baselines, checkpoint curve), the [eval] stage, and bad input."""

from __future__ import annotations

import json
import shutil

import pytest
from test_eval_helpers import make_hf_folder

from qazlm.cli import main


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory, tiny_tokenizer_dir):
    return make_hf_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("hf") / "tinyhf")


def test_eval_report_two_checkpoints(hf_dir, tmp_path, shared, capsys):
    run = tmp_path / "run" / "pretrain"
    for step in ("step_000010", "step_000020"):
        shutil.copytree(hf_dir, run / step)
    out = tmp_path / "rep"
    rc = main(["eval", str(run / "step_000010"), str(run / "step_000020"), "--bpb-limit", "4",
               "--tasks", "kkcopa_kk,belebele_kk", "--limit", "4", "--max-len", "64", "-o", str(out)])
    assert rc == 0
    for name in ("report.md", "report.json", "bpb.png", "tasks.png", "bpb_curve.png"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "report.json").read_text())
    assert [m["step"] for m in rep["models"]] == [10, 20]
    assert set(rep["baselines"]["unigram_bpb"]) == {"flores-devtest:kk", "flores-devtest:ru", "flores-devtest:en"}
    assert rep["baselines"]["chance"]["qazlm_kkcopa_kk"] == 0.5
    m = rep["models"][0]
    assert m["bpb"]["flores-devtest:kk"]["n_docs"] == 4 and m["tasks"]["qazlm_kkcopa_kk"]["n"] == 4
    assert "not found" in m["tasks"]["qazlm_belebele_kk"]["skipped"]
    assert set(m["samples"]) == {"kk", "ru", "en"}
    copy = m["copy"]["flores-devtest:kk"]   # the copy probe: max_len 64 -> spans of 32 tokens
    assert copy["n_spans"] == 4 and copy["span"] == 32 and copy["first_loss"] > 0 and 0 <= copy["exact_repeat"] <= 1
    md = (out / "report.md").read_text()
    assert "*unigram baseline*" in md and "qazlm_belebele_kk" in md and "Generation samples" in md
    assert "## In-context copying" in md and f"{copy['first_loss']:.2f} → {copy['repeat_loss']:.2f}" in md


def test_eval_errors_are_one_line(hf_dir, tmp_path, capsys, tiny_tokenizer_dir):
    assert main(["eval", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "neither qazlm_model.json nor config.json" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\n")
    assert main(["eval", str(hf_dir), "--bpb", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "invalid UTF-8" in capsys.readouterr().err
    assert main(["eval", str(hf_dir), "--no-bpb", "--tasks", "sib300", "-o", str(tmp_path / "o")]) == 2
    assert "unknown" in capsys.readouterr().err
    assert main(["eval", str(hf_dir), "--max-len", "3", "-o", str(tmp_path / "o")]) == 2   # no room for the copy probe
    assert "max_len = 3: must be >= 4" in capsys.readouterr().err
    # a tokenizer bigger than the model's vocabulary belongs to another model
    from transformers import AutoTokenizer

    big = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    big.add_tokens([f"<extra_{i}>" for i in range(50)])
    big.save_pretrained(tmp_path / "bigtok")
    assert main(["eval", str(hf_dir), "--tokenizer", str(tmp_path / "bigtok"), "-o", str(tmp_path / "o")]) == 2
    assert "belongs to another model" in capsys.readouterr().err


def test_list_tasks_and_help(capsys):
    assert main(["eval", "--list-tasks"]) == 0
    out = capsys.readouterr().out
    assert "qazlm_sib200_kk" in out and "qazlm_flores_kk_en" in out
    for cmd in ("eval", "generate"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "example" in capsys.readouterr().out


def test_stage_writes_report_and_skips_when_done(hf_dir, tmp_path, shared):
    from qazlm.errors import QazlmError
    from qazlm.eval.stage import run_stage
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=tmp_path / "r.toml")
    with pytest.raises(QazlmError, match="run the pretrain stage first"):
        run_stage({}, ctx)
    shutil.copytree(hf_dir, ctx.stage_dir("pretrain") / "final")
    section = {"bpb_limit": 3, "tasks": ["kkcopa_kk"], "limit": 3, "max_len": 64, "sample_tokens": 4}
    run_stage(section, ctx)
    report = ctx.stage_dir("eval") / "report.json"
    first = report.stat().st_mtime_ns
    run_stage(section, ctx)
    assert report.stat().st_mtime_ns == first  # complete output: skipped
    with pytest.raises(QazlmError, match="did you mean 'limit'"):
        run_stage({"limitt": 3}, ctx)


def test_stage_on_our_checkpoints_draws_the_curve(tiny_tokenizer_dir, tmp_path, shared):
    from test_eval_helpers import make_our_folder

    from qazlm.eval.stage import run_stage
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=tmp_path / "r.toml")
    pre = ctx.stage_dir("pretrain")
    for step, seed in (("step_000010", 1), ("step_000020", 2)):
        make_our_folder(tiny_tokenizer_dir, pre / "checkpoints" / step, seed=seed)
    make_our_folder(tiny_tokenizer_dir, pre / "final", seed=2)
    run_stage({"bpb_limit": 2, "tasks": ["kkcopa_kk"], "limit": 2, "max_len": 64, "sample_tokens": 4,
               "checkpoints": True}, ctx)
    rep = json.loads((ctx.stage_dir("eval") / "report.json").read_text())
    assert [m["name"] for m in rep["models"]] == ["run/step_000010", "run/step_000020", "run/final"]
    assert [bool(m["tasks"]) for m in rep["models"]] == [False, False, True]  # checkpoints: bpb only
    assert rep["models"][1]["bpb"]["flores-devtest:kk"]["bpb"] == pytest.approx(
        rep["models"][2]["bpb"]["flores-devtest:kk"]["bpb"])  # same weights, same score
    assert (ctx.stage_dir("eval") / "bpb_curve.png").exists()
