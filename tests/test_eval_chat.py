"""`qazlm eval --chat` and the [chat_eval] stage: metrics on hand-made replies, the expected reply language of
each kind of item, an oracle model through the engine's interface, and the real CLI end to end."""

from __future__ import annotations

import json

import pytest
from test_eval_helpers import make_hf_folder, make_our_folder

from qazlm.cli import main
from qazlm.eval import chat
from qazlm.eval.chat_items import asked_language, expected_language, heldout_items, multiturn_items

KK = "Бүгін ауа райы өте жақсы, біз саябаққа барамыз."
RU = "Сегодня очень хорошая погода, мы идём в парк."
EN = "The weather is very nice today, we are going to the park."


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_tokenizer_dir):
    return make_our_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("chat_eval") / "final")


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory, shared):
    """A real `qazlm sft-data` folder, small: seven tasks, half of each held out, no decontamination index."""
    from qazlm.sft.data import SftDataConfig, run

    out = tmp_path_factory.mktemp("sftdata") / "sft_data"
    run(SftDataConfig(out_dir=str(out), per_task=6, heldout_fraction=0.5, decontaminate=[],
                      tasks=["translation", "multiturn", "topic", "system_language", "count_words", "script_latin",
                             "tool_simple"]))
    return out


# ------------------------------------------------------------------------------------------- metrics
def test_eot_rate_counts_each_ending():
    assert chat.eot_rate(["eot", "eot", "eot", "limit", "eos"]) == {"rate": 0.6, "n": 5, "eot": 3, "eos": 1,
                                                                     "limit": 1, "long_reference": 0}
    assert chat.eot_rate([])["rate"] is None
    # a reply that hits the limit where the right answer alone is longer is not judged
    assert chat.eot_rate(["eot", "limit", "limit"], fits=[True, False, True]) == {
        "rate": 0.5, "n": 2, "eot": 1, "eos": 0, "limit": 1, "long_reference": 1}


def test_a_reference_fits_when_it_and_the_end_of_turn_are_within_the_limit(tiny_tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tiny_tokenizer_dir / "tokenizer.json"))
    n = len(tok.encode("Бұл сөйлем қысқа емес.", add_special_tokens=False))
    assert chat.reference_fits(tok, ["Бұл сөйлем қысқа емес.", None], n + 1) == [True, True]
    assert chat.reference_fits(tok, ["Бұл сөйлем қысқа емес."], n) == [False]


def test_fidelity_counts_the_right_language_and_leaves_out_short_replies():
    pairs = [("kk", KK), ("kk", RU), ("kk", "спорт"), ("ru", RU), ("en", EN), ("en", "42"), ("en", KK), (None, EN)]
    f = chat.fidelity(pairs)
    assert f["kk"] == {"rate": 0.5, "n": 2, "in_language": 1, "too_short": 1, "wrong_as": {"ru": 1}}
    assert f["ru"]["rate"] == 1.0 and f["ru"]["n"] == 1
    assert f["en"] == {"rate": 0.5, "n": 2, "in_language": 1, "too_short": 1, "wrong_as": {"kk": 1}}
    assert f["all"]["rate"] == pytest.approx(3 / 5) and f["all"]["too_short"] == 2 and f["all"]["not_judged"] == 1
    assert chat.reply_language("Иә, дұрыс") is None  # two words: too short to tell


def test_exact_match_normalization_and_chrf_pinned():
    assert chat.normalize_answer("  «Спорт».\n") == "спорт"
    assert chat.exact_match("Health!", "health") and chat.exact_match("ғылым/технология", "Ғылым/Технология")
    assert not chat.exact_match("спорт бұл", "спорт") and not chat.exact_match("8 сөз", "8")
    assert chat.chrf(["The cat sat on the mat."], ["The cat is sitting on the mat."]) == pytest.approx(49.64852, abs=1e-4)
    assert chat.chrf(["same text"], ["same text"]) == pytest.approx(100.0)


