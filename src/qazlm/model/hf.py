"""Export to / import from a standard transformers folder (Qwen3ForCausalLM; LlamaForCausalLM without QK-norm).

Our module names already are the HF names without the `model.` prefix, so the weights copy over by
renaming the prefix only; `AutoModelForCausalLM.from_pretrained(folder)` loads without trust_remote_code.
"""

from __future__ import annotations

import json
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.model.config import ModelConfig
from qazlm.model.io import (MODEL_JSON, TOKENIZER_FILES, WEIGHTS, copy_tokenizer, load_model_folder, read_weights,
                            save_weights, state_dict_for_saving)

SUPPORTED = {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}


def _special_ids(folder: Path) -> dict:
    """bos/eos/pad ids from the tokenizer files in `folder` (None when absent)."""
    if not (folder / "tokenizer.json").exists():
        return {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise QazlmError(f"{folder}: cannot load the tokenizer ({reason}); check tokenizer.json") from None
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


def check_replaceable(out_dir: Path, marker: str, what: str) -> None:
    """Refuse an output folder that holds something other than an earlier output of the same kind: the
    atomic swap replaces the whole folder, and `-o runs/tiny` must not delete a run."""
    if out_dir.exists() and not out_dir.is_dir():
        raise QazlmError(f"{out_dir}: exists and is not a folder; choose another -o")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / marker).exists():
        raise QazlmError(f"{out_dir}: folder exists and is not {what} (no {marker}); it would be replaced, so "
                         "choose a new or empty -o folder")


def hf_state_dict(model) -> dict:
    """Our weights under their transformers names (`model.` prefix; the output head keeps its name)."""
    return {(k if k.startswith("lm_head") else f"model.{k}"): v for k, v in state_dict_for_saving(model).items()}


def to_transformers(model_folder: str | Path):
    """Our model folder as the transformers module `export_hf` writes (Qwen3ForCausalLM / LlamaForCausalLM,
    fp32, train mode off), built in memory: fine-tuning through transformers/TRL needs no exported copy on disk."""
    import torch
    from transformers import AutoModelForCausalLM

    model_folder = Path(model_folder)
    ours = load_model_folder(model_folder)
    config = hf_config(ours.cfg, _special_ids(model_folder))
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = hf.load_state_dict(hf_state_dict(ours), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and ours.cfg.tie_embeddings)]
    if missing or unexpected:  # a bug, not a user error: the names are ours on both sides
        raise RuntimeError(f"to_transformers: weight names differ (missing {missing[:3]}, unexpected {unexpected[:3]})")
    hf.tie_weights()
    return hf.eval()


def export_hf(model_folder: str | Path, out_dir: str | Path) -> Path:
    """Write config.json, model.safetensors, generation_config.json and tokenizer files into `out_dir`
    (built in a temp folder and swapped in; ordinary umask permissions)."""
    from transformers import GenerationConfig

    from qazlm.io import atomic_dir

    model_folder, out_dir = Path(model_folder), Path(out_dir)
    model = load_model_folder(model_folder)
    check_replaceable(out_dir, "config.json", "a Hugging Face model folder")
    ids = _special_ids(model_folder)
    with atomic_dir(out_dir) as tmp:
        hf_config(model.cfg, ids).save_pretrained(tmp)
        _add_legacy_keys(tmp / "config.json", model.cfg)
        save_weights(hf_state_dict(model), tmp / WEIGHTS)
        GenerationConfig(**{k: v for k, v in ids.items() if v is not None}).save_pretrained(tmp)
        if (model_folder / "tokenizer.json").exists():
            copy_tokenizer(model_folder, tmp)
    return out_dir


def read_hf_config(hf_folder: Path) -> dict:
    """config.json of an HF folder as a dict; a missing or half-downloaded file is one clear error."""
    path = hf_folder / "config.json"
    if not hf_folder.is_dir():
        raise QazlmError(f"{hf_folder}: no such folder; check the path")
    if not path.exists():
        raise QazlmError(f"{hf_folder}: no config.json; not a Hugging Face model folder")
    try:
        c = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise QazlmError(f"{path}: invalid JSON ({getattr(e, 'msg', e)}); is the download complete?") from None
    if not isinstance(c, dict):
        raise QazlmError(f"{path}: expected a JSON object")
    return c


def config_from_hf(hf_folder: Path) -> ModelConfig:
    return config_from_hf_dict(read_hf_config(hf_folder), hf_folder / "config.json")


