"""Special tokens and the ChatML chat template, reserved now so later stages never resize the vocabulary.

Ids are fixed by order: `<|endoftext|>` (the document boundary, also eos/bos) is id 0 in every qazlm
tokenizer. Other stages must still read ids from the tokenizer (`tok.eos_token_id`), never hard-code them.
"""

from __future__ import annotations

import re

EOS = "<|endoftext|>"          # document boundary; eos_token and bos_token
PAD = "<|pad|>"
IM_START = "<|im_start|>"      # ChatML turn start; the role (system/user/assistant/tool) follows as text
IM_END = "<|im_end|>"
TOOL_CALL = ("<tool_call>", "</tool_call>")
TOOL_RESPONSE = ("<tool_response>", "</tool_response>")
THINK = ("<think>", "</think>")
NUM_RESERVED = 64


def token_id(tokenizer, token: str) -> int | None:
    """The id of `token` in an HF tokenizer, or None. Fast tokenizers answer in O(1); `get_vocab()` would build
    the whole vocabulary as a dict on every call (the server asks on every request)."""
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "token_to_id"):
        found = backend.token_to_id(token)
        return None if found is None else int(found)
    found = tokenizer.get_vocab().get(token)
    return None if found is None else int(found)


def reserved_tokens(n: int = NUM_RESERVED) -> list[str]:
    return [f"<|reserved_{i}|>" for i in range(n)]


SPECIAL_TOKENS: list[str] = [EOS, PAD, IM_START, IM_END, *TOOL_CALL, *TOOL_RESPONSE, *THINK, *reserved_tokens()]

# ChatML (as Qwen2.5/Qwen3 use it): tools go into the system turn as JSON schemas; an assistant's tool calls
# are JSON objects inside <tool_call>...</tool_call>; tool results come back as a user-side turn wrapped in
# <tool_response>. `add_generation_prompt` opens the assistant turn. Arguments given as a JSON string are
# emitted as they are (never quoted again); any other value is rendered with `tojson`.
# `{% generation %}` marks what a model is trained to produce (transformers' `return_assistant_tokens_mask`,
# TRL's `assistant_only_loss`): each assistant turn's content and tool calls plus its `<|im_end|>` (so the model
# learns to stop). The `<|im_start|>assistant\n` header (the prompt opens it at inference) and the newline after
# `<|im_end|>` (never generated: decoding stops at `<|im_end|>`) are outside, as in TRL's Qwen training templates.
# The markers emit no text.
CHAT_TEMPLATE = """\
{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}
{{- '# Tools\\n\\nYou may call one or more functions. Function signatures are inside <tools></tools>:\\n<tools>' }}
{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}
{{- '\\n</tools>\\n\\nReturn each call as a JSON object with "name" and "arguments" inside <tool_call></tool_call>.<|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\\n' }}
{%- generation %}
{{- message.content or '' }}
{%- if message.tool_calls %}
{%- for call in message.tool_calls %}
{%- set fn = call.function if call.function is defined else call %}
{%- if (message.content or '') or not loop.first %}{{- '\\n' }}{%- endif %}
{{- '<tool_call>\\n{"name": "' + fn.name + '", "arguments": ' }}
{%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}
{{- '}\\n</tool_call>' }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>' }}
{%- endgeneration %}
{{- '\\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
"""

_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


def inference_template(template: str) -> str:
    """`template` with each `{% generation %}` / `{% endgeneration %}` turned into `{% if true %}` /
    `{% endif %}`: the same text, whitespace control included, for Jinja engines without transformers'
    generation extension (llama-cpp-python's chat formatter, Ollama); llama.cpp itself parses both."""
    return _GENERATION_TAG.sub(lambda m: "{%" + m[1] + (" endif " if m[2] else " if true ") + m[3] + "%}", template)
