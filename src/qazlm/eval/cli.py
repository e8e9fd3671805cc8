"""`qazlm eval` (bits per byte, lm-eval tasks, report) and `qazlm generate` (text from a model folder)."""

from __future__ import annotations

import json
import sys

from qazlm.errors import QazlmError

EVAL_EPILOG = """examples:
  qazlm eval runs/tiny/pretrain/final --bpb flores:devtest -o runs/tiny/eval
  qazlm eval runs/small/pretrain/final /models/Qwen3-0.6B --tasks sib200,kkcopa,flores_mt --limit 200 -o cmp
  qazlm eval runs/small/pretrain/step_* --bpb flores --bpb runs/small/data -o curve   # curve over steps
  qazlm eval --list-tasks
"""

GENERATE_EPILOG = """examples:
  qazlm generate runs/tiny/pretrain/final "Қазақстан Республикасы" --max-new-tokens 40
  qazlm generate /models/Qwen3-0.6B "Сәлем! Қалың қалай?" --chat --stream --temperature 0.7 --top-p 0.9
  qazlm generate runs/tiny/pretrain/final --prompts-file prompts.txt --stop "\\n" --json
  qazlm generate runs/small/pretrain/final --prompts-file prompts.txt --max-new-tokens 512 --compile
"""


def _list_tasks() -> int:
    from qazlm.eval.harness import default_data_dir
    from qazlm.eval.tasks import GROUPS, TASKS, missing_data

    data_dir = default_data_dir()
    print(f"tasks (data folder {data_dir}):")
    for name, info in TASKS.items():
        why = missing_data(name, data_dir)
        chance = "-" if info.chance is None else f"{info.chance:.3f}"
        print(f"  {name:24s} {info.metric:14s} chance {chance:6s} {info.what}" + (f"  [no data: {why}]" if why else ""))
    print("groups: " + ", ".join(f"{g} ({len(v)})" for g, v in GROUPS.items()))
    return 0


def _cmd_eval(args) -> int:
    if args.list_tasks:
        return _list_tasks()
    if not args.models:
        raise QazlmError("eval: give at least one model folder (or --list-tasks)")
    if not args.out:
        raise QazlmError("eval: give an output folder with -o/--out")
    from qazlm.eval.evaluate import EvalSettings, evaluate_models
    from qazlm.eval.report import write_report

    s = EvalSettings(bpb=args.bpb if args.bpb is not None else ["flores:devtest"], bpb_limit=args.bpb_limit,
                     tasks=args.tasks or [], num_fewshot=args.num_fewshot, limit=args.limit, data_dir=args.data_dir,
                     max_len=args.max_len, batch_size=args.batch_size, samples=args.samples, device=args.device,
                     seed=args.seed)
    if args.no_bpb:
        s.bpb = []
    result = evaluate_models(args.models, s, tokenizer=args.tokenizer)
    for path in write_report(result, args.out):
        print(f"wrote {path}")
    return 0


def _read_prompts(args) -> list[str]:
    prompts = list(args.prompts)
    if args.prompts_file:
        from qazlm.io import iter_lines

        prompts += list(iter_lines(args.prompts_file))
    if not prompts:
        raise QazlmError("generate: give a prompt (or --prompts-file FILE, one prompt per line)")
    return prompts


def _cmd_generate(args) -> int:
    prompts = _read_prompts(args)
    from qazlm.eval.generation import generate, is_hf_model, unwrap
    from qazlm.eval.loading import load_for_eval

    loaded = load_for_eval(args.model, device=args.device, tokenizer=args.tokenizer)
    if args.compile and is_hf_model(unwrap(loaded.model)):
        raise QazlmError(f"generate: --compile applies to qazlm model folders; {args.model} is a Hugging Face "
                         "model (drop --compile)")
    stop = [s.encode().decode("unicode_escape") for s in args.stop or []]  # allow "\n" on the command line
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
                         compile=args.compile)
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

    p = sub.add_parser("eval", help="bits per byte, lm-eval tasks and a report for model folders",
                       formatter_class=HelpFormatter, epilog=EVAL_EPILOG,
                       description="Evaluate qazlm checkpoints and Hugging Face model folders side by side: "
                                   "bits per byte per language, downstream tasks through lm-eval-harness (local data), "
                                   "generation samples; writes report.md, report.json and PNG plots.")
    p.add_argument("models", nargs="*", help="model folders: qazlm (qazlm_model.json) or Hugging Face (config.json)")
    p.add_argument("-o", "--out", help="report folder")
    p.add_argument("--bpb", action="append", metavar="SET",
                   help="text set for bits per byte: flores[:dev|:devtest], a data-stage folder (val/*.jsonl.gz), "
                        "or a text/jsonl file; repeatable (default: flores:devtest)")
    p.add_argument("--no-bpb", action="store_true", help="skip bits per byte")
    p.add_argument("--bpb-limit", type=int, help="score only the first N documents of each set")
    p.add_argument("--tasks", action="append", metavar="NAMES",
                   help="lm-eval tasks or groups, comma-separated (see --list-tasks), e.g. sib200,kkcopa")
    p.add_argument("--num-fewshot", type=int, default=0, help="few-shot examples per task item")
    p.add_argument("--limit", type=int, help="first N items of each task")
    p.add_argument("--data-dir", help="evaluation data folder (default ../shared/data/eval or $QAZLM_EVAL_DATA)")
    p.add_argument("--tokenizer", help="tokenizer folder if the model folder has none")
    p.add_argument("--max-len", type=int, default=512, help="tokens per scored window")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--samples", type=int, default=1, help="generation samples per language in the report (0: none)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--list-tasks", action="store_true", help="list tasks, groups and whether their data is present")
    p.set_defaults(func=_cmd_eval)

    g = sub.add_parser("generate", help="generate text from a model folder (ours or Hugging Face)",
                       formatter_class=HelpFormatter, epilog=GENERATE_EPILOG,
                       description="Generate continuations with a KV cache: greedy or sampled (temperature, top-k, "
                                   "top-p), repetition penalty, stop strings/tokens, batches, streaming, chat template.")
    g.add_argument("model", help="model folder: qazlm (qazlm_model.json) or Hugging Face (config.json)")
    g.add_argument("prompts", nargs="*", help="prompt texts")
    g.add_argument("--prompts-file", help="file with one prompt per line (.txt/.gz) or {\"text\": ...} lines (.jsonl)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeating tokens")
    g.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable; \\n allowed)")
    g.add_argument("--stop-token", action="append", type=int, metavar="ID", help="extra stop token id (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap prompts in the tokenizer's chat template (ChatML if none)")
    g.add_argument("--system", help="system message for --chat")
    g.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    g.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--tokenizer", help="tokenizer folder if the model folder has none")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--compile", action="store_true",
                   help="compile the decode step (qazlm models): ~1.35x faster per token after a one-off compile "
                        "of ~30 s (~4 s once cached); for long outputs or many prompts")
    g.set_defaults(func=_cmd_generate)
