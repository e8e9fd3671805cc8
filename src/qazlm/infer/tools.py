"""Tool calls: validating tool definitions, and turning model text into OpenAI-style `tool_calls`.

The chat template (`qazlm.tokenizer.special_tokens.CHAT_TEMPLATE`) renders an assistant's calls as
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` blocks, one per call (Qwen/Hermes style).
`parse_tool_calls` reads them back from finished text; `ToolCallStream` does the same from text arriving
piece by piece (a server's stream): plain text passes through at once, except a tail that may be the start of
`<tool_call>`, and each call is emitted whole when its block closes. A block that is not a JSON object with a
known tool name and arguments valid for that tool's schema is reported as an error, never silently dropped.

Text must be decoded with special tokens kept (`<tool_call>` is one), which `decode_for_tools` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from qazlm.errors import QazlmError
from qazlm.tokenizer.special_tokens import EOS, IM_END, PAD, TOOL_CALL

OPEN, CLOSE = TOOL_CALL


def function_of(tool: dict) -> dict:
    """The function part of an OpenAI tool ({"type": "function", "function": {...}}) or a bare function."""
    return tool.get("function", tool) if isinstance(tool, dict) else {}


def check_tools(tools: list[dict], where: str = "tools") -> dict[str, dict]:
    """name -> parameters schema; one clear error for a tool without a name or with an invalid JSON Schema."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(tools, list):
        raise QazlmError(f"{where}: expected a list of tools, got {type(tools).__name__}")
    schemas: dict[str, dict] = {}
    for i, tool in enumerate(tools):
        fn = function_of(tool)
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise QazlmError(f"{where}[{i}]: a tool needs a function name")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        try:
            Draft202012Validator.check_schema(params)
        except SchemaError as e:
            raise QazlmError(f"{where}[{i}] ({name}): parameters is not a valid JSON Schema ({e.message})") from None
        if name in schemas:
            raise QazlmError(f"{where}: two tools are named {name!r}")
        schemas[name] = params
    return schemas


def call_arguments_text(arguments, where: str) -> str:
    """A call's arguments as the JSON object text the chat template writes between `"arguments": ` and `}`.

    OpenAI clients send JSON text and Python callers a dict; text that decodes to a string is an object
    serialised twice (the double-encoded-arguments bug of other chat templates, which then show the model
    `"arguments": "{\\"city\\": ...}"`), decoded once more. Whatever is not an object in the end — a bare word,
    a list, broken JSON — is an error: the template would write it into the prompt as it is."""
    value = arguments
    for _ in range(2):
        if not isinstance(value, str):
            break
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise QazlmError(f"{where}: arguments are not valid JSON ({e.msg}); send a JSON object such as "
                             '{"city": "Almaty"}, or a dict') from None
    if not isinstance(value, dict):
        raise QazlmError(f"{where}: arguments must be a JSON object, got {type(value).__name__}; send an object "
                         'such as {"city": "Almaty"}, or a dict')
    return json.dumps(value, ensure_ascii=False)


def call_block_text(name: str, arguments_text: str) -> str:
    """One call as the chat template writes it, with `arguments_text` as given: for the deliberately broken calls
    of preference data's rejected sides, which a message's `tool_calls` may not hold (`canonical_tool_calls`
    refuses them). A test checks it against the template's own rendering of a valid call."""
    return f'{OPEN}\n{{"name": "{name}", "arguments": {arguments_text}}}\n{CLOSE}'


def canonical_tool_calls(messages: list[dict]) -> list[dict]:
    """`messages` with every assistant call's arguments as JSON object text (`call_arguments_text`), so the one
    chat template renders dict and string arguments alike; a call without a name is an error."""
    out = []
    for i, message in enumerate(messages):
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        if not calls:
            out.append(message)
            continue
        if not isinstance(calls, list):
            raise QazlmError(f"messages[{i}].tool_calls: expected a list of calls")
        fixed = []
        for j, call in enumerate(calls):
            fn = function_of(call)
            name = fn.get("name") if isinstance(fn, dict) else None
            if not isinstance(name, str) or not name:
                raise QazlmError(f"messages[{i}].tool_calls[{j}]: a call needs a function name")
            fn = {**fn, "arguments": call_arguments_text(fn.get("arguments", {}),
                                                         f"messages[{i}].tool_calls[{j}] ({name})")}
            fixed.append({**call, "function": fn} if "function" in call else fn)
        out.append({**message, "tool_calls": fixed})
    return out


