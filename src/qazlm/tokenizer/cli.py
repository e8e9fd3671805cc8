"""`qazlm tokenizer ...`: train, compare and sweep tokenizers (subcommands live in their own modules)."""

from __future__ import annotations

import importlib

SUBCOMMAND_MODULES = ("qazlm.tokenizer.train_cli", "qazlm.tokenizer.compare_cli")


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("tokenizer", help="train, compare and sweep tokenizers", formatter_class=HelpFormatter,
                       description=__doc__)
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(tsub)
    p.set_defaults(func=lambda args: p.print_help())