def config_from_hf_dict(c: dict, path) -> ModelConfig:
    """Our ModelConfig for an HF Qwen3/Llama config; anything without an exact counterpart is a QazlmError."""
    if c.get("model_type") not in SUPPORTED:
        raise QazlmError(f"{path}: model_type {c.get('model_type')!r} is not supported; "
                         f"qazlm imports {', '.join(SUPPORTED)} models")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise QazlmError(f"{path}: biased attention/MLP is not part of the qazlm architecture")
    rope = c.get("rope_parameters") or {}
    theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default" or c.get("rope_scaling"):
        raise QazlmError(f"{path}: RoPE scaling {rope.get('rope_type') or c.get('rope_scaling')} is not supported")
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if k not in c]
    if missing:
        raise QazlmError(f"{path}: missing {', '.join(missing)}; not a complete {c['model_type']} config")
    n_heads = c["num_attention_heads"]
    try:
        return ModelConfig(vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
                           n_heads=n_heads, n_kv_heads=c.get("num_key_value_heads") or n_heads,
                           head_dim=c.get("head_dim") or c["hidden_size"] // max(int(n_heads), 1),
                           ffn_dim=c["intermediate_size"], max_seq_len=c.get("max_position_embeddings", 2048),
                           rope_theta=theta, rms_eps=c.get("rms_norm_eps", 1e-6),
                           tie_embeddings=bool(c.get("tie_word_embeddings")), qk_norm=c["model_type"] == "qwen3")
    except (QazlmError, TypeError, ValueError) as e:
        raise QazlmError(f"{path}: {e}") from None


def our_names(hf_state_dict: dict, cfg: ModelConfig) -> dict:
    """An HF Qwen3/Llama state dict under our Transformer's parameter names (a tied head has no weight of its
    own)."""
    sd = {k.removeprefix("model."): v for k, v in hf_state_dict.items()}
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)
    return sd


def as_ours(hf_model):
    """An HF Qwen3/Llama model in memory as our Transformer holding the same weight tensors (no copy), so the
    continuous batcher decodes its slots in one forward; None when the architecture, RoPE or weights (quantized
    tensor subclasses, not float32, or a layer whose weight a packed kernel replaced: `qazlm.infer.int4_cpu`
    leaves an empty one) have no exact qazlm counterpart."""
    import torch

    from qazlm.model.transformer import build_model

    try:
        cfg = config_from_hf_dict(hf_model.config.to_dict(), "model")
    except QazlmError:
        return None
    sd = our_names(hf_model.state_dict(), cfg)
    if any(type(t) is not torch.Tensor or t.dtype != torch.float32 for t in sd.values()):
        return None
    model = build_model(cfg, next(iter(sd.values())).device)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    if any(k in shapes and shapes[k] != v.shape for k, v in sd.items()):
        return None
    result = model.load_state_dict(sd, strict=False, assign=True)  # share the tensors; the initial ones are freed
    if result.unexpected_keys or any(not k.startswith("rope_") for k in result.missing_keys):
        return None
    return model.eval()


def ours_for(hf_model):
    """`as_ours(hf_model)`, kept on the HF module while its weight tensors stay the same ones: every generate
    call on an HF folder (chat, tool and safety evaluations, DPO's win rate) then decodes through the same
    Transformer and its cached `Decoder` instead of rebuilding them."""
    key = tuple(p.data_ptr() for p in hf_model.parameters())
    cached = getattr(hf_model, "_qazlm_ours", None)
    if cached is None or cached[0] != key:
        cached = (key, as_ours(hf_model))
        object.__setattr__(hf_model, "_qazlm_ours", cached)  # not a submodule: no state-dict entry
    return cached[1]


def import_hf(hf_folder: str | Path, out_dir: str | Path) -> Path:
    """An HF Qwen3/Llama folder (single or sharded safetensors) -> our model folder."""
    from qazlm.model.io import load_state_dict_checked, save_model_folder
    from qazlm.model.transformer import build_model

    hf_folder, out_dir = Path(hf_folder), Path(out_dir)
    cfg = config_from_hf(hf_folder)
    files = sorted(hf_folder.glob("*.safetensors"))
    if not files:
        raise QazlmError(f"{hf_folder}: no *.safetensors weights (convert .bin checkpoints with transformers first)")
    check_replaceable(out_dir, MODEL_JSON, "a qazlm model folder")
    sd = {}
    for f in files:
        sd.update(read_weights(f))
    sd = {k: v.float() for k, v in our_names(sd, cfg).items()}
    model = build_model(cfg, "cpu")
    load_state_dict_checked(model, sd, str(hf_folder))
    tok_dir = hf_folder if (hf_folder / "tokenizer.json").exists() else None
    return save_model_folder(model, out_dir, tok_dir)


__all__ = ["export_hf", "import_hf", "to_transformers", "TOKENIZER_FILES"]
