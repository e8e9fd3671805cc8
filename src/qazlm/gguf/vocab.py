"""What llama.cpp must know about a tokenizer that its converter cannot find out: the pre-tokenizer.

llama.cpp re-implements each known pre-tokenizer (split regex + merge rule) in C++ and picks one by name
(`tokenizer.ggml.pre`). Our tokenizers split with Llama 3's or Qwen2's regex (`qazlm.tokenizer.train.PATTERNS`)
and apply BPE merges to every piece. Llama 3's own entry (`llama-bpe`) also turns on `ignore_merges` (a piece
that is a whole vocabulary entry is taken as is, as Llama 3's tokenizer.json asks); `dbrx` has the same regex
without it, which is exactly our rule. A tokenizer that is not ours is left to the converter's own check-text
hash, which knows the published ones (SmolLM2, Llama 3, Qwen3, ...).
"""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, IM_END, IM_START, inference_template

# (our split pattern name, tokenizer.json's ignore_merges) -> llama.cpp pre-tokenizer with that exact rule
PRE_TOKENIZERS = {("llama3", False): "dbrx", ("llama3", True): "llama-bpe", ("qwen2", False): "qwen2"}


def split_pattern(tokenizer_json: dict) -> str | None:
    """Our PATTERNS name of a byte-level BPE whose only splitting is one of our regexes (None otherwise)."""
    from qazlm.tokenizer.train import PATTERNS

    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    if len(regexes) != 1 or len(byte_level) != 1 or byte_level[0].get("use_regex") or len(steps) != 2:
        return None
    if tokenizer_json.get("normalizer"):
        return None  # llama.cpp normalizes nothing for BPE vocabularies
    return next((name for name, regex in PATTERNS.items() if regex == regexes[0]), None)


def pre_tokenizer(hf_dir: Path) -> str | None:
    """The llama.cpp pre-tokenizer name for a tokenizer built like ours (also after SFT, in a Hugging Face
    folder); None to let the converter recognise it."""
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise QazlmError(f"{hf_dir}: no tokenizer.json; GGUF export needs the tokenizer beside the weights")
    try:
        tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise QazlmError(f"{path}: not readable JSON ({e}); re-export the model folder") from None
    pattern = split_pattern(tokenizer_json)
    if pattern is None:
        return None
    ignore_merges = bool(tokenizer_json.get("model", {}).get("ignore_merges", False))
    try:
        return PRE_TOKENIZERS[(pattern, ignore_merges)]
    except KeyError:
        raise QazlmError(f"{path}: split pattern {pattern} with ignore_merges={ignore_merges} has no llama.cpp "
                         "pre-tokenizer; retrain the tokenizer with pattern = \"llama3\"") from None


def overrides(hf_dir: Path, ours: bool) -> dict:
    """What qazlm.gguf.runner tells the converter: the pre-tokenizer (ours only), the end-of-turn id, whether a
    BOS is prepended (as transformers does for this tokenizer) and a chat template any Jinja engine renders.
    A base model of ours gets the ChatML template its tokenizer reserves tokens for (as `qazlm quantize` does)."""
    from qazlm.infer.loading import load_tokenizer

    tok = load_tokenizer(hf_dir)
    vocab = tok.get_vocab()
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    if template is None and ours and IM_START in vocab:
        template = CHAT_TEMPLATE
    first = tok("a")["input_ids"]
    return {"pre": pre_tokenizer(hf_dir),
            "eot_token_id": vocab.get(IM_END),
            "add_bos_token": tok.bos_token_id is not None and bool(first) and first[0] == tok.bos_token_id,
            "chat_template": inference_template(template) if template else None}
