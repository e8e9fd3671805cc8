"""A real uvicorn server on 127.0.0.1 (a free port) in a thread, for the serving tests and the browser test."""

from __future__ import annotations

import contextlib
import threading
import time


@contextlib.contextmanager
def running_server(cfg, model_dir):
    """Yields (base URL, app); stops the server (and its engine thread) on exit."""
    from qazlm.infer.loading import load_model
    from qazlm.serve.app import create_app

    with running_app(create_app(cfg, load_model(model_dir))) as url:
        yield url, app_of[url]


app_of: dict = {}


@contextlib.contextmanager
def running_app(app):
    """Any ASGI app on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app_of[url] = app
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        app_of.pop(url, None)


def tiny_chat_model(root, corpus, max_pos: int = 2048):
    """A trained 3000-token tokenizer and a random 2-layer Qwen3 folder: a fast model with our chat template."""
    from test_eval_helpers import make_hf_folder

    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    train_tokenizer(TokenizerTrainConfig(inputs=[str(corpus)], vocab_size=3000), root / "tok", show_progress=False)
    return make_hf_folder(root / "tok", root / "model", max_pos=max_pos)
