"""The web chat at `/`, driven in a real headless browser (Debian's chromium through Playwright): the page
loads offline, a starter prompt is sent, streamed text appears, the second turn carries the history and the
system prompt, tool calls are shown, and Stop ends a long reply and frees its slot on the server."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.request

import pytest
from playwright.sync_api import expect

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The probe's flags: no sandbox as root, and no background connections (this machine's network is closed).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WEATHER = ('[{"type": "function", "function": {"name": "weather", "parameters": {"type": "object", '
           '"properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}}]')


def _need_browser():
    if os.path.exists(CHROMIUM):
        return
    message = "Debian's chromium is not installed (make test installs it: apt-get install chromium chromium-driver)"
    if os.environ.get("QAZLM_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


url_app: dict = {}


@pytest.fixture(scope="module")
def page_url(tmp_path_factory, corpus):
    from serve_harness import running_server, tiny_chat_model

    from qazlm.serve.config import ServeConfig

    _need_browser()
    model = tiny_chat_model(tmp_path_factory.mktemp("webchat"), corpus)
    cfg = ServeConfig(model=str(model), port=0, slots=2, max_tokens=1500, name="qazlm-web")
    with running_server(cfg, model) as (url, app):
        url_app[url] = app
        yield url


@pytest.fixture()
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        outside = []
        page.on("request", lambda r: None if r.url.startswith(page_url) else outside.append(r.url))
        page.goto(page_url + "/")
        yield page
        assert outside == [], f"the page asked for something outside the server: {outside}"
        browser.close()


def _running(url: str) -> int:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("qazlm_running ")))


def test_page_streams_a_reply_and_keeps_the_history(page):
    expect(page.locator("#model")).to_have_text("qazlm-web")
    page.fill("#system", "Қысқа жауап бер.")
    page.fill("#max-tokens", "24")
    page.locator("#starters button", has_text="kk").first.click()
    assert page.input_value("#input") == "Қазақстанның астанасы қай қала?"
    page.click("#send")
    page.wait_for_selector(".msg.assistant[data-done]", timeout=30_000)
    reply = page.locator(".msg.assistant").first
    assert int(reply.get_attribute("data-chunks")) > 2          # it arrived in pieces, as server-sent events
    assert reply.locator(".text").inner_text().strip() != ""
    assert page.locator(".msg.user").first.inner_text() == "Қазақстанның астанасы қай қала?"

    with page.expect_request("**/v1/chat/completions") as second:
        page.fill("#input", "Now in English?")
        page.keyboard.press("Enter")
    sent = second.value.post_data_json
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][0]["content"] == "Қысқа жауап бер." and sent["stream"] is True
    assert sent["max_tokens"] == 24
    page.wait_for_selector(".msg.assistant:nth-of-type(4)[data-done]", timeout=30_000)


def test_tool_calls_are_shown(page):
    page.fill("#tools", WEATHER)
    page.select_option("#tool-choice", "required")
    page.fill("#input", "Алматыда ауа райы қандай?")
    page.click("#send")
    page.wait_for_selector(".msg.assistant[data-done]", timeout=30_000)
    call = page.locator(".msg.assistant .call").first
    assert call.inner_text().startswith("tool call weather({")
    assert '"city"' in call.inner_text()


def test_stop_ends_a_long_reply_and_frees_the_slot(page, page_url, monkeypatch):
    batcher = url_app[page_url].state.engine.batcher
    step = batcher.step
    monkeypatch.setattr(batcher, "step", lambda: time.sleep(0.01) or step())  # 1500 tokens take 15 s, not 1
    page.fill("#max-tokens", "1500")
    page.fill("#input", "Write a very long story.")
    page.click("#send")
    # (no wait_for_function: the page's CSP forbids the eval it needs, as it should)
    expect(page.locator(".msg.assistant")).to_have_attribute("data-chunks", re.compile(r"^([3-9]|\d\d+)$"))
    assert page.is_enabled("#stop") and not page.is_enabled("#send")
    page.click("#stop")
    page.wait_for_selector(".msg.assistant[data-done='stopped']", timeout=10_000)
    assert "stopped" in page.locator(".msg.assistant .meta").inner_text()
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    deadline = time.monotonic() + 10
    while _running(page_url) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(page_url) == 0        # the server saw the disconnect and retired the sequence


def test_errors_are_shown_not_thrown(page):
    page.fill("#tools", "[not json")
    page.fill("#input", "Сәлем")
    page.click("#send")
    assert "Tools: not valid JSON" in page.locator(".msg.error").inner_text()
    page.fill("#tools", "")
    page.fill("#max-tokens", "100000")          # more than the server allows: its 400 message is shown
    page.fill("#input", "Сәлем")
    page.click("#send")
    page.wait_for_selector(".msg.error >> nth=1")
    assert "max_tokens" in page.locator(".msg.error").nth(1).inner_text()
