"""An OpenAI-compatible HTTP server over the continuous batcher (FastAPI + uvicorn).

Routes: `/v1/models`, `/v1/chat/completions`, `/v1/completions` (streamed as server-sent events ending with
`[DONE]`, or whole), `/` (the web chat, webchat.html), `/health`, `/metrics` (Prometheus text), and vLLM's
`/tokenize`, `/detokenize`, `/tokenizer_info` (lm-eval's remote tokenizer). One engine
thread runs `ContinuousBatcher.step()`; handlers submit requests to it and wait (or stream) without blocking the event
loop. A client that disconnects cancels its request, which frees its slot at once. Errors are OpenAI-style
JSON (`{"error": {"message", "type", "code"}}`) with 400/401/404/413/429/500, never a stack trace.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (`request: Request`) as
# objects, and `Request` is imported inside create_app (the server's imports stay out of every other command).
import asyncio
import hmac
import json
import threading
import time
import uuid
from importlib import resources

from qazlm.errors import QazlmError
from qazlm.serve.config import ServeConfig

# The page's script and styles are inline; it may fetch only from this server.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:")
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


class Histogram:
    """A Prometheus histogram over BUCKETS (seconds)."""

    def __init__(self):
        self.counts, self.sum = [0] * (len(BUCKETS) + 1), 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1

    def lines(self, name: str) -> list[str]:
        out, total = [f"# TYPE {name} histogram"], 0
        for bound, count in zip((*BUCKETS, "+Inf"), self.counts):
            total += count
            out.append(f'{name}_bucket{{le="{bound}"}} {total}')
        return out + [f"{name}_sum {self.sum:.6f}", f"{name}_count {total}"]


class Engine:
    """The batcher and the thread that steps it; `submit` wakes it."""

    def __init__(self, loaded, cfg: ServeConfig):
        from qazlm.infer.batcher import ContinuousBatcher

        self.loaded, self.tokenizer = loaded, loaded.tokenizer
        self.batcher = ContinuousBatcher(loaded.model, slots=cfg.slots, max_len=loaded.model.max_len,
                                         prefill_chunk=cfg.prefill_chunk, max_queue=cfg.max_queue)
        self.wake, self.stopping = threading.Event(), False
        self.watched: dict = {}          # request -> (its asyncio loop, its Event, tokens seen); one wake-up per step
        self.watch_lock = threading.Lock()
        self.metrics = {"requests": 0, "tokens": 0, "errors": 0, "latency": Histogram(), "first_token": Histogram()}
        self.thread = threading.Thread(target=self._loop, name="qazlm-engine", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping:
            if not self.batcher.step():
                self.wake.wait(0.05)
                self.wake.clear()
            self._notify()

    def _notify(self) -> None:
        """Wake the handlers whose request got tokens or finished: one call into each event loop per step,
        not one per token (per-token wake-ups cost the decoding thread the GIL at every token)."""
        woken: dict = {}
        with self.watch_lock:
            for req, (loop, event, seen) in list(self.watched.items()):
                if len(req.tokens) != seen or req.done.is_set():
                    self.watched[req] = (loop, event, len(req.tokens))
                    woken.setdefault(loop, []).append(event)
                if req.done.is_set():
                    del self.watched[req]
        for loop, events in woken.items():
            loop.call_soon_threadsafe(lambda evs=events: [e.set() for e in evs])

    def submit(self, prompt, params, stop_ids, constraint) -> tuple:
        """Queue a request; returns it and the asyncio.Event set whenever it has new tokens or is done."""
        from qazlm.infer.batcher import QueueFull

        event = asyncio.Event()
        try:
            with self.watch_lock:
                req = self.batcher.submit(prompt, params, stop_ids, constraint=constraint)
                self.watched[req] = (asyncio.get_running_loop(), event, 0)
        except QueueFull as e:
            raise ApiError(429, str(e), "rate_limit_error") from None
        except QazlmError as e:
            raise ApiError(400, str(e)) from None
        self.wake.set()
        return req, event

    def close(self) -> None:
        """Cancel what is queued or running (their clients get what was generated) and stop the thread."""
        for req in list(self.batcher.waiting) + list(self.batcher.running):
            self.batcher.cancel(req)
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=5)

    def observe(self, seconds: float, tokens: int) -> None:
        m = self.metrics
        m["requests"] += 1
        m["tokens"] += tokens
        m["latency"].observe(seconds)


# ------------------------------------------------------------------------------------------ request parsing
def number(body: dict, key: str, default, low: float, high: float, integer: bool = False):
    value = body.get(key, default)
    if value is None:
        return default
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not (low <= value <= high):
        raise ApiError(400, f"{key} = {value!r}: expected a {'whole ' if integer else ''}number in [{low}, {high}]",
                       code="invalid_value")
    return value


def sampling(body: dict, cfg: ServeConfig):
    from qazlm.infer.sampling import SamplingParams

    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise ApiError(400, "stop: expected a string or a list of up to 4 non-empty strings")
    temperature = number(body, "temperature", 1.0, 0, 2)
    params = SamplingParams(max_new_tokens=number(body, "max_tokens", min(256, cfg.max_tokens), 1, cfg.max_tokens,
                                                  True),
                            temperature=temperature, top_p=number(body, "top_p", None, 0.01, 1), stop=stop,
                            seed=number(body, "seed", 0, 0, 2**31 - 1, True))
    return params, stop, number(body, "n", 1, 1, 8, True)


def grammar(engine: Engine, body: dict, tools: list | None, stop_id: int):
    """The Constraint a request asks for: a response_format JSON schema, or tool calls it requires."""
    from qazlm.infer.constrain import Constraint, schema_regex, tool_call_regex
    from qazlm.infer.tools import function_of

    fmt, choice = body.get("response_format") or {}, body.get("tool_choice", "auto")
    regex = None
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema: expected a JSON Schema object")
        regex = schema_regex(schema)
    elif fmt.get("type") == "json_object":
        regex = schema_regex({"type": "object"})
    elif fmt.get("type") not in (None, "text"):
        raise ApiError(400, f"response_format.type = {fmt.get('type')!r}: use text, json_object or json_schema")
    if tools and choice == "required":
        regex = tool_call_regex(tools, bool(body.get("parallel_tool_calls", True)), engine.tokenizer)
    elif tools and isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = [t for t in tools if function_of(t).get("name") == name]
        if not chosen:
            raise ApiError(400, f"tool_choice names {name!r}, which is not among the tools")
        regex = tool_call_regex(chosen, False, engine.tokenizer)
    return None if regex is None else (lambda: Constraint(engine.tokenizer, regex, stop_id, 1))


def prompt_ids(engine: Engine, prompt) -> list[list[int]]:
    """/v1/completions' `prompt`: a string, a list of strings, a list of token ids or a list of such lists (what
    lm-eval's local-completions sends). Text gets the document-boundary token first; token ids are used as given."""
    from qazlm.infer.engine import encode_prompts

    def is_ids(x) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

    if isinstance(prompt, str) and prompt:
        return encode_prompts(engine.tokenizer, [prompt])
    if is_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) and p for p in prompt):
        return encode_prompts(engine.tokenizer, prompt)
    elif isinstance(prompt, list) and prompt and all(is_ids(p) for p in prompt):
        prompts = prompt
    else:
        raise ApiError(400, "prompt: expected a non-empty string, a list of strings, a list of token ids or a list "
                            "of token-id lists")
    if any(not 0 <= t < len(engine.tokenizer) for p in prompts for t in p):
        raise ApiError(400, f"prompt: token ids must be in [0, {len(engine.tokenizer)})")
    return [list(p) for p in prompts]


