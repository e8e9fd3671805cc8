"""The chat template's generation markers and `assistant_mask`: the exact tokens a chat model trains on."""

from __future__ import annotations

import json
import os

import pytest

from qazlm.errors import QazlmError
from qazlm.infer.chat import assistant_mask, render_chat
from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE, IM_END

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONVERSATION = [
    {"role": "system", "content": "Сен көмекшісің."},
    {"role": "user", "content": "Сәлем!"},
    {"role": "assistant", "content": "Сәлем! Қалың қалай?"},
    {"role": "user", "content": "Жақсы. Translate: good morning"},
    {"role": "assistant", "content": "Қайырлы таң"},
]
# A ChatML template as many HF models ship it: right text, but no {% generation %} markers.
PLAIN_CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
                "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
MARKED_CHATML = ("{% for m in messages %}{% if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
                 "{{ m.content + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}{% else %}"
                 "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}")
TOOL_CALL_TEXT = '<tool_call>\n{"name": "weather", "arguments": {"city": "Алматы"}}\n</tool_call>'


@pytest.fixture(scope="module")
def qazlm_tok(tmp_path_factory, corpus):
    """A tokenizer trained by `qazlm.tokenizer.train` (ships CHAT_TEMPLATE), in about a second."""
    from transformers import AutoTokenizer

    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("chat_tok")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=600), out, show_progress=False)
    return AutoTokenizer.from_pretrained(out)


