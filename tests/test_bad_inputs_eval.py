"""Bad inputs to `qazlm eval` and `qazlm generate`, through the real CLI: one error line each, exit 2, no
traceback, and no silently wrong result."""

from __future__ import annotations

import json

import pytest
from cli_harness import assert_one_line_error, run_cli
from test_eval_helpers import make_our_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_tokenizer_dir):
    return make_our_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("bad_eval") / "model")


GENERATE = [
    (["--batch-size", "0"], r"--batch-size = 0: must be >= 1"),
    (["--temperature", "nan"], r"temperature = nan: expected a finite number"),
    (["--temperature", "-0.5"], r"temperature = -0.5: must be >= 0"),
    (["--top-p", "0"], r"top_p = 0(\.0)?: must be > 0 and <= 1"),
    (["--top-p", "1.5"], r"top_p = 1.5"),
    (["--top-k", "-1"], r"top_k = -1: must be >= 1"),
    (["--repetition-penalty", "0"], r"repetition_penalty = 0(\.0)?: must be > 0"),
    (["--repetition-penalty", "nan"], r"repetition_penalty = nan"),
    (["--max-new-tokens", "0"], r"max_new_tokens = 0: must be >= 1"),
    (["--max-new-tokens", "5000"], r"exceeds the model's max_seq_len"),
    (["--stop", ""], r"stop strings must be non-empty"),
]


@pytest.mark.parametrize("extra, match", GENERATE, ids=[" ".join(c[0]) for c in GENERATE])
def test_bad_generate_flags(model, capfd, extra, match):
    assert_one_line_error(["generate", model, "Сәлем", *extra], capfd, match=match)


def test_tokenizer_of_another_model_is_refused(model, tmp_path, capfd, tiny_tokenizer_dir):
    """A 1,000-token tokenizer with a 16,000-token model used to generate nonsense silently."""
    import torch

    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model

    big = save_model_folder(build_model(preset("tiny", 16000), seed=0).eval(), tmp_path / "big")
    assert_one_line_error(["generate", big, "Сәлем", "--tokenizer", tiny_tokenizer_dir], capfd,
                          match=r"tokenizer has 1,000 tokens but the model 16,000")
    del torch


EVAL = [
    (["--batch-size", "0"], r"batch_size = 0: must be >= 1"),
    (["--limit", "-1", "--tasks", "kkcopa_kk"], r"limit = -1: must be >= 1"),
    (["--bpb-limit", "-5"], r"bpb_limit = -5: must be >= 1"),
    (["--bpb-limit", "0"], r"bpb_limit = 0: must be >= 1"),
    (["--max-len", "1"], r"max_len = 1: must be >= 4"),
    (["--num-fewshot", "-1"], r"num_fewshot = -1: must be >= 0"),
    (["--samples", "-2"], r"samples = -2: must be >= 0"),
    (["--no-bpb", "--samples", "0"], r"nothing to do"),
    (["--bpb", "flores:test"], r"FLORES\+ split must be dev or devtest"),
    (["--device", "gpu"], r"eval: device = 'gpu': use auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:1"], r"eval: device = 'cuda:1' but no CUDA GPU is visible"),
]


@pytest.mark.parametrize("extra, match", EVAL, ids=[" ".join(c[0]) for c in EVAL])
def test_bad_eval_flags(model, tmp_path, capfd, extra, match):
    assert_one_line_error(["eval", model, "-o", tmp_path / "report", *extra], capfd, match=match)
    assert not (tmp_path / "report" / "report.json").exists()


def test_eval_into_an_unwritable_folder(model, tmp_path, capfd):
    (tmp_path / "a_file").write_text("x")
    assert_one_line_error(["eval", model, "-o", tmp_path / "a_file" / "report", "--bpb-limit", "2"], capfd,
                          match="cannot write to the output folder")


def test_eval_with_only_skipped_tasks_fails(model, tmp_path, capfd):
    assert_one_line_error(["eval", model, "-o", tmp_path / "r", "--no-bpb", "--samples", "0", "--tasks", "kkcopa_kk",
                           "--data-dir", tmp_path / "no_data"], capfd, match=r"no scores produced.*kkcopa_kk")


