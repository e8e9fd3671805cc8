"""lm-eval integration: multiple-choice scores equal hand-computed log-likelihoods; missing data is skipped."""

from __future__ import annotations

import shutil

import pytest
from test_eval_helpers import make_hf_folder

from qazlm.errors import QazlmError


@pytest.fixture(scope="module")
def hf(tmp_path_factory, tiny_tokenizer_dir):
    from qazlm.infer.loading import load_model

    return load_model(make_hf_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("hf")))


def hand_loglik(loaded, context: str, continuation: str) -> tuple[float, bool]:
    """Score by hand: encode the WHOLE string once, continuation tokens = those after the context's tokens;
    token i of the continuation is predicted by the logits at the position just before it."""
    import torch

    tok = loaded.tokenizer
    bos = tok.eos_token_id
    ctx = [bos] + tok(context, add_special_tokens=False)["input_ids"]
    whole = [bos] + tok(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole[:len(ctx)] == ctx
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(torch.tensor([whole[:-1]])), -1)[0]
    cont = whole[len(ctx):]
    positions = range(len(ctx) - 1, len(whole) - 1)
    total = sum(float(logp[p, t]) for p, t in zip(positions, cont))
    greedy = all(int(logp[p].argmax()) == t for p, t in zip(positions, cont))
    return total, greedy


def requests(pairs):
    from lm_eval.api.instance import Instance

    return [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]


def test_multiple_choice_loglikelihood_by_hand(hf):
    from qazlm.eval.harness import make_lm

    lm = make_lm(hf.model, hf.tokenizer, batch_size=2, max_len=64)
    pairs = [("Астана — Қазақстанның", " астанасы"), ("The cat sat on the", " mat"),
             ("Москва —", " столица России"), ("Ол кітап", " оқыды.")]
    got = lm.loglikelihood(requests(pairs))
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        ref_ll, ref_greedy = hand_loglik(hf, ctx, cont)
        assert ll == pytest.approx(ref_ll, abs=1e-4) and greedy == ref_greedy
    # a trailing space of the context belongs to the continuation: same split, same score
    moved = lm.loglikelihood(requests([("The cat sat on the ", "mat")]))[0][0]
    assert moved == pytest.approx(got[1][0], abs=1e-4)
    # the off-by-one mistake (scoring token i with the logits AT position i) gives a different number
    import torch

    tok = hf.tokenizer
    whole = [tok.eos_token_id] + tok("The cat sat on the mat", add_special_tokens=False)["input_ids"]
    n_ctx = 1 + len(tok("The cat sat on the", add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(hf.model(torch.tensor([whole])), -1)[0]
    wrong = sum(float(logp[p, whole[p]]) for p in range(n_ctx, len(whole)))
    assert abs(wrong - got[1][0]) > 1e-3


def test_empty_context_is_conditioned_on_the_boundary_token(hf):
    import torch

    from qazlm.eval.harness import make_lm

    lm = make_lm(hf.model, hf.tokenizer, max_len=64)
    text = "Абай Шығыс пен Батыс мәдениетін білген."
    ll = lm.loglikelihood(requests([("", text)]))[0][0]
    ids = [hf.tokenizer.eos_token_id] + hf.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(hf.model(torch.tensor([ids[:-1]])), -1)[0]
    assert ll == pytest.approx(sum(float(logp[i, t]) for i, t in enumerate(ids[1:])), abs=1e-4)


def test_all_tasks_run_and_missing_data_is_skipped(hf, tmp_path, shared):
    from qazlm.eval.harness import run_tasks
    from qazlm.eval.tasks import TASKS

    lines = []
    res = run_tasks(hf.model, hf.tokenizer, ["all"], limit=2, max_len=64, batch_size=8, log=lines.append)
    assert set(res) == set(TASKS)
    skipped = {t for t, r in res.items() if "skipped" in r}
    assert skipped == {"qazlm_belebele_kk", "qazlm_belebele_ru", "qazlm_belebele_en", "qazlm_kazmmlu"}
    assert any(line.startswith("skip qazlm_kazmmlu: ") and "not found" in line for line in lines)
    for t, r in res.items():
        if t not in skipped:
            assert r["n"] == 2 and r["value"] == r["value"], t  # ran on 2 items, not NaN
            if r["metric"] == "acc":
                assert 0.0 <= r["value"] <= 1.0 and r["chance"] is not None
    # a data folder holding only kkCOPA: the other task is skipped with its reason, kkCOPA still runs
    (tmp_path / "kk").mkdir()
    shutil.copy(shared / "data/eval/kk/kkcopa.jsonl", tmp_path / "kk")
    res = run_tasks(hf.model, hf.tokenizer, ["kkcopa_kk,nis_math"], data_dir=tmp_path, limit=4, log=lambda m: None)
    assert res["qazlm_nis_math"] == {"skipped": f"{tmp_path / 'kk/nis_math.jsonl'} not found"}
    assert res["qazlm_kkcopa_kk"]["n"] == 4


def test_few_shot_puts_examples_in_the_context(hf, shared, monkeypatch):
    import qazlm.eval.harness as harness

    contexts: list[str] = []
    make = harness.make_lm

    def recording_lm(*args, **kwargs):
        lm = make(*args, **kwargs)
        score = lm._loglikelihood_tokens

        def spy(reqs, **kw):
            contexts.extend(r[0][0] for r in reqs)
            return score(reqs, **kw)

        lm._loglikelihood_tokens = spy
        return lm

    monkeypatch.setattr(harness, "make_lm", recording_lm)
    for shots in (0, 2):
        contexts.clear()
        res = harness.run_tasks(hf.model, hf.tokenizer, ["sib200_en"], limit=3, max_len=256, num_fewshot=shots,
                                log=lambda m: None)
        assert res["qazlm_sib200_en"]["num_fewshot"] == shots and len(contexts) == 3 * 7
        assert {c.count("Topic:") for c in contexts} == {shots + 1}


def test_unknown_task_names():
    from qazlm.eval.tasks import expand_tasks

    assert expand_tasks(["kkcopa", "sib200_kk"]) == ["qazlm_kkcopa_kk", "qazlm_kkcopa_en", "qazlm_sib200_kk"]
    with pytest.raises(QazlmError, match="did you mean 'qazlm_nis_math'"):
        expand_tasks(["qazlm_nis_mat"])
