"""`qazlm chat`: multi-turn history, /system, /reset, /help, /exit and EOF, context trimming, streaming."""

from __future__ import annotations

import io

import pytest
from test_eval_helpers import make_hf_folder, make_our_folder

from qazlm.cli import main


@pytest.fixture(scope="module")
def our_folder(tmp_path_factory, tiny_tokenizer_dir):
    return make_our_folder(tiny_tokenizer_dir, tmp_path_factory.mktemp("chat") / "final")


@pytest.fixture
def spy(monkeypatch):
    """Records each prompt and reply of the one engine (`qazlm.infer.engine.generate`), calling through."""
    import qazlm.infer.engine as engine

    real, calls = engine.generate, []

    def generate(model, tokenizer, prompts, **kw):
        out = real(model, tokenizer, prompts, **kw)
        calls.append((prompts[0], out[0]))
        return out

    monkeypatch.setattr(engine, "generate", generate)
    return calls


def chat(argv, lines, monkeypatch, capsys) -> str:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{ln}\n" for ln in lines)))
    capsys.readouterr()
    assert main(["chat", *map(str, argv), "--max-new-tokens", "6", "--temperature", "0"]) == 0
    return capsys.readouterr().out


def test_two_turns_system_reset_help_exit(our_folder, spy, monkeypatch, capsys):
    out = chat([our_folder], ["Сәлем!", "Қалың қалай?", "/system Сен көмекшісің.", "/help", "/reset", "Hello",
                              "/exit", "never read"], monkeypatch, capsys)
    assert len(spy) == 3
    (p1, r1), (p2, r2), (p3, r3) = spy
    assert p1 == "<|im_start|>user\nСәлем!<|im_end|>\n<|im_start|>assistant\n"
    assert p2 == p1 + r1 + "<|im_end|>\n<|im_start|>user\nҚалың қалай?<|im_end|>\n<|im_start|>assistant\n"
    assert p3 == ("<|im_start|>system\nСен көмекшісің.<|im_end|>\n"  # /system kept, /reset forgot both turns
                  "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n")
    assert "(the tokenizer has no chat template: using qazlm's ChatML template)" in out
    assert "(system prompt set)" in out and "(conversation cleared)" in out and "/reset: forget" in out
    assert all(r in out for r in (r1, r2, r3))  # streamed to the terminal


def test_system_flag_eof_and_unknown_command(our_folder, spy, monkeypatch, capsys):
    out = chat([our_folder, "--system", "Be brief."], ["/nope", "Hi", "/system", "Hi again"], monkeypatch, capsys)
    assert "(unknown command /nope; /help lists the commands)" in out and "(system prompt removed)" in out
    assert spy[0][0].startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>")
    assert spy[1][0].startswith("<|im_start|>user\nHi<|im_end|>")  # the history stays, the system prompt went


def test_history_is_trimmed_from_the_oldest_turns(our_folder, spy, monkeypatch, capsys):
    out = chat([our_folder, "--context", "48"], ["Бір", "Екі", "Үш", "Төрт", "сөз " * 60, "Бес"], monkeypatch, capsys)
    assert "oldest messages to fit the model's 48-token context)" in out
    assert "<|im_start|>user\nБір<|im_end|>" not in spy[-1][0] and "<|im_start|>user\nБес<|im_end|>" in spy[-1][0]
    assert "tokens with the system prompt, but the model's context leaves 42 for it" in out  # the long line
    assert len(spy) == 5  # the chat went on after it


def test_hf_folder(tmp_path, tiny_tokenizer_dir, spy, monkeypatch, capsys):
    folder = make_hf_folder(tiny_tokenizer_dir, tmp_path / "hf")
    out = chat([folder], ["Сәлем!"], monkeypatch, capsys)
    assert spy[0][0] == "<|im_start|>user\nСәлем!<|im_end|>\n<|im_start|>assistant\n" and out.endswith("\n")


def test_fit_history_drops_whole_exchanges(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from qazlm.infer.chat_cli import Session, fit_history, prompt_tokens

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    s = Session("sys")
    s.turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
               {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "user", "content": "e"}]
    budget = prompt_tokens(tok, s.messages(s.turns[2:]))
    assert fit_history(tok, s, budget) == 2 and [t["content"] for t in s.turns] == ["c", "d", "e"]
    assert fit_history(tok, s, budget) == 0


def test_default_sampling_is_seeded_per_reply(our_folder, monkeypatch, capsys):
    """Without sampling flags (README's `qazlm chat MODEL`): temperature 0.7, top-p 0.9, repetition penalty 1.1,
    seed 0 for the first reply and +1 for each next one, so a session replays exactly and --seed changes it."""
    import qazlm.infer.engine as engine

    real, kwargs = engine.generate, []

    def generate(model, tokenizer, prompts, **kw):
        kwargs.append(kw)
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(engine, "generate", generate)

    def session(*flags) -> str:
        monkeypatch.setattr("sys.stdin", io.StringIO("Сәлем!\n/reset\nСәлем!\n"))
        capsys.readouterr()
        assert main(["chat", str(our_folder), "--max-new-tokens", "8", *flags]) == 0
        return capsys.readouterr().out

    first = session()
    assert [(k["temperature"], k["top_p"], k["repetition_penalty"], k["seed"]) for k in kwargs] == [
        (0.7, 0.9, 1.1, 0), (0.7, 0.9, 1.1, 1)]
    assert session() == first                         # the same session, the same sampled replies
    assert session("--seed", "5") != first and [k["seed"] for k in kwargs[-2:]] == [5, 6]
