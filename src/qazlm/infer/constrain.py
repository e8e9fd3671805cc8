"""Constrained decoding: the model may only emit text that matches a JSON Schema (a `response_format`) or a
tool call of the given tools, through outlines-core (the grammar engine under outlines and vLLM's
`guided_json`): JSON Schema -> regex -> a token-level automaton over the tokenizer's vocabulary.

At every step `Constraint.mask` sets the logits of the tokens the automaton forbids to -inf; `advance` moves
each row's state with the token it took. When a row's text is complete, only the stop token is allowed, so the
engine's usual stop handling ends it. Works for byte-level BPE tokenizers (ours, Llama 3, Qwen, SmolLM2).

A grammar alone does not make a reply valid: an unbounded string or number can run until `max_new_tokens` cuts
it, leaving broken JSON. Given the row's token budget (`limit_tokens`), the mask also forbids every token after
which the shortest way to a complete text (then the stop token) no longer fits, so a reply that can be finished
in its budget always is: the model writes freely while there is room and is steered to close the value, the
object and the call as the budget runs out.
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
# The stop token is a character of the grammar too: every regex ends with it, so the automaton's only final state
# is "stopped". outlines-core 0.2.14 drops a token that leaves a final state for a non-final one (from the final
# state of `a(bc)*` it keeps `bc` but not `b`; `a|abc` never reaches `abc`), so a complete text that may go on
# (a second parallel call after the first) could only end. With the stop inside the regex no state before it is
# final. Its own end-of-sequence id is a token the automaton never reaches (`_unused_id`).
STOP_MARK = "\x03"
MARKER_BYTES = {ord(c) for c in (*MARKERS.values(), STOP_MARK)}


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
    the tool-call markers and `stop_id` (the regex spells them: `STOP_MARK` ends every text)."""
    from outlines_core import Vocabulary
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    decoder = json.loads(tokenizer.backend_tokenizer.to_str()).get("decoder") or {}
    if decoder.get("type") != "ByteLevel" and "ByteLevel" not in json.dumps(decoder):
        raise QazlmError("constrained decoding: supported for byte-level BPE tokenizers (ours, Llama 3, Qwen, "
                         f"SmolLM2); this tokenizer's decoder is {decoder.get('type')}")
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {i for t, i in tokenizer.get_added_vocab().items()}
    tokens: dict[bytes, list[int]] = {STOP_MARK.encode(): [stop_id]}
    for text, tid in tokenizer.get_vocab().items():
        if tid == stop_id:
            continue
        if text in MARKERS:
            tokens.setdefault(MARKERS[text].encode(), []).append(tid)
        elif tid not in special and all(c in to_byte for c in text):
            raw = bytes(to_byte[c] for c in text)
            if not MARKER_BYTES & set(raw):   # nothing else may spell a marker
                tokens.setdefault(raw, []).append(tid)
    return Vocabulary(_unused_id(tokens), tokens)


def _unused_id(tokens: dict[bytes, list[int]]) -> int:
    """The smallest id no entry of `tokens` has: outlines-core's end-of-sequence token, allowed only in the
    final state, which is reached by the stop token and so never masked for."""
    used = {i for ids in tokens.values() for i in ids}
    return next(i for i in range(len(used) + 1) if i not in used)


@lru_cache(maxsize=16)
def _index(tokenizer, stop_id: int, regex: str):
    from outlines_core import Index

    try:
        return Index(f"({regex}){STOP_MARK}", _vocabulary(tokenizer, stop_id))
    except (ValueError, RuntimeError) as e:
        raise QazlmError(f"constrained decoding: the grammar has no path through this vocabulary ({e})") from None


@lru_cache(maxsize=16)
def _distances(tokenizer, stop_id: int, regex: str) -> tuple[dict, dict, dict]:
    """(transitions {state: {token: next state}}, distance {state: fewest tokens to a complete text}, farthest
    {state: the largest distance any allowed token leads to}) of the automaton, by a backward breadth-first
    search from its final state (after the stop token, so -1 there and 0 where the text is complete); once per
    grammar, like the index (its cost: docs/tools.md, "Grammar cost")."""
    index = _index(tokenizer, stop_id, regex)
    transitions = index.get_transitions()
    # a state inside a string has 10k+ tokens but one or two next states
    after = {state: set(moves.values()) for state, moves in transitions.items()}
    before: dict[int, set[int]] = {}
    for state, nexts in after.items():
        for nxt in nexts:
            before.setdefault(nxt, set()).add(state)
    distance = dict.fromkeys(index.get_final_states(), -1)  # after the stop token, which is not text
    frontier = list(distance)
    while frontier:
        reached = []
        for state in frontier:
            for prev in before.get(state, ()):
                if prev not in distance:
                    distance[prev] = distance[state] + 1
                    reached.append(prev)
        frontier = reached
    far = len(transitions) + 1  # a state with no way to a final one (none in an outlines index)
    farthest = {state: max((distance.get(n, far) for n in nexts), default=0) for state, nexts in after.items()}
    return transitions, distance, farthest


class Constraint:
    """Per-row grammar state for one batch (every row follows the same regex)."""

    def __init__(self, tokenizer, regex: str, stop_id: int, rows: int):
        from outlines_core import Guide

        index = _index(tokenizer, stop_id, regex)
        self.guides = [Guide(index) for _ in range(rows)]
        self.stop_id = stop_id
        self.words = None
        self.moves, self.distance, self.farthest = _distances(tokenizer, stop_id, regex)
        self.left: list[int | None] = [None] * rows  # tokens each row may still take, its stop token included

    def limit_tokens(self, budget: int) -> None:
        """Every row may take `budget` more tokens, its stop token included (the engine's `max_new_tokens`)."""
        self.left = [budget] * len(self.guides)

    def _too_long(self, row: int) -> list[int]:
        """Tokens after which the shortest complete text plus the stop token exceeds the row's budget; when none
        fits (a budget below the shortest text), all but those that get closest."""
        left, state = self.left[row], self.guides[row].get_state()
        if left is None or self.farthest.get(state, 0) <= left - 2:
            return []
        shortest = self.distance.get(state, 0)  # 0: complete, the stop token may come next
        reach = left - 2 if shortest == 0 else max(left - 2, shortest - 1)
        return [t for t, n in self.moves.get(state, {}).items()
                if self.distance.get(n, reach + 1) > reach and t != self.stop_id]

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
        for row in range(rows):
            too_long = [t for t in self._too_long(row) if t < vocab]
            if too_long:
                allowed[row, too_long] = False
        return logits.masked_fill_(~allowed.to(logits.device), float("-inf"))

    def advance(self, rows: list[int], tokens: list[int]) -> None:
        """Move each row's automaton by the token it took, also at a complete text, which may still go on (a
        second parallel call after the first); only the stop token ends a row and is not followed."""
        for row, token in zip(rows, tokens):
            if self.left[row] is not None:
                self.left[row] -= 1
            if token != self.stop_id:
                self.guides[row].advance(token)
