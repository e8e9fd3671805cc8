"""The serving stage's web chat and an OpenAI-style chat route for a multimodal model folder.

`python -m qazlm.experiments.multimodal serve MODEL` answers `/v1/chat/completions` whose last user message
carries an image (`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`, OpenAI's vision
format) or a sound (`{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}`) with its
question as text, whole or streamed (SSE ending with [DONE]). `/v1/models` lists the model with
`"capabilities": ["vision", "audio"]`, which is how the web chat (the core server's page, unchanged routes)
knows to offer its image button. The model was trained on single questions, so only the last user turn is
read. One request at a time (no batching: this is an experiment, the core server is the fast one); bodies over
8 MiB are refused; errors are OpenAI error JSON, never a trace; 127.0.0.1 by default.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
import uuid
from pathlib import Path

from fastapi import Request  # at module level: FastAPI resolves the handlers' (string) annotations here

from qazlm.errors import QazlmError

MAX_BODY = 8 * 1024 * 1024


def parse_request(body: dict) -> tuple[str, bytes | None, bytes | None, int]:
    """(question, image bytes, wav bytes, max tokens) from a chat request; QazlmError names what is wrong."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise QazlmError("messages: give a non-empty list")
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise QazlmError("messages: no user message")
    content = users[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise QazlmError("messages[-1].content: give text or a list of content parts")
    text, image, audio = [], None, None
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if not url.startswith("data:image/") or ";base64," not in url:
                raise QazlmError("image_url: give the picture inline as a data:image/...;base64, URL "
                                 "(this server fetches nothing)")
            image = _b64(url.split(";base64,", 1)[1], "image_url")
        elif kind == "input_audio":
            data = part.get("input_audio") or {}
            if data.get("format", "wav") != "wav":
                raise QazlmError(f"input_audio.format {data.get('format')!r}: give wav")
            audio = _b64(data.get("data", ""), "input_audio.data")
        else:
            raise QazlmError(f"content part type {kind!r}: use text, image_url or input_audio")
    if (image is None) == (audio is None):
        raise QazlmError("the last user message needs exactly one image_url or input_audio part "
                         "(this model answers questions about a picture or a sound)")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 32
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 256:
        raise QazlmError(f"max_tokens {max_tokens!r}: give 1-256")
    return " ".join(t for t in text if t).strip(), image, audio, max_tokens


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise QazlmError(f"{where}: not valid base64") from None


def create_app(model_dir: str | Path, model_id: str | None = None):
    from fastapi import FastAPI
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import JSONResponse, StreamingResponse

    from qazlm.experiments.multimodal.ask import answer, read_image
    from qazlm.experiments.multimodal.model import load
    from qazlm.experiments.multimodal.speech import read_audio
    from qazlm.serve.app import error_body, web_chat_page

    model = load(model_dir)
    name = model_id or "/".join(Path(model_dir).resolve().parts[-2:])
    capabilities = [c for c, enc in (("vision", model.vision), ("audio", model.audio)) if enc is not None]
    lock = threading.Lock()
    app = FastAPI(title="qazlm multimodal", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(QazlmError)
    async def _bad(request, e: QazlmError):
        return JSONResponse(error_body(400, str(e), "invalid_request_error", None), status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):   # never a stack trace to a client
        return JSONResponse(error_body(500, "internal server error", "server_error", None), status_code=500)

    app.get("/")(web_chat_page)

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "qazlm",
                                            "capabilities": capabilities}]}

    def reply(question: str, image: bytes | None, audio: bytes | None, max_tokens: int) -> str:
        picture = read_image(image) if image is not None else None
        sound = read_audio(audio) if audio is not None else None
        with lock:
            return answer(model, question, picture, sound, max_tokens)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse(error_body(413, f"body over {MAX_BODY} bytes", "invalid_request_error", None),
                                status_code=413)
        try:
            body = json.loads(raw)
        except ValueError:
            raise QazlmError("the body is not JSON") from None
        if not isinstance(body, dict):
            raise QazlmError("the body must be a JSON object")
        if body.get("model") not in (None, name):
            return JSONResponse(error_body(404, f"model {body.get('model')!r} not served; this is {name!r}",
                                           "invalid_request_error", "model_not_found"), status_code=404)
        text = await run_in_threadpool(reply, *parse_request(body))
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not body.get("stream"):
            return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}]}

        def events():
            for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop")):
                chunk = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def serve(model_dir: str | Path, host: str = "127.0.0.1", port: int = 8001) -> None:
    import uvicorn

    uvicorn.run(create_app(model_dir), host=host, port=port, log_level="info")