def token_logprobs(engine: Engine, ids: list[int], start: int, top: int) -> dict:
    """OpenAI's `logprobs` object for ids[start:], from one forward pass over `ids` (teacher forcing: the
    model's raw distribution, before temperature or top_p). The first token of a sequence has no logprob."""
    import torch

    with torch.inference_mode():
        logp = torch.log_softmax(engine.loaded.model(torch.tensor([ids])), dim=-1)[0]
    tok = engine.tokenizer
    pieces = [tok.decode([t]) for t in ids]
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = sum(len(p) for p in pieces[:start])
    for pos in range(start, len(ids)):
        out["tokens"].append(pieces[pos])
        out["text_offset"].append(offset)
        offset += len(pieces[pos])
        if pos == 0:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        row = logp[pos - 1]
        best = torch.topk(row, top) if top else None
        alternatives = {tok.decode([int(i)]): float(v) for v, i in zip(*best)} if best else {}
        alternatives.setdefault(pieces[pos], float(row[ids[pos]]))   # the chosen token too, as vLLM does
        out["token_logprobs"].append(float(row[ids[pos]]))
        out["top_logprobs"].append(alternatives)
    return out


# ------------------------------------------------------------------------------------------ generation
async def run_request(engine: Engine, prompt_ids, params, stop_ids, make_constraint, on_text, is_gone):
    """Generate one choice; `on_text(delta)` gets decoded text as it comes (held back at a stop string or a
    partial character). Returns (text, token ids, finish_reason)."""
    from qazlm.infer.tools import decode_for_tools

    req, news = engine.submit(prompt_ids, params, stop_ids, make_constraint() if make_constraint else None)
    sent, stops, finish, next_look, t0, timed = "", params.stop, None, 0.0, time.perf_counter(), False
    while True:
        try:
            await asyncio.wait_for(news.wait(), timeout=0.25)   # the timeout: look for a gone client now and then
        except asyncio.TimeoutError:
            pass
        news.clear()
        if req.tokens and not timed:
            engine.metrics["first_token"].observe(time.perf_counter() - t0)
            timed = True
        text = decode_for_tools(engine.tokenizer, req.tokens)
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut >= 0:
            text, finish = text[:cut], "stop"
            engine.batcher.cancel(req)
        hold = 0 if req.done.is_set() or finish else max((len(s) for s in stops), default=0)
        ready = text[:len(text) - hold] if not text.endswith("\ufffd") else text.rstrip("\ufffd")
        if len(ready) > len(sent):
            await on_text(ready[len(sent):])
            sent = ready
        if finish or req.done.is_set():
            break
        if time.monotonic() > next_look and await is_gone():
            engine.batcher.cancel(req)
            break
        next_look = time.monotonic() + 0.1    # asking the connection costs; a few times a second is enough
    reason = finish or {"stop": "stop", "length": "length"}.get(req.finish, "stop")
    ids = list(req.tokens)
    while ids and finish == "stop" and len(decode_for_tools(engine.tokenizer, ids[:-1])) >= len(sent):
        ids.pop()                      # tokens past a stop string are not part of the answer
    return sent, ids, reason


