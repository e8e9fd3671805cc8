"""`qazlm serve` under load, beside llama-cpp-python's OpenAI-compatible server on the same model's GGUF.

For each model (tiny, small) and each server, 1, 4, 16 and 32 concurrent clients each send `--requests`
streamed /v1/completions requests one after another (FLORES+ devtest sentence starts, greedy, `--tokens` new
tokens). Reported per level: aggregate generated tokens/s, time to first token (TTFT) p50/p99, inter-token
latency p50/p99 (each request's (last - first token time) / (tokens - 1), so a chunk carrying several tokens
counts as several), and the speed-up over one client. Same model, same precision (fp32; llama.cpp gets the
F32 GGUF `qazlm export gguf` writes), same prompts, same CPU threads (`--threads`; default all cores but one,
which measured faster for both servers on 2 cores); both servers run as their own processes on 127.0.0.1, one
at a time. A level sends at least 8 requests in all, so the one-client figure is not a single short sample.
Every level is bounded in count and time (`--level-seconds`). The last line is one JSON object.

    python benchmarks/bench_serve.py --models tiny,small --tiny runs/tiny/sft/final --small runs/small/pretrain/final

`--llama-server BIN` adds llama.cpp's own server (continuous batching over `-np` slots, as many slots as qazlm
serve gets), built from the llama.cpp source in llama-cpp-python's sdist (docs/serve.md). Started with `--jinja`,
it also renders five chat conversations (system prompt, several turns, tools offered, a tool call with dict and
with string arguments) through the chat template in the GGUF, and each must equal transformers'
`apply_chat_template` on the model folder: the check that `llama-server --jinja` and `llama-cli --jinja` chat as
our models were trained to.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quantize import add_model_args, require_binary, devtest, find_models, no_models  # noqa: E402

from qazlm.infer.engine import stop_ids_for  # noqa: E402

TARGET_SPEEDUP_AT_16 = 4.0
MIN_REQUESTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    """A server process; returns once GET /v1/models answers (or raises after 180 s)."""
    import httpx2 as httpx  # the HTTP client the openai package ships with

    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[0]} exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{argv[0]} did not answer within 180 s; see {log}")


async def one_request(client, url: str, body: dict) -> dict | None:
    """Streams one completion; times its first token and end. Tokens: the usage chunk when the server sends
    one (qazlm); else max_tokens when it finished by length (llama-cpp-python), else the streamed chunks."""
    t0, first, chunks, usage, finish = time.perf_counter(), None, 0, None, None
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return None
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            if ev.get("usage") and not ev.get("choices"):
                usage = ev["usage"]["completion_tokens"]
                continue
            choice = (ev.get("choices") or [{}])[0]
            finish = choice.get("finish_reason") or finish
            if choice.get("finish_reason") is None and "text" in choice:
                chunks += 1
                if first is None and choice["text"]:
                    first = time.perf_counter()
    end = time.perf_counter()
    first = first or end            # a reply with no visible text (e.g. only partial characters)
    n = usage if usage is not None else body["max_tokens"] if finish == "length" else chunks
    if n < 1:
        return None
    return {"ttft": first - t0, "itl": (end - first) / (n - 1) if n > 1 else None, "tokens": n}


def request_body(model: str, prompt: str, tokens: int, end_ids: list[int]) -> dict:
    """Greedy, exactly `tokens` new tokens on both servers: `ignore_eos` (vLLM's extension, which qazlm serve
    takes) and a -100 logit bias on the end tokens (what llama-cpp-python takes); each ignores the other's."""
    return {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "ignore_eos": True,
            "logit_bias": {str(i): -100 for i in end_ids}}


async def level(url: str, bodies: list[dict], clients: int, requests: int, seconds: float) -> dict:
    """`clients` concurrent loops of `requests` sequential requests; stops sending after `seconds`."""
    import httpx2 as httpx  # the HTTP client the openai package ships with

    deadline = time.monotonic() + seconds
    done: list[dict] = []
    failed = 0

    async def loop(c: int, client) -> None:
        nonlocal failed
        for k in range(requests):
            if time.monotonic() > deadline:
                return
            body = bodies[(c * requests + k) % len(bodies)]
            try:
                res = await one_request(client, url, body)
            except httpx.RemoteProtocolError:  # a kept-alive connection the server had closed (llama-server
                res = await one_request(client, url, body)  # closes one after a few requests): send it again
            if res is None:
                failed += 1
            else:
                done.append(res)

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(loop(c, client) for c in range(clients)))
        wall = time.perf_counter() - t0
    ttft = sorted(r["ttft"] for r in done)
    itl = sorted(r["itl"] for r in done if r["itl"] is not None)
    total = sum(r["tokens"] for r in done)
    return {"clients": clients, "requests": len(done), "failed": failed, "tokens": total, "wall_s": round(wall, 2),
            "tok_s": round(total / wall, 1), "ttft_p50_ms": pct(ttft, 50), "ttft_p99_ms": pct(ttft, 99),
            "itl_p50_ms": pct(itl, 50), "itl_p99_ms": pct(itl, 99)}


