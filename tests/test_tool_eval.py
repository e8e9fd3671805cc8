"""`qazlm eval --tools`: BFCL-style categories on held-out and unseen-tool conversations, through the real CLI."""

from __future__ import annotations

import json
import os
import re

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cli_harness import assert_one_line_error, run_cli  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, corpus):
    from test_eval_helpers import make_hf_folder

    from qazlm.sft.data import SftDataConfig, run
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("tool_eval")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=2000), root / "tok", show_progress=False)
    model = make_hf_folder(root / "tok", root / "model", max_pos=2048)  # tool definitions make long prompts
    tools = ["tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant"]
    run(SftDataConfig(out_dir=str(root / "data"), tasks=tools, per_task=40, decontaminate=[],
                      heldout_fraction=0.3))
    run(SftDataConfig(out_dir=str(root / "plain"), tasks=["identity"], per_task=10, decontaminate=[]))
    return root, model


def test_report_covers_every_category_and_split(setup, capfd):
    root, model = setup
    code, out, err = run_cli(["eval", "--tools", "--sft-data", root / "data", model, "-o", root / "out",
                              "--limit", "2", "--max-new-tokens", "48"], capfd)
    assert code == 0, err
    report = json.loads((root / "out" / "tools_report.json").read_text())
    scores = report["models"][0]["scores"]
    assert set(scores) == {"seen", "unseen"}
    for split in scores.values():
        assert set(split) == {"tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant"}
        for cat, c in split.items():
            assert c["n"] == 2
            if cat == "tool_irrelevant":
                assert c["irrelevance"] is not None and c["valid_constrained"] is None
            else:  # under the grammar every reply is a valid call unless max_new_tokens cut it inside a value
                assert c["valid_constrained"] + c["cut_constrained"] == pytest.approx(1.0)
                assert c["exact_constrained"] <= c["tools_constrained"] <= 1.0  # an exact call has the right tool
    rows = [json.loads(x) for x in (root / "out" / "tools_replies.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(r["constrained"]["text"].startswith("<tool_call>") for r in rows if r["constrained"])
    md = (root / "out" / "tools_report.md").read_text()
    assert "| unseen | parallel | 2 |" in md
    # irrelevance of 2 items is shown with its 95% Wilson interval, as the chat and safety reports show theirs
    assert re.search(r"\| unseen \| irrelevant \| 2 \|.* \d+\.\d% \[\d+–\d+\] \|$", md, re.M)
    assert re.search(r"Final answers in the user's language: (—|\d+\.\d%( \[\d+–\d+\])?) of \d+ ", md)


def test_batched_replies_equal_one_by_one_decoding(setup):
    """All replies go through the continuous batcher at once (each request with its own tools and grammar):
    the same text as `generate_chat` on each conversation alone, free, grammar-forced and final answer."""
    from qazlm.eval.tools import ToolEvalSettings, read_items, replies
    from qazlm.infer.engine import generate_chat
    from qazlm.infer.loading import load_model
    from qazlm.infer.sampling import SamplingParams

    root, model = setup
    s = ToolEvalSettings(sft_data=str(root / "data"), limit=2, max_new_tokens=24)
    items, loaded = read_items(s.sft_data, s.limit), load_model(model)
    params = SamplingParams(max_new_tokens=s.max_new_tokens)

    def alone(conv, it, force=False):
        return generate_chat(loaded.model, loaded.tokenizer, [conv], params, tools=it["tools"],
                             force_tool_calls=force)[0]

    got = replies(loaded, items, s)
    assert sum(r[1] is not None for r in got) >= 8 and sum(r[2] is not None for r in got) >= 8
    for it, (free, forced, answer) in zip(items, got):
        assert free == alone(it["prompt"], it)
        assert forced == (alone(it["prompt"], it, force=True) if it["expected"] else None)
        assert answer == (alone(it["answer_context"], it) if it["answer_context"] else None)


def test_bad_inputs_are_one_line(setup, capfd):
    root, model = setup
    assert_one_line_error(["eval", "--tools", model, "-o", root / "x"], capfd, match=r"give --sft-data DIR")
    assert_one_line_error(["eval", "--tools", "--chat", "--sft-data", root / "data", model, "-o", root / "x"], capfd,
                          match="separate evaluations")
    assert_one_line_error(["eval", "--tools", "--sft-data", root / "plain", model, "-o", root / "x"], capfd,
                          match="no tool-use conversations")
    from test_eval_helpers import make_hf_folder

    short = make_hf_folder(root / "tok", root / "short", max_pos=256)  # no conversation fits: one line, no report
    assert_one_line_error(["eval", "--tools", "--sft-data", root / "data", short, "-o", root / "y", "--limit", "1"],
                          capfd, match=r"every conversation \+ max_new_tokens \(96\) exceeds the model's context")
    import shutil

    from test_chat_template import PLAIN_CHATML

    deaf = root / "deaf"   # a Hub-style template that drops `tools`: the model would never see them
    shutil.copytree(model, deaf)
    (deaf / "chat_template.jinja").write_text(PLAIN_CHATML)
    assert_one_line_error(["eval", "--tools", "--sft-data", root / "data", deaf, "-o", root / "z", "--limit", "1"],
                          capfd, match=r"deaf: its chat template does not render tools")


def test_stage_scores_the_runs_chat_model_and_skips_when_done(setup, tmp_path, capsys):
    import shutil

    from qazlm.eval.model_stages import run_tool_eval as run_stage
    from qazlm.runs import RunConfig, RunContext

    root, model = setup
    shutil.copytree(model, tmp_path / "sft" / "final")
    shutil.copytree(root / "data", tmp_path / "sft_data")
    ctx = RunContext(RunConfig(out_dir=str(tmp_path)), tmp_path / "recipe.toml")
    run_stage({"limit": 1, "max_new_tokens": 16}, ctx)
    report = json.loads((tmp_path / "tool_eval" / "tools_report.json").read_text())
    assert report["models"][0]["path"] == str(tmp_path / "sft" / "final")
    run_stage({"limit": 1, "max_new_tokens": 16}, ctx)
    assert "skipping" in capsys.readouterr().out
    shutil.copytree(model, tmp_path / "dpo" / "final")              # a DPO model joins: the stage redoes with it
    run_stage({"limit": 1, "max_new_tokens": 16}, ctx)
    report = json.loads((tmp_path / "tool_eval" / "tools_report.json").read_text())
    assert [m["path"] for m in report["models"]] == [str(tmp_path / d / "final") for d in ("sft", "dpo")]


def test_malformed_lines_are_counted_not_fatal(setup, tmp_path, capsys):
    import shutil

    from qazlm.eval.tools import read_items

    root, _ = setup
    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    with open(data / "heldout.jsonl", "a", encoding="utf-8") as f:
        f.write('{"task": "tool_simple", "tools": [1], "messages": [\n{not json\n')
    items = read_items(data, None)
    assert items and "2 malformed lines" in capsys.readouterr().out


def test_model_card_shows_the_scores(setup, tmp_path, capfd):
    import shutil

    from qazlm.package.card import tool_table
    from qazlm.package.facts import tool_eval_entry

    root, model = setup
    code, _, err = run_cli(["eval", "--tools", "--sft-data", root / "data", model, "-o", tmp_path / "tool_eval",
                            "--limit", "1", "--max-new-tokens", "16"], capfd)
    assert code == 0, err
    entry = tool_eval_entry(tmp_path, [tmp_path / "quantized", model])    # a model quantized from the scored one
    report = json.loads((tmp_path / "tool_eval" / "tools_report.json").read_text())
    assert entry["scores"] == report["models"][0]["scores"]
    table = "\n".join(tool_table(entry))
    assert "| unseen | parallel | 1 |" in table and "| seen | irrelevant | 1 |" in table
    simple = entry["scores"]["seen"]["tool_simple"]
    assert f"| seen | simple | 1 | {100 * simple['exact']:.1f}% | {100 * simple['tools_constrained']:.1f}% |" in table
    assert f"Function calling of `{report['models'][0]['path']}`" in table
    irrelevant = entry["scores"]["seen"]["tool_irrelevant"]  # one item: the interval spans most of [0, 100]
    assert f"| seen | irrelevant | 1 | {100 * irrelevant['exact']:.1f}% | — | — | " \
           f"{100 * irrelevant['irrelevance']:.1f}% [" in table
    shutil.rmtree(tmp_path / "tool_eval")
    assert tool_eval_entry(tmp_path, [model]) is None and tool_table(None) == []
