"""Chat rendering: messages -> prompt text through the tokenizer's chat template.

There is one chat template in qazlm, `qazlm.tokenizer.special_tokens.CHAT_TEMPLATE` (ChatML, as Qwen
uses it); a tokenizer without a template of its own is rendered with it. `assistant_mask` gives the
tokens a chat model is trained on, through the template's `{% generation %}` markers.
"""

from __future__ import annotations

import re
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.infer.tools import canonical_tool_calls
from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def chat_template_of(tokenizer) -> str:
    """The tokenizer's own chat template, or qazlm's when it has none (a base model's tokenizer)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one
        template = template.get("default")
    return template or CHAT_TEMPLATE


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                tools: list[dict] | None = None) -> str:
    """`messages` ([{"role", "content"}, ...]) as prompt text, ending with an open assistant turn; `tools`
    (OpenAI function definitions) go into the system turn."""
    template = chat_template_of(tokenizer)
    if tools:
        check_renders_tools(tokenizer, template)
    messages = canonical_tool_calls(messages)
    return tokenizer.apply_chat_template(messages, tools=tools or None, chat_template=template,
                                         tokenize=False, add_generation_prompt=add_generation_prompt)


_PROBE_TOOL = {"type": "function", "function": {"name": "qazlm_probe_tool", "description": "a probe",
                                                 "parameters": {"type": "object", "properties": {}}}}
_RENDERS_TOOLS: dict[str, bool] = {}


def check_renders_tools(tokenizer, template: str) -> None:
    """Most Hub chat templates (SmolLM2's, Llama 2's) drop `tools` without a word: the model would be asked to
    call functions it was never shown, and a tool evaluation, SFT on tool data or a server request with tools
    would give silent nonsense. Checked once per template, by rendering a probe tool."""
    if template not in _RENDERS_TOOLS:
        probe = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=[_PROBE_TOOL],
                                              chat_template=template, tokenize=False, add_generation_prompt=True)
        _RENDERS_TOOLS[template] = "qazlm_probe_tool" in probe
    if not _RENDERS_TOOLS[template]:
        name = Path(getattr(tokenizer, "name_or_path", "") or "the tokenizer").name  # no server paths to clients
        raise QazlmError(f"{name}: its chat template does not render tools, so the model would never see them; "
                         "fine-tune it with qazlm's template (`qazlm sft MODEL --set chat_template=qazlm`) or give "
                         "it a template that renders `tools`")


def assistant_mask(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, mask) of a whole conversation; mask is 1 on the tokens a model learns to produce.

    transformers computes the mask from the template's `{% generation %}` spans (what TRL's
    `assistant_only_loss` uses): with qazlm's template, each assistant turn's content, tool calls and
    `<|im_end|>` are 1; system/user/tool turns, the `<|im_start|>assistant\\n` header and the newline after
    `<|im_end|>` are 0. A template without markers, or a conversation without assistant tokens, would
    train on nothing without a word, so both are errors.
    """
    template = chat_template_of(tokenizer)
    if not GENERATION_MARKER.search(template):
        raise QazlmError("chat template is not training-compatible: it has no {% generation %} markers; "
                         "use qazlm's template (qazlm.tokenizer.special_tokens.CHAT_TEMPLATE)")
    if tools:
        check_renders_tools(tokenizer, template)
    out = tokenizer.apply_chat_template(canonical_tool_calls(messages), tools=tools, chat_template=template,
                                        tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = list(out["input_ids"]), [int(m) for m in out["assistant_masks"]]
    if not any(mask):
        raise QazlmError("conversation has no assistant tokens to train on (it has no assistant turn); "
                         "give each conversation at least one assistant reply")
    return ids, mask


def format_chat(tokenizer, prompt: str, system: str | None = None, tools: list[dict] | None = None) -> str:
    """One user prompt (and an optional system message and tools) as a chat prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return render_chat(tokenizer, messages, tools=tools)
