"""Benchmark: `qazlm tokenizer train` on the whole bundled sample corpus vs SentencePiece BPE on the same text.

Target: training on the sample corpus in < 120 s on 2 cores. Also prints FLORES+ devtest fertility and
premium of the trained tokenizer (the issue's quality targets). Last line: one JSON object.

    python benchmarks/bench_tokenizer_train.py [--vocab-size 64000] [--mix kk=...] [--no-spm]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGETS = {"train_seconds": 120.0, "fertility_kk": 1.75, "fertility_ru": 1.85, "fertility_en": 1.45,
           "premium_kk": 1.0, "premium_ru": 1.15}


def main() -> None:
    from qazlm.paths import SAMPLE_DIR
    from qazlm.tokenizer.mixture import iter_mixture, parse_mix, plan_mixture
    from qazlm.tokenizer.sweep import evaluate_tokenizer, load_eval_text
    from qazlm.tokenizer.train import TokenizerTrainConfig, train_tokenizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = TokenizerTrainConfig()
    ap.add_argument("--vocab-size", type=int, default=default.vocab_size)
    ap.add_argument("--mix", default=default.mix)
    ap.add_argument("--pattern", default=default.pattern)
    ap.add_argument("--no-spm", action="store_true", help="skip the SentencePiece comparison")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TokenizerTrainConfig(inputs=[str(SAMPLE_DIR)], vocab_size=args.vocab_size, mix=args.mix,
                                   pattern=args.pattern)
        t0 = time.perf_counter()
        info = train_tokenizer(cfg, Path(tmp) / "qazlm", show_progress=False)
        t_ours = time.perf_counter() - t0
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(Path(tmp) / "qazlm" / "tokenizer.json"))
        quality = evaluate_tokenizer(tok, load_eval_text("devtest"))

        t_spm = t_hf_file = None
        if not args.no_spm:
            import sentencepiece as spm

            text = Path(tmp) / "mixture.txt"
            plan = plan_mixture([str(SAMPLE_DIR)], parse_mix(args.mix), balance=cfg.balance)
            with open(text, "w", encoding="utf-8") as f:
                for line in iter_mixture(plan):
                    f.write(line + "\n")
            from tokenizers import pre_tokenizers, trainers

            from qazlm.tokenizer import special_tokens as st
            from qazlm.tokenizer.train import new_tokenizer

            raw = new_tokenizer(cfg.pattern)
            trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, min_frequency=cfg.min_frequency,
                                          special_tokens=st.SPECIAL_TOKENS, show_progress=False,
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
            t0 = time.perf_counter()
            raw.train([str(text)], trainer)  # BPE alone, without reading/normalizing the corpus
            t_hf_file = time.perf_counter() - t0
            t0 = time.perf_counter()
            spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(Path(tmp) / "spm"), model_type="bpe",
                                           vocab_size=args.vocab_size, byte_fallback=True, character_coverage=1.0,
                                           num_threads=2, input_sentence_size=0, minloglevel=2,
                                           max_sentence_length=1 << 16, train_extremely_large_corpus=False)
            t_spm = time.perf_counter() - t0

    mb = sum(info["bytes_used"].values()) / 1e6
    print(f"{'tool':<28}{'seconds':>10}{'MB':>8}")
    print(f"{'qazlm tokenizer train':<28}{t_ours:>10.1f}{mb:>8.2f}")
    if t_spm is not None:
        print(f"{'  (its BPE step alone)':<28}{t_hf_file:>10.1f}{mb:>8.2f}")
        print(f"{'sentencepiece bpe (file)':<28}{t_spm:>10.1f}{mb:>8.2f}")
    print(f"\nFLORES+ devtest ({info['mix_spec']}, vocab {info['vocab_size']}, {cfg.pattern}):")
    for k, v in quality.items():
        target = TARGETS.get(k)
        print(f"  {k:<14}{v:8.3f}" + (f"   target <= {target}  {'ok' if v <= target else 'MISSED'}" if target else ""))
    figures = {"train_seconds": round(t_ours, 2), "spm_seconds": round(t_spm, 2) if t_spm else None,
               "speedup_vs_spm": round(t_spm / t_ours, 2) if t_spm else None,
               "hf_bpe_only_seconds": round(t_hf_file, 2) if t_hf_file else None, "train_mb": round(mb, 2),
               "vocab_size": info["vocab_size"], "mix": info["mix_spec"], "pattern": cfg.pattern,
               **{k: round(v, 4) for k, v in quality.items()}, "measured_under_contention": True}
    figures["targets_met"] = {k: figures[k] <= t for k, t in TARGETS.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
