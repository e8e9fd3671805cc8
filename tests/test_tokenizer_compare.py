"""Tokenizer loaders (every format, all 8 shared references) and `qazlm tokenizer compare` end to end."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from qazlm.cli import main
from qazlm.errors import QazlmError
from qazlm.tokenizer.loaders import load_tokenizer

SENT = "Жеңіске жеттік! Победа. Victory <|endoftext|> 2024."

# folder -> (loader kind, vocab size)
REFERENCES = {
    "qwen3": ("hf", 151669), "llama3": ("hf", 128256), "gemma3": ("hf", 262145), "gpt4o": ("hf", 200000),
    "cl100k": ("tiktoken", 100277), "qwen3_5": ("tiktoken", 248044), "mistral_tekken": ("tiktoken", 131072),
    "smollm2": ("hf", 49152),
}


def _roundtrip(tok, text=SENT):
    ids = tok.encode_batch([text])[0]
    assert ids and tok.decode(ids) == text
    return ids


def test_all_reference_tokenizers_load(shared):
    for folder, (kind, vocab) in REFERENCES.items():
        tok = load_tokenizer(str(shared / "tokenizers" / folder))
        assert (tok.name, tok.kind, tok.vocab_size) == (folder, kind, vocab)
        _roundtrip(tok)
        if folder == "gemma3":
            assert len(tok.unknown_ids) == 257  # <unk> + 256 byte-fallback pieces
        else:
            assert tok.unknown_ids == frozenset()  # byte-level BPE: every byte is in the vocabulary


def test_tiktoken_files_and_o200k_equals_its_tokenizer_json(shared):
    o200k = load_tokenizer(str(shared / "tokenizers" / "gpt4o" / "o200k_base.tiktoken"))
    hf = load_tokenizer(str(shared / "tokenizers" / "gpt4o" / "tokenizer.json"), name="o200k_hf")
    assert o200k.name == "o200k_base" and hf.name == "o200k_hf"
    lines = ["Қазақстан Республикасы — мемлекет.", "Привет, мир 12345!", SENT]
    assert o200k.encode_batch(lines) == hf.encode_batch(lines)  # pattern from tiktoken's own definition


def test_specials_are_plain_text(tiny_tokenizer_dir):
    tok = load_tokenizer(str(tiny_tokenizer_dir))
    eos = json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())["added_tokens"][0]
    assert eos["content"] == "<|endoftext|>"
    ids = tok.encode_batch(["a<|endoftext|>b"])[0]
    assert eos["id"] not in ids and len(ids) > 3  # not parsed as the control token
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_vocab_merges_folder_and_tokenizer_json_file(shared, tmp_path):
    src = shared / "tokenizers" / "smollm2"
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(src / f, tmp_path / f)
    tok = load_tokenizer(str(tmp_path), name="smol_vm")
    assert tok.kind == "hf" and tok.vocab_size == 49152
    _roundtrip(tok, "hello world, Сәлем")


def test_sentencepiece_model(tmp_path, sample_lines):
    import sentencepiece as spm

    text = tmp_path / "train.txt"
    text.write_text("\n".join(sum(sample_lines.values(), [])[:600]), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "sp"), vocab_size=400,
                                   byte_fallback=True, character_coverage=0.999, num_threads=1,
                                   minloglevel=2)
    tok = load_tokenizer(str(tmp_path / "sp.model"))
    assert tok.kind == "sentencepiece" and tok.vocab_size == 400
    ids = tok.encode_batch(["ꙮ abc"])[0]  # a rare char only byte fallback can encode
    assert any(i in tok.unknown_ids for i in ids)
    assert tok.word_boundaries(["балалар"])[0] <= set(range(1, 7))


def test_hub_id_uses_snapshot(monkeypatch, tiny_tokenizer_dir):
    from qazlm.tokenizer import loaders

    seen = []
    monkeypatch.setattr(loaders, "_hub_snapshot", lambda repo: seen.append(repo) or tiny_tokenizer_dir)
    tok = load_tokenizer("someorg/some-model")
    assert seen == ["someorg/some-model"] and tok.name == "some-model" and tok.vocab_size == 1000


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(QazlmError, match="nobody-xyz/none.*hub"):
        load_tokenizer("nobody-xyz/none")


def test_word_boundaries_hf_and_tiktoken(shared):
    hf = load_tokenizer(str(shared / "tokenizers" / "gpt4o" / "tokenizer.json"))
    tt = load_tokenizer(str(shared / "tokenizers" / "gpt4o" / "o200k_base.tiktoken"))
    words = ["балаларымызға", "Жеңіске", "a"]
    assert hf.word_boundaries(words) == tt.word_boundaries(words)
    # boundaries = where the token pieces of " балаларымызға" end inside the word
    pieces = [tt.enc.decode_single_token_bytes(i) for i in tt.encode_batch([" балаларымызға"])[0]]
    joined, expected = b"", set()
    for p in pieces[:-1]:
        joined += p
        expected.add(len(joined.decode("utf-8")) - 1)
    assert tt.word_boundaries(["балаларымызға"])[0] == expected and hf.word_boundaries(["a"]) == [set()]


# ------------------------------------------------------------------------------------------------- CLI

def _parallel(tmp_path, lines_by_code, suffix=".txt"):
    paths = []
    for code, lines in lines_by_code.items():
        p = tmp_path / f"newstest2019-ref.{code}{suffix}"
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(str(p))
    return paths


def test_cli_runs_on_tiny_parallel_files(tmp_path, tiny_tokenizer_dir, capsys):
    files = _parallel(tmp_path, {"kaz_Cyrl": ["Балалар мектепке барды.", "Сәлем әлем"],
                                 "rus_Cyrl": ["Дети пошли в школу.", "Привет мир"],
                                 "eng_Latn": ["Children went to school.", "Hello world"]})
    out = tmp_path / "out"
    rc = main(["tokenizer", "compare", f"tiny={tiny_tokenizer_dir}", "--parallel", *files, "--out", str(out),
               "--d-model", "64", "--no-morph"])
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "| tiny | 1,000 | kk |" in stdout and "premium" in stdout and "embedding params (d=64, tied)" in stdout
    data = json.loads((out / "compare.json").read_text())
    rows = {r["lang"]: r for r in data["rows"]}
    assert set(rows) == {"kk", "ru", "en"} and rows["en"]["premium_total"] == 1.0
    assert rows["kk"]["embedding_params"] == 64_000 and rows["kk"]["roundtrip_exact"] == 1.0
    assert (out / "compare.csv").read_text().startswith("tokenizer,vocab_size,lang,")
    for chart in ("tokenizer_compare_fertility.png", "tokenizer_compare_premium.png"):
        assert (out / chart).read_bytes()[:4] == b"\x89PNG"


def test_cli_flores_and_mono(tmp_path, tiny_tokenizer_dir, capsys, shared):
    rc = main(["tokenizer", "compare", str(tiny_tokenizer_dir), "--flores", "dev", "--limit", "20"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "FLORES+ dev (kk 20 lines" in out and "morph F1" in out
    mono = tmp_path / "kk.jsonl.gz"
    with gzip.open(mono, "wt", encoding="utf-8") as f:
        f.write('{"text": "Балалар мектепке барды."}\n')
    assert main(["tokenizer", "compare", str(tiny_tokenizer_dir), "--mono", f"kk={mono}", "--no-morph"]) == 0
    out = capsys.readouterr().out
    assert "monolingual" in out and "| kk |" in out


@pytest.mark.parametrize("case", ["misaligned", "empty", "bad_tokenizer", "missing_tokenizer", "no_pattern",
                                  "no_lang", "bad_utf8", "no_text"])
def test_cli_bad_inputs_give_one_line_errors(case, tmp_path, tiny_tokenizer_dir, capsys):
    tok = str(tiny_tokenizer_dir)
    good = {"kaz_Cyrl": ["a b", "c"], "eng_Latn": ["a", "b"]}
    if case == "misaligned":
        files = _parallel(tmp_path, {"kaz_Cyrl": ["a", "b", "c"], "eng_Latn": ["a", "b"]})
        args, needle = [tok, "--parallel", *files], "eng_Latn.txt: 2 lines but"
    elif case == "empty":
        files = _parallel(tmp_path, {"kaz_Cyrl": [""], "eng_Latn": ["a"]})
        args, needle = [tok, "--parallel", *files], "kaz_Cyrl.txt: empty file"
    elif case == "bad_tokenizer":
        bad = tmp_path / "broken" / "tokenizer.json"
        bad.parent.mkdir()
        bad.write_text("{not json", encoding="utf-8")
        args, needle = [str(bad), "--parallel", *_parallel(tmp_path, good)], "broken/tokenizer.json: cannot load"
    elif case == "missing_tokenizer":
        args, needle = [str(tmp_path / "nope"), "--flores", "dev"], "nope: no such tokenizer"
    elif case == "no_pattern":
        ranks = tmp_path / "mine.tiktoken"
        ranks.write_text("YQ== 0\nYg== 1\n", encoding="utf-8")
        args, needle = [str(ranks), "--parallel", *_parallel(tmp_path, good)], "mine.tiktoken: no split pattern"
    elif case == "no_lang":
        p = tmp_path / "text.txt"
        p.write_text("a\n", encoding="utf-8")
        args, needle = [tok, "--parallel", str(p)], "text.txt: cannot tell the language"
    elif case == "bad_utf8":
        files = _parallel(tmp_path, good)
        with open(files[0], "wb") as f:
            f.write(b"\xff\xfe bad\n")
        args, needle = [tok, "--parallel", *files], "kaz_Cyrl.txt:1: invalid UTF-8"
    else:
        args, needle = [tok], "give exactly one text source"
    assert main(["tokenizer", "compare", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_flores_report_for_other_stages(tmp_path, tiny_tokenizer_dir, shared):
    from qazlm.tokenizer.compare import CompareOptions, flores_report

    md = flores_report([f"tiny={tiny_tokenizer_dir}"], "dev", tmp_path, limit=10,
                       opts=CompareOptions(morphology=False))
    assert "| tiny | 1,000 | kk |" in md and (tmp_path / "compare.json").exists()
    assert (tmp_path / "tokenizer_compare_premium.png").exists()
