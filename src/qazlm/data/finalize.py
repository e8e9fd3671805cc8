"""After datatrove: exact dedup, held-out split, tokenization, mixture -> token shards + summary.json.

One streaming pass over the deduplicated documents tokenizes each into a per-source temporary shard
(so the mixture can be computed in tokens); a second pass copies each source's documents into the
`train` split as many times as its mixture weight asks (whole epochs, plus a deterministic
hash-chosen fraction). Everything here is a pure function of the inputs, so reruns are identical.
tokens/meta.json is marked complete last, so a killed run's partial folder is never trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qazlm.data.config import DataConfig
from qazlm.data.report import AFTER_EXACT, TRAIN, VAL, build_report
from qazlm.data.shards import TokenDataset, TokenShardWriter, dtype_for_vocab, is_complete, mark_complete
from qazlm.errors import QazlmError
from qazlm.io import atomic_write, clean_temp, write_json

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


SUMMARY = Path("report") / "summary.json"
TOKENIZE_BATCH = 256  # documents per tokenizer call


@dataclass
class ShardFormat:
    """What every token split of a run shares: the tokenizer, its vocabulary, dtype and document separator."""

    tokenizer: str
    vocab: int
    dtype: str
    eos: int

    @classmethod
    def of(cls, path: str, tok) -> ShardFormat:
        return cls(str(path), len(tok), dtype_for_vocab(len(tok)), int(tok.eos_token_id))

    def writer(self, folder: Path, split: str, shard_tokens: int) -> TokenShardWriter:
        return TokenShardWriter(folder, split, self.dtype, shard_tokens, vocab_size=self.vocab, doc_sep_id=self.eos,
                                tokenizer=self.tokenizer)


@dataclass
class Tallies:
    """What finalize counts for the report: docs/chars/tokens per count point (report.AFTER_EXACT, TRAIN,
    VAL) -> language -> source, exact duplicates removed, and train document lengths per language."""

    steps: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(Counter))))
    exact_removed: int = 0
    lengths: dict = field(default_factory=lambda: defaultdict(lambda: np.zeros(len(LEN_BINS) - 1, dtype=np.int64)))


@dataclass
class Tokenized:
    """The result of the tokenize step: unique train tokens per source, val split stats, val raw texts."""

    source_tokens: dict[str, int]
    val_stats: dict[str, dict]
    val_texts: dict[str, list[str]]


def finalize(cfg: DataConfig, out: Path) -> dict:
    """The steps after datatrove, in order; returns the summary. A pure function of work/deduped: it is
    redone wholesale unless tokens/ is marked complete, which it does last."""
    if is_complete(out / "tokens") and (out / SUMMARY).exists():
        return json.loads((out / SUMMARY).read_text(encoding="utf-8"))
    t_start = time.perf_counter()
    tok = load_tokenizer(cfg)
    fmt = ShardFormat.of(cfg.tokenizer, tok)
    clear_outputs(out)
    tallies = Tallies()
    docs = dedup_and_split(cfg, out, tallies)
    tokenized = tokenize_into_shards(cfg, out, tok, fmt, docs, tallies)
    write_val_texts(out, cfg.langs, tokenized.val_texts)
    train_stats, mixture = mix_train_split(cfg, out, fmt, tokenized.source_tokens, tallies)
    summary = write_summary(cfg, out, fmt, tallies, tokenized, train_stats, mixture, time.perf_counter() - t_start)
    refuse_empty(out, summary)
    mark_complete(out / "tokens")
    return summary


def load_tokenizer(cfg: DataConfig):
    """The HF tokenizer of `cfg.tokenizer`; its eos token is the document separator, so it must have one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    if tok.eos_token_id is None:
        raise QazlmError(f"{cfg.tokenizer}: tokenizer has no eos_token (the document boundary); "
                         "train it with qazlm tokenizer train")
    return tok


def clear_outputs(out: Path) -> None:
    """Remove what an earlier (possibly killed) finalize wrote: per-source shards, tokens/, temp files."""
    shutil.rmtree(out / "work" / "by_source", ignore_errors=True)
    for old in (out / "tokens").glob("*"):
        old.unlink()
    for folder in (out / "val", out / "report", out / "rejects" / "exact_dedup"):
        clean_temp(folder)


