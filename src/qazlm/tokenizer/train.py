"""Train a byte-level BPE tokenizer (HF `tokenizers`) on a byte-weighted kk/ru/en mixture.

Design choices, so that transformers, llama.cpp (GGUF) and vLLM tokenize identically:
- pre-tokenizer = the Qwen2 split regex (llama.cpp implements it natively; digits are split one by one)
  followed by ByteLevel without a regex of its own; ByteLevel decoder; NO normalizer inside the tokenizer —
  training text is normalized upstream with `qazlm.text.normalize.normalize_text`, and so must be the text
  given to the model later.
- every special token (see special_tokens.py) is in the vocabulary from the start, `<|endoftext|>` is id 0.
- MorphBPE (`morph=True`): during training only, Kazakh words are cut into morphemes with a private-use
  marker that a Split pre-tokenizer removes, so no merge can cross a morpheme boundary; the saved
  tokenizer has the standard pre-tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError
from qazlm.io import TMP_PREFIX, atomic_dir, clean_temp, write_json
from qazlm.runs import LOCK_NAME, STAGE_RECORD, output_lock
from qazlm.tokenizer import special_tokens as st
from qazlm.tokenizer.mixture import DEFAULT_MIX, format_mix, iter_mixture, parse_mix, plan_mixture

PATTERNS = {
    # Qwen2/Qwen3 (llama.cpp: LLAMA_VOCAB_PRE_TYPE_QWEN2): single digits, optional leading non-letter.
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+",
    # Llama 3 (llama.cpp: LLAMA_VOCAB_PRE_TYPE_LLAMA3): digits in groups of up to 3.
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+",
}
MORPH_MARKER = "\ue000"  # private use: never in normalized text
BASE_VOCAB = len(st.SPECIAL_TOKENS) + 256  # special tokens + the 256 byte symbols: a BPE with no merge at all
# What a tokenizer folder may hold, so that retraining into it (which replaces the folder as a whole) never
# deletes anything else: the HF files, our run lock and stage record, the stage's comparison, sweep caches.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "training_info.json")
OWN_ENTRIES = frozenset(TOKENIZER_FILES) | {LOCK_NAME, STAGE_RECORD, "compare", "eval_dev.json", "eval_devtest.json"}


@dataclasses.dataclass
class TokenizerTrainConfig:
    """Options of one training (also the `[tokenizer]` recipe table)."""

    inputs: list[str] = dataclasses.field(default_factory=lambda: ["data/sample"])
    vocab_size: int = 64000        # recommended (docs/tokenizer_sweep.md); the tiny recipe uses less
    mix: str = DEFAULT_MIX
    pattern: str = "llama3"       # numbers in groups of up to 3 digits: fewer tokens, same in all languages
    min_frequency: int = 2
    max_bytes: int | None = None   # cap on the total training bytes (None: as much as the mixture allows)
    morph: bool = False
    balance: str = "upsample"      # or "downsample" (see qazlm.tokenizer.mixture)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """The one check of every training option, run however the config was built (CLI flags, recipe
        table, `--set`, sweep, code): a bad value is refused before any text is read."""
        check_fields(self, "tokenizer ", {"vocab_size": f"> {BASE_VOCAB}", "min_frequency": ">= 1",
                                          "max_bytes": ">= 1"})
        parse_mix(self.mix)
        if self.pattern not in PATTERNS:
            raise QazlmError(f"pattern {self.pattern!r}: unknown; choose one of {', '.join(PATTERNS)}")
        if self.balance not in ("upsample", "downsample"):
            raise QazlmError(f"balance {self.balance!r}: choose upsample or downsample")


def pre_tokenizer(pattern: str = "llama3", morph: bool = False):
    from tokenizers import Regex, pre_tokenizers

    steps = [pre_tokenizers.Split(Regex(PATTERNS[pattern]), behavior="isolated", invert=False),
             pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    if morph:
        steps.insert(0, pre_tokenizers.Split(MORPH_MARKER, behavior="removed"))
    return pre_tokenizers.Sequence(steps)


def new_tokenizer(pattern: str = "llama3", morph: bool = False):
    from tokenizers import Tokenizer, decoders, models

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(pattern, morph)
    tok.decoder = decoders.ByteLevel()
    return tok


def morph_transform():
    """(lang, text) -> text with MORPH_MARKER between the morphemes of Kazakh words."""
    import regex

    try:
        from qazlm.tokenizer.morphology import segment_word
    except ImportError as e:
        raise QazlmError("--morph needs qazlm.tokenizer.morphology.segment_word (not available)") from e
    word_re = regex.compile(r"\p{Cyrillic}+")
    cache: dict[str, str] = {}

    def split(m) -> str:
        w = m.group(0)
        if w not in cache:
            parts = segment_word(w)
            cache[w] = MORPH_MARKER.join(parts) if "".join(parts) == w else w
        return cache[w]

    def transform(lang: str, text: str) -> str:
        return word_re.sub(split, text) if lang == "kk" else text

    return transform


def train_tokenizer(cfg: TokenizerTrainConfig, out_dir: str | Path, *, counts: dict[str, int] | None = None,
                    show_progress: bool = True) -> dict:
    """Train and save an HF tokenizer folder with training_info.json; returns the info dict.

    The inputs are checked (one counting pass) before the output folder is touched; then the folder's run
    lock is taken, which also proves it writable, so a bad output path fails before training, not after.
    The folder is replaced as a whole when training succeeds (a kill leaves the old tokenizer or none)."""
    cfg.validate()
    t0 = time.time()
    mix = parse_mix(cfg.mix)
    plan = plan_mixture(cfg.inputs, mix, cfg.max_bytes, counts, cfg.balance)
    out = Path(out_dir)
    with output_lock(out, "tokenizer"):
        check_replaceable(out)
        tok, used = _train_bpe(cfg, plan, show_progress)
        info = {
            "format": "qazlm-tokenizer-v1", "config": dataclasses.asdict(cfg), "mix": mix,
            "mix_spec": format_mix(mix), "bytes_available": plan.available, "bytes_used": used,
            "vocab_size": tok.get_vocab_size(), "num_special_tokens": len(st.SPECIAL_TOKENS),
            "pattern": PATTERNS[cfg.pattern], "seconds": round(time.time() - t0, 2),
        }
        save_tokenizer_folder(tok, out, info)
    return info


def _train_bpe(cfg: TokenizerTrainConfig, plan, show_progress: bool):
    """(trained Tokenizer, bytes used per language). A training that learned no merge (too little text)
    is an error, not a byte-only tokenizer; one that stopped short of vocab_size gets a warning."""
    from tokenizers import pre_tokenizers, trainers

    tok = new_tokenizer(cfg.pattern, cfg.morph)
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=st.SPECIAL_TOKENS, show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    used: dict[str, int] = {}
    transform = morph_transform() if cfg.morph else None
    tok.train_from_iterator(iter_mixture(plan, transform, used), trainer, length=plan.expected_lines())
    if cfg.morph:
        tok.pre_tokenizer = pre_tokenizer(cfg.pattern, morph=False)
    size = tok.get_vocab_size()
    if size <= BASE_VOCAB:
        raise QazlmError(f"{', '.join(map(str, cfg.inputs))}: the training learned no merges from "
                         f"{sum(used.values()):,} bytes of text; give more text (or raise --max-bytes)")
    if size < cfg.vocab_size:
        print(f"qazlm: warning: learned only {size:,} of the {cfg.vocab_size:,} tokens asked for (too little "
              "text for this vocab size); give more text or lower --vocab-size", file=sys.stderr)
    return tok, used


def check_replaceable(out: Path) -> None:
    """Refuse an output folder that holds anything but a previous tokenizer's files: saving replaces the
    folder as a whole, so `-o` pointing at a project folder must never delete its contents."""
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_ENTRIES and not p.name.startswith(TMP_PREFIX))
    if foreign:
        raise QazlmError(f"{out}: holds files that are not a tokenizer's (e.g. {foreign[0]!r}); the output "
                         "folder is replaced as a whole, so choose a new or empty folder")


def _clean_leftovers(out: Path) -> None:
    """Remove the temp folders a killed save of `out` left beside it and temp files inside it (the caller
    holds `out`'s run lock, so no live writer uses them)."""
    clean_temp(out)
    names = re.compile(rf"^{re.escape(TMP_PREFIX)}(old-)?{re.escape(out.name)}\.[a-z0-9_]{{8}}$")
    for p in out.parent.glob(f"{TMP_PREFIX}*"):
        if names.match(p.name) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _keep_lock(out: Path, tmp: Path) -> None:
    """Hard-link the held run lock into the new folder before the swap, so the lock stays held on the
    folder's final path (a second run cannot slip in between the swap and the end of this run)."""
    lock = out / LOCK_NAME
    if lock.exists():
        try:
            os.link(lock, tmp / LOCK_NAME)
        except OSError:
            pass  # filesystems without hard links: the next run simply creates a new lock file


def save_tokenizer_folder(tok, out_dir: str | Path, info: dict) -> Path:
    """tokenizer.json + tokenizer_config.json (eos/bos/pad, chat template) + special_tokens_map.json +
    training_info.json, built in a temp folder and swapped into place: a kill never leaves half a tokenizer."""
    out = Path(out_dir)
    if out.is_dir():
        _clean_leftovers(out)
    with atomic_dir(out) as tmp:
        _write_tokenizer_files(tok, tmp, info)
        _keep_lock(out, tmp)
    return out


def _write_tokenizer_files(tok, out: Path, info: dict) -> None:
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=st.EOS, bos_token=st.EOS, pad_token=st.PAD, unk_token=None,
        additional_special_tokens=[t for t in st.SPECIAL_TOKENS if t not in (st.EOS, st.PAD)],
        model_max_length=1 << 20, clean_up_tokenization_spaces=False, chat_template=st.CHAT_TEMPLATE)
    hf.save_pretrained(str(out))
    (out / "chat_template.jinja").unlink(missing_ok=True)  # keep the template inside tokenizer_config.json
    cfg_path = out / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text(encoding="utf-8"))
    # Portable to transformers 4.x / vLLM too: the generic fast class name and the 4.x special-token key.
    tc.update(chat_template=st.CHAT_TEMPLATE, tokenizer_class="PreTrainedTokenizerFast",
              additional_special_tokens=[t for t in st.SPECIAL_TOKENS if t not in (st.EOS, st.PAD)])
    write_json(cfg_path, tc)
    smap = out / "special_tokens_map.json"
    if not smap.exists():
        write_json(smap, {"eos_token": st.EOS, "bos_token": st.EOS, "pad_token": st.PAD,
                          "additional_special_tokens": [t for t in st.SPECIAL_TOKENS if t not in (st.EOS, st.PAD)]})
    write_json(out / "training_info.json", {**info, "tokenizers_version": tokenizers.__version__})


def is_complete(folder: str | Path) -> bool:
    """A saved tokenizer folder (saves are atomic, so these files exist together or not at all)."""
    folder = Path(folder)
    return all((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json", "training_info.json"))


def truncate_tokenizer(tokenizer_json: str | dict, vocab_size: int):
    """The first `vocab_size` ids of a trained BPE (specials + bytes + earliest merges) as a Tokenizer.

    BPE merges are learned greedily from counts that do not depend on the target size, so this equals
    training with `vocab_size` directly (tested in tests/test_tokenizer_sweep.py).
    """
    from tokenizers import Tokenizer

    data = json.loads(tokenizer_json) if isinstance(tokenizer_json, str) else json.loads(json.dumps(tokenizer_json))
    vocab = data["model"]["vocab"]
    data["model"]["vocab"] = {t: i for t, i in vocab.items() if i < vocab_size}
    merges = []
    for m in data["model"]["merges"]:
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        if vocab.get(a + b, vocab_size) < vocab_size:
            merges.append(m)
    data["model"]["merges"] = merges
    return Tokenizer.from_str(json.dumps(data))
