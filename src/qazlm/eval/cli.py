"""`qazlm eval`: bits per byte, lm-eval tasks and a report for model folders."""

from __future__ import annotations

from qazlm.errors import QazlmError

EVAL_EPILOG = """examples:
  qazlm eval runs/tiny/pretrain/final --bpb flores:devtest -o runs/tiny/eval
  qazlm eval runs/small/pretrain/final /models/Qwen3-0.6B --tasks sib200,kkcopa,flores_mt --limit 200 -o cmp
  qazlm eval runs/small/pretrain/step_* --bpb flores --bpb runs/small/data -o curve   # curve over steps
  qazlm eval --list-tasks
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
    from qazlm.runs import output_lock

    s = EvalSettings(bpb=[] if args.no_bpb else args.bpb if args.bpb is not None else ["flores:devtest"],
                     bpb_limit=args.bpb_limit, tasks=args.tasks or [], num_fewshot=args.num_fewshot, limit=args.limit,
                     data_dir=args.data_dir, max_len=args.max_len, batch_size=args.batch_size, samples=args.samples,
                     device=args.device, seed=args.seed)
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
