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
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.io import write_json
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

    def validate(self) -> None:
        parse_mix(self.mix)
        if self.pattern not in PATTERNS:
            raise QazlmError(f"pattern {self.pattern!r}: unknown; choose one of {', '.join(PATTERNS)}")
        low = len(st.SPECIAL_TOKENS) + 256
        if self.vocab_size <= low:
            raise QazlmError(f"vocab_size {self.vocab_size}: must exceed {low} (special tokens + 256 bytes)")
        if self.balance not in ("upsample", "downsample"):
            raise QazlmError(f"balance {self.balance!r}: choose upsample or downsample")
        if self.min_frequency < 1:
            raise QazlmError(f"min_frequency {self.min_frequency}: must be >= 1")


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
    """Train and save an HF tokenizer folder with training_info.json; returns the info dict."""
    from tokenizers import pre_tokenizers, trainers

    cfg.validate()
    t0 = time.time()
    mix = parse_mix(cfg.mix)
    plan = plan_mixture(cfg.inputs, mix, cfg.max_bytes, counts, cfg.balance)
    tok = new_tokenizer(cfg.pattern, cfg.morph)
    trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                  special_tokens=st.SPECIAL_TOKENS, show_progress=show_progress,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    used: dict[str, int] = {}
    transform = morph_transform() if cfg.morph else None
    tok.train_from_iterator(iter_mixture(plan, transform, used), trainer, length=plan.expected_lines())
    if cfg.morph:
        tok.pre_tokenizer = pre_tokenizer(cfg.pattern, morph=False)
    info = {
        "format": "qazlm-tokenizer-v1",
        "config": dataclasses.asdict(cfg),
        "mix": mix,
        "mix_spec": format_mix(mix),
        "bytes_available": plan.available,
        "bytes_used": used,
        "vocab_size": tok.get_vocab_size(),
        "num_special_tokens": len(st.SPECIAL_TOKENS),
        "pattern": PATTERNS[cfg.pattern],
        "seconds": round(time.time() - t0, 2),
    }
    save_tokenizer_folder(tok, out_dir, info)
    return info


def save_tokenizer_folder(tok, out_dir: str | Path, info: dict) -> Path:
    """tokenizer.json + tokenizer_config.json (eos/bos/pad, chat template) + special_tokens_map.json."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    return out


def is_complete(folder: str | Path) -> bool:
    folder = Path(folder)
    return all((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "training_info.json"))


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
