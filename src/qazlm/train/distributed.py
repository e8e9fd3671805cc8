"""torchrun integration: process group from the environment, DDP or FSDP2 wrapping, rank-aware helpers.

Launch with `torchrun --nproc_per_node=8 -m qazlm.cli pretrain ...` (see docs/pretraining.md); a plain
`qazlm pretrain` is a world of one. Backend: NCCL on CUDA, gloo on CPU (used by the tests).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(pref: str, local_rank: int = 0) -> str:
    import torch

    if pref == "auto":
        return f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        return f"cuda:{local_rank}"
    return pref


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; otherwise a single process."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_pref, local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank, world, local_rank, device)


def shutdown(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    import torch.distributed as dist

    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo, device) -> float:
    """Average a Python float over ranks (for logging)."""
    if not info.enabled:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world


def transformer_blocks(model) -> list:
    """The repeated blocks of the model (first ModuleList found): the unit of FSDP sharding, activation
    checkpointing and per-block compilation."""
    import torch

    for name in ("layers", "blocks", "h"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, torch.nn.ModuleList):
            return list(blocks)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList):
            return list(module)
    return []


def apply_activation_checkpointing(model) -> int:
    """Recompute each block's activations in backward. Wraps `forward` in place so state-dict keys
    (and therefore checkpoints and exports) are unchanged."""
    from torch.utils.checkpoint import checkpoint

    blocks = transformer_blocks(model)
    if hasattr(model, "activation_checkpointing"):  # qazlm's Transformer has the switch built in
        model.activation_checkpointing = True
        return len(blocks)
    for block in blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return len(blocks)


def compile_blocks(model) -> None:
    """torch.compile each block in place (torchtitan style): keys unchanged, works under FSDP2 and DDP."""
    blocks = transformer_blocks(model)
    for block in blocks or [model]:
        block.compile()


def wrap_model(model, info: DistInfo, parallel: str, *, mixed_bf16: bool = False):
    """DDP or FSDP2 (`fully_shard` per block, then the root) for world > 1; the model itself otherwise."""
    if not info.enabled:
        return model
    if parallel == "fsdp":
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_bf16 else None
        kwargs = {"mp_policy": mp} if mp is not None else {}
        for block in transformer_blocks(model):
            fully_shard(block, **kwargs)
        fully_shard(model, **kwargs)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    device_ids = [info.local_rank] if info.device.startswith("cuda") else None
    return DDP(model, device_ids=device_ids)
