"""Helpers for the pretraining tests (no tests here).

`run_cli(args)` is the entry point of the subprocess tests (torchrun / kill -9).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def run_cli(argv: list[str]) -> int:
    from qazlm.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))


def make_tokens(folder: Path, tokenizer_dir: Path, lines_by_lang: dict[str, list[str]]) -> Path:
    """Tokenize `lines_by_lang` into a qazlm-tokens-v1 folder (one document per line)."""
    from transformers import AutoTokenizer

    from qazlm.data.shards import TokenShardWriter, mark_complete

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    w = TokenShardWriter(folder, "train", "uint16", 10**9, vocab_size=len(tok), doc_sep_id=tok.eos_token_id,
                         tokenizer=str(tokenizer_dir))
    for lines in lines_by_lang.values():
        for ids in tok(lines, add_special_tokens=False)["input_ids"]:
            w.add_document(ids)
    w.close()
    mark_complete(folder)
    return folder


def write_recipe(path: Path, **pretrain) -> Path:
    """A recipe TOML with only a [pretrain] table."""
    def fmt(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {fmt(x)}" for k, x in v.items()) + "}"
        return repr(v)

    path.write_text("[pretrain]\n" + "".join(f"{k} = {fmt(v)}\n" for k, v in pretrain.items()), encoding="utf-8")
    return path


def losses(metrics: Path) -> dict[int, float]:
    out = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out
