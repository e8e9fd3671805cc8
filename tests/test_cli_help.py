"""Every `qazlm` command's --help shows an example (the guide's rule), `export gguf` included."""

from __future__ import annotations


def leaves(parser, path=()):
    from qazlm.cli import subcommands

    try:
        sub = subcommands(parser)
    except StopIteration:
        yield path, parser
        return
    for name, child in sub.choices.items():
        yield from leaves(child, (*path, name))


def test_every_command_has_help_with_an_example():
    from qazlm.cli import build_parser

    commands = dict(leaves(build_parser()))
    assert ("export", "gguf") in commands and ("export", "hf") in commands
    missing = [" ".join(path) for path, parser in commands.items() if "example" not in parser.format_help()]
    assert not missing, f"--help without an example: {missing}"
