"""`qazlm generate`: text from a model folder (ours or Hugging Face) through the inference engine.

`register` also adds `qazlm chat` (`qazlm.infer.chat_cli`).
"""

from __future__ import annotations

import json
import sys

from qazlm.config import check_value
from qazlm.errors import QazlmError

GENERATE_EPILOG = """examples:
  qazlm generate runs/tiny/pretrain/final "Қазақстан Республикасы" --max-new-tokens 40
  qazlm generate /models/Qwen3-0.6B "Сәлем! Қалың қалай?" --chat --stream --temperature 0.7 --top-p 0.9
  qazlm generate runs/tiny/pretrain/final --prompts-file prompts.txt --stop "\\n" --json
  qazlm generate runs/small/pretrain/final --prompts-file prompts.txt --max-new-tokens 512 --compile
  qazlm generate runs/tiny/sft/final "Алматы туралы JSON" --chat --json-schema '{"type": "object",
      "properties": {"city": {"type": "string"}, "population": {"type": "integer"}}, "required": ["city"]}'
  qazlm generate runs/tiny/sft/final "1000 теңге долларға" --chat --tools tools.json   # -> tool_calls JSON
  qazlm generate runs/tiny/sft/final "Сәлем!" --chat --tools tools.json --tool-choice auto   # the model decides
"""


def read_json_arg(value: str | None, flag: str):
    """A JSON value given inline or as a file path; one line when it is neither."""
    if value is None:
        return None
    from pathlib import Path

    text = value
    if not value.strip():
        raise QazlmError(f"{flag}: empty; give inline JSON or a JSON file")
    if not value.lstrip().startswith(("{", "[")):
        try:
            text = Path(value).read_text(encoding="utf-8")
        except OSError as e:
            raise QazlmError(f"{flag} {value}: neither inline JSON nor a readable file ({e.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise QazlmError(f"{flag} {value[:60]}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno})") from None


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        from qazlm.io import iter_lines

        prompts += list(iter_lines(args.prompts_file))
    if not prompts:
        raise QazlmError("generate: give a prompt (or --prompts-file FILE, one prompt per line)")
    return prompts


def _cmd_generate(args) -> int:
    from qazlm.infer.sampling import SamplingParams

    check_value("generate: --batch-size", args.batch_size, ">= 1")
    stop = [s.encode().decode("unicode_escape") for s in args.stop or []]  # allow "\n" on the command line
    SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, repetition_penalty=args.repetition_penalty, stop=stop)  # bad values: one line
    prompts = _read_prompts(args)
    schema, tools = read_json_arg(args.json_schema, "--json-schema"), read_json_arg(args.tools, "--tools")
    if tools is None and (args.tool_choice or args.no_parallel_tool_calls):
        raise QazlmError("generate: --tool-choice / --no-parallel-tool-calls apply to --tools; give --tools FILE")
    choice = args.tool_choice or "required"
    if choice == "none":   # as the server: the tools are not shown at all
        tools = None
    if tools is not None:
        from qazlm.infer.tools import check_tools

        check_tools(tools, "--tools")
        if not tools:
            raise QazlmError("--tools: the list is empty; give at least one tool definition")
        if not args.chat:
            raise QazlmError("generate: --tools needs --chat (the tools are rendered into the chat's system turn)")
    if schema is not None and not isinstance(schema, dict):
        raise QazlmError("--json-schema: expected a JSON object (a JSON Schema)")
    from qazlm.infer.engine import generate, is_hf_model, unwrap
    from qazlm.infer.loading import load_model
    from qazlm.model.hf import ours_for

    loaded = load_model(args.model, device=args.device, tokenizer=args.tokenizer)
    if args.compile and is_hf_model(unwrap(loaded.model)) and ours_for(unwrap(loaded.model)) is None:
        raise QazlmError(f"generate: --compile applies to qazlm models and Qwen3/Llama folders in float32; "
                         f"{args.model} is neither (drop --compile)")
    stream = None
    if args.stream and not args.json:
        def stream(row: int, delta: str) -> None:
            sys.stdout.write(delta)
            sys.stdout.flush()

    outputs = []
    for start in range(0, len(prompts), 1 if stream else args.batch_size):  # streaming prints one at a time
        batch = prompts[start:start + (1 if stream else args.batch_size)]
        if stream:
            sys.stdout.write(("\n" if start else "") + f">>> {batch[0]}\n")
        texts = generate(loaded.model, loaded.tokenizer, batch, max_new_tokens=args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         repetition_penalty=args.repetition_penalty, stop=stop, stop_token_ids=args.stop_token or [],
                         seed=args.seed, chat=args.chat, system=args.system, device=args.device, stream=stream,
                         compile=args.compile, json_schema=schema, tools=tools,
                         force_tool_calls=choice == "required",
                         parallel_tool_calls=not args.no_parallel_tool_calls)
        if tools is not None:
            from qazlm.infer.tools import parse_tool_calls

            texts = [json.dumps(vars(parse_tool_calls(t, tools)), ensure_ascii=False) for t in texts]
        outputs += texts
        if stream:
            sys.stdout.write("\n")
    if args.json:
        for p, o in zip(prompts, outputs):
            print(json.dumps({"prompt": p, "output": o}, ensure_ascii=False))
    elif not stream:
        for p, o in zip(prompts, outputs):
            print(f">>> {p}\n{o}\n")
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    g = sub.add_parser("generate", help="generate text from a model folder (ours or Hugging Face)",
                       formatter_class=HelpFormatter, epilog=GENERATE_EPILOG,
                       description="Generate continuations with a KV cache: greedy or sampled (temperature, top-k, "
                                   "top-p), repetition penalty, stop strings/tokens, batches, streaming, chat "
                                   "template, JSON-schema and tool-call constrained decoding.")
    g.add_argument("model", help="model folder: qazlm (qazlm_model.json) or Hugging Face (config.json)")
    g.add_argument("prompts", nargs="*", help="prompt texts")
    g.add_argument("--prompts-file", help="file with one prompt per line (.txt/.gz) or {\"text\": ...} lines (.jsonl)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 discourages repeating the reply's own tokens")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable; \\n allowed)")
    g.add_argument("--stop-token", action="append", type=int, metavar="ID", help="extra stop token id (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template (ChatML if none)")
    g.add_argument("--system", help="system message for --chat")
    g.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    g.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--tokenizer", help="tokenizer folder if the model folder has none")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--json-schema", metavar="JSON|FILE",
                   help="constrained decoding: the output is JSON valid for this schema (outlines-core grammar)")
    g.add_argument("--tools", metavar="JSON|FILE",
                   help="OpenAI tool definitions (a JSON list), rendered into the chat's system turn (needs --chat); "
                        "the output is printed as {content, tool_calls, errors}")
    g.add_argument("--tool-choice", choices=("required", "auto", "none"), default=None,
                   help="with --tools: required (default) = the output is forced to be tool calls (a grammar); "
                        "auto = the model decides, free decoding; none = the tools are not shown")
    g.add_argument("--no-parallel-tool-calls", action="store_true",
                   help="with --tool-choice required: exactly one call instead of one or more")
    g.add_argument("--device", default="cpu")
    g.add_argument("--compile", action="store_true",
                   help="compile the decode step (qazlm models, Qwen3/Llama folders): faster per token after a "
                        "one-off compile (see docs/benchmarks.md); for long outputs or many prompts")
    g.set_defaults(func=_cmd_generate)

    from qazlm.infer.chat_cli import register as register_chat

    register_chat(sub)  # `qazlm chat`, listed right after `generate`
