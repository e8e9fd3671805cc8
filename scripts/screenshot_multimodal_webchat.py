"""Screenshot of the web chat talking to a multimodal model, for docs/multimodal.md: serves MODEL with the
experiment's server on a free localhost port, attaches held-out pictures with kk/ru/en questions, and saves
the page as a PNG.

    .venv/bin/python scripts/screenshot_multimodal_webchat.py runs/mm/train/final docs/img/multimodal_webchat.png
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from playwright.sync_api import sync_playwright  # noqa: E402
from serve_harness import running_app  # noqa: E402
from test_webchat import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

from qazlm.experiments.multimodal.images import ASK, draw_shapes, draw_text, word_pool  # noqa: E402
from qazlm.experiments.multimodal.serve import create_app  # noqa: E402


def pictures(folder: Path) -> list[tuple[Path, str]]:
    """Held-out pictures (a colour x shape never trained on; a word never trained on) with their questions."""
    rng = random.Random(7)
    shapes, _ = draw_shapes("blue", "triangle", 3, None, 64, rng)
    word = sorted(w for lang, w in word_pool(True) if lang == "kk")[3]
    shots = [(shapes, ASK["colour"][0]), (shapes, ASK["count"][1]), (draw_text(word, "DejaVuSerif.ttf", 64),
                                                                     ASK["read"][2])]
    out = []
    for k, (img, question) in enumerate(shots):
        path = folder / f"{k}.png"
        img.save(path)
        out.append((path, question))
    return out


def main(model: str, out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_app(create_app(model)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/")
        page.wait_for_selector("#attach:not([hidden])")
        for n, (path, question) in enumerate(pictures(Path(tmp))):
            page.set_input_files("#image", str(path))
            page.wait_for_selector("#attach.ready")
            page.fill("#input", question)
            page.click("#send")
            page.wait_for_selector(f".msg.assistant[data-done] >> nth={n}", timeout=60_000)
        page.screenshot(path=out)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: screenshot_multimodal_webchat.py MODEL_FOLDER OUT.png")
    main(sys.argv[1], sys.argv[2])
