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
        yield url, app, model


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
    a, b = (client.chat.completions.create(model="qazlm-test", max_tokens=8, temperature=1.0, seed=5, n=2,
                                           messages=[{"role": "user", "content": "Hello"}]) for _ in range(2))
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]  # seeds are kept
    assert len(a.choices) == 2


def test_streaming_equals_the_whole_reply(client):
    kwargs = dict(model="qazlm-test", max_tokens=12, temperature=0, messages=[{"role": "user", "content": "Астана"}])
    whole = client.chat.completions.create(**kwargs).choices[0].message.content or ""
    parts, finish = [], None
    for ev in client.chat.completions.create(stream=True, **kwargs):
        parts.append(ev.choices[0].delta.content or "")
        finish = ev.choices[0].finish_reason or finish
    assert "".join(parts).strip() == whole and finish in ("stop", "length")
    last = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))[-1]
    assert last.choices == [] and 0 < last.usage.completion_tokens <= 12
    text = client.completions.create(model="qazlm-test", prompt="Қазақстан", max_tokens=6, temperature=0)
    assert text.object == "text_completion" and text.choices[0].finish_reason in ("stop", "length")


def test_streamed_completions_with_echo_and_n_equal_the_whole_ones(client):
    kwargs = dict(model="qazlm-test", prompt="Қазақстан", max_tokens=6, temperature=1.0, seed=3, n=2, echo=True)
    whole = client.completions.create(**kwargs)
    texts, finish = {0: "", 1: ""}, {}
    for ev in client.completions.create(stream=True, **kwargs):
        assert ev.object == "text_completion"
        for choice in ev.choices:
            texts[choice.index] += choice.text
            finish[choice.index] = choice.finish_reason or finish.get(choice.index)
    assert [texts[0], texts[1]] == [c.text for c in whole.choices]
    assert all(t.startswith("Қазақстан") for t in texts.values()) and texts[0] != texts[1]   # echo; own seeds
    assert [finish[0], finish[1]] == [c.finish_reason for c in whole.choices]


def test_tools_and_response_format(client):
    forced = client.chat.completions.create(model="qazlm-test", max_tokens=60, temperature=0, tools=[WEATHER],
                                            tool_choice="required",
                                            messages=[{"role": "user", "content": "Алматыда ауа райы?"}])
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls[0].function.name == "weather"
    assert "city" in json.loads(choice.message.tool_calls[0].function.arguments)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    r = client.chat.completions.create(model="qazlm-test", max_tokens=30, temperature=0,
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
        (httpx.post(base + "/v1/chat/completions", headers=ok,     # a call whose arguments are no JSON object
                    json={"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [
                        {"type": "function", "function": {"name": "weather", "arguments": "Almaty"}}]}]}), 400),
        (httpx.get(base + "/v1/nothing", headers=ok), 404),
        (httpx.post(base + "/v1/completions", headers=ok, json={"model": "gpt-4o", "prompt": "x"}), 404),
        (httpx.get(base + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        err = response.json()["error"]
        assert err["message"] and "Traceback" not in response.text and "File \"" not in response.text
    assert httpx.get(base + "/health").json()["status"] == "ok"
    metrics = httpx.get(base + "/metrics").text
    assert "qazlm_requests_total" in metrics and 'qazlm_request_seconds_bucket{le="+Inf"}' in metrics
    first = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if not line.startswith("#")}
    assert first["qazlm_time_to_first_token_seconds_count"] >= 1 and first["qazlm_time_to_first_token_seconds_sum"] > 0


def test_a_template_that_drops_tools_answers_400_not_a_toolless_prompt(server, monkeypatch):
    import httpx2 as httpx

    from test_chat_template import PLAIN_CHATML

    url, app, model = server
    monkeypatch.setattr(app.state.engine.tokenizer, "chat_template", PLAIN_CHATML)
    ok, ask = {"Authorization": "Bearer k3y"}, {"messages": [{"role": "user", "content": "Алматыда ауа райы?"}],
                                                 "max_tokens": 4}
    r = httpx.post(url + "/v1/chat/completions", headers=ok, json={**ask, "tools": [WEATHER]})
    assert r.status_code == 400 and "chat template does not render tools" in r.json()["error"]["message"]
    assert str(model.parent) not in r.text                               # the model's folder, not the server's path
    assert httpx.post(url + "/v1/chat/completions", headers=ok, json=ask).status_code == 200


def test_a_full_queue_answers_429(server):
    """The queue rule itself is tested in test_batcher.py; here a queue with room for nothing (not even the free
    slots' share) makes every request find it full, so the HTTP answer is checked without racing the engine."""
    import httpx2 as httpx

    batcher = server[1].state.engine.batcher
    batcher.max_queue = -batcher.slots
    try:
        r = httpx.post(server[0] + "/v1/chat/completions", headers={"Authorization": "Bearer k3y"},
                       json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 4})
    finally:
        batcher.max_queue = 2
    assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
    assert "queue full" in r.json()["error"]["message"]


