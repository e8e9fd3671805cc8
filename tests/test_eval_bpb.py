"""Bits per byte: equals lm-eval's bits_per_byte (HFLM, loglikelihood_rolling) and a hand computation."""

from __future__ import annotations

import math

import pytest
from test_eval_helpers import make_hf_folder, make_our_folder

from qazlm.errors import QazlmError


@pytest.fixture(scope="module")
def hf(tmp_path_factory, tiny_tokenizer_dir):
    from qazlm.infer.loading import load_model

    return load_model(make_hf_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("hf")))


def lm_eval_bpb(hf_model, tokenizer, task: str, limit: int, max_len: int) -> float:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from qazlm.eval.tasks import TASK_DIR

    lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, max_length=max_len, batch_size=4)
    res = lm_eval.simple_evaluate(model=lm, tasks=[task], limit=limit, bootstrap_iters=0, log_samples=False,
                                  task_manager=TaskManager(include_path=str(TASK_DIR), include_defaults=False))
    return res["results"][task]["bits_per_byte,none"]


def flores(lang: str, n: int) -> list[str]:
    from qazlm.heldout import flores_texts

    return flores_texts("devtest", [lang])[f"flores-devtest:{lang}"][:n]


@pytest.mark.parametrize("lang", ["kk", "en"])
def test_bpb_equals_lm_eval_hf(hf, lang, shared):
    # max_len 24 < most sentences' token count: the rolling-window path is exercised too
    ours = bits_per_byte_of(hf, flores(lang, 12), max_len=24)
    assert ours["n_tokens"] > 24 * 12 / 2
    ref = lm_eval_bpb(hf.model.module, hf.tokenizer, f"qazlm_flores_bpb_{lang}", 12, 24)
    assert ours["bpb"] == pytest.approx(ref, rel=1e-5)


def bits_per_byte_of(loaded, texts, **kw):
    from qazlm.infer.scoring import bits_per_byte

    return bits_per_byte(loaded.model, loaded.tokenizer, texts, batch_size=3, **kw)


def test_bpb_our_model_equals_lm_eval_on_export(tiny_tokenizer_dir, tmp_path, shared):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qazlm.infer.loading import load_model
    from qazlm.model.hf import export_hf

    folder = make_our_folder(tiny_tokenizer_dir, tmp_path / "final")
    export_hf(folder, tmp_path / "hf")
    ours = bits_per_byte_of(load_model(folder), flores("kk", 8), max_len=32)
    hf_model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True)
    ref = lm_eval_bpb(hf_model, AutoTokenizer.from_pretrained(tmp_path / "hf"), "qazlm_flores_bpb_kk", 8, 32)
    assert ours["bpb"] == pytest.approx(ref, rel=1e-4)


def test_bpb_by_hand(hf):
    import torch

    text = "Абай Құнанбайұлы — қазақтың ұлы ақыны."
    tok = hf.tokenizer
    ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(hf.model(torch.tensor([ids[:-1]])), -1)[0]
    nll = -sum(float(logp[i, t]) for i, t in enumerate(ids[1:]))
    got = bits_per_byte_of(hf, [text], max_len=64)
    assert got["nll_nats"] == pytest.approx(nll, rel=1e-5)
    assert got["bpb"] == pytest.approx(nll / len(text.encode()) / math.log(2), rel=1e-5)
    assert got["n_bytes"] == len(text.encode()) and got["n_tokens"] == len(ids) - 1


def test_rolling_windows_predict_every_token_once():
    from qazlm.infer.scoring import rolling_windows

    ids = list(range(10, 47))
    wins = rolling_windows(ids, 0, 8)
    assert [t for _, pred in wins for t in pred] == ids
    for inp, pred in wins:
        assert len(inp) <= 8 and inp[-len(pred) + 1:] == pred[:-1] if len(pred) > 1 else True
    assert wins[0][0][0] == 0  # first token predicted from the prefix token


def test_bpb_restores_training_mode_and_rejects_empty(hf):
    from qazlm.infer.scoring import bits_per_byte

    hf.model.module.train()
    bits_per_byte(hf.model.module, hf.tokenizer, ["сәлем әлем"], max_len=16)
    assert hf.model.module.training
    hf.model.module.eval()
    with pytest.raises(QazlmError, match="no non-empty texts"):
        bits_per_byte(hf.model, hf.tokenizer, ["", ""])


def test_text_sets_and_bad_files(tmp_path, shared):
    from qazlm.heldout import char_unigram_bpb, load_bpb_sets, unigram_baselines

    good = tmp_path / "kk.txt"
    good.write_text("бір\nекі үш\n", encoding="utf-8")
    sets = load_bpb_sets(["flores:devtest", str(good)], limit=5)
    assert sorted(sets) == ["flores-devtest:en", "flores-devtest:kk", "flores-devtest:ru", "kk:kk"]
    assert len(sets["flores-devtest:kk"]) == 5 and sets["kk:kk"] == ["бір", "екі үш"]
    base = unigram_baselines(sets)
    assert 2.0 < base["flores-devtest:kk"] < 4.0  # a char-unigram needs ~2-4 bits per (2-byte Cyrillic) byte
    assert char_unigram_bpb(["ab"], ["ab"]) < char_unigram_bpb(["ab"], ["zz"])
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(QazlmError, match="invalid UTF-8"):
        load_bpb_sets([str(bad)])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(QazlmError, match="no non-empty lines"):
        load_bpb_sets([str(empty)])
    with pytest.raises(QazlmError, match="not found"):
        load_bpb_sets([str(tmp_path / "missing.txt")])
    with pytest.raises(QazlmError, match="val/"):
        load_bpb_sets([str(tmp_path)])


def induction_oracle(vocab: int):
    """A 'model' that predicts, at each position, the token that followed the earlier position whose preceding
    tokens match the current ones longest (what induction heads do), and is uniform where the token is new."""
    import torch

    def match(row, j, t):
        n = 0
        while n <= j and row[j - n] == row[t - n]:
            n += 1
        return n

    def model(ids):
        out = torch.zeros(*ids.shape, vocab)
        for b, row in enumerate(ids.tolist()):
            for t in range(len(row)):
                best = max(range(t), key=lambda j: (match(row, j, t), j), default=None)
                if best is not None and match(row, best, t):
                    out[b, t, row[best + 1]] = 30.0
        return out
    return model


def test_copy_score_tells_a_copier_from_a_model_that_cannot(tiny_tokenizer_dir, shared):
    import torch
    from transformers import AutoTokenizer

    from qazlm.infer.scoring import copy_score

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    texts = flores("kk", 6) + flores("en", 6)
    uniform = copy_score(lambda ids: torch.zeros(*ids.shape, len(tok)), tok, texts, max_len=24)
    assert uniform["n_spans"] == 12 and uniform["span"] == 12
    assert uniform["first_loss"] == pytest.approx(math.log(len(tok)), rel=1e-5)
    assert uniform["repeat_loss"] == pytest.approx(uniform["first_loss"], rel=1e-6)
    assert uniform["exact_repeat"] == 0.0
    copier = copy_score(induction_oracle(len(tok)), tok, texts, max_len=24)
    assert copier["first_loss"] > 0.5 * math.log(len(tok))      # new text: mostly unpredictable
    assert copier["repeat_loss"] < 0.01 and copier["exact_repeat"] == 1.0   # the repeat: copied
    with pytest.raises(QazlmError, match="copy_score"):
        copy_score(induction_oracle(len(tok)), tok, ["", "a"], max_len=24)