def test_task_scores_group_by_task_with_chance_and_majority():
    items = [{"set": "sib200", "task": "sib200_kk", "metric": "exact", "reference": r}
             for r in ("спорт", "спорт", "саясат", "саяхат")]
    items.append({"set": "heldout", "task": "translation", "metric": "chrf", "reference": "same text"})
    scores = chat.task_scores(items, ["Спорт.", "спорт", "спорт", "—", "same text"])
    assert scores["sib200:sib200_kk"] == {"metric": "exact", "value": 0.5, "n": 4, "chance": 1 / 7, "majority": 0.5}
    assert scores["heldout:translation"]["value"] == pytest.approx(100.0)


# ------------------------------------------------------------------------------------------- expected language
def test_expected_language_of_each_kind_of_item():
    from qazlm.sft.prompts import P

    def user(text):
        return [{"role": "user", "content": text}]

    for src in ("kk", "ru", "en"):
        for tgt in ("kk", "ru", "en"):
            if src != tgt:
                msg = P[src]["translate"].format(tgt=P[src]["lang"][tgt], text=KK)
                assert expected_language("translation", src, user(msg)) == tgt, (src, tgt)
                assert asked_language(P[src]["now_into"].format(tgt=P[src]["lang"][tgt]), src) == tgt
    # system_language: `lang` is the language the system prompt asks for, the user writes in another one
    sys_msgs = [{"role": "system", "content": P["ru"]["only_lang"]}, *user(P["en"]["what_says"].format(text=EN))]
    assert expected_language("system_language", "ru", sys_msgs) == "ru"
    assert expected_language("script_latin", "kk", user("Мына мәтінді қазақ латын әліпбиіне (2021) көшіріңіз:\nx")) is None
    assert expected_language("topic", "kk", user("Мәтіннің тақырыбын анықтаңыз.")) == "kk"
    assert expected_language("external", "und", user(RU)) == "ru"
    assert expected_language("followup_latin", "en", user("Now write it in the Kazakh Latin alphabet (2021).")) is None
    assert expected_language("title", "ru", user("Как называется статья?")) is None  # a Kazakh name whatever the ask
    assert expected_language("morph_inflect", "en", user("Put the Kazakh word «ауыл» into this form")) == "kk"


def test_a_flores_prompt_expects_its_target_language():
    """A FLORES+ translation reply belongs in the language asked for, not the source's (the report judged
    kk->ru replies as Kazakh before)."""
    from qazlm.eval.chat_items import flores_items

    items = flores_items(1)
    assert sorted((it["lang"], it["expect"]) for it in items) == sorted(
        [("kk", "ru"), ("kk", "en"), ("ru", "kk"), ("ru", "en"), ("en", "kk"), ("en", "ru")])
    assert all(it["task"] == f"flores_{it['lang']}_{it['expect']}" for it in items)


def test_a_follow_up_is_asked_for_its_last_reply_with_the_reference_first_reply():
    msgs = [{"role": "user", "content": "Translate the text into Kazakh:\n" + EN}, {"role": "assistant", "content": KK},
            {"role": "user", "content": "How many words are in your answer? Write only the number."},
            {"role": "assistant", "content": "7"}]
    (it,) = heldout_items([{"messages": msgs, "task": "followup_count", "lang": "en"}], limit=None)
    assert it["messages"] == msgs[:3] and it["reference"] == "7" and it["metric"] == "exact" and it["expect"] == "en"


def test_heldout_and_multiturn_items_from_a_real_sft_data_folder(sft_data):
    from qazlm.eval.chat_items import read_heldout

    records, rejected = read_heldout(sft_data)
    assert rejected == []  # tool-use conversations are valid, not malformed; the tool evaluation scores them
    assert any(r["task"] == "tool_simple" for r in records)
    items = heldout_items(records, limit=None)
    assert {it["task"] for it in items} == {"translation", "topic", "system_language", "count_words", "script_latin"}
    assert all(it["messages"][-1]["role"] == "user" for it in items)
    for it in items:
        if it["task"] == "translation":  # the reference is the aligned line in the asked language
            from qazlm.text.langid import detect_language
            assert detect_language(it["reference"])[0] == it["expect"] != it["lang"]
        if it["task"] == "count_words":
            assert it["metric"] == "exact" and it["reference"].isdigit()
    turns = multiturn_items(records, limit=None)
    assert turns and all(len(t["messages"]) == 3 and t["expect"] not in (t["lang"], None) for t in turns)
    first = next(r for r in records if r["task"] == "multiturn")
    assert turns[0]["messages"][1] == first["messages"][1]  # the reference first reply stays in the context
    assert len(heldout_items(records, limit=1)) == 5