def test_max_len_above_the_model_context_is_said_and_recorded(model, tmp_path, capfd):
    """`--max-len 4096` on a 512-token model used to be capped silently while the report said 4096."""
    code, out, _ = run_cli(["eval", model, "-o", tmp_path / "r", "--bpb-limit", "2", "--samples", "0",
                            "--max-len", "4096"], capfd)
    assert code == 0
    assert "scoring windows of 512 tokens, the model's context (max_len 4096 asked)" in out
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["models"][0]["max_len"] == 512
    assert "| 512 |" in (tmp_path / "r" / "report.md").read_text()


def _heldout(folder, lines: list[str]):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "heldout.jsonl").write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return folder


CHAT = [  # (flags after the model folder, expected error); {sft} is a valid one-item sft-data folder
    (["--sft-data", "{sft}", "--batch-size", "0"], r"batch_size = 0: must be >= 1"),
    (["--sft-data", "{sft}", "--max-new-tokens", "0"], r"max_new_tokens = 0: must be >= 1"),
    (["--sft-data", "{sft}", "--limit", "0"], r"limit = 0: must be >= 1"),
    (["--sft-data", "{sft}", "--flores-per-direction", "-3"], r"flores_per_direction = -3: must be >= 1"),
    (["--sft-data", "{sft}", "--temperature", "nan"], r"temperature = nan"),
    (["--sft-data", "{sft}", "--device", "gpu"], r"eval --chat: device = 'gpu': use auto, cpu, cuda or cuda:N"),
    (["--sft-data", "{sft}", "--chat-sets", "heldout,mmlu"], r"sets = .*choose one or more of heldout, multiturn"),
    (["--sft-data", "{sft}", "--max-new-tokens", "500"], r"every prompt \+ max_new_tokens \(500\) exceeds the model's "
                                                          r"context \(512 tokens\); lower --max-new-tokens"),
    (["--sft-data", "{sft}", "--bpb", "flores"], r"--bpb is for the likelihood evaluation"),
    ([], r"give the instruction data folder with --sft-data"),
    (["--sft-data", "{tmp}/none"], r"--sft-data .*none: folder not found; build one with `qazlm sft-data"),
    (["--sft-data", "{tmp}"], r"heldout.jsonl: not found; --sft-data must be a `qazlm sft-data` output folder"),
    (["--sft-data", "{bad}"], r"heldout.jsonl: no usable conversations \(2 malformed lines\)"),
]


@pytest.mark.parametrize("extra, match", CHAT, ids=[" ".join(c[0]) or "no --sft-data" for c in CHAT])
def test_bad_chat_eval_flags(model, tmp_path, capfd, extra, match):
    sft = _heldout(tmp_path / "sft", [json.dumps({"task": "identity", "lang": "en", "messages": [
        {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Qazlm."}]})])
    bad = _heldout(tmp_path / "bad", ["{not json", json.dumps({"task": "x", "lang": "en", "messages": [
        {"role": "user", "content": "no reply"}]})])
    extra = [a.format(sft=sft, bad=bad, tmp=tmp_path) for a in extra]
    argv = ["eval", "--chat", model, "-o", tmp_path / "out", "--chat-sets", "heldout", *extra]
    assert_one_line_error(argv, capfd, match=match)
    assert not (tmp_path / "out" / "chat_report.json").exists()


def test_chat_eval_model_folder_missing_and_chat_flags_without_chat(model, tmp_path, capfd):
    sft = _heldout(tmp_path / "sft", [json.dumps({"task": "identity", "lang": "en", "messages": [
        {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "I am Qazlm."}]})])
    assert_one_line_error(["eval", "--chat", tmp_path / "nope", "--sft-data", sft, "-o", tmp_path / "o"], capfd,
                          match=r"nope: model folder not found")
    assert_one_line_error(["eval", model, "--max-new-tokens", "8", "-o", tmp_path / "o"], capfd,
                          match=r"eval: --max-new-tokens needs --chat")


def test_chat_eval_stage_unknown_key(tmp_path, capfd):
    from qazlm.errors import QazlmError
    from qazlm.eval.chat_stage import run_stage
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=tmp_path / "r.toml")
    with pytest.raises(QazlmError, match=r"\[chat_eval\].*max_new_token"):
        run_stage({"max_new_token": 8}, ctx)