def error_body(status: int, message: str, kind: str, code: str | None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code or str(status)}}


def web_chat_page():
    """The chat page: one static file; the CSP keeps it from loading anything from another origin."""
    from fastapi.responses import HTMLResponse

    page = resources.files("qazlm.serve").joinpath("webchat.html").read_text(encoding="utf-8")
    return HTMLResponse(page, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


class Completion:
    """One /v1/completions or /v1/chat/completions request: checked and encoded before anything is queued,
    then answered whole (`reply`) or as server-sent events (`events`). `n` choices of a prompt get seeds
    seed, seed+1, ...; a request's own prompts take at most every slot at once, never the queue."""

    def __init__(self, engine: Engine, cfg: ServeConfig, model_id: str, body: dict, chat: bool):
        from dataclasses import replace

        from qazlm.infer.engine import stop_ids_for
        from qazlm.infer.tools import check_tools
        from qazlm.tokenizer.special_tokens import IM_END, token_id

        if body.get("model") not in (None, model_id):
            raise ApiError(404, f"model {body['model']!r} is not served here; GET /v1/models lists {model_id!r}",
                           code="model_not_found")
        self.engine, self.tok, self.slots, self.model_id = engine, engine.tokenizer, cfg.slots, model_id
        self.body, self.chat, self.echo = body, chat, bool(body.get("echo")) and not chat
        self.top = 0 if chat else number(body, "logprobs", 0, 0, 20, True)
        self.want_logprobs = not chat and body.get("logprobs") is not None
        self.score_only = self.echo and body.get("max_tokens") == 0      # score the prompt, generate nothing
        params, _, self.n = sampling({**body, "max_tokens": 1} if self.score_only else body, cfg)
        self.tools = body.get("tools") if chat and body.get("tool_choice", "auto") != "none" else None
        if self.tools is not None:
            check_tools(self.tools, "tools")
        self.prompts = self._encode(params.max_new_tokens)
        if body.get("stream") and (len(self.prompts) > 1 or self.want_logprobs):
            raise ApiError(400, "stream: one prompt at a time and without logprobs; send them unstreamed")
        self.stop_ids = stop_ids_for(self.tok, params)
        end = token_id(self.tok, IM_END) if chat else None
        self.make_constraint = grammar(engine, body, self.tools, self.stop_ids[0] if end is None else end)
        if body.get("ignore_eos") is True:    # vLLM's extension (benchmarks): always max_tokens tokens
            self.stop_ids = []
        self.jobs = [(k, replace(params, seed=params.seed + i))      # (prompt index, its sampling) a choice
                     for k in range(len(self.prompts)) for i in range(self.n)]
        self.id, self.created = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", int(time.time())
        self.kind = "chat.completion" if chat else "text_completion"
        self.chunk_kind = "chat.completion.chunk" if chat else "text_completion"
        self.t0 = time.perf_counter()

    def _encode(self, max_new_tokens: int) -> list[list[int]]:
        """The prompts' token ids (the rendered chat, or /v1/completions' prompt), each checked to leave room for
        max_tokens in the model's context; with echo, `self.echoed` gets the text each one is shown as."""
        from qazlm.infer.chat import render_chat
        from qazlm.infer.engine import encode_prompts

        if self.chat:
            messages = self.body.get("messages")
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and m.get("role") in ("system", "user", "assistant", "tool") for m in messages):
                raise ApiError(400, "messages: expected a non-empty list of {role, content} objects")
            prompts = encode_prompts(self.tok, [render_chat(self.tok, messages, tools=self.tools or None)],
                                     add_bos=False)
        else:
            given = self.body.get("prompt")
            prompts = prompt_ids(self.engine, given)
            given = given if isinstance(given, list) and isinstance(given[0], str | list) else [given]
            # echo shows a text prompt as it was sent (not the boundary token put before it), token ids decoded
            self.echoed = [g if isinstance(g, str) else self.tok.decode(p) for g, p in zip(given, prompts)] \
                if self.echo else []
        context = self.engine.loaded.model.max_len
        for prompt in prompts:
            if len(prompt) > context - max_new_tokens:
                raise ApiError(400, f"prompt has {len(prompt)} tokens; with max_tokens {max_new_tokens} at most "
                                    f"{context - max_new_tokens} fit the model's context ({context})",
                               code="context_length_exceeded")
        return prompts

    def envelope(self, kind: str, choices: list, **extra) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model_id, "choices": choices,
                **extra}

    async def one(self, prompt, params, on_text, is_gone):
        """(text, token ids, finish reason) of one choice; max_tokens 0 (echo only) generates nothing."""
        if self.score_only:
            return "", [], "length"
        return await run_request(self.engine, prompt, params, self.stop_ids, self.make_constraint, on_text, is_gone)

    # ---------------------------------------------------------------------------------- the whole answer
    async def reply(self, is_gone) -> dict:
        wave = asyncio.Semaphore(self.slots)

        async def ignore(delta: str) -> None:
            return None

        async def in_wave(k, params):
            async with wave:
                return await self.one(self.prompts[k], params, ignore, is_gone)

        results = await asyncio.gather(*(in_wave(k, params) for k, params in self.jobs))
        choices = [await self.choice(i, k, *result) for i, ((k, _), result) in enumerate(zip(self.jobs, results))]
        completion = sum(len(ids) for _, ids, _ in results)
        self.engine.observe(time.perf_counter() - self.t0, completion)
        return self.envelope(self.kind, choices, usage=usage(sum(len(p) for p in self.prompts) * self.n, completion))

    async def choice(self, i: int, k: int, text: str, ids: list[int], reason: str) -> dict:
        from qazlm.infer.tools import parse_tool_calls

        if not self.chat:
            prompt = self.prompts[k]
            choice = {"index": i, "text": (self.echoed[k] if self.echo else "") + text, "finish_reason": reason}
            if self.want_logprobs:
                choice["logprobs"] = await asyncio.to_thread(token_logprobs, self.engine, prompt + ids,
                                                             0 if self.echo else len(prompt), self.top)
            return choice
        message = {"role": "assistant", "content": text.strip()}
        if self.tools:
            parsed = parse_tool_calls(text, self.tools)
            message["content"] = parsed.content or None
            if parsed.tool_calls:
                message["tool_calls"], reason = parsed.tool_calls, "tool_calls"
        return {"index": i, "message": message, "finish_reason": reason}

    # ---------------------------------------------------------------------------------- server-sent events
    async def events(self, is_gone):
        """Each choice's deltas in turn, then its finish reason; the usage chunk if asked; `[DONE]`."""
        completion = [0]
        for i, (k, params) in enumerate(self.jobs):
            async for event in self._choice_events(i, k, params, is_gone, completion):
                yield event
        if (self.body.get("stream_options") or {}).get("include_usage"):   # OpenAI's last chunk: usage only
            yield sse(self.envelope(self.chunk_kind, [], usage=usage(len(self.prompts[0]) * self.n, completion[0])))
        yield "data: [DONE]\n\n"

    async def _choice_events(self, i: int, k: int, params, is_gone, completion: list):
        from qazlm.infer.tools import ToolCallStream

        calls = ToolCallStream(self.tools) if self.tools else None
        pending: list[str] = [self.chunk(i, {"content": self.echoed[k]})] if self.echo else []

        async def on_text(delta: str) -> None:
            pending.extend(self.chunk(i, ev) for ev in (calls.feed(delta) if calls else [{"content": delta}]))

        task = asyncio.ensure_future(self.one(self.prompts[k], params, on_text, is_gone))
        if self.chat:
            yield sse(self.envelope(self.chunk_kind, [{"index": i, "delta": {"role": "assistant"},
                                                       "finish_reason": None}]))
        while not task.done() or pending:
            if pending:    # what came since the last look goes out in one write
                yield "".join(pending)
                pending.clear()
            if not task.done():
                await asyncio.sleep(0.02)
        _, ids, reason = task.result()
        for ev in (calls.finish() if calls else []):
            yield self.chunk(i, ev)
        if calls and calls.calls:
            reason = "tool_calls"
        self.engine.observe(time.perf_counter() - self.t0, len(ids))
        completion[0] += len(ids)
        yield sse(self.envelope(self.chunk_kind, [{"index": i, **({"delta": {}} if self.chat else {"text": ""}),
                                                   "finish_reason": reason}]))

    def chunk(self, i: int, ev: dict) -> str:
        """One delta event: text, or (chat) content or a tool call's piece."""
        if not self.chat:
            return sse(self.envelope(self.kind, [{"index": i, "text": ev.get("content", ""), "finish_reason": None}]))
        if "content" in ev:
            delta = {"content": ev["content"]}
        elif "tool_call" in ev:
            delta = {"tool_calls": [{"index": int(ev["tool_call"]["id"].split("_")[1]), **ev["tool_call"]}]}
        else:
            delta = {"content": ""}
        return sse(self.envelope(self.chunk_kind, [{"index": i, "delta": delta, "finish_reason": None}]))


