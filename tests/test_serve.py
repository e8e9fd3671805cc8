"""`qazlm serve`: the OpenAI client against a real uvicorn server on 127.0.0.1 — chat, completions,
streaming ending with [DONE], n, seeds, tools (forced and parsed), response_format, API key, limits, 429,
metrics — and error JSON without stack traces."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEATHER = {"type": "function", "function": {"name": "weather", "description": "Weather now",
                                            "parameters": {"type": "object", "properties": {
                                                "city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, corpus):
    from serve_harness import running_server, tiny_chat_model

    from qazlm.serve.config import ServeConfig

    model = tiny_chat_model(tmp_path_factory.mktemp("serve"), corpus)
    cfg = ServeConfig(model=str(model), port=0, api_key="k3y", slots=4, max_queue=2, max_tokens=64,
                      max_body_bytes=20_000, name="qazlm-test")
    with running_server(cfg, model) as (url, app):
        yield url, app


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server[0] + "/v1", api_key="k3y", max_retries=0)


def test_models_chat_usage_and_seeded_sampling(client):
    assert [m.id for m in client.models.list().data] == ["qazlm-test"]
    r = client.chat.completions.create(model="qazlm-test", max_tokens=8, temperature=0,
                                       messages=[{"role": "system", "content": "Қысқа жауап бер."},
                                                 {"role": "user", "content": "Сәлем!"}])
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens <= 8 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    a, b = (client.chat.completions.create(model="x", max_tokens=8, temperature=1.0, seed=5, n=2,
                                           messages=[{"role": "user", "content": "Hello"}]) for _ in range(2))
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # seeds are kept
    assert len(a.choices) == 2


def test_streaming_equals_the_whole_reply(client):
    kwargs = dict(model="x", max_tokens=12, temperature=0, messages=[{"role": "user", "content": "Астана"}])
    whole = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    parts, finish = [], None
    for ev in client.chat.completions.create(stream=True, **kwargs):
        parts.append(ev.choices[0].delta.content or "")
        finish = ev.choices[0].finish_reason or finish
    assert "".join(parts).strip() == whole and finish in ("stop", "length")
    text = client.completions.create(model="x", prompt="Қазақстан", max_tokens=6, temperature=0)
    assert text.object == "text_completion" and text.choices[0].finish_reason in ("stop", "length")


def test_tools_and_response_format(client):
    forced = client.chat.completions.create(model="x", max_tokens=60, temperature=0, tools=[WEATHER],
                                            tool_choice="required",
                                            messages=[{"role": "user", "content": "Алматыда ауа райы?"}])
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "weather"
    assert "city" in json.loads(choice.message.tool_calls[0].function.arguments)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    r = client.chat.completions.create(model="x", max_tokens=30, temperature=0,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "s", "schema": schema}},
                                       messages=[{"role": "user", "content": "JSON"}])
    assert isinstance(json.loads(r.choices[0].message.content)["ok"], bool)


def test_errors_are_openai_json_without_traces(server):
    import httpx2 as httpx

    base = server[0]
    ok = {"Authorization": "Bearer k3y"}
    cases = [
        (httpx.post(base + "/v1/chat/completions", json={"messages": []}), 401),
        (httpx.post(base + "/v1/chat/completions", headers=ok, json={"messages": []}), 400),
        (httpx.post(base + "/v1/chat/completions", headers={**ok, "content-type": "application/json"},
                    content=b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}'), 400),
        (httpx.post(base + "/v1/chat/completions", headers=ok,
                    json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}), 400),
        (httpx.post(base + "/v1/chat/completions", headers={**ok, "content-type": "application/json"},
                    content=b"{not json"), 400),
        (httpx.post(base + "/v1/chat/completions", headers=ok,
                    json={"messages": [{"role": "user", "content": "x" * 30_000}]}), 413),
        (httpx.post(base + "/v1/chat/completions", headers=ok,
                    json={"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER],
                          "tool_choice": {"type": "function", "function": {"name": "nope"}}}), 400),
        (httpx.get(base + "/v1/nothing", headers=ok), 404),
        (httpx.get(base + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        err = response.json()["error"]
        assert err["message"] and "Traceback" not in response.text and "File \"" not in response.text
    assert httpx.get(base + "/health").json()["status"] == "ok"
    metrics = httpx.get(base + "/metrics").text
    assert "qazlm_requests_total" in metrics and 'qazlm_request_seconds_bucket{le="+Inf"}' in metrics


def test_a_full_queue_answers_429(server):
    """The queue rule itself is tested in test_batcher.py; here a queue that holds nothing makes every request
    find it full, so the HTTP answer is checked without racing the engine thread."""
    import httpx2 as httpx

    batcher = server[1].state.engine.batcher
    batcher.max_queue = 0
    try:
        r = httpx.post(server[0] + "/v1/chat/completions", headers={"Authorization": "Bearer k3y"},
                       json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 4})
    finally:
        batcher.max_queue = 2
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert "queue full" in r.json()["error"]["message"]


def test_streamed_tool_calls_arrive_as_deltas(client):
    stream = client.chat.completions.create(model="x", max_tokens=60, temperature=0, tools=[WEATHER],
                                            tool_choice="required", stream=True,
                                            messages=[{"role": "user", "content": "Алматыда ауа райы?"}])
    calls, finish = {}, None
    for ev in stream:
        for call in ev.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += call.function.name or ""
            entry["arguments"] += call.function.arguments or ""
        finish = ev.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "weather"
    assert "city" in json.loads(calls[0]["arguments"])
