"""Tool calls: definitions checked, model text (whole or streamed) -> OpenAI `tool_calls`, the chat template's
rendering read back (dict and string arguments, never double-encoded), and constrained decoding through
outlines-core: random models forced to emit schema-valid JSON and valid calls."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qazlm.errors import QazlmError  # noqa: E402
from qazlm.infer.tools import ToolCallStream, check_tools, parse_tool_calls  # noqa: E402

CONVERT = {"type": "function", "function": {
    "name": "convert_currency", "description": "Convert an amount between KZT, USD, RUB and EUR",
    "parameters": {"type": "object", "properties": {
        "amount": {"type": "number", "minimum": 0}, "from": {"type": "string", "enum": ["KZT", "USD", "RUB", "EUR"]},
        "to": {"type": "string", "enum": ["KZT", "USD", "RUB", "EUR"]}}, "required": ["amount", "from", "to"]}}}
WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "Weather now in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"]}}}
TOOLS = [CONVERT, WEATHER]
TEXT = ('Қазір есептеймін.\n<tool_call>\n{"name": "convert_currency", "arguments": {"amount": 1000, "from": "KZT", '
        '"to": "USD"}}\n</tool_call>\n<tool_call>\n{"name": "weather", "arguments": {"city": "Алматы"}}\n</tool_call>')


def test_parse_content_and_parallel_calls():
    reply = parse_tool_calls(TEXT, TOOLS)
    assert reply.content == "Қазір есептеймін." and reply.errors == []
    assert reply.tool_calls == [
        {"id": "call_0", "type": "function", "function": {
            "name": "convert_currency", "arguments": '{"amount": 1000, "from": "KZT", "to": "USD"}'}},
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Алматы"}'}}]


@pytest.mark.parametrize("block, why", [
    ('{"name": "weather", "arguments": {"city": "Алматы"', "not JSON"),
    ('{"name": "stock_price", "arguments": {}}', "unknown function 'stock_price'"),
    ('{"name": "weather", "arguments": {"town": "Астана"}}', "'city' is a required property"),
    ('{"name": "convert_currency", "arguments": {"amount": -5, "from": "KZT", "to": "USD"}}', "less than the minimum"),
    ('{"name": "weather", "arguments": "city=Almaty"}', "string that is not JSON"),
    ('["weather"]', 'not an object with a "name"'),
])
def test_invalid_calls_are_reported_with_the_reason(block, why):
    reply = parse_tool_calls(f"<tool_call>\n{block}\n</tool_call>", TOOLS)
    assert reply.tool_calls == [] and len(reply.errors) == 1 and why in reply.errors[0]


def test_string_arguments_are_decoded_once_and_a_cut_block_is_an_error():
    reply = parse_tool_calls('<tool_call>\n{"name": "weather", "arguments": "{\\"city\\": \\"Астана\\"}"}\n'
                             '</tool_call>', TOOLS)
    assert json.loads(reply.tool_calls[0]["function"]["arguments"]) == {"city": "Астана"}
    cut = parse_tool_calls('Жарайды <tool_call>\n{"name": "weather", "argum', TOOLS)
    assert cut.content == "Жарайды" and cut.tool_calls == [] and "cut off" in cut.errors[0]


def test_streamed_pieces_give_the_same_result_and_hold_back_a_partial_marker():
    stream, events = ToolCallStream(TOOLS), []
    for ch in TEXT:  # one character at a time, as a server's stream may deliver it
        events += stream.feed(ch)
    events += stream.finish()
    assert "".join(e.get("content", "") for e in events).strip() == "Қазір есептеймін."
    assert [e["tool_call"] for e in events if "tool_call" in e] == parse_tool_calls(TEXT, TOOLS).tool_calls
    s = ToolCallStream(TOOLS)
    assert s.feed("Сәлем <tool_c") == [{"content": "Сәлем "}]   # "<tool_c" may become a marker: held back
    assert s.feed("ontinue") == [{"content": "<tool_continue"}]  # it did not
    assert s.finish() == []


def test_tool_definitions_are_checked():
    assert set(check_tools(TOOLS)) == {"convert_currency", "weather"}
    with pytest.raises(QazlmError, match=r"tools\[0\] \(f\): parameters is not a valid JSON Schema"):
        check_tools([{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}])
    with pytest.raises(QazlmError, match=r"tools\[1\]: a tool needs a function name"):
        check_tools([WEATHER, {"type": "function", "function": {"parameters": {}}}])
    with pytest.raises(QazlmError, match="two tools are named 'weather'"):
        check_tools([WEATHER, WEATHER])


@pytest.fixture(scope="module")
def tok(tmp_path_factory, corpus):
    from transformers import AutoTokenizer

    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tools_tok")
    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=800), out, show_progress=False)
    return AutoTokenizer.from_pretrained(out)


@pytest.mark.parametrize("arguments", [{"city": "Алматы"}, '{"city": "Алматы"}'], ids=["dict", "string"])
def test_template_rendering_reads_back_as_the_same_call(tok, arguments):
    from qazlm.infer.tools import decode_for_tools

    messages = [{"role": "user", "content": "Ауа райы?"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"type": "function", "function": {"name": "weather", "arguments": arguments}}]}]
    ids = tok.apply_chat_template(messages, tools=TOOLS, tokenize=True, return_dict=True)["input_ids"]
    text = decode_for_tools(tok, ids)  # the system turn names <tool_call></tool_call> too: read the last turn
    reply = parse_tool_calls(text[text.rindex("<|im_start|>assistant\n") + len("<|im_start|>assistant\n"):], TOOLS)
    assert reply.errors == [] and json.loads(reply.tool_calls[0]["function"]["arguments"]) == {"city": "Алматы"}


@pytest.fixture(scope="module")
def models(tmp_path_factory, tok):
    from test_eval_helpers import make_hf_folder, make_our_folder

    from qazlm.infer.loading import load_model

    root = tmp_path_factory.mktemp("tools_models")
    tok.save_pretrained(root / "tok")
    return {"ours": load_model(make_our_folder(root / "tok", root / "ours")),
            "hf": load_model(make_hf_folder(root / "tok", root / "hf"))}


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_constrained_json_is_always_valid(models, kind):
    from jsonschema import validate

    from qazlm.infer.engine import generate

    m = models[kind]
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                               "population": {"type": "integer"},
                                               "capital": {"type": "boolean"}},
              "required": ["city", "population", "capital"]}
    outs = generate(m.model, m.tokenizer, ["Алматы", "Астана", "Шымкент"], max_new_tokens=120, temperature=1.0,
                    seed=3, chat=True, json_schema=schema)
    for text in outs:  # random weights, sampled: only the grammar makes these valid
        validate(json.loads(text), schema)
    free = generate(m.model, m.tokenizer, ["Алматы"], max_new_tokens=30, temperature=1.0, seed=3, chat=True)
    with pytest.raises(ValueError):
        json.loads(free[0])


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_constrained_tool_calls_are_always_valid_calls(models, kind):
    from qazlm.infer.engine import generate

    m = models[kind]
    outs = generate(m.model, m.tokenizer, ["1000 теңге долларға", "Алматыда ауа райы", "Hello"],
                    max_new_tokens=100, temperature=1.0, seed=5, chat=True, tools=[WEATHER], parallel_tool_calls=False)
    for text in outs:  # one call each (random weights would add parallel calls until max_new_tokens)
        reply = parse_tool_calls(text, [WEATHER])
        assert reply.errors == [] and len(reply.tool_calls) == 1 and reply.content == ""
        assert text.startswith("<tool_call>\n") and text.endswith("</tool_call>")


@pytest.mark.parametrize("kind", ["ours", "hf"])
def test_unbounded_values_are_closed_within_the_token_budget(models, kind, monkeypatch):
    """A free string or number would run until max_new_tokens cuts it; with the budget known, the grammar closes
    the value, the object and the call in time. Without it (limit_tokens a no-op) the same replies break."""
    from jsonschema import validate

    from qazlm.infer.constrain import Constraint
    from qazlm.infer.engine import generate

    m = models[kind]
    schema = {"type": "object", "properties": {"note": {"type": "string"}, "n": {"type": "number"}},
              "required": ["note", "n"]}
    prompts = ["Алматы", "Астана", "Шымкент", "Hello"]

    def replies(budget, tools=None):
        return generate(m.model, m.tokenizer, prompts, max_new_tokens=budget, temperature=1.0, seed=3, chat=True,
                        json_schema=None if tools else schema, tools=tools)

    for budget in (24, 40):
        for text in replies(budget):
            validate(json.loads(text), schema)
    for text in replies(60, tools=[WEATHER]):  # random weights keep adding parallel calls: the last one is closed
        reply = parse_tool_calls(text, [WEATHER])
        assert reply.errors == [] and reply.tool_calls and text.endswith("</tool_call>")
    monkeypatch.setattr(Constraint, "limit_tokens", lambda self, budget: None)
    cut = 0
    for text in replies(24):
        try:
            json.loads(text)
        except ValueError:
            cut += 1
    assert cut > 0


def test_generate_cli_tool_choice(tok, tmp_path, capfd):
    """`qazlm generate --tools`: required forces one valid call (a grammar) per prompt; auto offers the tools and
    decodes freely (a random model writes no call); none leaves them out of the prompt (plain text out)."""
    from cli_harness import run_cli
    from test_eval_helpers import make_our_folder

    tok.save_pretrained(tmp_path / "tok")
    model = make_our_folder(tmp_path / "tok", tmp_path / "m")
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER]))
    base = ["generate", model, "Алматыда ауа райы", "--chat", "--tools", tmp_path / "tools.json", "--json",
            "--max-new-tokens", "40"]
    outputs = {}
    for choice in ("required", "auto", "none"):
        code, out, err = run_cli(base + ["--tool-choice", choice, "--no-parallel-tool-calls"], capfd)
        assert code == 0, err
        outputs[choice] = json.loads(out.strip().splitlines()[-1])["output"]
    required = json.loads(outputs["required"])
    assert len(required["tool_calls"]) == 1 and required["errors"] == []
    assert json.loads(outputs["auto"])["tool_calls"] == []
    assert "<tool_call>" not in outputs["none"] and not outputs["none"].startswith("{")
    from cli_harness import assert_one_line_error

    assert_one_line_error(["generate", model, "x", "--chat", "--tool-choice", "auto"], capfd, match=r"apply to --tools")
    (tmp_path / "none.json").write_text("[]")
    assert_one_line_error(["generate", model, "x", "--chat", "--tools", tmp_path / "none.json"], capfd,
                          match=r"--tools: the list is empty")


def test_json_schema_and_tools_together_is_an_error(models):
    from qazlm.infer.engine import generate

    m = models["ours"]
    with pytest.raises(QazlmError, match="a JSON schema or tools to call, not both"):
        generate(m.model, m.tokenizer, ["x"], chat=True, json_schema={"type": "object"}, tools=TOOLS)


def ids_of(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def allowed_after(constraint, tok, ids: list[int]) -> set[int]:
    """The tokens the grammar allows after row 0 of `constraint` has taken `ids`."""
    import torch

    constraint.advance([0] * len(ids), ids)
    logits = constraint.mask(torch.zeros(1, len(tok)))
    return set(torch.nonzero(logits[0] == 0).flatten().tolist())


def test_the_grammar_never_closes_a_call_inside_an_argument_string(tok):
    """Inside a string value only string content may follow: `</tool_call>` (and `<tool_call>`) are masked; after
    the closing quote and braces the block's close is the next token."""
    from qazlm.infer.constrain import Constraint, tool_call_regex
    from qazlm.tokenizer.special_tokens import token_id

    regex = tool_call_regex([WEATHER], parallel=False, tokenizer=tok)
    stop, close, open_ = token_id(tok, "<|im_end|>"), token_id(tok, "</tool_call>"), token_id(tok, "<tool_call>")
    c = Constraint(tok, regex, stop, 1)

    inside = allowed_after(c, tok, [open_] + ids_of(tok, '\n{"name": "weather", "arguments": {"city": "Al'))
    assert close not in inside and open_ not in inside and len(inside) > 10
    assert allowed_after(c, tok, ids_of(tok, 'maty"}}\n')) == {close}


