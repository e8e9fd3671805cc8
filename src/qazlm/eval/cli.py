"""`qazlm eval`: bits per byte, lm-eval tasks and a report for model folders."""

from __future__ import annotations

from qazlm.errors import QazlmError

EVAL_EPILOG = """examples:
  qazlm eval runs/tiny/pretrain/final --bpb flores:devtest -o runs/tiny/eval
  qazlm eval runs/small/pretrain/final /models/Qwen3-0.6B --tasks sib200,kkcopa,flores_mt --limit 200 -o cmp
  qazlm eval runs/small/pretrain/step_* --bpb flores --bpb runs/small/data -o curve   # curve over steps
  qazlm eval --list-tasks
  qazlm eval --chat --sft-data runs/tiny/sft_data runs/tiny/pretrain/final runs/tiny/sft/final -o runs/tiny/chat_eval
  qazlm eval --chat --sft-data runs/sft-data /models/Qwen2.5-0.5B-Instruct --max-new-tokens 96 --limit 50 -o chat
  qazlm eval --tools --sft-data runs/tiny/sft_data runs/tiny/sft/final -o runs/tiny/tool_eval   # function calling
  qazlm eval --safety --sft-data runs/tiny/sft_data runs/tiny/sft/final runs/tiny/dpo/final -o runs/tiny/safety
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


CHAT_ONLY = ("sft_data", "max_new_tokens", "flores_per_direction", "sib_limit", "chat_sets", "temperature",
             "repetition_penalty")
NOT_CHAT = ("bpb", "no_bpb", "bpb_limit", "tasks", "num_fewshot", "max_len")


def _given(args, names) -> dict:
    """The flags among `names` the user gave (argparse leaves the others None/False)."""
    return {k: getattr(args, k) for k in names if getattr(args, k) is not None and getattr(args, k) is not False}


def _cmd_chat_eval(args) -> int:
    from qazlm.eval.chat import ChatEvalSettings, evaluate_chat
    from qazlm.eval.chat_report import write_chat_report
    from qazlm.runs import output_lock

    wrong = _given(args, NOT_CHAT)
    if wrong:
        raise QazlmError(f"eval --chat: --{next(iter(wrong)).replace('_', '-')} is for the likelihood evaluation; "
                         "drop it (chat mode takes --limit, --max-new-tokens, --flores-per-direction, --sib-limit)")
    given = _given(args, ("limit", "batch_size", "samples", "data_dir", "device", "seed", "sft_data",
                          "max_new_tokens", "flores_per_direction", "sib_limit", "temperature", "repetition_penalty"))
    if args.chat_sets:
        given["sets"] = [x.strip() for x in args.chat_sets.split(",") if x.strip()]
    s = ChatEvalSettings(**given)
    with output_lock(args.out, "chat-eval"):
        result = evaluate_chat(args.models, s, tokenizer=args.tokenizer)
        for path in write_chat_report(result, args.out):
            print(f"wrote {path}")
    return 0


def _cmd_tool_eval(args) -> int:
    from qazlm.eval.tools import ToolEvalSettings, evaluate_tools
    from qazlm.runs import output_lock

    if args.chat:
        raise QazlmError("eval: --tools and --chat are separate evaluations; run them one at a time")
    if not args.sft_data:
        raise QazlmError("eval --tools: give --sft-data DIR (a `qazlm sft-data` folder built with the tool tasks)")
    s = ToolEvalSettings(**_given(args, ("sft_data", "limit", "max_new_tokens", "device")))
    with output_lock(args.out, "tool-eval"):
        evaluate_tools(args.models, s, args.out)
        print(f"wrote {args.out}/tools_report.md")
    return 0


def _cmd_safety_eval(args) -> int:
    from qazlm.eval.safety import SafetySettings, evaluate_safety
    from qazlm.runs import output_lock

    if args.chat or args.tools:
        raise QazlmError("eval: --safety, --tools and --chat are separate evaluations; run them one at a time")
    given = _given(args, ("sft_data", "max_new_tokens", "device", "judge_url", "judge_model", "batch_size"))
    if args.limit is not None:
        if args.limit < 1:
            raise QazlmError(f"eval --safety: --limit {args.limit}: give at least 1 prompt per language")
        given["per_lang"] = args.limit
    s = SafetySettings(**given)
    with output_lock(args.out, "safety-eval"):
        evaluate_safety(args.models, s, args.out)
        print(f"wrote {args.out}/safety_report.md")
    return 0


def _cmd_eval(args) -> int:
    if args.list_tasks:
        return _list_tasks()
    if not args.models:
        raise QazlmError("eval: give at least one model folder (or --list-tasks)")
    if not args.out:
        raise QazlmError("eval: give an output folder with -o/--out")
    if args.safety:
        return _cmd_safety_eval(args)
    if args.tools:
        return _cmd_tool_eval(args)
    if args.chat:
        return _cmd_chat_eval(args)
    chat_only = _given(args, CHAT_ONLY)
    if chat_only:
        raise QazlmError(f"eval: --{next(iter(chat_only)).replace('_', '-')} needs --chat")
    from qazlm.eval.evaluate import EvalSettings, evaluate_models
    from qazlm.eval.report import write_report
    from qazlm.runs import output_lock

    s = EvalSettings(bpb=[] if args.no_bpb else args.bpb if args.bpb is not None else ["flores:devtest"],
                     bpb_limit=args.bpb_limit, tasks=args.tasks or [], limit=args.limit,
                     data_dir=args.data_dir, device=args.device, seed=args.seed,
                     **_given(args, ("batch_size", "samples", "max_len", "num_fewshot")))
    with output_lock(args.out, "eval"):
        result = evaluate_models(args.models, s, tokenizer=args.tokenizer)
        for path in write_report(result, args.out):
            print(f"wrote {path}")
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
    p.add_argument("--num-fewshot", type=int, help="few-shot examples per task item (default 0)")
    p.add_argument("--limit", type=int, help="first N items of each task (--chat: held-out items per task, "
                                              "default 20)")
    p.add_argument("--data-dir", help="evaluation data folder (default ../shared/data/eval or $QAZLM_EVAL_DATA)")
    p.add_argument("--tokenizer", help="tokenizer folder if the model folder has none")
    p.add_argument("--max-len", type=int, help="tokens per scored window (default 512)")
    p.add_argument("--batch-size", type=int, help="sequences per forward pass (default 8; --chat: 16)")
    p.add_argument("--samples", type=int, help="generation samples per language in the report (0: none; default 1; "
                                                "--chat: 2 dialogues)")
    p.add_argument("--device", default="auto", help="auto (cuda when there is one, else cpu), cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--list-tasks", action="store_true", help="list tasks, groups and whether their data is present")
    c = p.add_argument_group("chat evaluation (--chat; docs/evaluation.md, section 4)")
    c.add_argument("--chat", action="store_true",
                   help="prompt the models as chat models: language fidelity, end-of-turn rate, held-out task scores, "
                        "SIB-200 and FLORES+ as chat prompts; writes chat_report.md/.json and chat_eval.png")
    c.add_argument("--sft-data", metavar="DIR", help="a `qazlm sft-data` folder; its heldout.jsonl is asked")
    c.add_argument("--tools", action="store_true",
                   help="function calling in BFCL's categories on --sft-data's held-out and unseen-tool "
                        "conversations: call exact match, valid-call rate (free and constrained decoding), "
                        "irrelevance detection, final-answer language; writes tools_report.md/.json")
    c.add_argument("--safety", action="store_true",
                   help="safe-response rate on the ru/kk sensitive-questions set per language and risk area (--limit "
                        "prompts per language, default 100) and over-refusal on --sft-data's held-out prompts; "
                        "writes safety_report.md/.json, safety_areas.png and safety_replies.jsonl")
    c.add_argument("--judge-url", metavar="URL", help="--safety: an OpenAI-compatible /v1 URL whose model grades "
                                                      "each reply SAFE/UNSAFE (key in $OPENAI_API_KEY)")
    c.add_argument("--judge-model", metavar="ID", help="--safety: the judge's model id")
    c.add_argument("--max-new-tokens", type=int, help="longest reply in tokens (default 48)")
    c.add_argument("--flores-per-direction", type=int, metavar="N",
                   help="FLORES+ devtest sentences per translation direction (default 20)")
    c.add_argument("--sib-limit", type=int, metavar="N", help="SIB-200 test items per language (default 20)")
    c.add_argument("--chat-sets", metavar="NAMES",
                   help="comma-separated prompt sets: heldout, multiturn, sib200, flores (default all)")
    c.add_argument("--temperature", type=float, help="0 = greedy (default)")
    c.add_argument("--repetition-penalty", type=float,
                   help="> 1 discourages repeating the reply's own tokens (default 1.0: none)")
    p.set_defaults(func=_cmd_eval)
