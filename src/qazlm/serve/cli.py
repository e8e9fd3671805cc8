"""`qazlm serve MODEL`: an OpenAI-compatible HTTP server (chat, completions, streaming, tools) on 127.0.0.1."""

from __future__ import annotations

EPILOG = """examples:
  qazlm serve runs/tiny/sft/final                                # http://127.0.0.1:8000/v1
  qazlm serve runs/tiny/sft/final --port 8080 --api-key secret --slots 16
  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "Сәлем!"}], "max_tokens": 32}'
  python -c "from openai import OpenAI; c = OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='-');
print(c.chat.completions.create(model='x', messages=[{'role': 'user', 'content': 'Hi'}]).choices[0])"
"""

FLAGS = {"model": "model", "host": "host", "port": "port", "api_key": "api_key", "slots": "slots",
         "max_queue": "max_queue", "max_tokens": "max_tokens", "threads": "threads"}


def _run(args) -> int:
    import os

    import torch
    import uvicorn

    from qazlm.config import config_from_cli
    from qazlm.infer.loading import load_model
    from qazlm.serve.app import create_app
    from qazlm.serve.config import ServeConfig

    cfg = config_from_cli(ServeConfig, "serve", args, FLAGS, "serve")
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 2) - 1))
    app = create_app(cfg, load_model(cfg.model))
    print(f"serve: {cfg.model} on http://{cfg.host}:{cfg.port}/v1 ({cfg.slots} slots, "
          f"{torch.get_num_threads()} threads{', API key required' if cfg.api_key else ''})")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("serve", help="OpenAI-compatible server (continuous batching, streaming, tools)",
                       formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG)
    p.add_argument("model", nargs="?", default=None, help="model folder: ours or Hugging Face")
    p.add_argument("--host", default=None, help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", default=None, help="port (default: 8000)")
    p.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on every /v1 route")
    p.add_argument("--slots", default=None, help="sequences decoded together (default: 8)")
    p.add_argument("--max-queue", default=None, help="requests waiting for a slot before 429 (default: 64)")
    p.add_argument("--max-tokens", default=None, help="largest max_tokens a request may ask (default: 512)")
    p.add_argument("--threads", default=None, help="torch CPU threads (default: all cores but one, left to HTTP)")
    p.add_argument("--config", default=None, help="TOML file with a [serve] table")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any [serve] key")
    p.set_defaults(func=_run)
