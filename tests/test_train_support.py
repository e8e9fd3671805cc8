"""Helpers for the pretraining tests (no tests here).

`ensure_model()` installs a minimal stand-in for `qazlm.model` (same interface: ModelConfig, preset,
Transformer, save/load_model_folder) ONLY when the real package is not importable, so the training loop
can be tested before/independently of the model engineer's code. With the real model present it is a no-op.
`run_cli(args)` is the entry point of the subprocess tests (torchrun / kill -9).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path


def _real_model_available() -> bool:
    try:
        import qazlm.model.io  # noqa: F401
        import qazlm.model.presets  # noqa: F401
        import qazlm.model.transformer  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def ensure_model() -> bool:
    """True when the real qazlm.model is used, False when the stand-in was installed."""
    if _real_model_available():
        return True
    import torch
    import torch.nn.functional as F
    from torch import nn

    @dataclasses.dataclass
    class ModelConfig:
        vocab_size: int = 1000
        d_model: int = 64
        n_layers: int = 2
        n_heads: int = 4
        n_kv_heads: int = 2
        head_dim: int = 16
        ffn_dim: int = 128
        max_seq_len: int = 256
        rope_theta: float = 10000.0
        rms_eps: float = 1e-6
        tie_embeddings: bool = True
        qk_norm: bool = True

    def preset(name, vocab_size):
        if name not in ("tiny", "small"):
            raise KeyError(f"stand-in knows only tiny/small, not {name!r}")
        return ModelConfig(vocab_size=vocab_size)

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c
            self.attn_norm = nn.RMSNorm(c.d_model, eps=c.rms_eps)
            self.qkv = nn.Linear(c.d_model, c.n_heads * c.head_dim * 3, bias=False)
            self.o = nn.Linear(c.n_heads * c.head_dim, c.d_model, bias=False)
            self.ffn_norm = nn.RMSNorm(c.d_model, eps=c.rms_eps)
            self.up = nn.Linear(c.d_model, 2 * c.ffn_dim, bias=False)
            self.down = nn.Linear(c.ffn_dim, c.d_model, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, self.c.n_heads, self.c.head_dim).unbind(2)
            a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, -1))
            g, u = self.up(self.ffn_norm(x)).chunk(2, -1)
            return x + self.down(F.silu(g) * u)

    class Transformer(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.cfg = cfg
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
            self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.rms_eps)

        def init_weights(self):
            for name, p in self.named_parameters():
                if p.ndim == 2:
                    nn.init.normal_(p, std=0.02)
                else:
                    nn.init.ones_(p)

        def forward(self, input_ids, targets=None, *, kv_cache=None, attention_mask=None):
            t = input_ids.shape[1]
            x = self.embed(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
            for layer in self.layers:
                x = layer(x)
            logits = (self.norm(x) @ self.embed.weight.T).float()
            if targets is None:
                return logits
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)

        def num_params(self, non_embedding=False):
            n = sum(p.numel() for p in self.parameters())
            return n - self.embed.weight.numel() if non_embedding else n

        def flops_per_token(self, seq_len):
            return 6 * self.num_params() + 12 * self.cfg.n_layers * self.cfg.d_model * seq_len

    def save_model_folder(model, out_dir, tokenizer_dir=None):
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(sd, str(out / "model.safetensors"))
        (out / "qazlm_model.json").write_text(json.dumps(dataclasses.asdict(model.cfg)))
        if tokenizer_dir:
            import shutil

            for f in Path(tokenizer_dir).iterdir():
                if f.is_file():
                    shutil.copy(f, out / f.name)

    def load_model_folder(path, device="cpu"):
        from safetensors.torch import load_file

        path = Path(path)
        model = Transformer(ModelConfig(**json.loads((path / "qazlm_model.json").read_text())))
        model.load_state_dict(load_file(str(path / "model.safetensors")))
        return model.to(device)

    pkg = sys.modules.get("qazlm.model") or types.ModuleType("qazlm.model")
    mods = {"config": {"ModelConfig": ModelConfig}, "presets": {"preset": preset},
            "transformer": {"Transformer": Transformer},
            "io": {"save_model_folder": save_model_folder, "load_model_folder": load_model_folder}}
    for name, attrs in mods.items():
        mod = types.ModuleType(f"qazlm.model.{name}")
        mod.__dict__.update(attrs)
        sys.modules[f"qazlm.model.{name}"] = mod
        setattr(pkg, name, mod)
    sys.modules["qazlm.model"] = pkg
    return False


def run_cli(argv: list[str]) -> int:
    ensure_model()
    from qazlm.cli import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(sys.argv[1:]))


def make_tokens(folder: Path, tokenizer_dir: Path, lines_by_lang: dict[str, list[str]]) -> Path:
    """Tokenize `lines_by_lang` into a qazlm-tokens-v1 folder (one document per line)."""
    from transformers import AutoTokenizer

    from qazlm.data.shards import TokenShardWriter

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    w = TokenShardWriter(folder, "train", "uint16", 10**9, vocab_size=len(tok), doc_sep_id=tok.eos_token_id,
                         tokenizer=str(tokenizer_dir))
    for lines in lines_by_lang.values():
        for ids in tok(lines, add_special_tokens=False)["input_ids"]:
            w.add_document(ids)
    w.close()
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
