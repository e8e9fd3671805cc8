"""llama.cpp's `convert_hf_to_gguf.py`, run in a process of its own with qazlm's tokenizer facts.

The converter identifies a BPE pre-tokenizer by hashing the ids of a check text; a tokenizer it has never seen
(every qazlm tokenizer) is refused. qazlm knows its split regex, so it names the matching llama.cpp
pre-tokenizer itself (`qazlm.gguf.vocab.pre_tokenizer`) and the converter does everything else. A separate
process keeps the converter's own `gguf-py` (which it puts first on sys.path) away from the one transformers
imports in ours.

    python -m qazlm.gguf.runner CONVERTER_DIR OVERRIDES_JSON -- <convert_hf_to_gguf.py arguments>

OVERRIDES_JSON keys (all optional): "pre" (pre-tokenizer name), "eot_token_id", "add_bos_token",
"chat_template".
"""

from __future__ import annotations

import json
import sys


def install_overrides(overrides: dict) -> None:
    import gguf
    from conversion import base

    if overrides.get("pre"):
        base.TextModel.get_vocab_base_pre = lambda self, tokenizer: overrides["pre"]
    write_special = gguf.SpecialVocab.add_to_gguf

    def add_to_gguf(special, writer, quiet: bool = False) -> None:
        if overrides.get("eot_token_id") is not None:
            special.special_token_ids["eot"] = overrides["eot_token_id"]
        if overrides.get("add_bos_token") is not None:
            special.add_special_token["bos"] = overrides["add_bos_token"]
        if overrides.get("chat_template") is not None:
            special.chat_template = overrides["chat_template"]
        write_special(special, writer, quiet)

    gguf.SpecialVocab.add_to_gguf = add_to_gguf


def main(argv: list[str]) -> None:
    converter_dir, overrides_json, separator, *converter_args = argv
    if separator != "--":
        raise SystemExit("usage: python -m qazlm.gguf.runner CONVERTER_DIR OVERRIDES_JSON -- ARGS")
    sys.path.insert(0, converter_dir)
    import convert_hf_to_gguf  # puts the converter's gguf-py on sys.path before anything imports gguf

    install_overrides(json.loads(overrides_json))
    sys.argv = ["convert_hf_to_gguf.py", *converter_args]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(sys.argv[1:])
