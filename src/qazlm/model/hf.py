"""Export to / import from a standard transformers folder (Qwen3ForCausalLM; LlamaForCausalLM without QK-norm).

Our module names already are the HF names without the `model.` prefix, so the weights copy over by
renaming the prefix only; `AutoModelForCausalLM.from_pretrained(folder)` loads without trust_remote_code.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.model.config import ModelConfig
from qazlm.model.io import TOKENIZER_FILES, WEIGHTS, copy_tokenizer, load_model_folder, state_dict_for_saving

SUPPORTED = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


def _special_ids(folder: Path) -> dict:
    """bos/eos/pad ids from the tokenizer files in `folder` (None when absent)."""
    if not (folder / "tokenizer.json").exists():
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def hf_config(cfg: ModelConfig, special_ids: dict):
    from transformers import LlamaConfig, Qwen3Config

    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_dim,
                  num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                  num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len,
                  rms_norm_eps=cfg.rms_eps, tie_word_embeddings=cfg.tie_embeddings, hidden_act="silu",
                  rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, attention_bias=False,
                  **special_ids)
    if cfg.qk_norm:
        hf = Qwen3Config(**common)
    else:
        hf = LlamaConfig(mlp_bias=False, **common)
    hf.architectures = [SUPPORTED[hf.model_type]]
    hf.dtype = "float32"
    return hf


def _add_legacy_keys(config_path: Path, cfg: ModelConfig) -> None:
    """Also write the transformers-4.x spellings (`torch_dtype`, top-level `rope_theta`): converters such as
    llama.cpp's convert_hf_to_gguf.py and older vLLM releases read those; transformers 5 ignores them."""
    c = json.loads(config_path.read_text())
    c.setdefault("torch_dtype", c.get("dtype", "float32"))
    c.setdefault("rope_theta", cfg.rope_theta)
    config_path.write_text(json.dumps(c, indent=2, sort_keys=True) + "\n")


def export_hf(model_folder: str | Path, out_dir: str | Path) -> Path:
    """Write config.json, model.safetensors, generation_config.json and tokenizer files into `out_dir`."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    model_folder, out_dir = Path(model_folder), Path(out_dir)
    model = load_model_folder(model_folder)
    ids = _special_ids(model_folder)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        hf_config(model.cfg, ids).save_pretrained(tmp)
        _add_legacy_keys(tmp / "config.json", model.cfg)
        sd = {(k if k.startswith("lm_head") else f"model.{k}"): v for k, v in state_dict_for_saving(model).items()}
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": "pt"})
        GenerationConfig(**{k: v for k, v in ids.items() if v is not None}).save_pretrained(tmp)
        if (model_folder / "tokenizer.json").exists():
            copy_tokenizer(model_folder, tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def config_from_hf(hf_folder: Path) -> ModelConfig:
    path = hf_folder / "config.json"
    if not path.exists():
        raise QazlmError(f"{hf_folder}: no config.json; not a Hugging Face model folder")
    c = json.loads(path.read_text())
    if c.get("model_type") not in SUPPORTED:
        raise QazlmError(f"{path}: model_type {c.get('model_type')!r} is not supported; "
                         f"qazlm imports {', '.join(SUPPORTED)} models")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise QazlmError(f"{path}: biased attention/MLP is not part of the qazlm architecture")
    rope = c.get("rope_parameters") or {}
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default" or c.get("rope_scaling"):
        raise QazlmError(f"{path}: RoPE scaling {rope.get('rope_type') or c.get('rope_scaling')} is not supported")
    n_heads = c["num_attention_heads"]
    return ModelConfig(vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
                       n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads") or n_heads,
                       head_dim=c.get("head_dim") or c["hidden_size"] // n_heads, ffn_dim=c["intermediate_size"],
                       max_seq_len=c.get("max_position_embeddings", 2048), rope_theta=float(theta),
                       rms_eps=c.get("rms_norm_eps", 1e-6), tie_embeddings=bool(c.get("tie_word_embeddings")),
                       qk_norm=c["model_type"] == "qwen3")


def import_hf(hf_folder: str | Path, out_dir: str | Path) -> Path:
    """An HF Qwen3/Llama folder (single or sharded safetensors) -> our model folder."""
    import torch
    from safetensors.torch import load_file

    from qazlm.model.io import load_state_dict_checked, save_model_folder
    from qazlm.model.transformer import Transformer

    hf_folder = Path(hf_folder)
    cfg = config_from_hf(hf_folder)
    files = sorted(hf_folder.glob("*.safetensors"))
    if not files:
        raise QazlmError(f"{hf_folder}: no *.safetensors weights (convert .bin checkpoints with transformers first)")
    sd = {}
    for f in files:
        sd.update(load_file(str(f)))
    sd = {k.removeprefix("model."): v.float() for k, v in sd.items()}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    load_state_dict_checked(model, sd, str(hf_folder))
    tok_dir = hf_folder if (hf_folder / "tokenizer.json").exists() else None
    return save_model_folder(model, out_dir, tok_dir)


__all__ = ["export_hf", "import_hf", "TOKENIZER_FILES"]
