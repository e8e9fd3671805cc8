"""Tool-use data: real tools (`qazlm.sft.toolkit`) give every result, conversations are correct by
construction in kk/ru/en, unseen tools stay out of training, and the tool evaluation's matching rules."""

from __future__ import annotations

import json
import random

import pytest

from qazlm.sft import toolkit, tooluse


def test_tools_compute_and_refuse():
    assert toolkit.calculator("(12 + 3) * 4") == {"result": 60}
    assert toolkit.calculator("7 / 2") == {"result": 3.5}
    assert toolkit.convert_currency(1000, **{"from": "KZT", "to": "USD"}) == {"amount": 2, "currency": "USD"}
    assert toolkit.date_add("2026-12-04", 30) == {"date": "2027-01-03"}
    assert toolkit.days_between("2026-01-01", "2026-12-04") == {"days": 337}
    assert toolkit.convert_units(3, **{"from": "km", "to": "m"}) == {"value": 3000, "unit": "m"}
    assert toolkit.inflect_kazakh("кітап", "dat") == {"form": "кітапқа"}
    assert toolkit.weather("Алматы") == toolkit.weather("Алматы")  # deterministic mock
    for name, args, why in [("calculator", {"expression": "__import__('os').system('id')"}, "only numbers"),
                            ("calculator", {"expression": "1 / 0"}, "division"),
                            ("calculator", {"expression": "9 ** 99"}, "exponent too large"),
                            ("convert_units", {"value": 1, "from": "kg", "to": "km"}, "cannot convert mass"),
                            ("date_add", {"date": "04.12.2026", "days": 1}, "Invalid isoformat"),
                            ("convert_currency", {"amount": 1, "from": "KZT", "to": "BTC"}, "BTC")]:
        assert why in toolkit.execute(name, args)["error"], name


@pytest.mark.parametrize("task", ["tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant"])
def test_conversations_are_correct_by_construction(task):
    from qazlm.sft.tasks import TaskContext

    ctx = TaskContext(rng=random.Random(7), corpus_dir=None, model_name="Qazlm")
    items = getattr(tooluse, task)(ctx, {"kk": 6, "ru": 3, "en": 3})
    assert [it["lang"] for it in items].count("kk") == 6 and all(it["task"] == task for it in items)
    for it in items:
        msgs, offered = it["messages"], {t["function"]["name"] for t in it["tools"]}
        assert offered <= set(toolkit.SEEN)
        calls = msgs[1].get("tool_calls") or []
        assert len(calls) == {"tool_simple": 1, "tool_multiple": 1, "tool_parallel": 2, "tool_irrelevant": 0}[task]
        if task == "tool_simple":
            assert offered == {calls[0]["function"]["name"]}
        results = [m for m in msgs if m["role"] == "tool"]
        for call, result in zip(calls, results):
            assert isinstance(call["function"]["arguments"], str)  # JSON text: one column type for TRL
            args = json.loads(call["function"]["arguments"])
            assert call["function"]["name"] in offered
            assert json.loads(result["content"]) == toolkit.execute(call["function"]["name"], args)
            assert "error" not in json.loads(result["content"])
        final = msgs[-1]["content"]
        for result in results:  # the answer restates each computed number (or the date / the word form)
            values = json.loads(result["content"])
            numbers = [v for v in values.values() if isinstance(v, int | float)]
            assert all(str(v) in final for v in numbers) and any(str(v) in final for v in values.values()), final


def test_unseen_items_only_use_unseen_tools():
    items = tooluse.unseen_items(random.Random(0), 2, "Qazlm")
    assert {it["task"] for it in items} == {"tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant"}
    assert {t["function"]["name"] for it in items for t in it["tools"]} <= set(toolkit.UNSEEN)


def test_call_matching_is_by_value_and_order_free():
    from qazlm.eval.tools import calls_match

    a = {"name": "convert_currency", "arguments": {"amount": 10, "from": "USD", "to": "KZT"}}
    b = {"name": "weather", "arguments": {"city": "Алматы"}}
    assert calls_match([a, b], [b, {**a, "arguments": {**a["arguments"], "amount": 10.0}}])
    assert not calls_match([a], [a, b])                      # an extra call is wrong
    assert not calls_match([a], [{**a, "arguments": {**a["arguments"], "to": "RUB"}}])
    assert not calls_match([b], [{"name": "weather", "arguments": {"city": "Алматы", "date": "2026-12-04"}}])


def test_right_tools_ignores_arguments_but_not_names_or_count():
    from qazlm.eval.tools import judge

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [{"type": "function", "function": {"name": n, "description": n, "parameters": schema}}
             for n in ("weather", "time")]
    it = {"tools": tools, "expected": [{"name": "weather", "arguments": {"city": "Алматы"}}]}
    call = '<tool_call>\n{"name": "%s", "arguments": {"city": "%s"}}\n</tool_call>'
    assert judge(it, call % ("weather", "Алматы")) | {"text": ""} == {
        "text": "", "valid": True, "called": True, "cut": False, "exact": True, "tools": True}
    wrong_city = judge(it, call % ("weather", "Астана"))
    assert wrong_city["tools"] and not wrong_city["exact"]
    assert not judge(it, call % ("time", "Алматы"))["tools"]
    assert not judge(it, call % ("weather", "Алматы") + call % ("weather", "Астана"))["tools"]  # one call too many
    assert judge({"tools": tools, "expected": []}, "Жоқ.")["tools"] is None                     # irrelevance: n/a
