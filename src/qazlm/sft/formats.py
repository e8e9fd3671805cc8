"""External instruction data in the common formats, checked turn by turn.

Accepted records (one JSON object per line of a local .jsonl/.jsonl.gz, or rows of a Hub dataset):
  messages: {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}  (TRL / Hub)
  ShareGPT: {"conversations": [{"from": "system"|"human"|"gpt", "value": "..."}, ...]}
  Alpaca:   {"instruction": "...", "input": "...", "output": "..."}
A conversation is usable when it is an optional system turn, then user/assistant turns alternating from
the user, ending with an assistant turn, none empty. Anything else is set aside with its reason (written
to rejected.jsonl and counted in the card); it never stops the run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import iter_text_lines

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
HUB_PREFIX = "hf:"


def to_messages(record) -> list[dict] | str:
    """The record as a messages list, or the reason it cannot be one."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if "messages" in record:
        turns = record["messages"]
        key_role, key_text, roles = "role", "content", {"system": "system", "user": "user", "assistant": "assistant"}
    elif "conversations" in record:
        turns, key_role, key_text, roles = record["conversations"], "from", "value", SHAREGPT_ROLES
    elif "instruction" in record and "output" in record:
        user = f"{record['instruction']}".strip()
        extra = f"{record.get('input') or ''}".strip()
        turns = [{"role": "user", "content": user + (f"\n\n{extra}" if extra else "")},
                 {"role": "assistant", "content": f"{record['output']}"}]
        key_role, key_text, roles = "role", "content", {"user": "user", "assistant": "assistant"}
    else:
        return "unknown format (expected messages, conversations or instruction/output)"
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        return "turns are not a list of objects"
    msgs = []
    for t in turns:
        role = roles.get(str(t.get(key_role, "")))
        if role is None:
            return f"unknown role {t.get(key_role)!r}"
        msgs.append({"role": role, "content": t.get(key_text)})
    return check_messages(msgs) or msgs


def check_messages(msgs: list[dict]) -> str | None:
    """None for a well-formed conversation, else the reason it is not one."""
    if any(not isinstance(m["content"], str) or not m["content"].strip() for m in msgs):
        return "empty content"
    body = msgs[1:] if msgs and msgs[0]["role"] == "system" else msgs
    if not any(m["role"] == "assistant" for m in body):
        return "no assistant turn"
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if [m["role"] for m in body] != expected[:len(body)]:
        return "roles out of order"
    if body[-1]["role"] != "assistant":
        return "ends without an assistant reply"
    return None


def _local_records(path: Path) -> Iterator[tuple[str, object]]:
    for lineno, line in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            yield f"{path.name}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            yield f"{path.name}:{lineno}", f"malformed JSON ({e.msg})"


def _hub_records(name: str) -> Iterator[tuple[str, object]]:
    """Rows of a Hub dataset (or a local dataset folder) via `datasets`, from the local cache only."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    try:
        rows = datasets.load_dataset(name, split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types; one line for the user
        raise QazlmError(f"external {HUB_PREFIX}{name}: cannot load it offline ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); download it first or give a local JSONL") from None
    for i, row in enumerate(rows):
        yield f"{name}:{i}", row


def read_external(spec: str) -> Iterator[tuple[str, list[dict] | str]]:
    """(where, messages or reason) for each record of a local JSONL or `hf:NAME` dataset."""
    if spec.startswith(HUB_PREFIX):
        records = _hub_records(spec.removeprefix(HUB_PREFIX))
    else:
        path = Path(spec)
        if not path.is_file():
            raise QazlmError(f"external {spec}: file not found; give a local .jsonl (messages, ShareGPT or "
                             f"Alpaca records) or {HUB_PREFIX}NAME for a Hub dataset")
        records = _local_records(path)
    for where, record in records:
        yield where, record if isinstance(record, str) else to_messages(record)
