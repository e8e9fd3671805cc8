"""`qazlm package MODEL -o DIR` (a Hub-ready folder with a generated model card) and `qazlm push DIR --repo
OWNER/NAME` (upload it with huggingface_hub). docs/deploy.md."""

from __future__ import annotations

EPILOG = """examples:
  qazlm package runs/tiny/sft/final -o runs/tiny/package                # card from runs/tiny's records
  qazlm package runs/tiny/quantize/final -o out/tiny-int8 --repo-id me/qazlm-tiny-int8 --license apache-2.0
  qazlm package imported/ -o out/pkg --run runs/other                   # the run's reports from elsewhere
  qazlm push runs/tiny/package --repo me/qazlm-tiny --dry-run           # what would be uploaded

The card (README.md) is generated from the run's artifacts: data report, tokenizer and pretraining records,
eval/chat_eval reports, the SFT data card and lineage, the quantization report. Missing reports make the card
say "not evaluated", never a number. qazlm_package.json (written last) lists every file with its sha256."""

PUSH_EPILOG = """examples:
  qazlm push runs/tiny/package --repo me/qazlm-tiny --dry-run
  qazlm push runs/tiny/package --repo me/qazlm-tiny --private --revision v0.1 -m "first release"

Needs a token (`hf auth login` or HF_TOKEN) and the network; offline it fails with one line. Only the files the
package manifest lists are uploaded (never the lock or stage records)."""

FLAGS = {"model": "model", "out_dir": "out_dir", "run": "run", "license": "license", "repo_id": "repo_id",
         "gguf": "gguf"}


def _package(args) -> int:
    from qazlm.config import config_from_cli
    from qazlm.package.config import PackageConfig
    from qazlm.package.package import run_package

    run_package(config_from_cli(PackageConfig, "package", args, FLAGS, "package"), force=args.force)
    return 0


def _push(args) -> int:
    from qazlm.package.push import push

    push(args.folder, args.repo, private=args.private, revision=args.revision, message=args.message,
         dry_run=args.dry_run)
    return 0


def register(sub) -> None:
    from qazlm.cli import HelpFormatter, add_config_flags

    p = sub.add_parser("package", help="a Hub-ready folder: weights, tokenizer, GGUF, generated model card",
                       formatter_class=HelpFormatter, description=__doc__, epilog=EPILOG)
    p.add_argument("model", nargs="?", default=None, help="the model folder to ship (ours, SFT, quantized)")
    p.add_argument("-o", "--out-dir", default=None, help="package folder (default: runs/package)")
    p.add_argument("--run", default=None, help="run folder with the reports (default: from the model's lineage)")
    p.add_argument("--license", default=None, help="Hub licence id of the weights (default: apache-2.0)")
    p.add_argument("--repo-id", default=None, help="OWNER/NAME for the card's usage snippets")
    p.add_argument("--gguf", action="append", default=None, metavar="FILE", help="a GGUF file to ship (repeatable)")
    add_config_flags(p, "package", "rebuild even when nothing changed")
    p.set_defaults(func=_package)

    q = sub.add_parser("push", help="upload a package folder to the Hugging Face Hub (huggingface_hub)",
                       formatter_class=HelpFormatter, description=__doc__, epilog=PUSH_EPILOG)
    q.add_argument("folder", help="a `qazlm package` folder")
    q.add_argument("--repo", required=True, help="OWNER/NAME on the Hub")
    q.add_argument("--private", action="store_true", help="create the repository private")
    q.add_argument("--revision", default=None, help="branch to push to (created when missing)")
    q.add_argument("-m", "--message", default=None, help="commit message")
    q.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    q.set_defaults(func=_push)