def pct(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0] * 1000, 1)
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000, 1)


def gguf_f32(name: str, path: Path, work: Path) -> Path:
    from qazlm.gguf.config import GGUFConfig
    from qazlm.gguf.export import file_name, run_gguf

    out = work / name / "gguf"
    run_gguf(GGUFConfig(model=str(path), out_dir=str(out), types=["f32"], name=name, check_sentences=0),
             log=lambda *_: None)
    return out / file_name(name, "f32")


def servers(name: str, path: Path, gguf: Path, slots: int, port: int, args) -> dict[str, list[str]]:
    qazlm = str(Path(sys.executable).with_name("qazlm"))
    threads = str(args.threads)
    llama_server = {"llama.cpp server": [args.llama_server, "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
                                         "-np", str(slots), "-c", str(slots * 256), "-t", threads, "-tb", threads,
                                         "--jinja", "--no-webui"]} if args.llama_server else {}
    return llama_server | {"qazlm serve": [qazlm, "serve", str(path), "--port", str(port), "--slots", str(slots),
                            "--max-queue", "256", "--max-tokens", "1024", "--set", f"name={name}",
                            "--threads", threads],
            "llama-cpp-python server": [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                        "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", threads,
                                        "--n_threads_batch", threads, "--interrupt_requests", "False"]}


def tool_chat(arguments) -> list[dict]:
    """A tool call and its result, the call's arguments as given (a dict, or a JSON string as OpenAI sends)."""
    call = {"id": "c1", "type": "function", "function": {"name": "convert_currency", "arguments": arguments}}
    return [{"role": "user", "content": "100 USD in KZT?"}, {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": '{"result": 52000}'}]


CALL = {"amount": 100, "from": "USD", "to": "KZT"}
CHATS = {   # name: (messages, with the tools offered)
    "system prompt, three turns": ([{"role": "system", "content": "Жауапты тек қазақша бер."},
                                    {"role": "user", "content": "Сәлем! Қалайсың?"},
                                    {"role": "assistant", "content": "Жақсы, рахмет."},
                                    {"role": "user", "content": "Енді орысша айтшы."}], False),
    "no system, emoji and whitespace runs": ([{"role": "user", "content": "Привет 👋  два  пробела\tи таб"}], False),
    "tools offered": ([{"role": "user", "content": "100 долларды теңгеге айырбаста"}], True),
    "tool call (dict arguments) and result": (tool_chat(CALL), True),
    "tool call (string arguments) and result": (tool_chat(json.dumps(CALL)), True),
}
TOOLS = [{"type": "function", "function": {
    "name": "convert_currency", "description": "Convert an amount of money at a fixed rate table",
    "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "from": {"type": "string"},
                                                    "to": {"type": "string"}}, "required": ["amount", "from", "to"]}}}]


def template_parity(url: str, tok) -> dict:
    """llama-server's --jinja rendering (POST /apply-template) of each of CHATS against transformers' (`tok`)."""
    import httpx2 as httpx  # the HTTP client the openai package ships with

    differ = []
    for name, (messages, with_tools) in CHATS.items():
        tools = TOOLS if with_tools else None
        ours = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        r = httpx.post(url + "/apply-template", json={"messages": messages} | ({"tools": tools} if tools else {}),
                       timeout=30)
        if r.status_code != 200 or r.json().get("prompt") != ours:
            differ.append(name)
    return {"identical": len(CHATS) - len(differ), "of": len(CHATS), "different": differ}


