"""Pipeline stage `[tokenizer]`: train the run's tokenizer into `<run>/tokenizer/`, then print its comparison
with reference tokenizers on FLORES+ devtest (`<run>/tokenizer/compare/`). The stage record
(`qazlm_stage.json`, written last) holds the training settings: a rerun skips training only when they are
unchanged (and the comparison too, unless its output is missing).

`compare_with` (stage-only key) names reference tokenizer folders under `../shared/tokenizers` (or paths);
the ones that are absent are left out, so the demo runs without the shared data too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qazlm.config import from_dict
from qazlm.paths import REPO_ROOT, shared_dir
from qazlm.runs import output_lock, write_record
from qazlm.tokenizer.train import TokenizerTrainConfig, is_complete, train_tokenizer


def _resolve(inputs: list[str]) -> list[str]:
    """Relative input paths are relative to the repository root (so recipes work from any folder)."""
    out = []
    for item in inputs:
        lang, sep, path = item.rpartition("=") if "=" in item else ("", "", item)
        p = Path(path)
        if not p.is_absolute() and not p.exists() and (REPO_ROOT / p).exists():
            p = REPO_ROOT / p
        out.append(f"{lang}{sep}{p}")
    return out


DEFAULT_REFERENCES = ["qwen3", "llama3", "gpt4o"]


def print_comparison(tok_dir: Path, references: list[str], limit: int | None = None) -> None:
    """Ours vs the available references on FLORES+ devtest: table on stdout, files in tok_dir/compare."""
    from qazlm.tokenizer.compare import flores_report

    specs = [f"ours={tok_dir}"]
    for ref in references:
        path = Path(ref) if Path(ref).exists() else shared_dir() / "tokenizers" / ref
        if path.exists():
            specs.append(f"{path.name}={path}")
    print(flores_report(specs, "devtest", tok_dir / "compare", limit=limit))


def run_stage(section: dict, ctx) -> None:
    section = dict(section)
    references = list(section.pop("compare_with", DEFAULT_REFERENCES))
    cfg = from_dict(TokenizerTrainConfig, section, f"{ctx.recipe_path}[tokenizer]")
    cfg.inputs = _resolve(cfg.inputs)
    out = ctx.stage_dir("tokenizer")
    config = dataclasses.asdict(cfg)
    with output_lock(out, "tokenizer"):
        if is_complete(out) and ctx.skip("tokenizer", config, out):
            if not (out / "compare" / "compare.md").exists():
                print_comparison(out, references)
            return
        info = train_tokenizer(cfg, out)
        used = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in info["bytes_used"].items())
        print(f"tokenizer: {info['vocab_size']} tokens, {info['mix_spec']} (used {used}) in {info['seconds']:.1f}s")
        print_comparison(out, references)
        write_record(out, "tokenizer", config)
