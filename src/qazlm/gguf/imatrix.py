"""Importance matrix for llama.cpp's quantizer: which input columns of each weight matter, from real text.

llama.cpp recommends an importance matrix (`llama-imatrix`, then `llama-quantize --imatrix`) for 4- and 5-bit
types, above all on small models: the quantizer then spends its rounding error where the activations are
small. The matrix is, per weight tensor, the mean squared input activation of each input column over
calibration text. qazlm computes exactly that on the source model in PyTorch (forward hooks on every linear
layer; its f32 logits match llama.cpp's, so the activations are the same), because llama-cpp-python builds
llama.cpp's library, not its tools; it hands the matrix to `llama_model_quantize` through the C API's
`imatrix` field and saves it in llama-imatrix's GGUF format (`<tensor>.in_sum2`, `<tensor>.counts`,
`imatrix.*` keys), so llama-quantize takes the same file, and a file made by llama-imatrix is read back here.

Calibration text must be training-like text, never an evaluation set (the FLORES+ devtest the report scores):
the recipes point it at the bundled corpus.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.errors import QazlmError

CHUNK_TOKENS = 512          # llama-imatrix's default context
IMATRIX_SUFFIX = ".imatrix.gguf"   # NAME.imatrix.gguf beside NAME-Q4_K_M.gguf ...


@dataclass
class Imatrix:
    sums: dict[str, list[float]]            # GGUF tensor name -> sum of squared inputs per column
    counts: dict[str, int]                  # GGUF tensor name -> tokens seen
    datasets: list[str] = field(default_factory=list)
    chunks: int = 0
    chunk_tokens: int = 0

    def means(self) -> dict[str, list[float]]:
        """What llama-quantize passes to the quantizer: sums / count (llama.cpp's load_imatrix)."""
        return {name: [s / max(self.counts[name], 1) for s in sums] for name, sums in self.sums.items()}


def interleave(iterators: list) -> Iterator:
    """One item from each iterator in turn until all are spent."""
    iterators = list(iterators)
    while iterators:
        for it in list(iterators):
            item = next(it, None)
            if item is None:
                iterators.remove(it)
            else:
                yield item


def calibration_lines(inputs: list[str]) -> Iterator[str]:
    """Lines taken in turn from each input (file or folder), and within a folder in turn from each file: every
    input weighs the same however many files it holds (give kk/, ru/ and en/ for equal thirds)."""
    from qazlm.io import expand_inputs, iter_lines

    return interleave([interleave([iter_lines(f) for f in expand_inputs([item])]) for item in inputs])


def calibration_chunks(inputs: list[str], tokenizer, n_chunks: int, chunk_tokens: int) -> list[list[int]]:
    """`n_chunks` windows of `chunk_tokens` ids from the inputs' lines; too little text is one line."""
    ids: list[int] = []
    for line in calibration_lines(inputs):
        ids += tokenizer(line + "\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n_chunks * chunk_tokens:
            break
    if len(ids) < chunk_tokens:
        raise QazlmError(f"[gguf] calibration: {', '.join(inputs)} hold {len(ids)} tokens, fewer than one chunk "
                         f"of {chunk_tokens}; give more text")
    return [ids[i:i + chunk_tokens] for i in range(0, len(ids) - chunk_tokens + 1, chunk_tokens)][:n_chunks]


def collect(model, chunks: list[list[int]]) -> tuple[dict[str, "object"], dict[str, int]]:
    """Sum of squared inputs per column (float64) and token count, per linear module of a transformers model."""
    import torch

    sums, counts, hooks = {}, {}, []

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            for chunk in chunks:
                model(torch.tensor([chunk]))
    finally:
        for h in hooks:
            h.remove()
    return sums, counts


def gguf_tensors(f32_path: Path) -> tuple[str, dict[str, int]]:
    """(architecture, {tensor name: columns (ne0)}) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(f32_path)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    return str(bytes(arch.parts[arch.data[0]]), "utf-8"), {t.name: int(t.shape[0]) for t in reader.tensors}


def gguf_names(f32_path: Path, modules: list[str]) -> dict[str, str]:
    """transformers module name -> the GGUF tensor it multiplies with, by gguf-py's own name map for the
    file's architecture; a tied head (no output.weight in the file) multiplies with token_embd.weight."""
    import gguf

    arch_name, tensors = gguf_tensors(f32_path)
    arch = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch_name]
    blocks = 1 + max(int(n.split(".")[1]) for n in tensors if n.startswith("blk."))
    name_map = gguf.get_tensor_name_map(arch, blocks)
    out = {}
    for module in modules:
        name = name_map.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if name == "output.weight" and name not in tensors:
            name = "token_embd.weight"
        if name not in tensors:
            raise QazlmError(f"{f32_path}: no GGUF tensor for the model's layer {module} ({name}); the importance "
                             "matrix cannot be mapped for this architecture")
        out[module] = name
    return out


def check_names(imatrix: Imatrix, f32_path: Path) -> None:
    """A matrix made for another model (a tensor it lacks, or other widths) is one line, before quantizing."""
    _, tensors = gguf_tensors(f32_path)
    for name, sums in imatrix.sums.items():
        if tensors.get(name) != len(sums):
            found = "no such tensor" if name not in tensors else f"{tensors[name]} columns, the matrix has {len(sums)}"
            raise QazlmError(f"[gguf] imatrix: {name}: {found} in {f32_path.name}; the importance matrix was made "
                             "for another model")


def compute(model, tokenizer, f32_path: Path, inputs: list[str], n_chunks: int) -> Imatrix:
    """The importance matrix of `model` (a transformers causal LM, the one `f32_path` was converted from)."""
    limit = getattr(model.config, "max_position_embeddings", CHUNK_TOKENS) or CHUNK_TOKENS
    chunk_tokens = min(CHUNK_TOKENS, limit)
    chunks = calibration_chunks(inputs, tokenizer, n_chunks, chunk_tokens)
    sums, counts = collect(model, chunks)
    names = gguf_names(f32_path, list(sums))
    return Imatrix({names[m]: sums[m].tolist() for m in sums}, {names[m]: counts[m] for m in sums},
                   list(inputs), len(chunks), chunk_tokens)


def write(path: Path, imatrix: Imatrix) -> None:
    """llama-imatrix's GGUF layout: `<tensor>.in_sum2` [1, cols] and `<tensor>.counts` [1, 1], f32 (written in
    the export's scratch folder, which is published atomically)."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch="imatrix")
    writer.add_type("imatrix")
    writer.add_array(gguf.Keys.IMatrix.DATASETS, imatrix.datasets)
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, imatrix.chunks)
    writer.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, imatrix.chunk_tokens)
    for name in sorted(imatrix.sums):
        writer.add_tensor(f"{name}.in_sum2", np.asarray([imatrix.sums[name]], dtype=np.float32))
        writer.add_tensor(f"{name}.counts", np.asarray([[imatrix.counts[name]]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read(path: Path) -> Imatrix:
    """An importance matrix in llama-imatrix's GGUF format (one matrix per tensor; expert tensors refused)."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as e:
        raise QazlmError(f"{path}: not a readable GGUF importance matrix ({e}); make one with `qazlm export gguf "
                         "--calibration TEXT` or llama.cpp's llama-imatrix") from None
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[:-len(".in_sum2")]] = [float(v) for v in t.data.reshape(-1)]
        elif t.name.endswith(".counts"):
            if t.data.size != 1:
                raise QazlmError(f"{path}: {t.name} holds {t.data.size} counts (a mixture-of-experts matrix); "
                                 "qazlm exports dense models only")
            counts[t.name[:-len(".counts")]] = int(t.data.reshape(-1)[0])
    if not sums or set(sums) != set(counts):
        raise QazlmError(f"{path}: no importance matrix in it (needs <tensor>.in_sum2 and <tensor>.counts "
                         "pairs, llama-imatrix's GGUF format)")
    return Imatrix(sums, counts)


def as_quantize_param(imatrix: Imatrix):
    """(array, buffers): the NULL-terminated `llama_model_imatrix_data` array llama_model_quantize reads;
    keep `buffers` alive until the call returns."""
    import llama_cpp

    means = imatrix.means()
    array = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()  # zeroed: the last entry ends the list
    buffers = []
    for entry, (name, values) in zip(array, means.items()):
        data = (ctypes.c_float * len(values))(*values)
        buffers.append(data)
        entry.name, entry.size = name.encode(), len(values)
        entry.data = ctypes.cast(data, ctypes.POINTER(ctypes.c_float))
    return array, buffers
