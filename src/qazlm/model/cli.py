"""`qazlm export hf` and `qazlm import hf`: move models between our folder format and transformers."""

from __future__ import annotations


def _export(args) -> int:
    from qazlm.model.hf import export_hf

    out = export_hf(args.model_dir, args.out)
    print(f"wrote {out} (load with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def _import(args) -> int:
    from qazlm.model.hf import import_hf

    out = import_hf(args.hf_dir, args.out)
    print(f"wrote {out}")
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter

    p = sub.add_parser("export", help="export a trained model (hf, gguf)", formatter_class=HelpFormatter)
    esub = p.add_subparsers(dest="export_format", metavar="FORMAT")
    e = esub.add_parser("hf", help="to a transformers Qwen3ForCausalLM folder", formatter_class=HelpFormatter,
                        description="Write config.json, model.safetensors, generation_config.json and the "
                                    "tokenizer, loadable by AutoModelForCausalLM without trust_remote_code.",
                        epilog="example:\n  qazlm export hf runs/tiny/pretrain/final -o runs/tiny/hf")
    e.add_argument("model_dir", help="qazlm model folder (has qazlm_model.json)")
    e.add_argument("-o", "--out", required=True, help="output folder")
    e.set_defaults(func=_export)
    p.set_defaults(func=lambda args: p.print_help())

    p = sub.add_parser("import", help="import a model (hf) into the qazlm format", formatter_class=HelpFormatter)
    isub = p.add_subparsers(dest="import_format", metavar="FORMAT")
    i = isub.add_parser("hf", help="from a transformers Qwen3/Llama folder", formatter_class=HelpFormatter,
                        epilog="example:\n  qazlm import hf runs/tiny/hf -o runs/tiny/reimported")
    i.add_argument("hf_dir", help="folder with config.json + *.safetensors")
    i.add_argument("-o", "--out", required=True, help="output folder")
    i.set_defaults(func=_import)
    p.set_defaults(func=lambda args: p.print_help())
