"""Tiny models for the eval/generate tests (imported by test_eval*.py / test_generate*.py; no tests here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def make_hf_folder(tokenizer_dir: Path, out: Path, seed: int = 0, max_pos: int = 128) -> Path:
    """A random 2-layer Qwen3ForCausalLM (built from a config: no download) saved with the tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=max_pos,
                      tie_word_embeddings=True, initializer_range=0.3, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen3ForCausalLM(cfg).eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def make_our_folder(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A random `tiny`-preset qazlm Transformer saved in our model-folder format (with the tokenizer)."""
    import torch
    from transformers import AutoTokenizer

    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import Transformer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    model = Transformer(preset("tiny", len(tok)))
    model.init_weights()
    with torch.no_grad():  # a random model with peaked, varied predictions: greedy ties are then impossible
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    save_model_folder(model.eval(), out, tokenizer_dir=tokenizer_dir)
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_sib_limit_takes_a_mix_of_topics(shared):
    """SIB-200 files are grouped by topic; `--limit 50` must not score one topic only."""
    from qazlm.eval.tasks.utils import load_sib

    first = load_sib(lang="kaz_Cyrl")["test"][:50]["label"]
    assert len(set(first)) >= 5