def test_instruction_wording_equals_sft_data():
    """eval may not import sft, so the wording lives in qazlm.text.instructions; it must stay identical."""
    from qazlm.sft import prompts
    from qazlm.text import instructions

    assert instructions.SIB_LABELS == prompts.SIB_LABELS and instructions.TOPIC_LABELS == prompts.LABELS
    for lang in ("kk", "ru", "en"):
        assert instructions.LANG_NAMES[lang] == prompts.P[lang]["lang"]
        assert instructions.TRANSLATE[lang] == prompts.P[lang]["translate"]
        assert instructions.NOW_INTO[lang] == prompts.P[lang]["now_into"]
        assert instructions.TOPIC[lang] == prompts.P[lang]["topic"]


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture
def oracle(monkeypatch, tiny_tokenizer_dir):
    """The engine's `generate_ids` replaced by a model that answers every prompt with its reference and then
    `<|im_end|>` (the stop token is not returned, as in the engine)."""
    import qazlm.infer.engine as engine
    from qazlm.infer.chat import render_chat
    from qazlm.infer.loading import load_tokenizer

    tok, answers, calls = load_tokenizer(tiny_tokenizer_dir), {}, []

    def learn(items):
        for it in items:
            answers[render_chat(tok, it["messages"])] = it["reference"]

    def generate_ids(model, prompt_ids, params, **kw):
        calls.append((len(prompt_ids), kw["stop_token_ids"]))
        out = [tok(answers[tok.decode(p)], add_special_tokens=False)["input_ids"] for p in prompt_ids]
        assert all(len(o) < params.max_new_tokens for o in out)
        return out

    monkeypatch.setattr(engine, "generate_ids", generate_ids)
    return learn, calls


def test_an_oracle_model_scores_full_marks(model, sft_data, oracle, tmp_path, shared):
    from qazlm.eval.chat_items import build_items, read_heldout

    learn, calls = oracle
    sets = ["heldout", "multiturn", "sib200"]
    learn(build_items(sets, read_heldout(sft_data)[0], limit=None, sib_limit=3, flores_per_direction=None,
                      data_dir=None)[0])
    s = chat.ChatEvalSettings(sft_data=str(sft_data), sets=sets, limit=None, sib_limit=3, max_new_tokens=200,
                              batch_size=4, samples=1)
    result = chat.evaluate_chat([model], s, log=lambda *_: None)
    m = result["models"][0]
    assert m["eot"]["rate"] == 1.0 and m["eot"]["n"] == result["items"]["n"] and m["skipped_items"] == 0
    assert m["fidelity"]["all"]["rate"] == 1.0 and m["fidelity"]["all"]["n"] > 0
    assert all(r["value"] == pytest.approx(1.0 if r["metric"] == "exact" else 100.0) for r in m["tasks"].values())
    assert m["multiturn"]["fidelity"] == 1.0
    im_end = 3  # the tiny tokenizer's <|im_end|>
    assert all(stops == [im_end] and n <= 4 for n, stops in calls)  # batched, stopping at the end of turn


