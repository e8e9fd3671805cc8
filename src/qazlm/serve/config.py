"""`qazlm serve` settings: one validated dataclass (docs/serve.md)."""

from __future__ import annotations

from dataclasses import dataclass

from qazlm.config import check_fields
from qazlm.errors import QazlmError


@dataclass
class ServeConfig:
    model: str = ""
    host: str = "127.0.0.1"          # loopback by default: exposing the server is a decision, not an accident
    port: int = 8000
    api_key: str = ""                # when set, every /v1 route needs `Authorization: Bearer <key>`
    slots: int = 8                   # sequences decoded together (continuous batching)
    max_queue: int = 64              # requests waiting for a slot; more are answered 429
    prefill_chunk: int = 64          # prompt tokens fed per step while other sequences decode
    max_tokens: int = 512            # the largest max_tokens a request may ask for
    max_body_bytes: int = 1_000_000  # larger request bodies are answered 413
    name: str = ""                   # the model id /v1/models lists (default: the folder name)
    threads: int = 0                 # torch CPU threads; 0: all cores but one, which is left to HTTP and streaming

    def __post_init__(self):
        if not self.model:
            raise QazlmError("serve: give the model folder to serve (qazlm serve MODEL)")
        check_fields(self, "serve: ", {"port": ">= 0, <= 65535", "slots": ">= 1, <= 256", "max_queue": ">= 0",
                                       "prefill_chunk": ">= 1", "max_tokens": ">= 1", "max_body_bytes": ">= 1024",
                                       "threads": ">= 0"})