@dataclass
class ParsedReply:
    content: str
    tool_calls: list[dict] = field(default_factory=list)   # OpenAI style: id, type, function{name, arguments}
    errors: list[str] = field(default_factory=list)        # blocks that are not valid calls, with the reason


def check_call(block: str, schemas: dict[str, dict] | None) -> tuple[dict | None, str | None]:
    """(the call as {"name", "arguments"}, None) or (None, why it is not a valid call)."""
    from jsonschema import Draft202012Validator

    try:
        call = json.loads(block)
    except json.JSONDecodeError as e:
        return None, f"not JSON ({e.msg} at character {e.pos})"
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None, 'not an object with a "name"'
    args = call.get("arguments", {})
    if isinstance(args, str):  # a model that double-encodes: accept it once, report it as a string never
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None, "arguments is a string that is not JSON"
    if not isinstance(args, dict):
        return None, "arguments is not a JSON object"
    if schemas is not None:
        if call["name"] not in schemas:
            return None, f"unknown function {call['name']!r}"
        problem = next(iter(Draft202012Validator(schemas[call["name"]]).iter_errors(args)), None)
        if problem is not None:
            return None, f"arguments do not match {call['name']}'s schema ({problem.message})"
    return {"name": call["name"], "arguments": args}, None


def openai_call(call: dict, index: int) -> dict:
    return {"id": f"call_{index}", "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(call["arguments"], ensure_ascii=False)}}


def parse_tool_calls(text: str, tools: list[dict] | None = None) -> ParsedReply:
    """Content (the text outside the blocks, stripped) and the calls in `text`; with `tools`, calls are checked
    against their schemas. An unclosed block at the end (a reply cut by max_tokens) is an error."""
    stream = ToolCallStream(tools)
    pieces = stream.feed(text) + stream.finish()
    return ParsedReply("".join(p["content"] for p in pieces if "content" in p).strip(),
                       [p["tool_call"] for p in pieces if "tool_call" in p],
                       [p["error"] for p in pieces if "error" in p])


class ToolCallStream:
    """Incremental parser: `feed(delta)` -> events ({"content": str} | {"tool_call": {...}} | {"error": str})."""

    def __init__(self, tools: list[dict] | None = None):
        self.schemas = check_tools(tools) if tools is not None else None
        self.buffer = ""
        self.inside = False
        self.calls = 0

    def feed(self, delta: str) -> list[dict]:
        self.buffer += delta
        events = []
        while True:
            if not self.inside:
                at = self.buffer.find(OPEN)
                if at < 0:
                    keep = partial_suffix(self.buffer, OPEN)  # "<tool_c" may become "<tool_call>"
                    text, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
                    if text:
                        events.append({"content": text})
                    return events
                if at:
                    events.append({"content": self.buffer[:at]})
                self.buffer, self.inside = self.buffer[at + len(OPEN):], True
            end = self.buffer.find(CLOSE)
            if end < 0:
                return events
            events.append(self._call(self.buffer[:end]))
            self.buffer, self.inside = self.buffer[end + len(CLOSE):].removeprefix("\n"), False

    def finish(self) -> list[dict]:
        """The end of the reply: leftover text is content; an open block is an error (cut off)."""
        rest, self.buffer = self.buffer, ""
        if self.inside:
            self.inside = False
            return [{"error": f"unfinished {OPEN} block (the reply was cut off): {rest.strip()[:80]!r}"}]
        return [{"content": rest}] if rest else []

    def _call(self, block: str) -> dict:
        call, why = check_call(block.strip(), self.schemas)
        if call is None:
            return {"error": f"{OPEN} block {block.strip()[:80]!r}: {why}"}
        self.calls += 1
        return {"tool_call": openai_call(call, self.calls - 1)}


def partial_suffix(text: str, marker: str) -> int:
    """Length of the longest end of `text` that is a proper start of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


def decode_for_tools(tokenizer, ids: list[int]) -> str:
    """Text with `<tool_call>` markers kept and end/padding tokens removed."""
    text = tokenizer.decode(ids, skip_special_tokens=False)
    for token in (IM_END, EOS, PAD):
        text = text.replace(token, "")
    return text
