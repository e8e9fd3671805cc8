"""`[quantize]` table / `qazlm quantize` settings: one validated dataclass (docs/deploy.md)."""

from __future__ import annotations

from dataclasses import dataclass

from qazlm.config import check_fields
from qazlm.errors import QazlmError

# scheme -> what torchao does to every Linear layer's weight (the tied embedding stays fp32)
SCHEMES = {
    "int8-weight": "int8 weights, one scale per output row; activations stay fp32 (Int8WeightOnlyConfig)",
    "int8-dynamic": "int8 weights per row and int8 activations per token, quantized on the fly "
                    "(Int8DynamicActivationInt8WeightConfig)",
    "int4-weight": "int4 weights, one scale and one float offset per group of input columns (the Q4_1 / "
                   "tinygemm grid, stored as torchao's IntxUnpackedToInt8Tensor)",
}
GROUP_SIZES = (16, 32, 64, 128, 256)


@dataclass
class QuantizeConfig:
    model: str = ""                 # a model folder: ours (qazlm_model.json) or Hugging Face (config.json)
    out_dir: str = "runs/quantized"
    scheme: str = "int8-weight"
    group_size: int = 32            # int4-weight: weights that share one scale (along the input dimension)
    check_sentences: int = 16       # FLORES+ dev sentences per language for the fp32-vs-quantized check (0: skip)

    def __post_init__(self):
        if not self.model:
            raise QazlmError("[quantize] model: not set; give the model folder to quantize (qazlm quantize MODEL)")
        if self.scheme not in SCHEMES:
            raise QazlmError(f"[quantize] scheme = {self.scheme!r}: choose from {', '.join(SCHEMES)}")
        check_fields(self, "[quantize] ", {"group_size": ">= 1", "check_sentences": ">= 0"})
        if self.group_size not in GROUP_SIZES:
            raise QazlmError(f"[quantize] group_size = {self.group_size}: choose from "
                             f"{', '.join(map(str, GROUP_SIZES))}")
