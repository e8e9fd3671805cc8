"""`qazlm export gguf` on bad input, through the real CLI: one line naming the folder, type or key and the fix,
exit 2, never a traceback, and no GGUF file left behind."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cli_harness import assert_one_line_error  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory, corpus, tiny_tokenizer_dir):
    """Our tiny model (qazlm tokenizer), one without tokenizer files, a GPT-2 architecture, a torchao-quantized
    config, and a model whose tokenizer splits with GPT-2's regex (no llama.cpp pre-tokenizer matches it)."""
    from test_eval_helpers import make_hf_folder, make_our_folder

    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("gguf_bad")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=600), root / "tok", show_progress=False)
    make_our_folder(root / "tok", root / "ours")
    make_our_folder(root / "tok", root / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (root / "notok" / name).unlink(missing_ok=True)
    for name, edit in (("gpt2", {"architectures": ["GPT2LMHeadModel"]}),
                       ("torchao", {"quantization_config": {"quant_method": "torchao"}})):
        make_hf_folder(root / "tok", root / name)
        config = json.loads((root / name / "config.json").read_text())
        (root / name / "config.json").write_text(json.dumps({**config, **edit}))
    make_hf_folder(tiny_tokenizer_dir, root / "gpt2regex")
    (root / "short.txt").write_text("Қысқа мәтін.\n", encoding="utf-8")
    write_foreign_imatrix(root / "other.imatrix.gguf")
    return root


def write_foreign_imatrix(path):
    """A matrix for a model with other widths (another model's llama-imatrix file)."""
    from qazlm.gguf.imatrix import Imatrix, write

    write(path, Imatrix({"blk.0.attn_k.weight": [1.0] * 7}, {"blk.0.attn_k.weight": 3}, ["x"], 1, 512))


CASES = [  # (argv after `export gguf`, regex the error line must match)
    (["{r}/missing"], r"missing: model folder not found"),
    (["{r}/notok"], r"no tokenizer.json beside the weights; a GGUF file carries its tokenizer"),
    (["{r}/gpt2"], r"architecture GPT2LMHeadModel is not supported for GGUF export; qazlm exports LlamaForCausalLM"),
    (["{r}/torchao"], r"holds quantized weights \(torchao\); export its fp32 parent"),
    (["{r}/gpt2regex"], r"llama.cpp does not know this tokenizer's pre-tokenizer"),
    (["{r}/ours", "--type", "q3_k_s"], r"types: 'q3_k_s' is not a type qazlm exports .*choose from f32, f16, q8_0"),
    (["{r}/ours", "--type", "q5_k_x"], r"types: 'q5_k_x' is not a type qazlm exports"),   # a type llama.cpp lacks
    (["{r}/ours", "--type", "q8_0,q8_0"], r"names a type twice"),
    (["{r}/ours", "--check-sentences", "-1"], r"check_sentences = -1: must be >= 0"),
    (["{r}/ours", "--name", "a/b"], r"name = 'a/b': use letters, digits"),
    (["{r}/ours", "--set", "type=q8_0"], r"unknown key 'type'; did you mean 'types'"),
    ([], r"\[gguf\] model: not set"),
    (["{r}/ours", "--calibration", "{r}/nowhere"], r"nowhere: no such file or folder"),
    (["{r}/ours", "--calibration", "{r}/short.txt"], r"calibration: .*short.txt hold \d+ tokens, fewer than one chunk"),
    (["{r}/ours", "--calibration", "{r}/short.txt", "--imatrix", "{r}/x.gguf"], r"calibration and imatrix: give one"),
    (["{r}/ours", "--imatrix", "{r}/short.txt"], r"short.txt: not a readable GGUF importance matrix"),
    (["{r}/ours", "--imatrix", "{r}/other.imatrix.gguf"], r"imatrix: blk.0.attn_k.weight: .* made for another model"),
    (["{r}/ours", "--set", "output_type=q4_0"], r"output_type = 'q4_0': choose f16 or q8_0"),
    (["{r}/ours", "--set", "calibration_chunks=0"], r"calibration_chunks = 0: must be >= 1"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=[" ".join(c[0][1:]) or (c[0] or ["none"])[0] for c in CASES])
def test_export_gguf_bad_input_is_one_line(argv, match, folders, tmp_path, capfd):
    out = tmp_path / "out"
    args = ["export", "gguf", *[a.format(r=folders) for a in argv], "-o", str(out)]
    if "--check-sentences" not in argv:
        args += ["--check-sentences", "0"]
    assert_one_line_error(args, capfd, match=match)
    assert not list(out.glob("*.gguf")) and not list(out.glob(".qazlm-tmp-*"))


def test_missing_converter_is_one_line(folders, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("QAZLM_LLAMA_CPP_CONVERTER", str(tmp_path / "nowhere"))
    assert_one_line_error(["export", "gguf", folders / "ours", "-o", tmp_path / "out", "--check-sentences", "0"],
                          capfd, match=r"nowhere: llama.cpp's converter is not installed there; run `make venv`")


def test_a_broken_gguf_file_is_one_error(tmp_path):
    from qazlm.errors import QazlmError
    from qazlm.gguf.llamacpp import open_gguf

    broken = tmp_path / "half.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 60)  # the magic, then nothing a loader can use (a cut download)
    with pytest.raises(QazlmError, match=r"half.gguf: llama.cpp cannot load it .*complete GGUF file"):
        with open_gguf(broken, vocab_only=True):
            pass
