"""`qazlm quantize` on bad input, through the real CLI: one line naming the flag, key or folder and the fix,
exit 2, never a traceback."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cli_harness import assert_one_line_error  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_tokenizer_dir):
    """Our tiny model, one without tokenizer files, an HF model (width 64), an unknown architecture, and an
    output folder that already holds someone else's final/."""
    from test_eval_helpers import make_hf_folder, make_our_folder

    root = tmp_path_factory.mktemp("quantize_bad")
    make_our_folder(tiny_tokenizer_dir, root / "ours")
    make_our_folder(tiny_tokenizer_dir, root / "notok")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (root / "notok" / name).unlink(missing_ok=True)
    make_hf_folder(tiny_tokenizer_dir, root / "hf")
    make_hf_folder(tiny_tokenizer_dir, root / "alien")
    (root / "alien" / "config.json").write_text(json.dumps({"model_type": "not-a-real-arch", "vocab_size": 8}))
    (root / "taken" / "final").mkdir(parents=True)
    (root / "taken" / "final" / "config.json").write_text("{}")
    return root


CASES = [  # (argv after `quantize`, regex the error line must match)
    (["{r}/missing"], r"missing: model folder not found"),
    (["{r}/notok"], r"notok: no tokenizer files"),
    (["{r}/ours", "--scheme", "int3"], r"scheme = 'int3': choose from int8-weight, int8-dynamic, int4-weight"),
    (["{r}/ours", "--scheme", "int4-weight", "--group-size", "48"], r"group_size = 48: choose from 16, 32"),
    (["{r}/ours", "--group-size", "nan"], r"group_size"),
    (["{r}/ours", "--check-sentences", "-1"], r"check_sentences = -1: must be >= 0"),
    (["{r}/hf", "--scheme", "int4-weight", "--group-size", "128"],
     r"has 64 input features, not a multiple of group_size = 128; pass --group-size 64"),
    (["{r}/alien"], r"alien: cannot load as a transformers causal LM"),
    (["{r}/ours", "--set", "schema=int8"], r"unknown key 'schema'; did you mean 'scheme'"),
    ([], r"\[quantize\] model: not set"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=[" ".join(c[0][1:]) or (c[0] or ["none"])[0] for c in CASES])
def test_quantize_bad_input_is_one_line(argv, match, folders, tmp_path, capfd):
    args = ["quantize", *[a.format(r=folders) for a in argv], "-o", str(tmp_path / "out"), "--check-sentences", "0"]
    if "--check-sentences" in argv:
        args = args[:-2]
    assert_one_line_error(args, capfd, match=match)


def test_refuses_to_replace_a_foreign_final(folders, capfd):
    assert_one_line_error(["quantize", folders / "ours", "-o", folders / "taken", "--check-sentences", "0"], capfd,
                          match=r"taken: already holds a final/ folder that `qazlm quantize` did not write")
    assert (folders / "taken" / "final" / "config.json").read_text() == "{}"


def test_unwritable_output_folder(folders, tmp_path, capfd):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(["quantize", folders / "ours", "-o", tmp_path / "file" / "out", "--check-sentences", "0"],
                          capfd, match=r"cannot write to the output folder")