def test_tokenizer_without_marker_tokens_gets_text_markers(tok):
    """A tokenizer without a `<tool_call>` token (e.g. SmolLM2's) spells the markers as text in the grammar."""
    from qazlm.infer.constrain import MARKERS, tool_call_regex

    class NoMarkers:
        def get_vocab(self):
            return {"a": 0}

    assert MARKERS["<tool_call>"] in tool_call_regex([WEATHER], tokenizer=tok)
    text_markers = tool_call_regex([WEATHER], tokenizer=NoMarkers())
    assert text_markers.startswith("<tool_call>") and MARKERS["<tool_call>"] not in text_markers


def test_a_parallel_grammar_goes_on_to_a_second_call(tok):
    """After a complete first call the reply may end or go on: the newline then `<tool_call>` of a second call
    are allowed and followed (the automaton moves on at a complete text too), and after the second call the
    reply may end again. outlines-core alone drops every token that leaves a complete text for an incomplete
    one, so a grammar-forced reply never held more than one call (qazlm.infer.constrain.STOP_MARK)."""
    from qazlm.infer.constrain import Constraint, tool_call_regex
    from qazlm.tokenizer.special_tokens import token_id

    stop, close, open_ = token_id(tok, "<|im_end|>"), token_id(tok, "</tool_call>"), token_id(tok, "<tool_call>")
    newline = ids_of(tok, "\n")
    c = Constraint(tok, tool_call_regex([WEATHER], parallel=True, tokenizer=tok), stop, 1)

    def call(city: str) -> list[int]:
        return [open_] + ids_of(tok, f'\n{{"name": "weather", "arguments": {{"city": "{city}"}}}}\n') + [close]

    assert len(newline) == 1 and {stop, newline[0]} <= allowed_after(c, tok, call("Almaty"))
    assert allowed_after(c, tok, newline) == {open_}
    assert stop in allowed_after(c, tok, call("Astana"))
