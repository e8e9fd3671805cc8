"""Chat rendering: messages -> prompt text through the tokenizer's chat template.

There is one chat template in qazlm, `qazlm.tokenizer.special_tokens.CHAT_TEMPLATE` (ChatML, as Qwen
uses it); a tokenizer without a template of its own is rendered with it.
"""

from __future__ import annotations

from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """`messages` ([{"role", "content"}, ...]) as prompt text, ending with an open assistant turn."""
    template = getattr(tokenizer, "chat_template", None) or CHAT_TEMPLATE
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def format_chat(tokenizer, prompt: str, system: str | None = None) -> str:
    """One user prompt (and an optional system message) as a chat prompt."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return render_chat(tokenizer, messages)
