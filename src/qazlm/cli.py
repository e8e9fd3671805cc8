"""The `qazlm` command: one subcommand per pipeline stage.

Stage modules register their subcommands through `register(subparsers)` and import heavy libraries
(torch, transformers) only inside their handlers, so `qazlm --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from pathlib import Path

from qazlm import __version__
from qazlm.errors import QazlmError

# Each module defines register(subparsers). Order = order in `qazlm --help`.
STAGE_CLIS = (
    "qazlm.pipeline",        # run
    "qazlm.tokenizer.cli",   # tokenizer train|compare|sweep
    "qazlm.data.cli",        # data prepare|report
    "qazlm.train.cli",       # pretrain, plot
    "qazlm.model.cli",       # export hf, import
    "qazlm.gguf.cli",        # export gguf (a format under `export`)
    "qazlm.eval.cli",        # eval
    "qazlm.infer.cli",       # generate
    "qazlm.sft.cli",         # sft-data, sft
    "qazlm.align.cli",       # pref-data, rm, dpo
    "qazlm.merge.cli",       # merge
    "qazlm.quantize.cli",    # quantize
    "qazlm.package.cli",     # package, push
    "qazlm.serve.cli",       # serve
)

EPILOG = """examples:
  qazlm run recipes/tiny.toml                       # whole pipeline on the bundled sample corpus
  qazlm tokenizer train data/sample --vocab-size 32000 --mix kk=0.4,ru=0.3,en=0.3 -o runs/tok
  qazlm tokenizer compare runs/tok ../shared/tokenizers/qwen3 --flores devtest
"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps example blocks as written and shows defaults (unless the help already names one, or it is None/False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_config_flags(parser, table: str, force_help: str) -> None:
    """--config (a TOML file with the `[table]`), --set KEY=VALUE overrides and --force: what every stage
    command offers on top of its own flags (read back by `qazlm.config.config_from_cli`)."""
    parser.add_argument("--config", default=None, help=f"TOML file with a [{table}] table")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override any [{table}] key")
    parser.add_argument("--force", action="store_true", help=force_help)


def subcommands(parser: argparse.ArgumentParser):
    """The subparsers action of `parser` (e.g. `qazlm export`), so a later stage adds its own verb to it."""
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qazlm", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"qazlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from qazlm.infer.loading import quiet_torchao

    quiet_torchao()  # transformers imports torchao for any stage; its CUDA-less import warnings are noise here
    try:
        return int(args.func(args) or 0)
    except QazlmError as e:
        print(f"qazlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qazlm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug: one line for the user, the traceback on request
        if os.environ.get("QAZLM_DEBUG"):
            raise
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"qazlm: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(at {Path(where.filename).name}:{where.lineno}); this is a bug - rerun with QAZLM_DEBUG=1 "
              "for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
