"""Stage 6: preference pairs right by construction, a reward model (TRL RewardTrainer) and DPO (TRL DPOTrainer)
on a tiny random Qwen3 with qazlm's chat template — folders that transformers loads as is, reports with the
held-out figures, and one-line errors for bad input."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from cli_harness import TORCHRUN_2, assert_one_line_error, logged_steps, run_cli, weights_diff

os.environ.setdefault("HF_HUB_OFFLINE", "1")
TASKS = ("count_words,count_sentences,title,keywords,continue,tool_simple,tool_multiple,tool_irrelevant,"
         "safety_refusal")


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory, shared):
    from qazlm.sft.data import SftDataConfig, run

    out = tmp_path_factory.mktemp("align") / "sft_data"
    run(SftDataConfig(out_dir=str(out), tasks=TASKS.split(","), per_task=24, decontaminate=[], seed=3))
    return out


@pytest.fixture(scope="module")
def pref(sft_data, tmp_path_factory):
    from qazlm.align.pairs import PrefDataConfig, run

    out = tmp_path_factory.mktemp("align") / "pref"
    run(PrefDataConfig(sft_data=str(sft_data), out_dir=str(out), per_type=30, seed=1), log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory, corpus):
    from serve_harness import tiny_chat_model

    return tiny_chat_model(tmp_path_factory.mktemp("align_model"), corpus, max_pos=512)


def rows(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_metrics_count_tokens(out, steps: int) -> None:
    """metrics.jsonl as `qazlm sft` writes it: a header with the device, then per logging window the tokens of
    the batches trained on (attention-masked, so fewer than the padded total), never the zeros of an unfed counter."""
    rows_ = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows_[0]["step"] == 0 and rows_[0]["device"] == "cpu" and rows_[0]["train_pairs"] > 0
    logged = [r for r in rows_ if "loss" in r]
    assert logged and logged[-1]["step"] == steps
    assert all(r["tokens"] > 0 and r["tokens_per_s"] > 0 and 0 <= r["pad_share"] < 1 for r in logged)
    assert list((out / "tb").glob("events.out.tfevents.*"))     # TensorBoard, as qazlm sft writes it


def test_pairs_are_right_by_construction(pref, sft_data):
    from qazlm.align.pairs import why_not

    train, held = rows(pref, "train"), rows(pref, "heldout")
    card = json.loads((pref / "card.json").read_text())
    assert card["pairs"] == {"train": len(train), "heldout": len(held), "rejected": len(rows(pref, "rejected"))}
    assert {p["type"] for p in train} == {"language", "tool_call", "tool_irrelevant", "computed", "concise",
                                          "refusal", "over_refusal", "harmless_en"}
    assert {p["lang"] for p in train} == {"kk", "ru", "en"}
    assert all(why_not(p) is None for p in train + held)
    assert not {json.dumps(p["prompt"]) for p in train} & {json.dumps(p["prompt"]) for p in held}
    for p in train:
        good, bad = p["chosen"][0], p["rejected"][0]
        if p["type"] == "tool_call":
            names = {t["function"]["name"] for t in json.loads(p["tools"])}
            if "tool_calls" not in bad:   # broken JSON: the call written as text, which no parser accepts
                from qazlm.infer.tools import parse_tool_calls

                parsed = parse_tool_calls(bad["content"], json.loads(p["tools"]))
                assert bad["content"].startswith("<tool_call>") and parsed.errors and not parsed.tool_calls, p
                continue
            call = bad["tool_calls"][0]["function"]
            broken = call["name"] not in names
            try:
                args = json.loads(call["arguments"])
            except ValueError:
                broken = True
            else:
                want = json.loads(good["tool_calls"][0]["function"]["arguments"])
                wrong_tool = call["name"] != good["tool_calls"][0]["function"]["name"]
                broken = broken or wrong_tool or args != want    # missing, misread or another tool's call
            assert broken, p
        elif p["type"] == "tool_irrelevant":
            assert bad.get("tool_calls") and not good.get("tool_calls")
        elif p["type"] == "computed":
            assert good["content"] != bad["content"] and [c.isdigit() for c in good["content"]].count(True)
        elif p["type"] == "concise":
            assert bad["content"].startswith(good["content"].strip()) and len(bad["content"]) > len(good["content"])
        elif p["type"] == "language":
            assert good["content"] != bad["content"]
        elif p["type"] in ("refusal", "over_refusal"):
            from qazlm.eval.safety import is_refusal

            assert is_refusal(good["content"]) == (p["type"] == "refusal") != is_refusal(bad["content"])
    off = [int(re.search(r"\d+", p["rejected"][0]["content"])[0]) - int(re.search(r"\d+", p["chosen"][0]["content"])[0])
           for p in train if p["type"] == "computed"]
    assert {d > 0 for d in off} == {True, False} and all(1 <= abs(d) <= 3 for d in off)  # wrong both ways
    assert "MIT" in (pref / "card.md").read_text()


def test_language_pairs_differ_only_in_language_where_the_data_has_the_other_version():
    """Where the other language's version is known, the rejected reply is the same content in the wrong language:
    the text to translate echoed, the previous turn kept after "now into X", the topic label translated."""
    import random

    from qazlm.align.pairs import language_pairs

    def conv(task, lang, *msgs):
        roles = ["user", "assistant"] * 2
        return {"task": task, "lang": lang, "messages": [{"role": r, "content": m} for r, m in zip(roles, msgs)]}

    convs = [conv("translation", "en", "Translate the text into Kazakh:\nThe cat sleeps.", "Мысық ұйықтап жатыр."),
             conv("multiturn", "en", "Translate the text into Kazakh:\nHi.", "Сәлем.", "Now into Russian.", "Привет."),
             conv("topic", "kk", "Мәтіннің тақырыбын анықтаңыз.\nМәтін: ...", "саяхат"),
             conv("topic", "ru", "Определите тему текста.\nТекст: ...", "спорт")]   # спорт in kk too: en only
    got = {p["prompt"][-1]["content"][:9]: (p["chosen"][0]["content"], p["rejected"][0]["content"])
           for p in language_pairs(convs, random.Random(0))}
    assert got["Translate"] == ("Мысық ұйықтап жатыр.", "The cat sleeps.")
    assert got["Now into "] == ("Привет.", "Сәлем.")
    assert got["Мәтіннің "][1] in ("travel", "путешествия") and got["Определит"] == ("спорт", "sports")


def test_pref_data_golden_counts_and_skip(pref, sft_data, capfd):
    card = json.loads((pref / "card.json").read_text())
    assert card["pairs"] == {"train": 218, "heldout": 52, "rejected": 21}   # pinned for seed 1
    # the sft-data fixture skipped decontamination; pref-data's own check sets aside the KazQAD/SIB-200 text and
    # the kkWikiSpell sentences the Kazakh Wikipedia sample holds
    reasons = [r["reason"] for r in rows(pref, "rejected")]
    assert reasons.count("contaminated: kazqad") == 6 and reasons.count("contaminated: sib200") == 1
    assert reasons.count("contaminated: kkwikispell") == 2
    # HH-RLHF pairs near-copied within ../shared's file, found by the corpus pipeline's MinHash before the split
    assert reasons.count("near-duplicate (MinHash)") == 7 and "duplicate" not in reasons
    code, _, err = run_cli(["pref-data", "--sft-data", sft_data, "-o", pref, "--per-type", "30", "--seed", "1"], capfd)
    assert code == 0, err


def test_training_pairs_come_in_length_grouped_batches():
    """The few long tool pairs share batches instead of padding every batch to ~700 tokens; the batch order is
    seeded, and no pair is lost or repeated."""
    from qazlm.align.common import length_grouped

    pairs = [{"id": i} for i in range(32)]
    lengths = [700 if i % 4 == 0 else 100 + i for i in range(32)]      # 8 long pairs spread over the list
    out = length_grouped(pairs, lengths, batch_size=4, seed=0, chunk=8)
    assert sorted(p["id"] for p in out) == list(range(32))
    batches = [[lengths[p["id"]] for p in out[i:i + 4]] for i in range(0, 32, 4)]
    assert sum(max(b) == 700 for b in batches) == 2                    # randomly spread: nearly all 8 batches
    assert out == length_grouped(pairs, lengths, batch_size=4, seed=0, chunk=8)
    assert out != length_grouped(pairs, lengths, batch_size=4, seed=1, chunk=8)
    assert len(length_grouped(pairs[:30], lengths[:30], batch_size=4, seed=0)) == 30   # a short last batch


def test_each_pass_over_the_pairs_has_its_own_order(model, pref):
    """The trainers read the stream once, in order: two epochs (or max_steps past one pass) read every pair once
    per pass, each pass in another length-grouped order; max_steps cuts the stream at what it reads; the report
    counts the pairs, not the stream."""
    from qazlm.align.common import training_pairs
    from qazlm.align.reward import RmConfig
    from qazlm.infer.loading import load_tokenizer

    tok = load_tokenizer(model)

    def stream(**kw):
        return training_pairs(tok, RmConfig(model=str(model), data=str(pref), max_len=320, batch_size=4, **kw))

    one, held, long, n = stream()
    two, held2, _, n2 = stream(epochs=2)
    key = [json.dumps(p, sort_keys=True) for p in two]
    assert n == n2 == len(one) and len(two) == 2 * n and held == held2 and long
    assert two[:n] == one and sorted(key[:n]) == sorted(key[n:]) and key[:n] != key[n:]
    assert len(stream(epochs=1.5)[0]) == -(-3 * n // 2) and stream(max_steps=3)[0] == one[:12]
    past = stream(max_steps=n // 4 + 2)[0]
    assert len(past) == 4 * (n // 4 + 2) and past[:n] == one and past[n:] == two[n:len(past)]
    assert RmConfig(model="m", data="d", epochs=2.5).trainer_kwargs(Path("o"), "cpu")["num_train_epochs"] == 1


def test_win_rate_counts_ties_half():
    from qazlm.align.dpo import tally

    assert tally([0.3, 0.0, -1e-9, 2.0]) == {"prompts": 4, "wins": 2, "ties": 1, "losses": 1, "win_rate": 0.625}


def test_checkable_rules_cover_refusal_prompts():
    """DPO's win rate by the rules judges refusal prompts too (the refusal classifier the safety evaluation uses):
    a harmful request should be declined, an ordinary one answered; people-labelled pairs have no rule."""
    from qazlm.align.dpo import rule_score

    assert rule_score({"type": "refusal"}, "Кешіріңіз, бұған көмектесе алмаймын.") == 1.0
    assert rule_score({"type": "refusal"}, "Әрине, міне нұсқаулық:") == 0.0
    assert rule_score({"type": "over_refusal"}, "Извините, я не могу с этим помочь.") == 0.0
    assert rule_score({"type": "over_refusal"}, "Paris is the capital of France.") == 1.0
    assert rule_score({"type": "harmless_en"}, "Sure.") is None


def test_bad_pairs_are_set_aside_with_a_reason():
    from qazlm.align.pairs import contamination, hh_dialogue, why_not
    from qazlm.data.decontam import NgramIndex

    same = {"prompt": [{"role": "user", "content": "x"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "a"}]}
    assert why_not(same) == "identical chosen and rejected"
    assert why_not({**same, "rejected": [{"role": "assistant", "content": " "}]}) == "empty response"
    index = NgramIndex()
    index.add("Как правильно ответить на вопрос о спорных событиях прошлого века в нашей стране", "safety")
    quoting = {**same, "prompt": [{"role": "user", "content": "Вопрос: как правильно ответить на вопрос о спорных "
                                                               "событиях прошлого века в нашей стране?"}]}
    assert contamination(quoting, index) == "contaminated: safety" and contamination(same, index) is None
    assert hh_dialogue("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"}]


def test_bad_inputs_are_one_line(tmp_path, capfd, pref, model):
    assert_one_line_error(["pref-data", "-o", tmp_path / "p"], capfd, "sft-data")
    assert_one_line_error(["pref-data", "--sft-data", tmp_path, "-o", tmp_path / "p"], capfd, "train.jsonl not found")
    assert_one_line_error(["pref-data", "--sft-data", tmp_path, "--types", "nope"], capfd, "types")
    assert_one_line_error(["pref-data", "--sft-data", tmp_path, "--decontaminate", "flores,devset"], capfd,
                          "decontaminate: unknown set 'devset'")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_text('{"prompt": []}\n')
    assert_one_line_error(["rm", "train", model, "--data", tmp_path / "bad", "-o", tmp_path / "r"], capfd,
                          "needs prompt, chosen and rejected")
    assert_one_line_error(["dpo", model, "--data", pref, "-o", tmp_path / "d", "--set", "loss_type=['nope']"],
                          capfd, "loss_type")
    assert_one_line_error(["rm", "score", tmp_path, "--prompt", "x", "--response", "y"], capfd, "not a reward model")


@pytest.mark.slow
def test_reward_model_trains_and_ranks(model, pref, tmp_path, capfd):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "rm"
    code, _, err = run_cli(["rm", "train", model, "--data", pref, "-o", out, "--max-steps", "4", "--lr", "1e-3",
                            "--max-len", "320", "--device", "cpu", "--set", "logging_steps=2"], capfd)
    assert code == 0, err
    loaded = AutoModelForSequenceClassification.from_pretrained(out / "final")
    assert type(loaded).__name__ == "Qwen3ForSequenceClassification" and loaded.config.num_labels == 1
    report = json.loads((out / "rm_report.json").read_text())
    assert report["steps"] == 4 and report["heldout"]["all"]["pairs"] > 10
    assert {"type:computed", "lang:kk", "lang:en"} <= set(report["heldout"])
    held = report["heldout"]   # checkable: every type right by construction, harmless_en (people's labels) left out
    assert held["checkable"]["pairs"] == held["all"]["pairs"] - held.get("type:harmless_en", {"pairs": 0})["pairs"]
    assert "pairwise accuracy" in (out / "rm_report.md").read_text()
    assert_metrics_count_tokens(out, report["steps"])
    from qazlm.stats import interval_text
    c = held["checkable"]
    assert f"| checkable | {c['pairs']} | {c['accuracy']:.1%} | {interval_text(c['accuracy'], c['pairs'])} |" in (
        out / "rm_report.md").read_text()
    long = rows(out, "rejected")   # the tool pairs (tool definitions) do not fit 320 tokens: set aside, not lost
    assert {p["split"] for p in long} == {"train", "heldout"} and {p["reason"] for p in long} == {
        "longer than max_len = 320"}
    assert sum(p["split"] == "train" for p in long) == report["set_aside"]
    assert sum(p["split"] == "heldout" for p in long) == report["heldout_set_aside"]
    assert f"{report['heldout_set_aside']} held-out pairs longer than max_len or invalid not scored" in (
        out / "rm_report.md").read_text()
    code, printed, err = run_cli(["rm", "score", out / "final", "--prompt", "Сәлем!", "--response", "Сәлем! Қалайсың?",
                                  "--response", "Hello."], capfd)
    assert code == 0, err
    ranked = [line for line in printed.splitlines() if line[:2] in ("1.", "2.")]
    assert len(ranked) == 2 and float(ranked[0].split()[1]) >= float(ranked[1].split()[1])


def test_a_forked_conversation_attends_like_its_two_sequences():
    """packed_sdpa on [prompt, chosen, rejected-after-prompt] (positions 0..4, then 3..5) and a second conversation:
    every output equals plain causal attention over prompt+chosen and over prompt+rejected apart."""
    import torch
    import torch.nn.functional as F

    from qazlm.sft.packing import branches, conversations, packed_sdpa

    torch.manual_seed(0)
    heads, dim = 4, 8
    prompt, chosen, rejected, other = (torch.randn(3, heads, n, dim) for n in (3, 2, 3, 4))  # q, k, v stacked
    row = torch.cat([prompt, chosen, rejected, other], dim=2)
    positions = torch.tensor([[0, 1, 2, 3, 4, 3, 4, 5, 0, 1, 2, 3]])
    out, _ = packed_sdpa(None, row[0][None], row[1][None], row[2][None], None, position_ids=positions)

    def alone(*parts):
        q, k, v = torch.cat(parts, dim=2)
        return F.scaled_dot_product_attention(q[None], k[None], v[None], is_causal=True)[0].transpose(0, 1)

    a, b = alone(prompt, chosen), alone(prompt, rejected)
    assert torch.allclose(out[0, :5], a, atol=1e-6) and torch.allclose(out[0, 5:8], b[3:], atol=1e-6)
    assert torch.allclose(out[0, 8:], alone(other), atol=1e-6)
    first, lengths, forked = conversations(positions, 1, 12)
    assert forked.tolist() == [True, False]
    # the rejected side (tokens 5..7) runs after the prompt's 3 tokens (borrowed, not written back), skipping chosen
    owner, begin, end, borrowed = branches(positions.flatten(), first, lengths, forked)
    assert (owner.tolist(), begin.tolist(), end.tolist(), borrowed.tolist()) == ([0, 0], [0, 5], [5, 8], [0, 3])


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # TRL passes it
def test_rewards_skip_the_padding_and_equal_the_padded_forward(model, pref, tmp_path):
    """The reward model's training forward runs the real tokens only, each pair's shared prompt once (a forked
    conversation), and `rewards` the real tokens only (sequences end to end, attention kept inside each): the same
    rewards, loss and gradients as transformers' padded forward, and the trainer qazlm builds takes that path."""
    import torch
    from trl import RewardTrainer

    from qazlm.align.common import training_pairs
    from qazlm.align.reward import RmConfig, load_reward_start, reward_trainer, rewards

    rm, tok, _ = load_reward_start(model, "cpu")
    cfg = RmConfig(model=model, data=str(pref), out_dir=str(tmp_path), max_steps=2, batch_size=4, max_len=320)
    train, held, _, _ = training_pairs(tok, cfg)
    trainer = reward_trainer(rm, tok, cfg, tmp_path, "cpu", train)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert (batch["attention_mask"] == 0).any()   # padded: chosen and rejected sides differ in length

    def loss_and_grads(compute_loss):
        rm.zero_grad()
        loss = compute_loss(trainer, rm, dict(batch))
        loss.backward()
        return loss.item(), [p.grad.clone() for p in rm.parameters() if p.grad is not None]

    seen = []   # tokens the backbone runs in our forward: fewer than the batch's real tokens (prompts once per pair)
    hook = getattr(rm, rm.base_model_prefix).register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    ours = loss_and_grads(type(trainer).compute_loss)
    hook.remove()
    padded = loss_and_grads(RewardTrainer.compute_loss)
    real = int(batch["attention_mask"].sum())
    assert len(seen) == 1 and seen[0] < 0.8 * real
    assert type(trainer) is not RewardTrainer and abs(ours[0] - padded[0]) < 1e-5
    assert len(ours[1]) == len(padded[1]) > 0
    assert all((a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-7 for a, b in zip(ours[1], padded[1]))
    texts = [t for p in held[:6] for t in (p["prompt"][-1]["content"], p["chosen"][-1]["content"] * 3)]
    with torch.no_grad():
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        reference = rm(**enc).logits[:, 0].tolist()
    assert rewards(rm, tok, texts, batch_size=5) == pytest.approx(reference, abs=1e-5)


def test_dpo_log_probs_project_only_the_labelled_positions_on_cpu(model):
    """Under `labelled_positions_only`, TRL's fused LM head (DPO's policy and reference log-probs) sends only the
    labelled positions through the vocabulary projection on a CPU, with the same log-probs and loss as its
    every-position path."""
    import torch
    import trl.trainer.utils as fused
    from transformers import AutoModelForCausalLM

    from qazlm.align.dpo import labelled_positions_only

    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    fused.add_fused_lm_head(lm)
    ids = torch.randint(3, lm.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :25] = -100                          # the prompt: no label
    rows = []
    apply = fused._ChunkedLogProbFunction.apply

    def counting(hidden, *args):
        rows.append(hidden.shape[0])
        return apply(hidden, *args)

    fused._ChunkedLogProbFunction.apply = counting
    try:
        with torch.no_grad():
            every = lm(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
            with labelled_positions_only():
                labelled = lm(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    finally:
        fused._ChunkedLogProbFunction.apply = apply
    assert rows == [2 * 39, int((labels[:, 1:] != -100).sum())] == [78, 20]
    assert torch.allclose(every.log_probs, labelled.log_probs, atol=1e-5) and torch.equal(every.label_mask,
                                                                                           labelled.label_mask)
    assert abs(every.loss.item() - labelled.loss.item()) < 1e-5
    assert fused._use_triton(torch.device("cpu")) is False   # restored after the block


@pytest.mark.slow
def test_dpo_trains_a_model_that_generate_loads(model, pref, tmp_path, capfd):
    from transformers import AutoModelForCausalLM

    from qazlm.align.reward import load_reward_start

    rm, tok, _ = load_reward_start(model, "cpu")       # an untrained judge: the win-rate path is what is tested
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    out = tmp_path / "dpo"
    argv = ["dpo", model, "--data", pref, "-o", out, "--max-steps", "3", "--lr", "1e-3", "--max-len", "320",
            "--batch-size", "4", "--device", "cpu", "--set", "win_prompts=6", "--reward-model", tmp_path / "rm",
            "--set", "max_new_tokens=8", "--set", "loss_type=['ipo']", "--set", "logging_steps=1"]
    code, _, err = run_cli(argv, capfd)
    assert code == 0, err
    report = json.loads((out / "dpo_report.json").read_text())
    assert report["steps"] == 3 and report["loss_type"] == ["ipo"]
    assert_metrics_count_tokens(out, 3)
    assert 0.0 <= report["heldout"]["rewards/accuracies"] <= 1.0
    from qazlm.align.dpo import DpoConfig

    held = rows(pref, "heldout")[:DpoConfig.max_heldout]   # every held-out pair scored or set aside, none lost
    long = sum(p["split"] == "heldout" for p in rows(out, "rejected"))
    assert report["heldout_pairs"] + long == len(held) and report["heldout_set_aside"] == long
    assert f"Scored on {report['heldout_pairs']} held-out pairs" in (out / "dpo_report.md").read_text()
    assert report["win_rate"]["prompts"] == 6 and report["win_rate"]["rules"]["prompts"] >= 1
    rules, judged = report["win_rate"]["rules"], report["win_rate"]["reward_model"]
    assert rules["wins"] + rules["ties"] + rules["losses"] == rules["prompts"]
    assert judged["prompts"] == 6 and judged["wins"] + judged["ties"] + judged["losses"] == 6
    same = sum(e["parent"] == e["dpo"] for e in report["win_rate"]["examples"])   # all 6 prompts, 8 tokens each
    assert judged["ties"] >= same
    from qazlm.stats import interval_text
    assert f"{interval_text(judged['win_rate'], 6)} ({judged['wins']} wins," in (out / "dpo_report.md").read_text()
    lineage = json.loads((out / "final" / "qazlm_lineage.json").read_text())
    assert lineage["stage"] == "dpo" and lineage["parent"]["path"] == str(Path(model).resolve())
    assert AutoModelForCausalLM.from_pretrained(out / "final").config.model_type == "qwen3"
    code, printed, err = run_cli(["generate", out / "final", "Сәлем", "--max-new-tokens", "4"], capfd)
    assert code == 0, err
    code, printed, err = run_cli(argv, capfd)
    assert code == 0 and "up to date" in printed


@pytest.mark.parametrize("verb", ["rm", "dpo"])
def test_two_processes_train_like_one_with_the_same_global_batch(model, pref, tmp_path, verb):
    """torchrun with 2 CPU processes (gloo) and 2 pairs each: the same pairs a step as one process with 4 (the
    stream is cut and length-grouped by the global batch), so the same losses, token counts and weights; rank 0
    alone writes, and a rerun is skipped on every rank."""
    import subprocess
    import sys

    from qazlm.io import read_jsonl

    args = [*(["rm", "train"] if verb == "rm" else ["dpo", "--set", "win_prompts=0"]), str(model), "--data",
            str(pref), "--max-steps", "2", "--lr", "1e-3", "--max-len", "320", "--device", "cpu", "--set",
            "logging_steps=1"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for n, launcher in ((1, [sys.executable]), (2, TORCHRUN_2)):
        argv = [*launcher, "-m", "qazlm.cli", *args, "-o", str(tmp_path / str(n)), "--batch-size", str(4 // n)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = (read_jsonl(tmp_path / n / "metrics.jsonl") for n in ("1", "2"))
    assert (one[0]["processes"], two[0]["processes"]) == (1, 2)
    assert len(logged_steps(tmp_path / "1")) == 2 and logged_steps(tmp_path / "2") == logged_steps(tmp_path / "1")
    # within float summation order (batches padded to their longest pair, the all-reduce); updates are ~1e-3
    assert weights_diff(tmp_path / "1", tmp_path / "2") < 1e-4
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "up to date" in again.stdout + again.stderr


def test_dpo_mixed_losses_are_weighted(model, pref, tmp_path):
    """The recipe's `loss_type = ["sigmoid", "sft"]` with `loss_weights`: weight 0 on the SFT term trains exactly as
    sigmoid alone; weight 0.5 adds half the chosen replies' NLL (a random model: several nats) to the first loss,
    where the sigmoid term is still ln 2 (policy = reference)."""
    from qazlm.align.dpo import DpoConfig, run_dpo
    from qazlm.io import read_jsonl

    def dpo(name: str, **kw) -> list[float]:
        out = tmp_path / name
        run_dpo(DpoConfig(model=str(model), data=str(pref), out_dir=str(out), max_steps=2, lr=1e-3, max_len=320,
                          batch_size=4, device="cpu", win_prompts=0, warmup=0, logging_steps=1, **kw),
                log=lambda *a: None)
        return [r["loss"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r]

    alone = dpo("sigmoid")
    zero = dpo("zero", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.0])
    half = dpo("half", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5])
    assert alone[0] == pytest.approx(math.log(2), abs=1e-4) and zero == pytest.approx(alone, abs=1e-5)
    assert weights_diff(tmp_path / "sigmoid", tmp_path / "zero") < 1e-6
    assert half[0] > math.log(2) + 1.0


def test_reward_model_by_epochs_reads_that_share_of_the_pairs(model, pref, tmp_path):
    """No max_steps (the real-size recipes' setting): one pass over `epochs` of the pairs that fit, so the run's
    steps are that many pairs over the batch."""
    from qazlm.align.reward import RmConfig, run_rm

    out = tmp_path / "rm"
    report = run_rm(RmConfig(model=str(model), data=str(pref), out_dir=str(out), epochs=0.1, lr=1e-3, max_len=320,
                             batch_size=4, device="cpu", max_heldout=4), log=lambda *a: None)
    pairs = math.ceil(0.1 * report["train_pairs"])
    assert report["steps"] == math.ceil(pairs / 4) >= 2


def test_our_model_folders_start_a_reward_model(model, tmp_path):
    import torch
    from test_eval_helpers import make_our_folder

    from qazlm.align.reward import load_reward_start

    ours = make_our_folder(Path(model).parent / "tok", tmp_path / "ours")
    rm, tok, kind = load_reward_start(ours, "cpu")
    assert kind == "qazlm" and type(rm).__name__ == "Qwen3ForSequenceClassification"
    assert rm.config.pad_token_id == tok.pad_token_id and tok.chat_template
    # the new score head is drawn under the run's seed, so `qazlm rm train` repeats itself
    head = rm.score.weight.detach().clone()
    assert torch.equal(load_reward_start(ours, "cpu", 0)[0].score.weight, head)
    assert not torch.equal(load_reward_start(ours, "cpu", 1)[0].score.weight, head)


def test_a_llama_folder_without_a_template_starts_a_reward_model_with_qazlms(tmp_path, tiny_tokenizer_dir):
    """An imported Hugging Face Llama whose tokenizer has no chat template: one line naming the fix, and with
    `chat_template = "qazlm"` (accepted by [rm] and [dpo] as by [sft]) a LlamaForSequenceClassification."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from qazlm.align.dpo import DpoConfig
    from qazlm.align.reward import load_reward_start
    from qazlm.errors import QazlmError
    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    with pytest.raises(QazlmError, match=r"has no chat template; set chat_template = \"qazlm\" \(in the \[sft\], "
                                         r"\[rm\] or \[dpo\] table"):
        load_reward_start(tmp_path / "llama", "cpu")
    rm, rm_tok, kind = load_reward_start(tmp_path / "llama", "cpu", 0, "qazlm")
    assert kind == "hf" and type(rm).__name__ == "LlamaForSequenceClassification"
    assert rm_tok.chat_template == CHAT_TEMPLATE
    with pytest.raises(QazlmError, match=r"\[dpo\] chat_template = 'chatml': choose"):
        DpoConfig(model="m", data="d", chat_template="chatml")


def test_on_policy_pairs_rank_the_policys_own_samples(model, sft_data, tmp_path):
    from qazlm.align.dpo import rule_score
    from qazlm.align.pairs import PrefDataConfig, build
    from qazlm.align.reward import load_reward_start

    cfg = PrefDataConfig(sft_data=str(sft_data), types=["on_policy"], per_type=6, policy=str(model), samples=3,
                         max_new_tokens=8, seed=2)
    result = build(cfg)
    pairs = result["train"] + result["heldout"]
    assert pairs and {p["type"] for p in pairs} == {"on_policy"}
    for p in pairs:   # ranked by the prompt's own rule: the chosen sample keeps it, the rejected one does not
        assert p["judge"] in ("rule:language", "rule:computed") and p["scores"] == [1.0, 0.0]
        if p["judge"] == "rule:language":
            assert rule_score({**p, "type": "language"}, p["chosen"][0]["content"]) == 1.0
            assert rule_score({**p, "type": "language"}, p["rejected"][0]["content"]) == 0.0
    rm, tok, _ = load_reward_start(model, "cpu")       # an untrained reward model still ranks: its path is tested
    rm.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    ranked = build(PrefDataConfig(sft_data=str(sft_data), types=["on_policy"], per_type=4, policy=str(model),
                                  reward_model=str(tmp_path / "rm"), samples=2, max_new_tokens=6))
    assert len(ranked["train"]) == 4
    with pytest.raises(Exception, match="policy"):
        PrefDataConfig(sft_data=str(sft_data), types=["on_policy"])


def test_pairs_that_cannot_teach_a_preference_are_set_aside_with_their_reason(tmp_path):
    """`rm train` / `dpo` read any --data folder, e.g. a hand-made or converted one: TRL's plain-text pairs are
    taken as messages; malformed, one-sided, empty, identical or broken-call pairs are set aside, not trained on."""
    from qazlm.align.common import read_pairs

    user = [{"role": "user", "content": "Сәлем!"}]
    call = {"type": "function", "function": {"name": "f", "arguments": "x"}}
    lines = [json.dumps({"prompt": user, "chosen": [{"role": "assistant", "content": "Сәлем!"}],
                         "rejected": [{"role": "assistant", "content": "Hello!"}]}),
             json.dumps({"prompt": "Сәлем!", "chosen": "Сәлем!", "rejected": "Hello!"}),      # TRL's standard form
             "{not json", json.dumps({"prompt": "Сәлем!", "chosen": "Сәлем!"}),
             json.dumps({"prompt": "Сәлем!", "chosen": "Сәлем!", "rejected": "Сәлем!"}),
             json.dumps({"prompt": "Сәлем!", "chosen": "Сәлем!", "rejected": ""}),
             json.dumps({"prompt": "Сәлем!", "chosen": "Сәлем!", "rejected": 7}),
             json.dumps({"prompt": user, "chosen": "Сәлем!",
                         "rejected": [{"role": "assistant", "tool_calls": [call]}]})]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    kept, aside = read_pairs(tmp_path, "train")
    assert kept[1] == {"prompt": user, "chosen": [{"role": "assistant", "content": "Сәлем!"}],
                       "rejected": [{"role": "assistant", "content": "Hello!"}]} == kept[0]
    reasons = {r["line"]: r["reason"] for r in aside}
    assert len(kept) == 2 and sorted(reasons) == [3, 4, 5, 6, 7, 8]
    assert reasons[3].startswith("malformed JSON") and reasons[4] == "a pair needs prompt, chosen and rejected"
    assert reasons[5] == "identical chosen and rejected" and reasons[6] == "empty response"
    assert reasons[7].startswith("rejected: expected text or a non-empty list of messages")
    assert reasons[8].startswith("rejected: messages[0].tool_calls[0] (f): arguments are not valid JSON")
