"""`qazlm export gguf MODEL --type ...`: GGUF files for llama.cpp / Ollama, checked against the source model."""

from __future__ import annotations

EPILOG = """examples:
  qazlm export gguf runs/tiny/sft/final -o runs/tiny-gguf                       # f16, q8_0, q4_k_m (default)
  qazlm export gguf runs/tiny/sft/final --type q4_k_m --type q8_0 -o runs/tiny-gguf
  qazlm export gguf smollm2-135m/ --type f32,q6_k,q5_k_m,q4_0 -o runs/smol-gguf   # Llama/Qwen2/Qwen3 HF folders
  qazlm export gguf smollm2-135m/ --calibration data/sample --output-type f16 -o runs/smol-gguf
                                            # importance matrix from training text; output tensor kept in f16
  llama-cli -m runs/tiny-gguf/tiny-sft-Q4_K_M.gguf --jinja -cnv                  # chat with llama.cpp

Types (llama.cpp's quantizer makes each from the f32 conversion):
  f32 f16 q8_0 q6_k q5_k_m q4_k_m q4_0

Outputs in OUT: NAME-<TYPE>.gguf per type (chat template, BOS/EOS/end-of-turn ids in the metadata),
gguf_report.json and gguf_report.md: token ids vs transformers (sample texts with Kazakh letters, digits,
emoji, whitespace runs, and FLORES+ dev), f32 logits vs the source, and per type the perplexity change,
KL divergence and same-top-token rate vs f32 per language. With --calibration, also NAME.imatrix.gguf: the
importance matrix the quantizer used, in llama-imatrix's format (llama-quantize --imatrix takes it). Needs
llama-cpp-python and llama.cpp's converter, which `make venv` installs."""

FLAGS = {"model": "model", "out_dir": "out_dir", "types": "types", "name": "name",
         "check_sentences": "check_sentences", "calibration": "calibration", "imatrix": "imatrix",
         "output_type": "output_type"}


def load_gguf_config(args):
    """[gguf] of --config, then the flags, then --set (later wins); validated by GGUFConfig."""
    from qazlm.config import config_from_cli
    from qazlm.gguf.config import GGUFConfig

    if args.types is not None:  # --type a --type b,c -> [a, b, c]
        args.types = [t.strip() for flag in args.types for t in flag.split(",") if t.strip()]
    return config_from_cli(GGUFConfig, "gguf", args, FLAGS, "export gguf")


def _run(args) -> int:
    from qazlm.gguf.export import run_gguf

    run_gguf(load_gguf_config(args), force=args.force)
    return 0


def register(sub) -> None:
    """`gguf` under `qazlm export` (which qazlm.model.cli creates, beside `hf`)."""
    from qazlm.cli import HelpFormatter, add_config_flags, subcommands
    from qazlm.gguf.config import TYPES

    p = subcommands(sub.choices["export"]).add_parser(
        "gguf", help="to GGUF files for llama.cpp / Ollama (f32 ... q4_0)", formatter_class=HelpFormatter,
        description=__doc__, epilog=EPILOG)
    p.add_argument("model", nargs="?", default=None, help="model folder: ours (qazlm_model.json) or Hugging Face")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/gguf)")
    p.add_argument("--type", dest="types", action="append", default=None,
                   help=f"{' | '.join(TYPES)}; repeat or comma-separate (default: f16,q8_0,q4_k_m)")
    p.add_argument("--name", default=None, help="file stem (default: from the model path, e.g. tiny-sft)")
    p.add_argument("--check-sentences", default=None,
                   help="FLORES+ dev sentences per language for the checks (default: 16; 0: sample texts only)")
    p.add_argument("--calibration", action="append", default=None, metavar="PATH",
                   help="text files/folders (training text, never an evaluation set) to compute the quantizer's "
                        "importance matrix from (llama.cpp's imatrix; repeatable)")
    p.add_argument("--imatrix", default=None, metavar="FILE",
                   help="an importance matrix in llama-imatrix's GGUF format, instead of --calibration")
    p.add_argument("--output-type", default=None, choices=["f16", "q8_0"],
                   help="the output (or tied embedding) tensor's type in quantized files "
                        "(llama-quantize --output-tensor-type; default: llama.cpp's choice per type)")
    add_config_flags(p, "gguf", "redo even when OUT holds this exact result")
    p.set_defaults(func=_run)
