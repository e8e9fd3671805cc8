"""Pipeline stage `[tokenizer]`: train the run's tokenizer into `<run>/tokenizer/` (skipped when complete)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from qazlm.config import from_dict
from qazlm.paths import REPO_ROOT
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


def run_stage(section: dict, ctx) -> None:
    cfg = from_dict(TokenizerTrainConfig, section, f"{ctx.recipe_path}[tokenizer]")
    cfg.validate()
    cfg.inputs = _resolve(cfg.inputs)
    out = ctx.stage_dir("tokenizer")
    if is_complete(out) and not ctx.force:
        done = json.loads((out / "training_info.json").read_text(encoding="utf-8")).get("config", {})
        if done == dataclasses.asdict(cfg):
            print(f"tokenizer: {out} is complete; skipping (use --force to retrain)")
            return
        print(f"tokenizer: settings changed since {out} was trained; retraining")
    info = train_tokenizer(cfg, out)
    used = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in info["bytes_used"].items())
    print(f"tokenizer: {info['vocab_size']} tokens, {info['mix_spec']} (used {used}) in {info['seconds']:.1f}s")
