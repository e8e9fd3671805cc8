"""`qazlm quantize MODEL --scheme ...`: a torchao-quantized model folder that generate/eval load (docs/deploy.md)."""

from __future__ import annotations

EPILOG = """examples:
  qazlm quantize runs/tiny/sft/final -o runs/tiny-int8                      # int8 weight-only (the default)
  qazlm quantize runs/tiny/pretrain/final --scheme int4-weight --group-size 32 -o runs/tiny-int4
  qazlm quantize smollm2-135m/ --scheme int8-dynamic -o runs/smol-int8dyn
  qazlm generate runs/tiny-int8/final "Сәлем!" --chat                       # the result loads like any model

Schemes (torchao, Linear layers; the embedding stays fp32):
  int8-weight   int8 weights per output row, fp32 activations
  int8-dynamic  int8 weights per row + int8 activations per token, quantized on the fly
  int4-weight   int4 weights, one scale and one float offset per --group-size input columns

Outputs in OUT: final/ (a Hugging Face model folder: safetensors with torchao's quantized tensors,
config.json with the quantization_config, tokenizer with the chat template, qazlm_lineage.json) and
quantize_report.json (sizes; bits per byte, KL and same-top-token rate vs fp32 on FLORES+ dev).
On CPUs without int8 matmul kernels, quantized models decode slower than fp32 (docs/deploy.md)."""

FLAGS = {"model": "model", "out_dir": "out_dir", "scheme": "scheme", "group_size": "group_size",
         "check_sentences": "check_sentences"}


def load_quantize_config(args):
    """[quantize] of --config, then the flags, then --set (later wins); validated by QuantizeConfig."""
    from qazlm.config import config_from_cli
    from qazlm.quantize.config import QuantizeConfig

    return config_from_cli(QuantizeConfig, "quantize", args, FLAGS, "quantize")


def _run(args) -> int:
    from qazlm.quantize.quantize import run_quantize

    run_quantize(load_quantize_config(args), force=args.force)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter, add_config_flags
    from qazlm.quantize.config import SCHEMES

    p = sub.add_parser("quantize", help="int8 / int4 quantization with torchao -> a model folder",
                       formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG)
    p.add_argument("model", nargs="?", default=None, help="model folder: ours (qazlm_model.json) or Hugging Face")
    p.add_argument("-o", "--out-dir", default=None, help="output folder (default: runs/quantized)")
    p.add_argument("--scheme", default=None, help=f"{' | '.join(SCHEMES)} (default: int8-weight)")
    p.add_argument("--group-size", default=None, help="int4-weight: columns per scale (default: 32)")
    p.add_argument("--check-sentences", default=None,
                   help="FLORES+ dev sentences per language for the check against fp32 (default: 16; 0: none)")
    add_config_flags(p, "quantize", "redo even when OUT holds this exact result")
    p.set_defaults(func=_run)
