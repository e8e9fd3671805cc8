"""After datatrove: exact dedup, held-out split, tokenization, mixture -> token shards + summary.json.

One streaming pass over the deduplicated documents tokenizes each into a per-source temporary shard
(so the mixture can be computed in tokens); a second pass copies each source's documents into the
`train` split as many times as its mixture weight asks (whole epochs, plus a deterministic
hash-chosen fraction). Everything here is a pure function of the inputs, so reruns are identical.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from qazlm.data.config import DataConfig
from qazlm.data.shards import TokenDataset, TokenShardWriter, dtype_for_vocab
from qazlm.errors import QazlmError
from qazlm.io import atomic_write, write_json

LEN_BINS = [0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 1 << 62]


def _hash01(text: str, salt: str) -> float:
    h = hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _exact_key(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=12).digest()


def iter_deduped(folder: Path):
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)


def compute_epochs(sizes: dict[str, tuple[str, int, float]], ratios: dict[str, float], max_epochs: float,
                   max_total: int = 0) -> tuple[dict[str, float], int]:
    """Epochs per source so that languages get `ratios` of the train tokens and no source exceeds max_epochs.

    sizes: source -> (lang, tokens, weight). Within a language, epochs ∝ weight. The total is the
    largest one the caps allow (or `max_total` if smaller). Languages absent from the data are skipped
    and the remaining ratios renormalised.
    """
    by_lang: dict[str, float] = defaultdict(float)
    for lang, tokens, weight in sizes.values():
        by_lang[lang] += tokens * weight
    present = {lang: r for lang, r in ratios.items() if by_lang.get(lang, 0) > 0 and r > 0}
    if not present:
        return {s: 0.0 for s in sizes}, 0
    norm = sum(present.values())
    present = {k: v / norm for k, v in present.items()}
    # tokens of language L = share_L * T; epochs_s = weight_s * share_L * T / sum(w*size over L)
    limits = []
    for src, (lang, tokens, weight) in sizes.items():
        if lang in present and tokens > 0 and weight > 0:
            limits.append(max_epochs * by_lang[lang] / (weight * present[lang]))
    total = min(limits)
    if max_total:
        total = min(total, max_total)
    epochs = {}
    for src, (lang, tokens, weight) in sizes.items():
        epochs[src] = weight * present[lang] * total / by_lang[lang] if lang in present else 0.0
    return epochs, int(total)


def finalize(cfg: DataConfig, out: Path) -> dict:
    import time

    from tqdm import tqdm
    from transformers import AutoTokenizer

    t_start = time.perf_counter()

    done = out / "report" / "summary.json"
    if done.exists() and (out / "tokens" / "meta.json").exists():
        return json.loads(done.read_text(encoding="utf-8"))
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    if tok.eos_token_id is None:
        raise QazlmError(f"{cfg.tokenizer}: tokenizer has no eos_token (the document boundary); "
                         "train it with qazlm tokenizer train")
    vocab = len(tok)
    dtype = dtype_for_vocab(vocab)
    eos = int(tok.eos_token_id)
    tmp = out / "work" / "by_source"
    shutil.rmtree(tmp, ignore_errors=True)
    tokens_dir = out / "tokens"
    for old in tokens_dir.glob("*"):
        old.unlink()
    source_lang = {s.name: s.lang for s in cfg.sources}
    writers: dict[str, TokenShardWriter] = {}
    val_writers: dict[str, TokenShardWriter] = {}
    val_raw: dict[str, list[str]] = defaultdict(list)
    seen: set[bytes] = set()
    counts = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: Counter())))  # step->lang->src->Counter
    exact_removed = 0
    hist = {"tokens": defaultdict(lambda: np.zeros(len(LEN_BINS) - 1, dtype=np.int64))}
    exact_rejects = out / "rejects" / "exact_dedup"
    exact_rejects.mkdir(parents=True, exist_ok=True)
    val_docs = Counter()
    with gzip.open(exact_rejects / "00000.jsonl.gz", "wt", encoding="utf-8") as rej:
        batch: list[dict] = []

        def flush():
            enc = tok([d["text"] for d in batch], add_special_tokens=False)["input_ids"]
            for d, ids in zip(batch, enc):
                lang, src = d["metadata"]["lang"], d["metadata"]["source"]
                target = d["_split"]
                if target == "val":
                    if lang not in val_writers:
                        val_writers[lang] = TokenShardWriter(tokens_dir, f"val_{lang}", dtype, cfg.shard_tokens,
                                                             vocab_size=vocab, doc_sep_id=eos,
                                                             tokenizer=str(cfg.tokenizer))
                    val_writers[lang].add_document(ids)
                    val_raw[lang].append(d["text"])
                else:
                    if src not in writers:
                        writers[src] = TokenShardWriter(tmp / src, "train", dtype, cfg.shard_tokens,
                                                        vocab_size=vocab, doc_sep_id=eos)
                    writers[src].add_document(ids)
                    hist["tokens"][lang] += np.histogram([len(ids) + 1], bins=LEN_BINS)[0]
                counts[f"6_{target}"][lang][src].update(docs=1, chars=len(d["text"]), tokens=len(ids) + 1)
            batch.clear()

        for d in tqdm(iter_deduped(out / "work" / "deduped"), desc="tokenize", unit="doc", mininterval=2):
            key = _exact_key(d["text"])
            lang, src = d["metadata"]["lang"], d["metadata"]["source"]
            if cfg.exact_dedup and key in seen:
                exact_removed += 1
                d["metadata"]["filter_reason"] = "exact_duplicate"
                rej.write(json.dumps(d, ensure_ascii=False) + "\n")
                continue
            if cfg.exact_dedup:
                seen.add(key)
            counts["5_exact"][lang][src].update(docs=1, chars=len(d["text"]))
            is_val = (_hash01(d["text"], f"val{cfg.seed}") < cfg.mixture.val_fraction
                      and val_docs[lang] < cfg.mixture.val_max_docs)
            val_docs[lang] += is_val
            d["_split"] = "val" if is_val else "train"
            batch.append(d)
            if len(batch) >= 256:
                flush()
        if batch:
            flush()
    src_tokens = {src: w.close()["tokens"] for src, w in writers.items()}
    val_stats = {lang: w.close() for lang, w in val_writers.items()}
    for lang in cfg.langs:  # every language gets a val split entry, even an empty one
        if lang not in val_writers:
            TokenShardWriter(tokens_dir, f"val_{lang}", dtype, vocab_size=vocab, doc_sep_id=eos,
                             tokenizer=str(cfg.tokenizer)).close()
            val_stats[lang] = {"tokens": 0, "docs": 0, "shards": 0}
        with atomic_write(out / "val" / f"{lang}.jsonl.gz", "wb") as f, \
                gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            for text in val_raw.get(lang, []):
                gz.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode())

    # mixture
    weights = {s.name: s.weight for s in cfg.sources}
    langs_of = {}
    for lang, by_src in counts["6_train"].items():
        for src in by_src:
            langs_of[src] = lang
    sizes = {src: (langs_of.get(src, source_lang.get(src, "?")), n, weights.get(src, 1.0))
             for src, n in src_tokens.items()}
    epochs, _ = compute_epochs(sizes, cfg.mixture.ratios, cfg.mixture.max_epochs, cfg.mixture.max_train_tokens)
    train = TokenShardWriter(tokens_dir, "train", dtype, cfg.shard_tokens, vocab_size=vocab, doc_sep_id=eos,
                             tokenizer=str(cfg.tokenizer))
    mixture = []
    for src in sorted(src_tokens):
        ep = epochs[src]
        full, frac = int(ep), ep - int(ep)
        ds = TokenDataset(tmp / src, "train")
        starts = ds.document_starts()
        ends = np.append(starts[1:], ds.num_tokens)
        written = 0
        for _ in range(full):
            for a, b in zip(starts, ends):
                train.add_document(ds.window(int(a), int(b - a - 1)))
                written += int(b - a)
        if frac > 0:  # a partial epoch: documents in a fixed pseudo-random order until frac of the tokens
            order = sorted(range(len(starts)), key=lambda k: _hash01(f"{src}:{k}", f"mix{cfg.seed}"))
            budget, chosen = frac * ds.num_tokens, []
            for k in order:
                if budget <= 0:
                    break
                chosen.append(k)
                budget -= int(ends[k] - starts[k])
            for k in sorted(chosen):
                train.add_document(ds.window(int(starts[k]), int(ends[k] - starts[k] - 1)))
                written += int(ends[k] - starts[k])
        mixture.append({"source": src, "lang": sizes[src][0], "weight": sizes[src][2], "unique_tokens": int(ds.num_tokens),
                        "epochs": round(ep, 4), "train_tokens": written})
    train_stats = train.close()
    shutil.rmtree(tmp, ignore_errors=True)
    total = max(1, train_stats["tokens"])
    lang_tokens = Counter()
    for m in mixture:
        lang_tokens[m["lang"]] += m["train_tokens"]
    summary = {
        "tokenizer": str(cfg.tokenizer), "vocab_size": vocab, "dtype": dtype, "doc_sep_id": eos,
        "train": train_stats, "val": val_stats,
        "exact_duplicates_removed": exact_removed,
        "mixture": mixture,
        "languages": {lang: {"train_tokens": lang_tokens[lang], "share": round(lang_tokens[lang] / total, 4),
                             "target": cfg.mixture.ratios.get(lang, 0.0)} for lang in cfg.langs},
        "final_counts": {step: {lang: {src: dict(c) for src, c in by_src.items()} for lang, by_src in by_lang.items()}
                         for step, by_lang in counts.items()},
        "token_length_hist": {"bins": LEN_BINS[:-1], **{lang: h.tolist() for lang, h in hist["tokens"].items()}},
    }
    from qazlm.data.report import build_report

    summary["finalize_s"] = round(time.perf_counter() - t_start, 2)
    summary = build_report(out, summary)
    write_json(done, summary)
    return summary