# ------------------------------------------------------------------------------------------ the app
def prometheus_text(engine: Engine) -> str:
    m, b = engine.metrics, engine.batcher
    lines = ["# TYPE qazlm_requests_total counter", f"qazlm_requests_total {m['requests']}",
             "# TYPE qazlm_errors_total counter", f"qazlm_errors_total {m['errors']}",
             "# TYPE qazlm_generated_tokens_total counter", f"qazlm_generated_tokens_total {m['tokens']}",
             "# TYPE qazlm_queue_depth gauge", f"qazlm_queue_depth {len(b.waiting)}",
             "# TYPE qazlm_running gauge", f"qazlm_running {len(b.running)}"]
    lines += m["latency"].lines("qazlm_request_seconds")
    lines += m["first_token"].lines("qazlm_time_to_first_token_seconds")
    return "\n".join(lines) + "\n"


def add_error_handlers(app, engine: Engine) -> None:
    """OpenAI-style error JSON for every failure, counted in the metrics; never a stack trace to a client."""
    from fastapi.responses import JSONResponse

    def answer(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
               counted: bool = True):
        engine.metrics["errors"] += counted
        return JSONResponse(error_body(status, message, kind, code), status_code=status)

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return answer(e.status, e.message, e.kind, e.code)

    @app.exception_handler(QazlmError)
    async def _qazlm_error(request, e: QazlmError):
        return answer(400, str(e))

    @app.exception_handler(Exception)
    async def _internal(request, e: Exception):
        return answer(500, "internal server error", "server_error")

    @app.exception_handler(404)
    async def _not_found(request, e):
        return answer(404, f"no route {request.url.path}", counted=False)


