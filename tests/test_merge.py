"""`qazlm merge`: mergekit's linear soup and task arithmetic give the exact weighted weights, the folder loads in
transformers with the chat template, its lineage names every input, reruns are skipped, bad inputs are one line."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cli_harness import run_cli  # noqa: E402
from test_eval_helpers import make_hf_folder, make_our_folder  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    root = tmp_path_factory.mktemp("merge")
    first = make_hf_folder(tiny_tokenizer_dir, root / "a", seed=1)
    tok = AutoTokenizer.from_pretrained(first)
    tok.chat_template = CHAT_TEMPLATE   # the first model's chat template is the merged folder's
    tok.save_pretrained(first)
    return {"a": first,
            "b": make_hf_folder(tiny_tokenizer_dir, root / "b", seed=2),
            "base": make_hf_folder(tiny_tokenizer_dir, root / "base", seed=3),
            "ours": make_our_folder(tiny_tokenizer_dir, root / "ours"),
            "ours2": make_our_folder(tiny_tokenizer_dir, root / "ours2", seed=5)}


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_linear_soup_is_the_normalized_weighted_mean(models, tmp_path, capfd):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "soup"
    soup = ["merge", str(models["a"]), str(models["b"]), "--weights", "3,1", "-o", str(out)]
    code, out_text, err = run_cli(soup, capfd)
    assert code == 0, err
    merged, a, b = weights(out / "final"), weights(models["a"]), weights(models["b"])
    assert merged.keys() == a.keys()
    for k in a:
        torch.testing.assert_close(merged[k], 0.75 * a[k] + 0.25 * b[k], rtol=0, atol=1e-6)
    model = AutoModelForCausalLM.from_pretrained(out / "final", local_files_only=True)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    tok = AutoTokenizer.from_pretrained(out / "final")
    assert tok.apply_chat_template([{"role": "user", "content": "Сәлем"}], tokenize=False,
                                   add_generation_prompt=True).endswith("<|im_start|>assistant\n")
    lineage = json.loads((out / "final" / "qazlm_lineage.json").read_text())
    assert lineage["stage"] == "merge" and lineage["method"] == "linear"
    assert [m["weight"] for m in lineage["models"]] == [0.75, 0.25]
    assert lineage["parent"]["path"] == str(models["a"].resolve()) and len(lineage["parent"]["fingerprint"]) == 64
    code, out_text, err = run_cli(soup, capfd)
    assert code == 0 and "up to date" in out_text + err


def test_package_card_names_every_merged_input(models, tmp_path, capfd):
    from qazlm.package.card import lineage
    from qazlm.package.facts import collect

    out = tmp_path / "soup"
    assert run_cli(["merge", str(models["a"]), str(models["b"]), "-o", str(out)], capfd)[0] == 0
    facts = collect(out / "final")
    assert facts["root"]["folder"] == str(models["a"].resolve())    # the first input's chain leads to the root
    line = lineage(facts).splitlines()[-1]
    assert line.startswith(f"- merge: `{out / 'final'}` from `{models['a'].resolve()}`")
    assert f"merged with `{models['b'].resolve()}` (weight 0.5, sha256 `" in line


def test_task_arithmetic_adds_weighted_differences_to_the_base(models, tmp_path, capfd):
    import torch

    out = tmp_path / "ta"
    code, out_text, err = run_cli(["merge", str(models["a"]), str(models["b"]), "--method", "task_arithmetic",
                        "--base", str(models["base"]), "--weights", "1,0.5", "-o", str(out)], capfd)
    assert code == 0, err
    merged, a, b, base = (weights(f) for f in (out / "final", models["a"], models["b"], models["base"]))
    for k in a:
        torch.testing.assert_close(merged[k], base[k] + (a[k] - base[k]) + 0.5 * (b[k] - base[k]),
                                   rtol=0, atol=1e-5)


def test_our_folders_are_exported_then_merged(models, tmp_path, capfd):
    """Equal weights of a model with itself is the model: the exported logits come back unchanged."""
    import torch
    from transformers import AutoModelForCausalLM

    from qazlm.model.hf import to_transformers

    out = tmp_path / "self"
    code, out_text, err = run_cli(["merge", str(models["ours"]), str(models["ours"]), "-o", str(out)],
                                  capfd)
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(out / "final", local_files_only=True).eval()
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, to_transformers(models["ours"])(ids).logits,
                                   rtol=0, atol=1e-5)
    assert (out / "final" / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (out / "final" / "tokenizer_config.json").read_text())


@pytest.mark.parametrize("extra, expected", [
    (["{a}"], "1 model folder(s) given; give at least two"),
    (["{a}", "{b}", "--weights", "1"], "--weights has 1 values for 2 models"),
    (["{a}", "{b}", "--weights", "1,nan"], "--weights value nan: each weight must be a finite number > 0"),
    (["{a}", "{b}", "--weights", "1,-2"], "--weights value -2.0"),
    (["{a}", "{b}", "--weights", "1,x"], "expected a number, got 'x'"),
    (["{a}", "{b}", "--method", "ties"], "--method 'ties': choose from linear, task_arithmetic"),
    (["{a}", "{b}", "--method", "task_arithmetc"], "did you mean 'task_arithmetic'?"),
    (["{a}", "{b}", "--method", "task_arithmetic"], "needs --base"),
    (["{a}", "{b}", "--base", "{base}"], "--base is only used by --method task_arithmetic"),
    (["{a}", "{ours}"], "differ in tensor"),
    (["{a}", "{a}/missing"], "model folder not found"),
])
def test_bad_inputs_are_one_line(models, tmp_path, capfd, extra, expected):
    args = [x.format(**{k: str(v) for k, v in models.items()}) for x in extra]
    code, out_text, err = run_cli(["merge", *args, "-o", str(tmp_path / "out")], capfd)
    assert code == 2 and expected in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "final").exists()


def test_bin_weights_are_refused_not_unpickled(models, tmp_path, capfd):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(models["b"], pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    code, out_text, err = run_cli(["merge", str(models["a"]), str(pickled), "-o", str(tmp_path / "out")],
                                  capfd)
    assert code == 2 and "no .safetensors weights" in err


def test_a_final_folder_merge_did_not_write_is_never_replaced(models, tmp_path, capfd):
    out = tmp_path / "run"
    (out / "final").mkdir(parents=True)
    (out / "final" / "model.safetensors").write_bytes(b"someone else's model")
    code, out_text, err = run_cli(["merge", str(models["a"]), str(models["b"]), "-o", str(out)], capfd)
    assert code == 2 and "already holds a final/ folder that `qazlm merge` did not write" in err
    assert (out / "final" / "model.safetensors").read_bytes() == b"someone else's model"
