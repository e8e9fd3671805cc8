"""`qazlm tokenizer train` and `qazlm tokenizer sweep` (argument parsing only; the work is in train.py/sweep.py)."""

from __future__ import annotations

from qazlm.errors import QazlmError

TRAIN_EPILOG = """examples:
  qazlm tokenizer train data/sample --vocab-size 32000 --mix kk=0.4,ru=0.3,en=0.3 -o runs/tok
  qazlm tokenizer train kk=my_kazakh.jsonl.gz ru=ru_texts/ en=en.txt --vocab-size 48000 -o runs/tok48k
  qazlm tokenizer train data/sample --morph -o runs/tok_morph     # MorphBPE: no merge crosses a kk morpheme
"""

SWEEP_EPILOG = """examples:
  qazlm tokenizer sweep data/sample -o runs/sweep
  qazlm tokenizer sweep data/sample --mixes kk=0.4,ru=0.3,en=0.3 kk=0.5,ru=0.25,en=0.25 --vocab-sizes 16000 32000
  qazlm tokenizer sweep data/sample --morph-variant --docs docs   # + MorphBPE, write docs/tokenizer_sweep.md
"""


def _add_common(p) -> None:
    p.add_argument("inputs", nargs="+", help="text files/folders (txt, jsonl, gz); language from a kk/ru/en "
                                             "folder name or as lang=path")
    p.add_argument("--pattern", default="llama3", choices=["llama3", "qwen2"],
                   help="pre-tokenizer split regex, both native in llama.cpp: llama3 groups up to 3 digits, "
                        "qwen2 splits digits one by one")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair count for a merge")
    p.add_argument("--max-bytes", type=int, default=None, help="cap on total training bytes")
    p.add_argument("--balance", default="upsample", choices=["upsample", "downsample"],
                   help="reach the mix by repeating scarce languages (all text used) or thinning abundant ones")


def _cmd_train(args) -> int:
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    cfg = TokenizerTrainConfig(inputs=list(args.inputs), vocab_size=args.vocab_size, mix=args.mix,
                               pattern=args.pattern, min_frequency=args.min_frequency, max_bytes=args.max_bytes,
                               morph=args.morph, balance=args.balance)
    info = train_tokenizer(cfg, args.output, show_progress=not args.quiet)
    used = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in info["bytes_used"].items())
    print(f"trained {info['vocab_size']}-token BPE ({info['mix_spec']}; used {used}) in {info['seconds']:.1f}s "
          f"-> {args.output}")
    return 0


def _cmd_sweep(args) -> int:
    from qazlm.tokenizer.sweep import TARGETS, SweepConfig, run_sweep

    targets = dict(TARGETS)
    for spec in args.target or ():
        key, _, value = spec.partition("=")
        try:
            targets[key.strip()] = float(value)
        except ValueError:
            raise QazlmError(f"--target {spec!r}: expected METRIC=NUMBER, e.g. fertility_en=1.45") from None
    cfg = SweepConfig(inputs=list(args.inputs), mixes=list(args.mixes), vocab_sizes=list(args.vocab_sizes),
                      pattern=args.pattern, min_frequency=args.min_frequency, max_bytes=args.max_bytes,
                      balance=args.balance, morph_variant=args.morph_variant, workers=args.workers, split=args.split,
                      recommend_vocab=args.recommend_vocab, truncate=not args.no_truncate, targets=targets)
    run_sweep(cfg, args.output, docs_dir=args.docs, cache_dir=args.cache)
    return 0


def register(tsub) -> None:
    from qazlm.cli import HelpFormatter
    from qazlm.tokenizer.mixture import DEFAULT_MIX
    from qazlm.tokenizer.train import TokenizerTrainConfig

    p = tsub.add_parser("train", help="train a byte-level BPE on a kk/ru/en mixture", formatter_class=HelpFormatter,
                        description="Train a byte-level BPE (HF tokenizers) with all special tokens and a ChatML "
                                    "chat template; saves a folder AutoTokenizer loads.", epilog=TRAIN_EPILOG)
    _add_common(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--vocab-size", type=int, default=TokenizerTrainConfig.vocab_size,
                   help="vocabulary size incl. special tokens")
    p.add_argument("--mix", default=DEFAULT_MIX, help="language shares by bytes")
    p.add_argument("--morph", action="store_true", help="MorphBPE: merges never cross Kazakh morpheme boundaries")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    from qazlm.tokenizer.sweep import DEFAULT_MIXES, DEFAULT_VOCABS

    s = tsub.add_parser("sweep", help="train a grid of mixtures x vocab sizes, evaluate on FLORES+ dev",
                        formatter_class=HelpFormatter,
                        description="Grid of language mixtures x vocab sizes (one training per mixture at the "
                                    "largest vocab, truncated to smaller ones), evaluated on FLORES+ dev; writes a "
                                    "table, PNG charts and the recommended mixture (the one meeting the "
                                    "tokens/word and premium targets with the largest margin).",
                        epilog=SWEEP_EPILOG)
    _add_common(s)
    s.add_argument("-o", "--output", default="runs/tokenizer_sweep", help="output folder (results + tokenizers)")
    s.add_argument("--mixes", nargs="+", default=list(DEFAULT_MIXES), help="mixtures to try")
    s.add_argument("--vocab-sizes", nargs="+", type=int, default=list(DEFAULT_VOCABS), help="vocab sizes")
    s.add_argument("--morph-variant", action="store_true", help="also train MorphBPE for every mixture")
    s.add_argument("--workers", type=int, default=2, help="parallel trainings")
    s.add_argument("--split", default="dev", choices=["dev", "devtest"],
                   help="FLORES+ split to evaluate (dev: choose; devtest only to report)")
    s.add_argument("--recommend-vocab", type=int, default=None, help="vocab for the recommendation (default: largest)")
    s.add_argument("--target", action="append", metavar="METRIC=BOUND",
                   help="change a target of the recommendation, e.g. premium_ru=1.1 (repeatable; defaults: "
                        "fertility_kk=1.75, fertility_ru=1.85, fertility_en=1.45, premium_kk=1.0, premium_ru=1.15)")
    s.add_argument("--no-truncate", action="store_true", help="train every grid cell separately (slow)")
    s.add_argument("--docs", default=None, help="also write tokenizer_sweep.md + img/*.png into this docs folder")
    s.add_argument("--cache", default=None, help="cache folder for trained tokenizers (default: OUTPUT/cache)")
    s.set_defaults(func=_cmd_sweep)
