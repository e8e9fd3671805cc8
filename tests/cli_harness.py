"""Run the real `qazlm` CLI in-process and check how it fails (imported by the bad-input tests)."""

from __future__ import annotations

import re


def run_cli(argv: list[str], capfd) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `qazlm ARGV`, through `qazlm.cli.main` (argparse included)."""
    from qazlm.cli import main

    capfd.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def assert_one_line_error(argv: list[str], capfd, match: str | None = None) -> str:
    """The command must fail with a non-zero exit, no traceback, and exactly one `error:` line (matching
    the regex `match` when given). Returns that line."""
    code, out, err = run_cli(argv, capfd)
    assert "Traceback" not in err + out, f"qazlm {' '.join(map(str, argv))} printed a traceback:\n{err}"
    assert code == 2, f"qazlm {' '.join(map(str, argv))} exited {code} (expected 2: a one-line user error); stderr:\n{err}\nstdout:\n{out[-2000:]}"
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, f"expected one error line from qazlm {' '.join(map(str, argv))}, got:\n{err}"
    if match is not None:
        assert re.search(match, lines[0]), f"error line {lines[0]!r} does not match {match!r}"
    return lines[0]