def bench_model(name: str, path: Path, args, work: Path) -> dict:
    gguf = gguf_f32(name, path, work)
    from qazlm.infer.loading import load_tokenizer
    from qazlm.infer.sampling import SamplingParams

    tok = load_tokenizer(path)
    end_ids = stop_ids_for(tok, SamplingParams())
    bodies = [request_body(name, " ".join(s.split()[:6]), args.tokens, end_ids)
              for sents in devtest(12).values() for s in sents]
    out: dict = {}
    for server, argv in servers(name, path, gguf, max(args.clients), free_port(), args).items():
        port = int(argv[argv.index("--port") + 1])
        proc = start(argv, port, work / f"{name}-{server.split()[0]}.log")
        try:
            url = f"http://127.0.0.1:{port}"
            if server == "llama.cpp server":
                out["llama.cpp chat template"] = template_parity(url, tok)
                print(f"  {name} llama-server --jinja renders {out['llama.cpp chat template']['identical']}/"
                      f"{len(CHATS)} chats as transformers does", flush=True)
            asyncio.run(level(url, bodies[:1], 1, 1, 60))          # warm-up
            out[server] = []
            for clients in args.clients:
                per_client = max(args.requests, -(-MIN_REQUESTS // clients))
                row = asyncio.run(level(url, bodies, clients, per_client, args.level_seconds))
                row["speedup"] = round(row["tok_s"] / out[server][0]["tok_s"], 2) if out[server] else 1.0
                out[server].append(row)
                print(f"  {name} {server} {clients} clients: {row['tok_s']} tok/s", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return out


def print_table(name: str, rows: dict[str, list[dict]]) -> None:
    print(f"\n{name}: streamed /v1/completions, greedy, fp32")
    print(f"{'server':26s} {'clients':>7s} {'reqs':>5s} {'tokens':>7s} {'tok/s':>8s} {'x 1 client':>10s} "
          f"{'TTFT p50':>9s} {'TTFT p99':>9s} {'ITL p50':>8s} {'ITL p99':>8s}  (ms)")
    for server, levels in rows.items():
        if not isinstance(levels, list):
            continue
        for r in levels:
            print(f"{server:26s} {r['clients']:7d} {r['requests']:5d} {r['tokens']:7d} {r['tok_s']:8.1f} "
                  f"{r['speedup']:10.2f} {r['ttft_p50_ms'] or 0:9.1f} {r['ttft_p99_ms'] or 0:9.1f} "
                  f"{r['itl_p50_ms'] or 0:8.1f} {r['itl_p99_ms'] or 0:8.1f}" + (f"  {r['failed']} failed"
                                                                               if r["failed"] else ""))
    for other in ("llama-cpp-python server", "llama.cpp server"):
        for a, b in zip(rows.get("qazlm serve", []), rows.get(other, [])):
            print(f"  {a['clients']:2d} clients: qazlm / {other} throughput = {a['tok_s'] / b['tok_s']:.2f}")
    if "llama.cpp chat template" in rows:
        parity = rows["llama.cpp chat template"]
        print(f"  llama-server --jinja chat template: {parity['identical']}/{parity['of']} renders identical to "
              f"transformers'" + (f" (different: {', '.join(parity['different'])})" if parity["different"] else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(ap, "runs/tiny/sft/final")
    ap.set_defaults(models="tiny,small")
    ap.add_argument("--clients", default="1,4,16,32", help="comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=2, help="requests per client at each level")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--level-seconds", type=float, default=240, help="stop sending new requests after this")
    ap.add_argument("--work", default="out/bench_serve", help="GGUF files and server logs")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="CPU threads of both servers (default: all cores but one, qazlm serve's own default)")
    ap.add_argument("--llama-server", default=None, metavar="BIN",
                    help="also run llama.cpp's llama-server binary (built from source; docs/serve.md)")
    args = ap.parse_args()
    require_binary(ap, "--llama-server", args.llama_server)
    args.clients = [int(c) for c in args.clients.split(",")]
    models = find_models(args)
    if not models:
        return no_models("serve")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {name: bench_model(name, path, args, work) for name, path in models.items()}
    for name, rows in results.items():
        print_table(name, rows)
    targets = {}
    for name, rows in results.items():
        ours = {r["clients"]: r for r in rows["qazlm serve"]}
        if 16 in ours and 1 in ours:
            speedup = ours[16]["tok_s"] / ours[1]["tok_s"]
            targets[f"{name}_16_clients_vs_1"] = {"value": round(speedup, 2), "target": TARGET_SPEEDUP_AT_16,
                                                  "met": speedup >= TARGET_SPEEDUP_AT_16}
    print(json.dumps({"bench": "serve", "tokens": args.tokens, "requests_per_client": args.requests,
                      "models": results, "targets": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
