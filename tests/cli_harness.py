"""Run the real `qazlm` CLI in-process and check how it fails (imported by the bad-input tests); compare two
training runs (their logged steps and final weights)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

TORCHRUN_2 = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


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


def logged_steps(out: Path) -> list[tuple[int, float, int]]:
    """(step, loss to 4 decimals, tokens so far) of each training row of OUT/metrics.jsonl."""
    from qazlm.io import read_jsonl

    rows = read_jsonl(Path(out) / "metrics.jsonl")
    return [(r["step"], round(r["loss"], 4), r["tokens"]) for r in rows if "loss" in r]


def weights_diff(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights of two runs' final/model.safetensors."""
    from safetensors.torch import load_file

    x, y = (load_file(Path(d) / "final" / "model.safetensors") for d in (a, b))
    return max((x[k] - y[k]).abs().max().item() for k in x)
