"""Corpus pipeline benchmark (one run): whole pipeline on the sample corpus + KazSAnDRA, per-step speed,
MinHash recall/precision on planted near-duplicates, language-ID accuracy, token-window reader speed.

    python benchmarks/bench_data.py [--kazsandra-limit N] [--train-tokens-per-s R] [--out runs/bench-data]

Prints a table, then (last line) one JSON object with the figures and whether each target is met.
Baselines, measured in the same run: exact-hash dedup (recall on near-duplicates), py3langid with all
its 97 languages (accuracy), training consumption of the tiny model (reader speed ratio).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def train_tokenizer(out: Path) -> Path:
    """A 4,000-token byte-level BPE on sample text (seconds), unless runs/tiny/tokenizer exists."""
    existing = ROOT / "runs" / "tiny" / "tokenizer"
    if (existing / "tokenizer.json").exists():
        return existing
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines = []
    for f in sorted((ROOT / "data" / "sample").glob("*/*.txt.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            lines += [ln.strip() for ln in itertools.islice(fh, 3000) if ln.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>", "<|pad|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>").save_pretrained(out)
    return out


def bench_pipeline(out: Path, tok: Path, kazsandra_limit: int) -> dict:
    from qazlm.config import load_config
    from qazlm.data.config import DataConfig, SourceConfig
    from qazlm.data.prepare import prepare
    from qazlm.paths import shared_dir

    cfg = load_config(DataConfig, ROOT / "recipes" / "data" / "sample.toml")
    for s in cfg.sources:
        s.paths = [str(ROOT / p) for p in s.paths]
    kz = shared_dir() / "data" / "corpus" / "kk" / "kazsandra_reviews.txt.gz"
    if kz.exists():
        cfg.sources.append(SourceConfig(name="kazsandra", paths=[str(kz)], lang="kk", limit=kazsandra_limit))
    cfg.out_dir, cfg.tokenizer = str(out), str(tok)
    t0 = time.perf_counter()
    s = prepare(cfg, force=True)
    wall = time.perf_counter() - t0
    per_step = {}
    # time per step: datatrove's time_stats summed over tasks (seconds of one core)
    for stage in ("filter", "dedup"):
        merged: dict[str, list[float]] = {}
        for path in sorted((out / "logs" / stage / "stats").glob("*.json")):
            for st in json.loads(path.read_text()):
                ts = st.get("time_stats")
                if isinstance(ts, dict) and st["stats"].get("total"):
                    n = st["stats"]["total"]
                    n = n["total"] if isinstance(n, dict) else n
                    acc = merged.setdefault(st["name"].split(": ", 1)[-1], [0.0, 0])
                    acc[0] += ts["total"]
                    acc[1] += n
        # MinHash stage 1 (and stage 4's writer) time their whole loop, which also runs every lazy
        # upstream step: subtract the steps timed on their own to get the step's own time
        own = {k: v for k, v in merged.items() if "MinHash stage 1" not in k}
        for name, (sec, n) in merged.items():
            if "MinHash stage 1" in name:
                sec = max(1e-9, sec - sum(v[0] for v in own.values()))
                name += " (incl. reading)"
            per_step[name] = round(n / max(sec, 1e-9))
    per_step["tokenize+mix (finalize)"] = round(s["documents_kept"] / max(1e-9, s.get("finalize_s", 0)))
    return {"wall_s": round(wall, 1), "documents_in": s["documents_in"], "documents_kept": s["documents_kept"],
            "train_tokens": s["train"]["tokens"], "invariant_ok": s["invariant_ok"],
            "docs_per_s_per_core": per_step, "kazsandra": kz.exists(),
            "overall_docs_per_s_per_core": round(s["documents_in"] / wall / min(2, os.cpu_count() or 1))}


def bench_reader_speed() -> int:
    """CorpusReader alone (decode + reject tagging), documents/s on one core."""
    from qazlm.data.readers import CorpusReader
    from qazlm.data.stage import sample_sources
    import dataclasses

    reader = CorpusReader([dataclasses.asdict(s) for s in sample_sources()])
    t0 = time.perf_counter()
    n = sum(1 for _ in reader.run())
    return round(n / (time.perf_counter() - t0))


def jaccard(a: set, b: set) -> float:
    return len(a & b) / max(1, len(a | b))


def bench_minhash(work: Path, n_base: int = 1500, n_dups: int = 300, seed: int = 0) -> dict:
    """Plant near-duplicates (random word edits, 5-gram Jaccard ≥ 0.8) among real paragraphs; run datatrove
    MinHash with the pipeline's settings; recall = planted copies removed, precision = removed docs that
    really are copies. Baseline: exact-hash dedup on the same set."""
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)
    from datatrove.utils.hashing import HashConfig

    from qazlm.data.config import DataConfig
    from qazlm.data.wordtok import RegexWordTokenizer, words

    rng = random.Random(seed)
    paras = []
    for lang, name in (("ru", "dostoevsky_idiot"), ("en", "robinson_crusoe"), ("kk", "apertium_wiki_texts")):
        with gzip.open(ROOT / "data" / "sample" / lang / f"{name}.txt.gz", "rt", encoding="utf-8") as f:
            buf = []
            for line in f:
                if line.strip():
                    buf.append(line.strip())
                elif buf:
                    p = " ".join(buf)
                    buf = []
                    if 60 <= len(p.split()) <= 400:
                        paras.append(p)
    uniq = list(dict.fromkeys(paras))
    rng.shuffle(uniq)
    base = uniq[:n_base]

    def shingles(text):
        w = [x.lower() for x in words(text)]
        return {" ".join(w[i:i + 5]) for i in range(len(w) - 4)}

    docs, origin = list(base), {}  # origin: index of a planted copy -> index of its original
    tries = 0
    while len(origin) < n_dups and tries < n_dups * 20:
        tries += 1
        src = rng.randrange(len(base))
        ws = base[src].split()
        k = max(1, int(len(ws) * rng.uniform(0.005, 0.02)))  # edit ~0.5-2% of the words
        for _ in range(k):
            i = rng.randrange(len(ws))
            op = rng.random()
            if op < 0.4:
                ws[i] = ws[i][::-1]
            elif op < 0.7:
                del ws[i]
            else:
                ws.insert(i, rng.choice(["и", "the", "және", "очень", "very"]))
        copy = " ".join(ws)
        if copy != base[src] and jaccard(shingles(copy), shingles(base[src])) >= 0.8:
            origin[len(docs)] = src
            docs.append(copy)
    order = list(range(len(docs)))
    rng.shuffle(order)  # copies are not always after their original
    docs = [docs[i] for i in order]
    pos = {old: new for new, old in enumerate(order)}
    clusters: dict[int, set[int]] = {}  # position of an original -> positions of the whole cluster
    for old_copy, old_src in origin.items():
        clusters.setdefault(pos[old_src], {pos[old_src]}).add(pos[old_copy])
    d = DataConfig()
    mh = MinhashConfig(n_grams=d.minhash_ngram, num_buckets=d.minhash_buckets,
                       hashes_per_bucket=d.minhash_hashes_per_bucket, hash_config=HashConfig(64, "sha1"))
    shutil.rmtree(work, ignore_errors=True)

    def reader(data=None, rank=0, world_size=1):
        for i, t in enumerate(docs):
            yield Document(text=t, id=str(i))

    t0 = time.perf_counter()
    LocalPipelineExecutor([reader, MinhashDedupSignature(str(work / "sigs"), config=mh, language=RegexWordTokenizer())],
                          tasks=1, workers=1, logging_dir=str(work / "l1")).run()
    LocalPipelineExecutor([MinhashDedupBuckets(str(work / "sigs"), str(work / "buckets"), config=mh)],
                          tasks=mh.num_buckets, workers=1, logging_dir=str(work / "l2")).run()
    LocalPipelineExecutor([MinhashDedupCluster(str(work / "buckets"), str(work / "remove"), config=mh)],
                          tasks=1, workers=1, logging_dir=str(work / "l3")).run()
    sec = time.perf_counter() - t0
    import numpy as np

    rm_file = work / "remove" / "000000.remove"
    removed = set(np.fromfile(rm_file, dtype="<u4").tolist()) if rm_file.exists() else set()
    # a cluster of m+1 texts must lose m of them; anything removed outside the clusters is a false positive
    members = set().union(*clusters.values()) if clusters else set()
    hits = sum(min(len(c & removed), len(c) - 1) for c in clusters.values())
    recall = hits / max(1, sum(len(c) - 1 for c in clusters.values()))
    precision = len(removed & members) / max(1, len(removed))
    exact = {}
    exact_hits = 0
    for i, t in enumerate(docs):  # the baseline: drop byte-identical repeats
        if t in exact:
            exact_hits += i in members
        exact.setdefault(t, i)
    exact_recall = exact_hits / max(1, sum(len(c) - 1 for c in clusters.values()))
    return {"docs": len(docs), "planted": len(origin), "min_jaccard": 0.8, "recall": round(recall, 4),
            "precision": round(precision, 4), "exact_hash_recall": exact_recall, "seconds": round(sec, 1)}


def bench_langid() -> dict:
    import csv

    import py3langid

    from qazlm.text.langid import detect_language
    from qazlm.paths import FLORES_CODES, flores_path, shared_dir

    out = {}
    total = ok = ok_base = 0
    for lang in ("kk", "ru", "en"):
        texts = []
        with gzip.open(flores_path("devtest", lang), "rt", encoding="utf-8") as f:
            texts += [ln.strip() for ln in f if ln.strip()]
        n_flores = len(texts)
        sib = shared_dir() / "data" / "eval" / "sib200" / FLORES_CODES[lang]
        for split in ("train", "dev", "test"):
            p = sib / f"{split}.tsv"
            if p.exists():
                with open(p, encoding="utf-8") as f:
                    texts += [r["text"] for r in csv.DictReader(f, delimiter="\t")]
        t0 = time.perf_counter()
        preds = [detect_language(t)[0] for t in texts]
        sec = time.perf_counter() - t0
        base = [py3langid.classify(t)[0] for t in texts]
        flores_acc = sum(p == lang for p in preds[:n_flores]) / n_flores
        out[lang] = {"flores_devtest": round(flores_acc, 4), "flores+sib": round(sum(p == lang for p in preds) / len(preds), 4),
                     "py3langid_all_langs": round(sum(b == lang for b in base) / len(base), 4), "n": len(texts),
                     "docs_per_s": round(len(texts) / sec)}
        total += n_flores
        ok += sum(p == lang for p in preds[:n_flores])
        ok_base += sum(b == lang for b in base[:n_flores])
    out["flores_devtest_accuracy"] = round(ok / total, 4)
    out["py3langid_flores_devtest_accuracy"] = round(ok_base / total, 4)
    return out


def measure_tiny_training_rate() -> float | None:
    """Tokens/s of a training step of the tiny model on this CPU (None if the model is not available)."""
    try:
        import torch

        from qazlm.model.presets import preset
        from qazlm.model.transformer import Transformer
    except ImportError:
        return None
    torch.manual_seed(0)
    cfg = preset("tiny", 4000)
    model = Transformer(cfg)
    model.init_weights()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seq = min(256, cfg.max_seq_len)
    x = torch.randint(0, 4000, (8, seq + 1))
    for i in range(4):
        if i == 1:
            t0 = time.perf_counter()
        loss = model(x[:, :-1], targets=x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
    return 3 * 8 * seq / (time.perf_counter() - t0)


def bench_window_reader(tokens_dir: Path, train_rate: float) -> dict:
    import numpy as np

    from qazlm.data.shards import TokenDataset

    ds = TokenDataset(tokens_dir, "train")
    rng = np.random.default_rng(0)
    batch, length = 16, 257
    ds.random_windows(rng, batch, length)
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < 2.0:
        ds.random_windows(rng, batch, length)
        n += batch * length
    rate = n / (time.perf_counter() - t0)
    return {"reader_tokens_per_s": round(rate), "tiny_train_tokens_per_s": round(train_rate),
            "ratio": round(rate / train_rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench-data"))
    ap.add_argument("--kazsandra-limit", type=int, default=-1, help="reviews to read (-1 = all 108k)")
    ap.add_argument("--train-tokens-per-s", type=float, default=0.0,
                    help="tiny model training rate; 0 = measure it (falls back to 20,000 if the model is absent)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(out / "tokenizer")
    pipe = bench_pipeline(out / "data", tok, args.kazsandra_limit)
    reader_dps = bench_reader_speed()
    mh = bench_minhash(out / "minhash")
    lid = bench_langid()
    rate = args.train_tokens_per_s or measure_tiny_training_rate()
    rate_src = "given" if args.train_tokens_per_s else ("measured" if rate else "assumed")
    rate = rate or 20_000.0
    rd = bench_window_reader(out / "data" / "tokens", rate)
    rd["train_rate_source"] = rate_src
    targets = {"pipeline_minutes_le_5": pipe["wall_s"] <= 300, "minhash_recall_ge_0.9": mh["recall"] >= 0.9,
               "minhash_precision_ge_0.99": mh["precision"] >= 0.99,
               "langid_flores_ge_0.99": lid["flores_devtest_accuracy"] >= 0.99, "reader_ge_50x": rd["ratio"] >= 50,
               "invariant": pipe["invariant_ok"]}
    print("\n== qazlm data benchmark (2 shared CPU cores; timings measured under contention) ==")
    print(f"{'pipeline wall time (sample + KazSAnDRA)':48s} {pipe['wall_s']:>10} s   docs in {pipe['documents_in']:,}, "
          f"kept {pipe['documents_kept']:,}, train tokens {pipe['train_tokens']:,}")
    print(f"{'reader alone (docs/s, 1 core)':48s} {reader_dps:>10,}")
    for name, v in pipe["docs_per_s_per_core"].items():
        print(f"{'  step: ' + name:48s} {v:>10,} docs/s/core")
    print(f"{'MinHash recall / precision (planted J≥0.8)':48s} {mh['recall']:>10} / {mh['precision']}  "
          f"({mh['planted']} copies in {mh['docs']} docs; exact-hash recall {mh['exact_hash_recall']})")
    print(f"{'langid FLORES+ devtest accuracy (kk/ru/en)':48s} {lid['flores_devtest_accuracy']:>10}  "
          f"(plain py3langid: {lid['py3langid_flores_devtest_accuracy']})")
    for lang in ("kk", "ru", "en"):
        print(f"{'  ' + lang + ' FLORES / FLORES+SIB / plain py3langid':48s} {lid[lang]['flores_devtest']:>10} / "
              f"{lid[lang]['flores+sib']} / {lid[lang]['py3langid_all_langs']}")
    print(f"{'window reader vs tiny training (tokens/s)':48s} {rd['reader_tokens_per_s']:>10,} vs "
          f"{rd['tiny_train_tokens_per_s']:,} ({rate_src}) = {rd['ratio']}x")
    print("targets:", targets)
    print(json.dumps({"pipeline": pipe, "reader_docs_per_s": reader_dps, "minhash": mh, "langid": lid,
                      "window_reader": rd, "targets": targets}, ensure_ascii=False))


if __name__ == "__main__":
    main()
