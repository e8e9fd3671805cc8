"""`qazlm run RECIPE`: chain the stages named in a recipe's TOML tables, in pipeline order.

A recipe has a `[run]` table (output folder) and one table per stage. Each stage reads and writes
artifact folders under `run.out_dir` (`tokenizer/`, `data/`, `pretrain/`, `eval/`), so any stage can
also run alone with its own subcommand. Stages whose outputs are already complete are skipped.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from qazlm.config import from_dict
from qazlm.runs import STAGES, RunConfig, RunContext, read_recipe

def run_recipe(path: str | Path, overrides: list[str] | None = None, only: list[str] | None = None,
               force: bool = False) -> RunContext:
    data = read_recipe(path, overrides)
    ctx = RunContext(run=from_dict(RunConfig, data.get("run", {}), f"{path}[run]"), recipe_path=Path(path),
                     force=force)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    for stage, module_name in STAGES.items():
        if stage not in data or (only and stage not in only):
            continue
        module_name, _, function = module_name.partition(":")
        run_stage = getattr(importlib.import_module(module_name), function or "run_stage")
        t0 = time.time()
        print(f"\n=== qazlm run: stage '{stage}' -> {ctx.stage_dir(stage)}", flush=True)
        run_stage(data[stage], ctx)
        print(f"=== stage '{stage}' done in {time.time() - t0:.1f}s", flush=True)
    return ctx


def _cmd_run(args) -> int:
    run_recipe(args.recipe, args.set, args.only, args.force)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("run", help="run the whole pipeline from a recipe TOML", formatter_class=HelpFormatter,
                       description=__doc__, epilog="example:\n  qazlm run recipes/tiny.toml --set run.out_dir=runs/t2")
    p.add_argument("recipe", help="recipe TOML, e.g. recipes/tiny.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. tokenizer.vocab_size=8000")
    p.add_argument("--only", action="append", choices=list(STAGES), help="run only these stages")
    p.add_argument("--force", action="store_true", help="redo stages whose outputs already exist")
    p.set_defaults(func=_cmd_run)
