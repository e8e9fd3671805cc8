"""The `qazlm` command: one subcommand per pipeline stage.

Stage modules register their subcommands through `register(subparsers)` and import heavy libraries
(torch, transformers) only inside their handlers, so `qazlm --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from qazlm import __version__
from qazlm.errors import QazlmError

# Each module defines register(subparsers). Order = order in `qazlm --help`.
STAGE_CLIS = (
    "qazlm.pipeline",        # run
    "qazlm.tokenizer.cli",   # tokenizer train|compare|sweep
    "qazlm.data.cli",        # data prepare|report
    "qazlm.train.cli",       # pretrain, plot
    "qazlm.model.cli",       # export hf, import
    "qazlm.eval.cli",        # eval, generate
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qazlm", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"qazlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_CLIS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # stage not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except QazlmError as e:
        print(f"qazlm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qazlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