def spans(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of ones."""
    out, start = [], None
    for i, m in enumerate(mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def test_markers_emit_no_text(qazlm_tok):
    assert qazlm_tok.chat_template == CHAT_TEMPLATE
    text = qazlm_tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == ("<|im_start|>system\nСен көмекшісің.<|im_end|>\n<|im_start|>user\nСәлем!<|im_end|>\n"
                    "<|im_start|>assistant\nСәлем! Қалың қалай?<|im_end|>\n"
                    "<|im_start|>user\nЖақсы. Translate: good morning<|im_end|>\n"
                    "<|im_start|>assistant\nҚайырлы таң<|im_end|>\n")
    assert "generation" not in text


def test_exact_mask_of_a_multi_turn_conversation_with_a_system_prompt(qazlm_tok):
    ids, mask = assistant_mask(qazlm_tok, CONVERSATION)
    assert ids == qazlm_tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    end, newline = qazlm_tok.convert_tokens_to_ids(IM_END), qazlm_tok.encode("\n", add_special_tokens=False)
    replies = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]
    expected = [0] * len(ids)
    for (start, stop), reply in zip(spans(mask), replies, strict=True):
        # 1: exactly the reply's own tokens and its <|im_end|>
        assert ids[start:stop] == qazlm_tok.encode(reply, add_special_tokens=False) + [end]
        # 0: the header just before (ends "assistant\n") and the newline just after
        assert qazlm_tok.decode(ids[:start]).endswith("<|im_start|>assistant\n")
        assert ids[stop:stop + len(newline)] == newline
        expected[start:stop] = [1] * (stop - start)
    assert mask == expected
    assert sum(mask) == sum(len(qazlm_tok.encode(r, add_special_tokens=False)) + 1 for r in replies)
    unmasked = qazlm_tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "Сен көмекшісің." in unmasked and "Сәлем!<|im_end|>" in unmasked and "Қайырлы" not in unmasked


def test_tool_calls_are_masked_and_arguments_never_double_encoded(qazlm_tok):
    for arguments in ({"city": "Алматы"}, '{"city": "Алматы"}'):  # a dict (tojson) or a JSON string (as is)
        messages = [{"role": "user", "content": "Ауа райы?"},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"type": "function", "function": {"name": "weather", "arguments": arguments}}]},
                    {"role": "tool", "content": '{"temp": 21}'}]
        text = qazlm_tok.apply_chat_template(messages, tokenize=False)
        assert TOOL_CALL_TEXT + "<|im_end|>" in text, text
        assert '"arguments": "' not in text  # a string wrapped in quotes again would be JSON inside a string
        payload = text.split("<tool_call>\n")[1].split("\n</tool_call>")[0]
        assert json.loads(payload) == {"name": "weather", "arguments": {"city": "Алматы"}}
        ids, mask = assistant_mask(qazlm_tok, messages)
        masked = qazlm_tok.decode([t for t, m in zip(ids, mask) if m])
        assert masked == TOOL_CALL_TEXT + "<|im_end|>"  # the tool's reply (a user-side turn) is not trained on


def _weather_call(arguments) -> list[dict]:
    return [{"role": "user", "content": "Ауа райы?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "weather", "arguments": arguments}}]}]


def test_double_encoded_arguments_are_decoded_and_non_objects_refused(qazlm_tok, tmp_path):
    """The template writes string arguments as they are, so every path in (render_chat, assistant_mask, the SFT
    loader) first makes them JSON object text: an object serialised twice is decoded, anything else refused."""
    from qazlm.sft.load import read_conversations

    twice = json.dumps(json.dumps({"city": "Алматы"}, ensure_ascii=False), ensure_ascii=False)
    text = render_chat(qazlm_tok, _weather_call(twice), add_generation_prompt=False)
    payload = text.split("<tool_call>\n")[1].split("\n</tool_call>")[0]
    assert json.loads(payload) == {"name": "weather", "arguments": {"city": "Алматы"}}
    assert render_chat(qazlm_tok, _weather_call({"city": "Алматы"})) == \
        render_chat(qazlm_tok, _weather_call('{"city": "Алматы"}')) == render_chat(qazlm_tok, _weather_call(twice))
    for bad, why in (("Almaty", "are not valid JSON"), ("[1, 2]", "must be a JSON object, got list"),
                     (json.dumps("Almaty"), "are not valid JSON"), (7, "must be a JSON object, got int")):
        with pytest.raises(QazlmError, match=rf"messages\[1\]\.tool_calls\[0\] \(weather\): arguments {why}"):
            render_chat(qazlm_tok, _weather_call(bad))
        with pytest.raises(QazlmError, match="arguments"):
            assistant_mask(qazlm_tok, _weather_call(bad) + [{"role": "assistant", "content": "x"}])
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"messages": _weather_call(a)}) for a in (twice, "[1, 2]")) + "\n")
    kept, rejected = read_conversations(path)
    assert kept[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Алматы"}'
    assert len(kept) == 1 and rejected[0]["line"] == 2 and "must be a JSON object" in rejected[0]["reason"]


def test_call_block_text_is_the_templates_own_rendering(qazlm_tok):
    """Preference data writes its broken calls (rejected sides) as text with `call_block_text`; with valid
    arguments that text must render exactly as the template renders the calls, one or several."""
    from qazlm.infer.tools import call_block_text

    calls = [("weather", '{"city": "Алматы"}'), ("calculator", '{"expression": "2+2"}')]
    for n in (1, 2):
        structured = _weather_call(None)
        structured[1]["tool_calls"] = [{"type": "function", "function": {"name": k, "arguments": a}}
                                       for k, a in calls[:n]]
        as_text = [structured[0], {"role": "assistant", "content": "\n".join(call_block_text(k, a)
                                                                            for k, a in calls[:n])}]
        assert render_chat(qazlm_tok, structured, add_generation_prompt=False) == \
            render_chat(qazlm_tok, as_text, add_generation_prompt=False)


def test_conversation_without_an_assistant_turn_is_an_error(qazlm_tok):
    with pytest.raises(QazlmError, match="no assistant tokens"):
        assistant_mask(qazlm_tok, CONVERSATION[:2])


def test_template_without_generation_markers_is_an_error(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    hf_tok.chat_template = PLAIN_CHATML  # an HF tokenizer with its own template
    with pytest.raises(QazlmError, match=r"not training-compatible: it has no \{% generation %\} markers"):
        assistant_mask(hf_tok, CONVERSATION)


def test_tokenizer_without_a_template_gets_qazlms(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert not hf_tok.chat_template
    ids, mask = assistant_mask(hf_tok, CONVERSATION)
    assert hf_tok.decode([t for t, m in zip(ids, mask) if m]) == "Сәлем! Қалың қалай?<|im_end|>Қайырлы таң<|im_end|>"


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "description": "the weather in a city",
                                                 "parameters": {"type": "object", "properties": {}}}}


def test_a_template_that_drops_tools_is_an_error_only_when_tools_are_given(qazlm_tok, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    assert '"name": "weather"' in render_chat(qazlm_tok, CONVERSATION[:2], tools=[WEATHER_TOOL])
    hf_tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    hf_tok.chat_template = PLAIN_CHATML   # as SmolLM2's: ChatML without a word about tools
    assert render_chat(hf_tok, CONVERSATION[:2]).endswith("<|im_start|>assistant\n")
    with pytest.raises(QazlmError, match="its chat template does not render tools"):
        render_chat(hf_tok, CONVERSATION[:2], tools=[WEATHER_TOOL])
    hf_tok.chat_template = MARKED_CHATML  # trainable, still deaf to tools: SFT on tool data would drop them
    assert sum(assistant_mask(hf_tok, CONVERSATION)[1]) > 0
    with pytest.raises(QazlmError, match="its chat template does not render tools"):
        assistant_mask(hf_tok, CONVERSATION, tools=[WEATHER_TOOL])
