"""Dependencies between qazlm's subpackages point one way (docs/architecture.md); this keeps it so.

Every `import qazlm.X` / `from qazlm.X import` in src/qazlm — module level or inside a function — is
checked against the allowed edges below. A new stage adds its row here and in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

from qazlm.paths import REPO_ROOT

SRC = REPO_ROOT / "src" / "qazlm"
FOUNDATION = {"errors", "config", "io", "paths", "runs", "heldout", "text", "stats"}
ALLOWED = {  # unit -> units it may import (besides itself and the foundation)
    "foundation": set(),
    "tokenizer": set(),
    "data": {"tokenizer"},
    "model": set(),
    "infer": {"model", "tokenizer"},
    "train": {"model", "infer", "data"},
    "eval": {"model", "infer"},
    "sft": {"data", "tokenizer", "model", "infer", "train"},  # never eval (chat_eval reads sft/final as a folder)
    "align": {"sft", "data", "infer", "model", "tokenizer", "train"},  # sft's trainer contract; data: decontamination
    "quantize": {"model", "infer", "tokenizer"},
    "merge": {"model", "infer", "tokenizer"},
    "gguf": {"model", "infer", "tokenizer", "quantize"},  # quantize: the one quality comparison
    "package": {"model", "infer"},
    "serve": {"infer", "tokenizer"},   # reads the other stages' records as files, never their code
    "pipeline": {"tokenizer", "data", "model", "infer", "train", "eval"},
    "cli": {"pipeline", "tokenizer", "data", "model", "infer", "train", "eval"},
    "experiments": {"tokenizer", "data", "model", "infer", "train", "eval", "serve"},
}


def unit_of(module: str) -> str:
    name = module.split(".")[1] if "." in module else "cli"  # `qazlm` itself: its __init__ (version only)
    return "foundation" if name in FOUNDATION or name.startswith("__") else name


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, qazlm module) for every qazlm import in a file; `from qazlm import x` counts as qazlm.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "qazlm":
            found += [(node.lineno, f"qazlm.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qazlm."):
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("qazlm.")]
    return found


def test_dependencies_point_one_way():
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        me = unit_of("qazlm." + ".".join(rel.with_suffix("").parts))
        for line, module in imports(path):
            target = unit_of(module)
            if target in (me, "foundation"):
                continue
            if module == "qazlm.cli" and (path.stem.endswith("cli") or path.stem == "pipeline"):
                continue  # a module registering subcommands borrows the shared help formatter
            if target not in ALLOWED.get(me, set()):
                bad.append(f"src/qazlm/{rel}:{line} ({me}) imports {module} ({target})")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_foundation_imports_no_stage():
    """errors/config/io/paths/runs/heldout/text are what every stage builds on; they import no stage."""
    for name in FOUNDATION:
        files = [SRC / f"{name}.py"] if (SRC / f"{name}.py").exists() else sorted((SRC / name).rglob("*.py"))
        assert files, name
        for path in files:
            for line, module in imports(path):
                assert unit_of(module) == "foundation", f"{path}:{line} imports {module}"


def test_the_checker_sees_a_violation(tmp_path):
    """The rule itself: eval reaching into train is refused."""
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from qazlm.train.trainer import train\n")
    assert imports(sample) == [(2, "qazlm.train.trainer")]
    assert unit_of("qazlm.train.trainer") not in ALLOWED["eval"]