def test_cli_writes_report_for_two_models(model, sft_data, tmp_path, shared, tiny_tokenizer_dir):
    """Ours beside a transformers model (what `qazlm sft` writes), both through the one engine."""
    hf = make_hf_folder(tiny_tokenizer_dir, tmp_path / "sft" / "final", max_pos=512)
    out = tmp_path / "chat"
    rc = main(["eval", "--chat", "--sft-data", str(sft_data), str(model), str(hf), "-o", str(out), "--limit", "1",
               "--sib-limit", "1", "--flores-per-direction", "1", "--max-new-tokens", "6", "--samples", "1"])
    assert rc == 0
    for name in ("chat_report.md", "chat_report.json", "chat_eval.png", "replies.jsonl", ):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "chat_report.json").read_text())
    assert rep["format"] == "qazlm-chat-eval-v1" and rep["items"]["by_set"]["flores"] == 6
    a, b = rep["models"]
    assert (a["kind"], b["name"], b["kind"]) == ("qazlm", "sft/final", "hf") and a["name"].endswith("/final")
    assert set(a["fidelity"]) == {"kk", "ru", "en", "all"} and a["eot"]["n"] + a["eot"]["long_reference"] == rep["items"]["n"]
    assert 0 < a["eot"]["long_reference"] == b["eot"]["long_reference"]  # 6 new tokens: most references are longer
    assert {"sib200:sib200_kk", "flores:flores_kk_en", "flores:flores_en_ru", "heldout:count_words"} <= set(a["tasks"])
    assert a["tasks"]["sib200:sib200_kk"]["chance"] == pytest.approx(1 / 7)
    md = (out / "chat_report.md").read_text()
    assert a["refusals"]["all"]["n"] == rep["items"]["n"] - a["skipped_items"]  # no safety_refusal item here
    for part in ("## Language fidelity", "## End of turn", "## Refusals of ordinary requests", "## Tasks",
                 "## Multi-turn", "## Sample dialogues",
                 "too short", "| kk |", a["name"], b["name"], "95% Wilson interval"):
        assert part in md, part
    from qazlm.stats import interval_text
    eot = f"{100 * b['eot']['rate']:.1f}% {interval_text(b['eot']['rate'], b['eot']['n'])}"
    assert "| **end-of-turn rate** | " in md and eot in md.split("end-of-turn rate**")[1].splitlines()[0]
    lines = (out / "replies.jsonl").read_text().splitlines()
    assert len(lines) == 2 * rep["items"]["n"] and {"reply", "end", "expect"} <= set(json.loads(lines[0]))


def test_stage_base_only_with_a_note_then_skips(model, sft_data, tmp_path, shared, capsys):
    import shutil

    from qazlm.errors import QazlmError
    from qazlm.eval.chat_stage import run_stage
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=tmp_path / "r.toml")
    section = {"sets": ["heldout"], "limit": 1, "max_new_tokens": 4}
    with pytest.raises(QazlmError, match="run the sft_data stage first"):
        run_stage(section, ctx)
    shutil.copytree(sft_data, ctx.stage_dir("sft_data"))
    with pytest.raises(QazlmError, match="no model to evaluate"):
        run_stage(section, ctx)
    shutil.copytree(model, ctx.stage_dir("pretrain") / "final")
    run_stage(section, ctx)
    out = capsys.readouterr().out
    assert "sft/final not found; sft model skipped" in out
    rep = json.loads((ctx.stage_dir("chat_eval") / "chat_report.json").read_text())
    assert [m["name"] for m in rep["models"]] == ["base (pretrain/final)"]
    assert (ctx.stage_dir("chat_eval") / "qazlm_stage.json").exists()
    run_stage(section, ctx)
    assert "is complete with these settings; skipping" in capsys.readouterr().out
    shutil.copytree(model, ctx.stage_dir("dpo") / "final")      # a DPO model joins: the stage redoes with it
    run_stage(section, ctx)
    rep = json.loads((ctx.stage_dir("chat_eval") / "chat_report.json").read_text())
    assert [m["name"] for m in rep["models"]] == ["base (pretrain/final)", "dpo (dpo/final)"]


def test_refusals_of_ordinary_requests_by_language_and_set():
    """The chat report's refusal rate: the prompts a model should answer, by the user's language and prompt set;
    the held-out safety items, which should be refused, are left out."""
    from qazlm.eval.chat import refusals

    items = [{"lang": "en", "set": "sib200", "task": "sib200_en"}, {"lang": "en", "set": "sib200", "task": "sib200_en"},
             {"lang": "ru", "set": "flores", "task": "flores_ru_en"},
             {"lang": "kk", "set": "heldout", "task": "safety_refusal"}]
    replies = ["Sorry, I can't help with that.", "science/technology", "Извините, я не могу с этим помочь.",
               "Кешіріңіз, бұған көмектесе алмаймын."]
    r = refusals(items, replies)
    assert r["by_lang"]["en"] == {"rate": 0.5, "n": 2, "refused": 1}
    assert r["by_lang"]["ru"] == {"rate": 1.0, "n": 1, "refused": 1}
    assert r["by_lang"]["kk"] == {"rate": None, "n": 0, "refused": 0}  # its only item is a safety item
    assert r["all"] == {"rate": pytest.approx(2 / 3), "n": 3, "refused": 2}
    assert list(r["by_set"]) == ["sib200", "flores"]