def dedup_and_split(cfg: DataConfig, out: Path, tallies: Tallies) -> Iterator[dict]:
    """Deduplicated documents minus exact duplicates (written to rejects/exact_dedup), each tagged with its
    split (`_split`: val for a hash-chosen `val_fraction` of each language, at most `val_max_docs`)."""
    seen: set[bytes] = set()
    val_docs: Counter = Counter()
    with atomic_write(out / "rejects" / "exact_dedup" / "00000.jsonl.gz", "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as rejects:
        for d in tqdm(iter_deduped(out / "work" / "deduped"), desc="tokenize", unit="doc", mininterval=2):
            key = _exact_key(d["text"])
            if cfg.exact_dedup and key in seen:
                tallies.exact_removed += 1
                d["metadata"]["filter_reason"] = "exact_duplicate"
                rejects.write((json.dumps(d, ensure_ascii=False) + "\n").encode())
                continue
            if cfg.exact_dedup:
                seen.add(key)
            lang, src = d["metadata"]["lang"], d["metadata"]["source"]
            tallies.steps[AFTER_EXACT][lang][src].update(docs=1, chars=len(d["text"]))
            is_val = (_hash01(d["text"], f"val{cfg.seed}") < cfg.mixture.val_fraction
                      and val_docs[lang] < cfg.mixture.val_max_docs)
            val_docs[lang] += is_val
            d["_split"] = "val" if is_val else "train"
            yield d


def _batches(docs: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for d in docs:
        batch.append(d)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def tokenize_into_shards(cfg: DataConfig, out: Path, tok, fmt: ShardFormat, docs: Iterable[dict],
                         tallies: Tallies) -> Tokenized:
    """Val documents -> tokens/val_<lang> (every language gets one, maybe empty); train documents ->
    work/by_source/<source>, so the mixture can be computed in tokens and copied from there."""
    by_source: dict[str, TokenShardWriter] = {}
    val: dict[str, TokenShardWriter] = {}
    val_texts: dict[str, list[str]] = defaultdict(list)
    for batch in _batches(docs, TOKENIZE_BATCH):
        encoded = tok([d["text"] for d in batch], add_special_tokens=False)["input_ids"]
        for d, ids in zip(batch, encoded):
            lang, src = d["metadata"]["lang"], d["metadata"]["source"]
            if d["_split"] == "val":
                if lang not in val:
                    val[lang] = fmt.writer(out / "tokens", f"val_{lang}", cfg.shard_tokens)
                val[lang].add_document(ids)
                val_texts[lang].append(d["text"])
            else:
                if src not in by_source:
                    by_source[src] = fmt.writer(out / "work" / "by_source" / src, "train", cfg.shard_tokens)
                by_source[src].add_document(ids)
                tallies.lengths[lang] += np.histogram([len(ids) + 1], bins=LEN_BINS)[0]
            step = VAL if d["_split"] == "val" else TRAIN
            tallies.steps[step][lang][src].update(docs=1, chars=len(d["text"]), tokens=len(ids) + 1)
    source_tokens = {src: w.close()["tokens"] for src, w in by_source.items()}
    for src in by_source:
        mark_complete(out / "work" / "by_source" / src)
    val_stats = {lang: w.close() for lang, w in val.items()}
    for lang in cfg.langs:
        if lang not in val:
            fmt.writer(out / "tokens", f"val_{lang}", cfg.shard_tokens).close()
            val_stats[lang] = {"tokens": 0, "docs": 0, "shards": 0}
    return Tokenized(source_tokens, val_stats, val_texts)


def write_val_texts(out: Path, langs: list[str], texts: dict[str, list[str]]) -> None:
    """val/<lang>.jsonl.gz: the held-out documents as raw text, for bits-per-byte evaluation."""
    for lang in langs:
        with atomic_write(out / "val" / f"{lang}.jsonl.gz", "wb") as f, \
                gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            for text in texts.get(lang, []):
                gz.write((json.dumps({"text": text}, ensure_ascii=False) + "\n").encode())


def mix_train_split(cfg: DataConfig, out: Path, fmt: ShardFormat, source_tokens: dict[str, int],
                    tallies: Tallies) -> tuple[dict, list[dict]]:
    """tokens/train: each source's documents repeated for its mixture epochs (see compute_epochs)."""
    sizes = source_sizes(cfg, source_tokens, tallies)
    epochs, _ = compute_epochs(sizes, cfg.mixture.ratios, cfg.mixture.max_epochs, cfg.mixture.max_train_tokens)
    train = fmt.writer(out / "tokens", "train", cfg.shard_tokens)
    mixture = []
    for src in sorted(source_tokens):
        ds = TokenDataset(out / "work" / "by_source" / src, "train")
        written = copy_epochs(train, ds, epochs[src], src, cfg.seed)
        mixture.append({"source": src, "lang": sizes[src][0], "weight": sizes[src][2],
                        "unique_tokens": int(ds.num_tokens), "epochs": round(epochs[src], 4),
                        "train_tokens": written})
    train_stats = train.close()
    shutil.rmtree(out / "work" / "by_source", ignore_errors=True)
    return train_stats, mixture


def source_sizes(cfg: DataConfig, source_tokens: dict[str, int],
                 tallies: Tallies) -> dict[str, tuple[str, int, float]]:
    """source -> (language, unique train tokens, weight), the input of compute_epochs. The language is the
    one its documents were detected as (the configured hint when none reached train)."""
    weights = {s.name: s.weight for s in cfg.sources}
    hints = {s.name: s.lang for s in cfg.sources}
    detected = {src: lang for lang, by_src in tallies.steps[TRAIN].items() for src in by_src}
    return {src: (detected.get(src, hints.get(src, "?")), n, weights.get(src, 1.0))
            for src, n in source_tokens.items()}


def copy_epochs(train: TokenShardWriter, ds: TokenDataset, epochs: float, src: str, seed: int) -> int:
    """Append `epochs` passes over `ds` to `train`: whole epochs copy every document in order; the fractional
    part takes documents in a fixed pseudo-random order until its share of the tokens. Returns tokens written."""
    starts = ds.document_starts()
    ends = np.append(starts[1:], ds.num_tokens)
    whole = itertools.chain.from_iterable(itertools.repeat(range(len(starts)), int(epochs)))
    written = 0
    for k in itertools.chain(whole, _partial_epoch(starts, ends, epochs - int(epochs), src, seed)):
        train.add_document(ds.window(int(starts[k]), int(ends[k] - starts[k] - 1)))
        written += int(ends[k] - starts[k])
    return written


def _partial_epoch(starts: np.ndarray, ends: np.ndarray, frac: float, src: str, seed: int) -> list[int]:
    """Documents (in stream order) taken in a fixed pseudo-random order until `frac` of the source's tokens."""
    if frac <= 0 or not len(starts):
        return []
    order = sorted(range(len(starts)), key=lambda k: _hash01(f"{src}:{k}", f"mix{seed}"))
    budget, chosen = frac * int(ends[-1]), []
    for k in order:
        if budget <= 0:
            break
        chosen.append(k)
        budget -= int(ends[k] - starts[k])
    return sorted(chosen)


def write_summary(cfg: DataConfig, out: Path, fmt: ShardFormat, tallies: Tallies, tokenized: Tokenized,
                  train_stats: dict, mixture: list[dict], seconds: float) -> dict:
    """report/summary.json (+ report.md and plots via report.build_report): counts, mixture, shares."""
    total = max(1, train_stats["tokens"])
    lang_tokens: Counter = Counter()
    for m in mixture:
        lang_tokens[m["lang"]] += m["train_tokens"]
    summary = {
        "tokenizer": fmt.tokenizer, "vocab_size": fmt.vocab, "dtype": fmt.dtype, "doc_sep_id": fmt.eos,
        "train": train_stats, "val": tokenized.val_stats,
        "exact_duplicates_removed": tallies.exact_removed,
        "mixture": mixture,
        "languages": {lang: {"train_tokens": lang_tokens[lang], "share": round(lang_tokens[lang] / total, 4),
                             "target": cfg.mixture.ratios.get(lang, 0.0)} for lang in cfg.langs},
        "final_counts": {step: {lang: {src: dict(c) for src, c in by_src.items()} for lang, by_src in by_lang.items()}
                         for step, by_lang in tallies.steps.items()},
        "token_length_hist": {"bins": LEN_BINS[:-1], **{lang: h.tolist() for lang, h in tallies.lengths.items()}},
        "decontamination": decontam_sets(out),
    }
    summary["finalize_s"] = round(seconds, 2)
    summary = build_report(out, summary)
    write_json(out / SUMMARY, summary)
    return summary


def decontam_sets(out: Path) -> dict:
    """Which evaluation sets the training text was decontaminated against (items per set) and which were
    asked for but absent on this machine: a report must not claim a decontamination that did not happen."""
    from qazlm.data.decontam import read_meta

    meta = read_meta(out) or {}
    return {"used": meta.get("used", {}), "missing": meta.get("missing", [])}


def refuse_empty(out: Path, summary: dict) -> None:
    """A run that kept no training tokens is an error, not `train 0 tokens` and exit 0: say what was read,
    what removed it, and where to look."""
    if summary["train"]["tokens"] > 0:
        return
    reasons = sorted(((n, f"{step}/{why}") for step, r in summary["removed"].items() for why, n in r.items()),
                     reverse=True)
    why = ", ".join(f"{name} {n:,}" for n, name in reasons[:3]) or "none"
    hint = ("check the sources' paths and format" if not summary["documents_in"] else
            "check the sources, their languages, weights and mixture.ratios")
    raise QazlmError(f"{out}: no training tokens: {summary['documents_in']:,} documents read, "
                     f"{summary['documents_removed']:,} removed (top reasons: {why}); "
                     f"see {out / 'report' / 'report.md'} and {out / 'rejects'}; {hint}")
