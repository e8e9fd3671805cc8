"""`qazlm data prepare` configuration: sources, per-language thresholds, mixture, executor.

Loaded from a recipe TOML with qazlm.config (unknown keys are errors). See recipes/data/*.toml.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from qazlm.config import check_fields, check_value
from qazlm.data.decontam import KNOWN_SETS
from qazlm.errors import QazlmError

FORMATS = ("auto", "txt", "txt_blank", "jsonl", "parquet", "csv", "hf")


@dataclass
class SourceConfig:
    """One input: local files (`paths`: files, folders, globs) or a Hugging Face dataset (`hf`)."""

    name: str = ""
    paths: list[str] = field(default_factory=list)
    format: str = "auto"        # auto (by extension) | txt (line=doc) | txt_blank (blank-line docs) | jsonl | parquet | csv | hf
    lang: str = ""              # language hint (kk/ru/en); documents detected as another language are dropped
    weight: float = 1.0         # relative weight inside its language in the mixture
    text_key: str = "text"
    id_key: str = "id"
    hf: str = ""                # HF dataset name, e.g. "HuggingFaceFW/fineweb-2" (or "parquet" with paths = data_files)
    hf_config: str = ""         # e.g. "kaz_Cyrl"
    hf_split: str = "train"
    limit: int = -1             # max records read from each file of this source (HF: per task); -1 = all

    def __post_init__(self):
        where = f"data config: sources[{self.name or 'unnamed'}]."
        check_fields(self, where, {"weight": ">= 0", "limit": ">= -1"})
        if self.limit == 0:
            raise QazlmError(f"{where}limit = 0 reads nothing: use -1 (all records) or a positive number")
        if self.format not in FORMATS:
            raise QazlmError(f"{where}format = {self.format!r}: unknown; use one of {', '.join(FORMATS)}")


@dataclass
class QualityConfig:
    """Thresholds of one language (Gopher quality/repetition + FineWeb line filters + stopwords)."""

    min_doc_words: int = 3
    max_doc_words: int = 100_000
    min_avg_word_length: float = 2.0
    max_avg_word_length: float = 14.0
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9   # Gopher; kk/ru prose starts dialogue lines with a dash
    max_non_alpha_words_ratio: float = 0.7   # Gopher: ≥70% of words must contain a letter (numbers in short docs)
    min_words_repetition: int = 50       # Gopher repetition rules only for docs this long (n-gram stats of a sentence are noise)
    dup_line_frac: float = 0.3
    dup_line_char_frac: float = 0.2
    top_2gram_frac: float = 0.2
    max_short_line_ratio: float = 0.67    # FineWeb: share of lines shorter than 30 chars (only multi-line docs)
    max_char_dup_ratio: float = 0.1       # FineWeb: chars in duplicated lines
    min_stopword_ratio: float = 0.0       # share of words that are stopwords (kk list bundled)
    min_stopword_words: int = 20          # stopword rule only applies to docs with at least this many words

    def __post_init__(self):
        where = "data config: quality."
        share = ">= 0, <= 1"
        check_fields(self, where, {
            "min_doc_words": ">= 0", "max_doc_words": ">= 1", "min_avg_word_length": ">= 0",
            "max_avg_word_length": "> 0", "max_symbol_word_ratio": ">= 0", "max_bullet_lines_ratio": share,
            "max_non_alpha_words_ratio": share, "min_words_repetition": ">= 0", "dup_line_frac": share,
            "dup_line_char_frac": share, "top_2gram_frac": share, "max_short_line_ratio": share,
            "max_char_dup_ratio": share, "min_stopword_ratio": share, "min_stopword_words": ">= 0"})
        if self.min_doc_words > self.max_doc_words:
            raise QazlmError(f"{where}min_doc_words = {self.min_doc_words} exceeds max_doc_words = "
                             f"{self.max_doc_words}; every document would be removed")
        if self.min_avg_word_length > self.max_avg_word_length:
            raise QazlmError(f"{where}min_avg_word_length = {self.min_avg_word_length} exceeds max_avg_word_length "
                             f"= {self.max_avg_word_length}; every document would be removed")


@dataclass
class MixtureConfig:
    """Target share of training tokens per language; each source is repeated at most max_epochs times."""

    ratios: dict[str, float] = field(default_factory=lambda: {"kk": 0.4, "ru": 0.3, "en": 0.3})
    max_epochs: float = 4.0
    max_train_tokens: int = 0   # 0 = as many as the caps allow
    val_fraction: float = 0.02  # of documents per language, chosen by hash of the text (deterministic)
    val_max_docs: int = 2000

    def __post_init__(self):
        check_fields(self, "data config: mixture.", {"max_epochs": "> 0", "max_train_tokens": ">= 0",
                                                     "val_fraction": ">= 0, < 1", "val_max_docs": ">= 0"})
        for lang, ratio in self.ratios.items():
            check_value(f"data config: mixture.ratios.{lang}", ratio, ">= 0")
        if not any(self.ratios.values()):
            raise QazlmError("data config: mixture.ratios gives no language a share; set at least one ratio > 0, "
                             "e.g. ratios = { kk = 0.4, ru = 0.3, en = 0.3 }")


@dataclass
class ExecutorConfig:
    """Where datatrove runs: local processes, a Slurm cluster or Ray."""

    kind: str = "local"         # local | slurm | ray
    tasks: int = 2
    workers: int = 2
    partition: str = ""         # slurm
    time: str = "24:00:00"      # slurm
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    qos: str = "normal"
    venv_path: str = ""
    sbatch_args: dict[str, str] = field(default_factory=dict)
    ray_address: str = ""       # ray: "" = start/attach locally

    def __post_init__(self):
        if self.kind not in ("local", "slurm", "ray"):
            raise QazlmError(f"data config: executor.kind = {self.kind!r}: use local, slurm or ray")
        check_fields(self, "data config: executor.", {"tasks": ">= 1", "workers": ">= 1", "cpus_per_task": ">= 1",
                                                      "mem_per_cpu_gb": ">= 1"})


@dataclass
class DataConfig:
    out_dir: str = "runs/data"
    tokenizer: str = ""             # HF tokenizer folder (the pipeline stage defaults to <run>/tokenizer)
    sources: list[SourceConfig] = field(default_factory=list)
    langs: list[str] = field(default_factory=lambda: ["kk", "ru", "en"])
    quality: dict[str, QualityConfig] = field(default_factory=dict)   # per language; missing -> defaults
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    max_doc_chars: int = 1_000_000  # longer documents are rejected as "gigantic"
    min_doc_chars: int = 1
    lang_kk_ratio: float = 0.08     # share of Cyrillic words with Kazakh-only letters that makes a text Kazakh
    boilerplate_min_docs: int = 5   # a line seen in this many documents of a source is boilerplate
    pii: bool = True
    exact_dedup: bool = True        # in-memory set of 12-byte hashes in the final step; turn off beyond ~100M docs
    decontaminate: list[str] = field(default_factory=lambda: list(KNOWN_SETS))  # every evaluation set
    decontam_ngram: int = 13
    minhash_ngram: int = 5
    minhash_buckets: int = 14
    minhash_hashes_per_bucket: int = 8
    shard_tokens: int = 50_000_000
    seed: int = 1337

    def __post_init__(self):
        check_fields(self, "data config: ", {
            "max_doc_chars": ">= 1", "min_doc_chars": ">= 0", "lang_kk_ratio": ">= 0, <= 1",
            "boilerplate_min_docs": ">= 1", "decontam_ngram": ">= 1", "minhash_ngram": ">= 1",
            "minhash_buckets": ">= 1", "minhash_hashes_per_bucket": ">= 1", "shard_tokens": ">= 1",
            "seed": f">= 0, <= {2**32 - 1}"})

    def validate(self) -> None:
        """Checks across fields and tables (each table checks its own numbers when it is built)."""
        if not self.sources:
            raise QazlmError("data config: no [[sources]]; add at least one source (see recipes/data/)")
        names = [s.name for s in self.sources]
        for i, s in enumerate(self.sources):
            where = f"data config: sources[{i}] ({s.name or 'unnamed'})"
            if not s.name:
                raise QazlmError(f"{where}: missing name; give every source a short unique name")
            if not s.paths and not s.hf:
                raise QazlmError(f"{where}: needs `paths` (local files) or `hf` (dataset name)")
            if s.lang and s.lang not in self.langs:
                raise QazlmError(f"{where}: lang {s.lang!r} not in langs {self.langs}")
        if len(set(names)) != len(names):
            raise QazlmError("data config: source names must be unique")
        bad = set(self.mixture.ratios) - set(self.langs)
        if bad:
            raise QazlmError(f"data config: mixture.ratios has languages {sorted(bad)} not in langs {self.langs}")
        if self.executor.kind == "slurm" and not self.executor.partition:
            raise QazlmError("data config: executor.kind = 'slurm' needs executor.partition")
        if self.min_doc_chars > self.max_doc_chars:
            raise QazlmError(f"data config: min_doc_chars = {self.min_doc_chars} exceeds max_doc_chars = "
                             f"{self.max_doc_chars}; every document would be removed")

    def quality_for(self, lang: str) -> QualityConfig:
        return self.quality.get(lang) or DEFAULT_QUALITY.get(lang, QualityConfig())


# Why these numbers: Gopher's defaults assume English web pages of ≥50 words; our corpora are often one
# sentence per document, so min words is low. Kazakh is agglutinative: average word length is ~7-8
# letters (vs ~4.7 en), so its max average word length is higher. Stopword ratio is only applied to
# longer Kazakh documents, where a real text almost always has ≥3% function words.
DEFAULT_QUALITY = {
    "kk": QualityConfig(max_avg_word_length=16.0, min_stopword_ratio=0.03, max_bullet_lines_ratio=1.0),
    "ru": QualityConfig(max_avg_word_length=15.0, max_bullet_lines_ratio=1.0),
    "en": QualityConfig(max_avg_word_length=12.0),
}


def as_dict(cfg: DataConfig) -> dict:
    return dataclasses.asdict(cfg)
