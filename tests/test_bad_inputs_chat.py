"""`qazlm chat` bad input: each case is one `qazlm: error:` line through the real CLI (exit 2, no traceback)."""

from __future__ import annotations

import pytest
from cli_harness import assert_one_line_error
from test_eval_helpers import make_our_folder

MODEL = "{model}"  # replaced by a tiny qazlm model folder (max_seq_len 512)

CASES = [
    (["chat", "{missing}"], r"model folder not found"),
    (["chat", MODEL, "--temperature", "-1"], r"temperature"),
    (["chat", MODEL, "--temperature", "nan"], r"temperature"),
    (["chat", MODEL, "--top-p", "1.5"], r"top_p"),
    (["chat", MODEL, "--top-k", "0"], r"top_k"),
    (["chat", MODEL, "--max-new-tokens", "0"], r"max_new_tokens"),
    (["chat", MODEL, "--max-new-tokens", "many"], r"--max-new-tokens: invalid int"),
    (["chat", MODEL, "--repetition-penalty", "0"], r"repetition_penalty"),
    (["chat", MODEL, "--context", "1"], r"--context"),
    (["chat", MODEL, "--context", "100000"], r"--context 100000 exceeds the model's maximum of 512 tokens"),
    (["chat", MODEL, "--max-new-tokens", "600"], r"--max-new-tokens 600 leaves no room .* 512-token context"),
    (["chat", MODEL, "--tokenizer", "{missing}"], r"no tokenizer files"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_tokenizer_dir):
    return make_our_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("bad_chat") / "final")


@pytest.mark.parametrize(("argv", "match"), CASES, ids=[" ".join(a[2:]) or a[1] for a, _ in CASES])
def test_bad_chat_input_is_one_line(argv, match, model, tmp_path, capfd):
    argv = [a.format(model=model, missing=tmp_path / "missing") for a in argv]
    assert_one_line_error(argv, capfd, match=match)
