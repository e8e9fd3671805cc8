"""Constrained decoding: the model may only emit text that matches a JSON Schema (a `response_format`) or a
tool call of the given tools, through outlines-core (the grammar engine under outlines and vLLM's
`guided_json`): JSON Schema -> regex -> a token-level automaton over the tokenizer's vocabulary.

At every step `Constraint.mask` sets the logits of the tokens the automaton forbids to -inf; `advance` moves
each row's state with the token it took. When a row's text is complete, only the stop token is allowed, so the
engine's usual stop handling ends it. Works for byte-level BPE tokenizers (ours, Llama 3, Qwen, SmolLM2).
"""

from __future__ import annotations

import json
from functools import lru_cache

from qazlm.errors import QazlmError
from qazlm.infer.tools import CLOSE, OPEN, check_tools, function_of
from qazlm.tokenizer.special_tokens import token_id

# In the automaton the tool-call markers are control characters that only their special tokens spell, so a
# constrained reply always uses the single `<tool_call>` token, never "<", "tool", "_call", ">". JSON admits no
# raw control character, inside a string or out, so the grammar cannot put `</tool_call>` inside an argument
# value (docs/tools.md: private-use markers could).
MARKERS = {OPEN: "\x01", CLOSE: "\x02"}
MARKER_BYTES = {ord(c) for c in MARKERS.values()}


def schema_regex(schema: dict | str) -> str:
    from outlines_core.json_schema import build_regex_from_schema

    text = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        return build_regex_from_schema(text)
    except (ValueError, TypeError, RuntimeError) as e:  # outlines-core raises ValueError for what it cannot compile
        raise QazlmError(f"json schema: cannot be turned into a grammar ({str(e).splitlines()[0][:200]})") from None


def tool_call_regex(tools: list[dict], parallel: bool = True, tokenizer=None) -> str:
    """One or more `<tool_call>` blocks, each a call of one of `tools` with schema-valid arguments, in the
    chat template's layout. With a tokenizer that has no `<tool_call>` token, the markers are plain text."""
    import re

    check_tools(tools)
    single = tokenizer is None or token_id(tokenizer, OPEN) is not None
    marks = MARKERS if single else {OPEN: re.escape(OPEN), CLOSE: re.escape(CLOSE)}
    calls = {"anyOf": [{"type": "object", "properties": {"name": {"const": function_of(t)["name"]},
                                                         "arguments": function_of(t).get("parameters", {})},
                        "required": ["name", "arguments"]} for t in tools]}
    block = f"{marks[OPEN]}\\n{schema_regex(calls)}\\n{marks[CLOSE]}"
    return f"{block}(\\n{block})*" if parallel else block


@lru_cache(maxsize=4)
def _vocabulary(tokenizer, stop_id: int):
    """outlines-core's Vocabulary: every token as the bytes it stands for; special tokens are left out except
    the tool-call markers (the regex spells them), and `stop_id` ends a finished text."""
    from outlines_core import Vocabulary
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    if decoder.get("type") != "ByteLevel" and "ByteLevel" not in json.dumps(decoder):
        raise QazlmError("constrained decoding: supported for byte-level BPE tokenizers (ours, Llama 3, Qwen, "
                         f"SmolLM2); this tokenizer's decoder is {decoder.get('type')}")
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {i for t, i in tokenizer.get_added_vocab().items()}
    tokens: dict[bytes, list[int]] = {}
    for text, tid in tokenizer.get_vocab().items():
        if tid == stop_id:
            continue
        if text in MARKERS:
            tokens.setdefault(MARKERS[text].encode(), []).append(tid)
        elif tid not in special and all(c in to_byte for c in text):
            raw = bytes(to_byte[c] for c in text)
            if not MARKER_BYTES & set(raw):   # nothing else may spell a marker
                tokens.setdefault(raw, []).append(tid)
    return Vocabulary(stop_id, tokens)


@lru_cache(maxsize=16)
def _index(tokenizer, stop_id: int, regex: str):
    from outlines_core import Index

    try:
        return Index(regex, _vocabulary(tokenizer, stop_id))
    except (ValueError, RuntimeError) as e:
        raise QazlmError(f"constrained decoding: the grammar has no path through this vocabulary ({e})") from None


class Constraint:
    """Per-row grammar state for one batch (every row follows the same regex)."""

    def __init__(self, tokenizer, regex: str, stop_id: int, rows: int):
        from outlines_core import Guide

        index = _index(tokenizer, stop_id, regex)
        self.guides = [Guide(index) for _ in range(rows)]
        self.stop_id = stop_id
        self.words = None

    def mask(self, logits):
        """-inf on every token the grammar forbids, per row (`logits`: [rows, V], changed in place)."""
        import torch

        rows, vocab = logits.shape
        words = (vocab + 31) // 32
        if self.words is None or self.words.shape != (rows, words):
            self.words = torch.zeros(rows, words, dtype=torch.int32)
            self.shifts = torch.arange(32, dtype=torch.int32)
        self.words.zero_()
        for row, guide in enumerate(self.guides):
            guide.write_mask_into(self.words[row].data_ptr(), words, 4)
        allowed = ((self.words[:, :, None] >> self.shifts) & 1).bool().view(rows, -1)[:, :vocab]
        return logits.masked_fill_(~allowed.to(logits.device), float("-inf"))

    def advance(self, rows: list[int], tokens: list[int]) -> None:
        for row, token in zip(rows, tokens):
            guide = self.guides[row]
            if token != self.stop_id and not guide.is_finished():
                guide.advance(token)

    def finished(self, row: int) -> bool:
        return self.guides[row].is_finished()
