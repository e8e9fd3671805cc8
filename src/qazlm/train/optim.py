"""AdamW with the usual split: decay matrices, never norms, embeddings or biases."""

from __future__ import annotations


def param_groups(model, weight_decay: float) -> list[dict]:
    """Two groups: 2-D weights of linear layers decay; norms (1-D), biases and embeddings do not.

    Embeddings are found by module type, so a tied LM head (same tensor) is also left undecayed.
    """
    import torch

    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay, seen = [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim < 2 or id(p) in no_decay_ids or name.endswith(".bias") or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
            {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(model, cfg, device_type: str):
    """AdamW: fused kernels on CUDA, foreach (multi-tensor) on CPU."""
    import torch

    kwargs = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             eps=cfg.eps, **kwargs)
