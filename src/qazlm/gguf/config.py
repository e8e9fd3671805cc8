"""`[gguf]` table / `qazlm export gguf` settings: one validated dataclass (docs/deploy.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qazlm.config import check_fields
from qazlm.errors import QazlmError

# type -> what llama.cpp stores (bits per weight as llama.cpp's quantize tool lists them)
TYPES = {
    "f32": "32-bit floats: the reference every check compares against",
    "f16": "16-bit floats",
    "q8_0": "8-bit, one scale per block of 32 (~8.5 bits/weight)",
    "q6_k": "6-bit k-quant, super-blocks of 256 (~6.6 bits/weight)",
    "q5_k_m": "5-bit k-quant mix, attention-v / ffn-down kept at 6 bits (~5.7 bits/weight)",
    "q4_k_m": "4-bit k-quant mix, attention-v / ffn-down kept at 6 bits (~4.9 bits/weight)",
    "q4_0": "4-bit, one scale per block of 32 (~4.5 bits/weight)",
}

OUTPUT_TYPES = {"": None, "f16": "F16", "q8_0": "Q8_0"}  # -> llama_cpp.GGML_TYPE_*


@dataclass
class GGUFConfig:
    model: str = ""                 # a model folder: ours (qazlm_model.json) or Hugging Face Llama/Qwen2/Qwen3
    out_dir: str = "runs/gguf"
    types: list[str] = field(default_factory=lambda: ["f16", "q8_0", "q4_k_m"])
    name: str = ""                  # file stem (NAME-Q4_K_M.gguf); default from the model folder's path
    check_sentences: int = 16       # FLORES+ dev sentences per language for the parity and quality checks
    # importance matrix for the quantizer (llama.cpp recommends one for 4/5-bit types on small models): computed
    # on the source model from `calibration` text (files/folders; training text, never an evaluation set), or
    # read from `imatrix`, a file in llama-imatrix's GGUF format
    calibration: list[str] = field(default_factory=list)
    calibration_chunks: int = 32    # windows of 512 tokens (llama-imatrix's context)
    imatrix: str = ""
    output_type: str = ""           # the output (or tied embedding) tensor's type in quantized files: "" = what
    #                                 llama.cpp picks per type; "f16"/"q8_0" as llama-quantize --output-tensor-type

    def __post_init__(self):
        if not self.model:
            raise QazlmError("[gguf] model: not set; give the model folder to export (qazlm export gguf MODEL)")
        if not self.types:
            raise QazlmError(f"[gguf] types: empty; choose one or more of {', '.join(TYPES)}")
        for t in self.types:
            if t not in TYPES:
                raise QazlmError(f"[gguf] types: {t!r} is not a type qazlm exports (llama.cpp's quantizer is run "
                                 f"for these only); choose from {', '.join(TYPES)}")
        if len(set(self.types)) != len(self.types):
            raise QazlmError(f"[gguf] types: {self.types} names a type twice")
        if self.name and not self.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise QazlmError(f"[gguf] name = {self.name!r}: use letters, digits, '-', '_' and '.' only")
        if self.calibration and self.imatrix:
            raise QazlmError("[gguf] calibration and imatrix: give one (text to compute the importance matrix "
                             "from, or a matrix llama-imatrix made), not both")
        if self.output_type not in OUTPUT_TYPES:
            raise QazlmError(f"[gguf] output_type = {self.output_type!r}: choose f16 or q8_0 (or leave it empty "
                             "for llama.cpp's choice per type)")
        check_fields(self, "[gguf] ", {"check_sentences": ">= 0", "calibration_chunks": ">= 1"})
