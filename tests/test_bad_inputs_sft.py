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
    (["--task-sizes", "safty_refusal=9"], r"task_sizes: unknown task 'safty_refusal'; did you mean 'safety_refusal'"),
    (["--tasks", "identity", "--task-sizes", "safety_refusal=9"], r"task_sizes.safety_refusal: .* not in tasks"),
    (["--task-sizes", "identity=0"], r"task_sizes.identity = 0: must be >= 1"),
    (["--task-sizes", "identity=2.5"], r"task_sizes.*whole number"),
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


# ------------------------------------------------------------------------------------------------ qazlm sft
CONVERSATION = {"messages": [{"role": "user", "content": "Сәлем!"}, {"role": "assistant", "content": "Сәлем!"}]}
PLAIN_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
                "{% endfor %}")


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory, tiny_tokenizer_dir):
    """Our tiny model folder, an HF folder without a chat template, one with a marker-less ChatML template,
    and data folders: good, empty, malformed."""
    import json

    from test_eval_helpers import make_hf_folder, make_our_folder

    root = tmp_path_factory.mktemp("sft_bad")
    make_our_folder(tiny_tokenizer_dir, root / "ours")
    make_hf_folder(tiny_tokenizer_dir, root / "hf")
    make_hf_folder(tiny_tokenizer_dir, root / "hf_plain")
    cfg = json.loads((root / "hf_plain" / "tokenizer_config.json").read_text())
    (root / "hf_plain" / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": PLAIN_CHATML}))
    for name, text in {"data": json.dumps(CONVERSATION, ensure_ascii=False) + "\n", "empty": "",
                       "malformed": '{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'}.items():
        (root / name).mkdir()
        (root / name / "train.jsonl").write_text(text, encoding="utf-8")
    return root


SFT_CASES = [  # (argv after `sft`, regex the error line must match)
    (["{r}/ours", "--data", "{r}/missing"], r"missing: no such data folder; build one with `qazlm sft-data"),
    (["{r}/ours", "--data", "{r}/empty"], r"empty/train.jsonl: no usable conversations"),
    (["{r}/ours", "--data", "{r}/malformed"], r"no usable conversations \(2 lines set aside, e.g. line 1: no assistant turn"),
    (["{r}/ours", "--data", "{r}/data", "--lr", "nan"], r"\[sft\] lr = nan: expected a finite number"),
    (["{r}/ours", "--data", "{r}/data", "--max-steps", "0"], r"max_steps = 0: give a number of steps >= 1"),
    (["{r}/ours", "--data", "{r}/data", "--set", "device=gpu"], r"device = 'gpu': choose from"),
    (["{r}/ours", "--data", "{r}/data", "--set", "lr_rate=1"], r"unknown key 'lr_rate'"),
    (["{r}/ours", "--data", "{r}/data", "--set", "lora.r=0"], r"\[sft.lora\] r = 0: must be >= 1"),
    (["{r}/ours", "--data", "{r}/data", "--max-len", "512", "--lora", "--set", "lora.target_modules=attn"],
     r"target_modules: 'attn' matches no layer of .*ours; available: down_proj, gate_proj"),
    (["{r}/ours", "--data", "{r}/data", "--max-len", "1024"],
     r"max_len = 1024 is longer than the context of .*ours \(512 tokens\); lower max_len, or pretrain with "
     r"\[pretrain\] model_overrides = \{ max_seq_len = 1024 \}"),
    (["{r}/hf", "--data", "{r}/data"], r"hf: has no chat template; set chat_template = \"qazlm\""),
    (["{r}/hf_plain", "--data", "{r}/data"], r"hf_plain: chat template is not training-compatible.*chat_template = \"qazlm\""),
    (["{r}/nomodel", "--data", "{r}/data"], r"nomodel: model folder not found"),
    (["--data", "{r}/data"], r"\[sft\] model: not set"),
]


@pytest.mark.parametrize("argv, match", SFT_CASES, ids=[" ".join(c[0][1:]) or c[0][0] for c in SFT_CASES])
def test_sft_bad_input_is_one_line(argv, match, sft_inputs, tmp_path, capfd):
    args = ["sft", *[a.format(r=sft_inputs) for a in argv], "-o", str(tmp_path / "out"), "--max-steps", "1"]
    if "--max-steps" in argv:
        args = args[:-2]
    assert_one_line_error(args, capfd, match=match)