def request_reader(cfg: ServeConfig):
    """(check_key, read_json) for the routes: the API key (constant-time compare) and a size-capped JSON object."""
    from fastapi import Request

    def check_key(request: Request) -> None:
        """Every /v1 route: with an API key set, `Authorization: Bearer KEY` (compared in constant time)."""
        given = request.headers.get("authorization", "")
        if cfg.api_key and not hmac.compare_digest(given.encode(), f"Bearer {cfg.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")

    async def read_json(request: Request) -> dict:
        check_key(request)
        if int(request.headers.get("content-length") or 0) > cfg.max_body_bytes:
            raise ApiError(413, f"request body larger than {cfg.max_body_bytes} bytes")
        raw = await request.body()
        if len(raw) > cfg.max_body_bytes:
            raise ApiError(413, f"request body larger than {cfg.max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body

    return check_key, read_json


def add_tokenizer_routes(app, engine: Engine, check_key, read_json) -> None:
    """vLLM's tokenizer routes: lm-eval's `tokenizer_backend=remote` scores a served model with no local copy."""
    from fastapi import Request

    tok, context = engine.tokenizer, engine.loaded.model.max_len

    @app.get("/tokenizer_info")
    async def tokenizer_info(request: Request):
        check_key(request)
        return {"tokenizer_class": type(tok).__name__, "eos_token": tok.eos_token, "bos_token": tok.bos_token,
                "pad_token": tok.pad_token, "chat_template": tok.chat_template,
                "model_max_length": context, "vocab_size": len(tok)}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        from qazlm.infer.chat import render_chat

        body = await read_json(request)
        if isinstance(body.get("messages"), list) and body["messages"]:
            text = render_chat(tok, body["messages"])
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise ApiError(400, "tokenize: give `prompt` (a string) or `messages` (a chat)")
        ids = tok(text, add_special_tokens=bool(body.get("add_special_tokens", False)))["input_ids"]
        return {"tokens": ids, "count": len(ids), "max_model_len": context}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read_json(request)
        ids = body.get("tokens")
        if not isinstance(ids, list) or not all(isinstance(t, int) and 0 <= t < len(tok) for t in ids):
            raise ApiError(400, f"detokenize: `tokens` must be a list of ids in [0, {len(tok)})")
        return {"prompt": tok.decode(ids)}


def create_app(cfg: ServeConfig, loaded):
    from fastapi import FastAPI, Request
    from fastapi.responses import PlainTextResponse, StreamingResponse

    engine = Engine(loaded, cfg)
    model_id = cfg.name or loaded.name
    app = FastAPI(title="qazlm", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.on_event("shutdown")(engine.close)
    add_error_handlers(app, engine)
    check_key, read_json = request_reader(cfg)
    add_tokenizer_routes(app, engine, check_key, read_json)
    app.get("/")(web_chat_page)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": model_id}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": model_id, "object": "model", "owned_by": "qazlm",
                                            "created": int(time.time())}]}

    @app.get("/metrics")
    def metrics():
        return PlainTextResponse(prometheus_text(engine), media_type="text/plain; version=0.0.4")

    async def complete(request: Request, chat: bool):
        job = Completion(engine, cfg, model_id, await read_json(request), chat)
        if job.body.get("stream"):
            return StreamingResponse(job.events(request.is_disconnected), media_type="text/event-stream")
        return await job.reply(request.is_disconnected)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await complete(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, chat=False)

    return app


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
