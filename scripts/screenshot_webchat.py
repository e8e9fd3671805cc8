"""Screenshot of the web chat for docs/serve.md: serves MODEL on a free localhost port, sends two starter
prompts (Kazakh and Russian) and one request with a tool, and saves the page as a PNG.

    .venv/bin/python scripts/screenshot_webchat.py runs/tiny/sft/final docs/img/webchat.png [STARTER ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402
from serve_harness import running_server  # noqa: E402
from test_webchat import CHROMIUM, CHROMIUM_ARGS, WEATHER  # noqa: E402

from qazlm.serve.config import ServeConfig  # noqa: E402


def main(model: str, out: str, starters: list[str]) -> None:
    cfg = ServeConfig(model=model, port=0, slots=2)
    with running_server(cfg, model) as (url, _), sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/")
        page.fill("#system", "Сен пайдалы көмекшісің. Қысқа жауап бер.")
        page.fill("#max-tokens", "96")
        for n, starter in enumerate(starters):
            page.locator("#starters button", has_text=starter).click()
            page.click("#send")
            page.wait_for_selector(f".msg.assistant >> nth={n}", state="attached")
            page.wait_for_selector(f".msg.assistant[data-done] >> nth={n}", timeout=60_000)
        page.fill("#tools", WEATHER)
        page.select_option("#tool-choice", "required")
        page.fill("#input", "Алматыда ауа райы қандай?")
        page.click("#send")
        page.wait_for_selector(".msg.assistant[data-done] >> nth=2", timeout=60_000)
        page.screenshot(path=out)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: screenshot_webchat.py MODEL_FOLDER OUT.png [STARTER_BUTTON_TEXT ...]")
    main(sys.argv[1], sys.argv[2], sys.argv[3:] or ["Қазақстанның астанасы", "Переведи на казахский"])