def test_streamed_tool_calls_arrive_as_deltas(client):
    stream = client.chat.completions.create(model="qazlm-test", max_tokens=60, temperature=0, tools=[WEATHER],
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


def test_completions_echo_logprobs_score_the_prompt(server):
    """What lm-eval's local-completions sends: token-id prompts (batched), echo, logprobs, max_tokens 0/1."""
    import httpx2 as httpx
    import torch

    url, app, _ = server
    module, headers = app.state.engine.loaded.model.module, {"Authorization": "Bearer k3y"}
    prompts = [[5, 17, 230, 41, 9], [300, 12, 7]]
    r = httpx.post(url + "/v1/completions", headers=headers,
                   json={"prompt": prompts, "echo": True, "logprobs": 2, "max_tokens": 0, "temperature": 0}).json()
    assert [c["index"] for c in r["choices"]] == [0, 1] and r["usage"]["prompt_tokens"] == 8
    for ids, choice in zip(prompts, r["choices"]):
        lp = choice["logprobs"]
        with torch.no_grad():
            want = torch.log_softmax(module(torch.tensor([ids])).logits.float(), -1)[0]
        assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(ids)
        assert lp["token_logprobs"][1:] == pytest.approx([float(want[i, t]) for i, t in enumerate(ids[1:])], abs=1e-4)
        for pos, top in enumerate(lp["top_logprobs"][1:]):
            assert max(top.values()) == pytest.approx(float(want[pos].max()), abs=1e-4) and len(top) <= 3
    greedy = httpx.post(url + "/v1/completions", headers=headers,
                        json={"prompt": "Қазақстан", "logprobs": 1, "max_tokens": 3, "temperature": 0}).json()
    lp = greedy["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == greedy["usage"]["completion_tokens"] == 3
    assert all(t == pytest.approx(max(top.values())) for t, top in zip(lp["token_logprobs"], lp["top_logprobs"]))
    assert "".join(lp["tokens"]) == greedy["choices"][0]["text"]
    bad = [({"prompt": [[1, 10**7]], "max_tokens": 1}, "token ids must be in"),
           ({"prompt": [[1, 2], [3]], "stream": True, "max_tokens": 1}, "one prompt at a time"),
           ({"prompt": "x", "max_tokens": 0}, "max_tokens = 0"),
           ({"prompt": [1.5], "max_tokens": 1}, "prompt: expected")]
    for body, message in bad:
        r = httpx.post(url + "/v1/completions", headers=headers, json=body)
        assert r.status_code == 400 and message in r.json()["error"]["message"], body


def test_tokenizer_routes(server):
    import httpx2 as httpx

    url, app, _ = server
    tok, headers = app.state.engine.tokenizer, {"Authorization": "Bearer k3y"}
    info = httpx.get(url + "/tokenizer_info", headers=headers).json()
    assert info["eos_token"] == tok.eos_token and info["model_max_length"] == 2048
    assert "im_start" in info["chat_template"]
    ids = httpx.post(url + "/tokenize", headers=headers, json={"prompt": "Сәлем, әлем!"}).json()
    assert ids["tokens"] == tok("Сәлем, әлем!", add_special_tokens=False)["input_ids"] and ids["count"] > 0
    back = httpx.post(url + "/detokenize", headers=headers, json={"tokens": ids["tokens"]}).json()
    assert back["prompt"] == "Сәлем, әлем!"
    chat = httpx.post(url + "/tokenize", headers=headers, json={"messages": [{"role": "user", "content": "Hi"}]})
    assert chat.json()["count"] > 3
    assert httpx.get(url + "/tokenizer_info").status_code == 401          # the API key guards these routes too
    assert httpx.post(url + "/detokenize", headers=headers, json={"tokens": [-1]}).status_code == 400


def test_lm_eval_scores_the_served_model_as_its_hf_backend_does(server, monkeypatch, tmp_path, capfd):
    """lm-eval's local-completions client (remote tokenizer) against the server gives the loglikelihoods and the
    task score that lm-eval's own `hf` backend computes from the same folder; `qazlm eval URL` writes the report."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from qazlm.eval.harness import run_lm_tasks, served_lm

    url, _, model = server
    monkeypatch.setenv("OPENAI_API_KEY", "k3y")
    served, model_id, context = served_lm(url + "/v1", batch_size=4)
    assert (model_id, context) == ("qazlm-test", 2048)
    local = HFLM(pretrained=str(model), batch_size=4, device="cpu")
    pairs = [("Қазақстанның астанасы", " Астана."), ("The capital of France is", " Paris"), ("", "Сәлем")]
    requests = [Instance("loglikelihood", {}, pair, idx) for idx, pair in enumerate(pairs)]
    got, want = served.loglikelihood(requests), local.loglikelihood(requests)
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-3)
    task = "kkcopa_kk"
    a = run_lm_tasks(served, [task], limit=6, log=lambda m: None)["qazlm_kkcopa_kk"]
    b = run_lm_tasks(local, [task], limit=6, log=lambda m: None)["qazlm_kkcopa_kk"]
    assert a["n"] == b["n"] == 6 and a["value"] == b["value"]

    from cli_harness import run_cli

    out = tmp_path / "served_eval"
    code, _, err = run_cli(["eval", url + "/v1", "--tasks", task, "--limit", "6", "--no-bpb", "--samples", "0",
                            "-o", out], capfd)
    assert code == 0, err
    served_report = json.loads((out / "report.json").read_text())["models"][0]
    assert served_report["kind"] == "served" and served_report["tasks"]["qazlm_kkcopa_kk"]["value"] == a["value"]
