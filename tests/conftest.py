"""Shared fixtures: paths to bundled/shared data and a tiny trained tokenizer (built once per session)."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest

from qazlm.paths import REPO_ROOT, SAMPLE_DIR, shared_dir

SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not path.exists():
        pytest.skip(f"{path} (the shared data folder) is absent")
    return path


@pytest.fixture(scope="session")
def sample_lines() -> dict[str, list[str]]:
    """First 400 lines of each bundled sample language (real kk/ru/en text)."""
    out = {}
    for lang in ("kk", "ru", "en"):
        lines = []
        for f in sorted((SAMPLE_DIR / lang).glob("*.txt.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                lines += [ln.strip() for ln in itertools.islice(fh, 150) if ln.strip()]
        out[lang] = lines[:400]
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, sample_lines) -> Path:
    """100 real lines per language under kk/ ru/ en/: a tokenizer-training input read in milliseconds."""
    root = tmp_path_factory.mktemp("corpus")
    for lang, lines in sample_lines.items():
        (root / lang).mkdir()
        (root / lang / "part.txt").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, sample_lines) -> Path:
    """A 1,000-token byte-level BPE trained in a second on sample text, saved as an HF tokenizer folder.

    Independent of qazlm.tokenizer so that other stages' tests do not break with it.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(itertools.chain(*sample_lines.values()), trainer)
    out = tmp_path_factory.mktemp("tiny_tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                            bos_token="<|endoftext|>").save_pretrained(out)
    return out
