"""A bounded soak of `qazlm serve` as its own process: 300 mixed requests, 8 at a time — valid chat (whole and
streamed), malformed JSON, oversized bodies, prompts longer than the context, unknown models, clients that
leave mid-stream and streams cancelled together. The server stays up, every valid request gets the answer it
gets alone, every bad one its error status, all slots are free afterwards, and resident memory grows ≤ 10%
from the end of the first hundred requests to the end of the last."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPTS = ["Сәлем! Қалайсың?", "Привет, как дела?", "Hello, how are you?", "Астана туралы айтшы."]
KINDS = ["chat", "stream", "chat", "bad_json", "stream", "chat", "too_big", "long_prompt", "chat", "unknown_model",
         "leave", "chat", "cancel_together", "stream", "chat", "leave"]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served(tmp_path_factory, corpus):
    import httpx2 as httpx
    from serve_harness import tiny_chat_model

    model = tiny_chat_model(tmp_path_factory.mktemp("soak"), corpus)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    qazlm = str(Path(sys.executable).with_name("qazlm"))
    log = tmp_path_factory.mktemp("soak_log") / "server.log"
    proc = subprocess.Popen([qazlm, "serve", str(model), "--port", str(port), "--slots", "4", "--max-queue", "64",
                             "--max-tokens", "32", "--set", "max_body_bytes=20000", "--set", "name=soak"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    yield url, proc
    proc.terminate()
    proc.wait(timeout=30)
    assert "Traceback" not in log.read_text()


def chat_body(prompt: str, **extra) -> dict:
    return {"model": "soak", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 0,
            **extra}


async def streamed_text(client, url: str, body: dict, leave_after: int | None = None) -> str:
    parts, seen = [], 0
    async with client.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            seen += 1
            if leave_after is not None and seen >= leave_after:
                return ""                      # leaving the block closes the connection mid-stream
            parts.append(json.loads(line[6:])["choices"][0]["delta"].get("content") or "")
    return "".join(parts)


async def one(client, url: str, i: int, kind: str, expected: dict[str, str]) -> None:
    prompt = PROMPTS[i % len(PROMPTS)]
    post = url + "/v1/chat/completions"
    if kind == "chat":
        r = await client.post(post, json=chat_body(prompt))
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == expected[prompt]
    elif kind == "stream":
        assert (await streamed_text(client, url, chat_body(prompt))).strip() == expected[prompt]
    elif kind == "bad_json":
        r = await client.post(post, content=b'{"messages": [', headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    elif kind == "too_big":
        assert (await client.post(post, json=chat_body("ж" * 12_000))).status_code == 413
    elif kind == "long_prompt":
        r = await client.post(post, json=chat_body("a b " * 2_400))
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    elif kind == "unknown_model":
        r = await client.post(post, json={**chat_body(prompt), "model": "gpt-4o"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    elif kind == "leave":
        await streamed_text(client, url, chat_body(prompt, max_tokens=32), leave_after=3)
    elif kind == "cancel_together":
        tasks = [asyncio.ensure_future(streamed_text(client, url, chat_body(p, max_tokens=32))) for p in PROMPTS]
        await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def hundred(url: str, start: int, expected: dict[str, str]) -> None:
    import httpx2 as httpx

    gate = asyncio.Semaphore(8)

    async def guarded(i: int) -> None:
        async with gate:
            await one(client, url, i, KINDS[i % len(KINDS)], expected)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=32)) as client:
        await asyncio.gather(*(guarded(i) for i in range(start, start + 100)))


@pytest.mark.slow
def test_soak_mixed_requests(served):
    import httpx2 as httpx

    url, proc = served
    expected = {}
    for p in PROMPTS:  # each prompt's answer when it is alone on the server (greedy)
        reply = httpx.post(url + "/v1/chat/completions", json=chat_body(p), timeout=60).json()
        expected[p] = reply["choices"][0]["message"]["content"]
    asyncio.run(hundred(url, 0, expected))
    first = rss_kib(proc.pid)
    for start in (100, 200):
        asyncio.run(hundred(url, start, expected))
    last = rss_kib(proc.pid)
    assert proc.poll() is None and httpx.get(url + "/health").json()["status"] == "ok"
    deadline = time.monotonic() + 10
    while True:   # every slot and queue place is free again (left and cancelled streams included)
        metrics = dict(line.split() for line in httpx.get(url + "/metrics").text.splitlines()
                       if line.startswith(("qazlm_running ", "qazlm_queue_depth ")))
        if metrics == {"qazlm_running": "0", "qazlm_queue_depth": "0"} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert metrics == {"qazlm_running": "0", "qazlm_queue_depth": "0"}
    print(f"soak: resident memory {first / 1024:.1f} MiB after 100 requests, {last / 1024:.1f} MiB after 300")
    assert last <= first * 1.10, (first, last)
