"""Run int4 folders from `qazlm quantize` on torchao's packed CPU int4 kernel.

The stored format (`IntxUnpackedToInt8Tensor`: int8 data, a scale and a float offset per group) is portable
and saves to safetensors, but in eager mode torchao 0.18 turns it back into a full fp32 weight in every call,
which makes int4 the slowest variant on a CPU. torchao's tinygemm CPU kernel
(`aten._weight_int4pack_mm_for_cpu`, behind its `Int4OpaqueTensor`) multiplies packed 4-bit weights directly,
but only fast with bf16 activations, and its packed layout is machine-specific (so it is never the stored
format). At load time on a CPU, each such layer is repacked for that kernel from the stored values (no
rounding again: the grid is the same) and runs with bf16 activations in, fp32 out; figures in docs/deploy.md.
"""

from __future__ import annotations

KERNEL_GROUP_SIZES = (32, 64, 128)   # the group sizes torchao's CPU int4 tensor takes


def packable(module) -> bool:
    """An nn.Linear holding int4 in groups with float offsets, in a group size the CPU kernel takes."""
    import torch

    weight = getattr(module, "weight", None)
    return (isinstance(module, torch.nn.Linear) and type(weight).__name__ == "IntxUnpackedToInt8Tensor"
            and weight.target_dtype == torch.int4 and weight.zero_point.is_floating_point()
            and weight.block_size[0] == 1 and weight.block_size[1] in KERNEL_GROUP_SIZES)


def repack(weight):
    """The same int4 values, scales and offsets as torchao's CPU tinygemm tensor (bf16 scales/offsets)."""
    import torch
    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization.utils import pack_tinygemm_scales_and_zeros

    steps = weight.qdata.to(torch.int32) + 8                               # -8..7 -> tinygemm's 0..15
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(steps.contiguous(), 1)
    scale = weight.scale.to(torch.float32)
    mid_value = -weight.zero_point.to(torch.float32) * scale               # the value at step 8
    scale_and_zero = pack_tinygemm_scales_and_zeros(scale.to(torch.bfloat16), mid_value.to(torch.bfloat16),
                                                    torch.bfloat16)
    return Int4OpaqueTensor(packed, scale_and_zero, list(weight.block_size), weight.shape)


class Bf16Int4Linear:
    """forward() of a repacked layer: bf16 activations through the packed kernel, the caller's dtype out."""

    def __init__(self, module):
        import torch

        self.weight = repack(module.weight)
        self.bias = None if module.bias is None else module.bias.detach().to(torch.bfloat16)

    def __call__(self, x):
        import torch

        y = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias)
        return y.to(x.dtype)


def use_cpu_int4_kernel(model) -> int:
    """Repack every packable layer of a CPU model in place; returns how many were repacked."""
    import torch

    count = 0
    for module in model.modules():
        if packable(module):
            module.forward = Bf16Int4Linear(module)
            module.weight = torch.nn.Parameter(torch.empty(0), requires_grad=False)  # the unpacked copy goes
            count += 1
    return count
