"""Load any tokenizer behind one small interface so `compare` and the sweep measure them identically.

Supported specs (`load_tokenizer(spec)`):
- an HF folder (tokenizer.json, or vocab.json + merges.txt) or a `tokenizer.json` file — `tokenizers`;
- a tiktoken ranks file (`*.tiktoken`) with its split pattern from a `pattern.json` beside it, or from
  tiktoken's own definition when the file is a known OpenAI encoding (cl100k_base, o200k_base, ...);
- a Mistral Tekken json (`tekken*.json`: its own pattern and base64 ranks) — loaded with tiktoken;
- a SentencePiece `.model`;
- a Hugging Face hub id (`org/name`), fetched with huggingface_hub (cache only when HF_HUB_OFFLINE=1).
A folder is inspected in that order. Special-token strings inside the text are always encoded as plain
text (no special parsing, no BOS/EOS added), so every tokenizer is charged for exactly the same bytes.
"""

from __future__ import annotations

import base64
import json
import os
import re
from abc import ABC, abstractmethod
from pathlib import Path

from qazlm.errors import QazlmError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
             "tokenizer.model", "*.tiktoken", "pattern.json", "tekken*.json"]
BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class LoadedTokenizer(ABC):
    """A tokenizer under comparison: `.name`, `.vocab_size`, `.encode_batch`, `.decode` (+ helpers)."""

    kind = "?"

    def __init__(self, name: str, vocab_size: int, source: str, unknown_ids: frozenset[int] = frozenset()):
        self.name = name
        self.vocab_size = vocab_size
        self.source = source
        self.unknown_ids = unknown_ids  # <unk> and byte-fallback ids (empty for byte-level BPE)

    @abstractmethod
    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text; special-token strings count as plain text, nothing is added."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of ids (specials kept), for the round-trip check."""

    @abstractmethod
    def _char_ends(self, texts: list[str]) -> list[list[int]]:
        """Per text, the character offset where each token ends (a split character counts as its end)."""

    def word_boundaries(self, words: list[str]) -> list[set[int]]:
        """Word-internal token boundaries (character offsets 1..len-1) of each word encoded as ' ' + word."""
        out = []
        for word, ends in zip(words, self._char_ends([" " + w for w in words])):
            out.append({e - 1 for e in ends if 1 < e < len(word) + 1})
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, source={self.source!r})"


def _byte_to_char(text: str) -> list[int]:
    """For each byte offset 0..len(bytes), the character offset, rounding up inside a multibyte char."""
    table = [0]
    for i, ch in enumerate(text):
        n = len(ch.encode("utf-8"))
        table.extend([i + 1] * n)
    return table


class HFTokenizer(LoadedTokenizer):
    """HF `tokenizers` (tokenizer.json): fast batch encoding in Rust, offsets for token boundaries."""

    kind = "hf"

    def __init__(self, tok, name: str, source: str):
        tok.encode_special_tokens = True  # `<|endoftext|>` in the text is text, not a control token
        unknown: set[int] = set()
        unk = getattr(tok.model, "unk_token", None)
        if unk is not None and tok.token_to_id(unk) is not None:
            unknown.add(tok.token_to_id(unk))
        if getattr(tok.model, "byte_fallback", False):
            unknown |= {i for t, i in tok.get_vocab(with_added_tokens=False).items() if BYTE_PIECE.match(t)}
        super().__init__(name, tok.get_vocab_size(with_added_tokens=True), source, frozenset(unknown))
        self.tok = tok

    def encode_batch(self, texts):
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)  # _fast skips offsets
        return [e.ids for e in encode(texts, add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)

    def _char_ends(self, texts):
        return [[end for _, end in e.offsets] for e in self.tok.encode_batch(texts, add_special_tokens=False)]


class TiktokenTokenizer(LoadedTokenizer):
    """tiktoken (`encode_ordinary_batch`: never parses special tokens)."""

    kind = "tiktoken"

    def __init__(self, enc, name: str, source: str, vocab_size: int | None = None):
        super().__init__(name, vocab_size or enc.n_vocab, source)
        self.enc = enc

    def encode_batch(self, texts):
        return self.enc.encode_ordinary_batch(texts, num_threads=max(1, os.cpu_count() or 1))

    def decode(self, ids):
        return self.enc.decode_bytes(ids).decode("utf-8", errors="replace")

    def _char_ends(self, texts):
        out = []
        for text, ids in zip(texts, self.encode_batch(texts)):
            table, pos, ends = _byte_to_char(text), 0, []
            for i in ids:
                pos += len(self.enc.decode_single_token_bytes(i))
                ends.append(table[min(pos, len(table) - 1)])
            out.append(ends)
        return out


class SentencePieceTokenizer(LoadedTokenizer):
    """SentencePiece `.model` (byte pieces and <unk> count as unknown)."""

    kind = "sentencepiece"

    def __init__(self, sp, name: str, source: str):
        unknown = {i for i in range(sp.get_piece_size()) if sp.is_byte(i) or sp.is_unknown(i)}
        super().__init__(name, sp.get_piece_size(), source, frozenset(unknown))
        self.sp = sp

    def encode_batch(self, texts):
        return self.sp.encode(list(texts), out_type=int, num_threads=max(1, os.cpu_count() or 1))

    def decode(self, ids):
        return self.sp.decode(list(ids))

    def _char_ends(self, texts):
        out = []
        for text in texts:
            proto = self.sp.encode(text, out_type="proto")
            table = _byte_to_char(text)
            out.append([table[min(p.end, len(table) - 1)] for p in proto.pieces])
        return out


# --------------------------------------------------------------------------------------------- builders

def _fail(path, what: str, e: Exception | None = None):
    detail = f" ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})" if e else ""
    return QazlmError(f"{path}: cannot load tokenizer: {what}{detail}; expected an HF folder/tokenizer.json, "
                      "a .tiktoken ranks file (+ pattern.json), a tekken json, a SentencePiece .model or a hub id")


def _load_hf_json(path: Path, name: str) -> HFTokenizer:
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the user's file
        raise _fail(path, "not a valid HF tokenizer.json", e) from None
    return HFTokenizer(tok, name, str(path))


def _load_vocab_merges(folder: Path, name: str) -> HFTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    try:
        tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
    except Exception as e:  # noqa: BLE001
        raise _fail(folder / "vocab.json", "bad vocab.json/merges.txt", e) from None
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return HFTokenizer(tok, name, str(folder))


def _openai_definition(ranks_path: Path, ranks: dict[bytes, int]) -> dict | None:
    """tiktoken's own definition (pattern, specials) of a known OpenAI encoding, fed our local ranks."""
    import tiktoken_ext.openai_public as openai_public

    stem = ranks_path.name.split(".")[0]
    ctor = openai_public.ENCODING_CONSTRUCTORS.get(stem)
    if ctor is None:
        return None
    original = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *a, **k: ranks  # no download: the ranks are already here
    try:
        return ctor()
    finally:
        openai_public.load_tiktoken_bpe = original


def _load_tiktoken_file(path: Path, name: str, pattern: str | None = None) -> TiktokenTokenizer:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    try:
        ranks = load_tiktoken_bpe(str(path))
    except Exception as e:  # noqa: BLE001
        raise _fail(path, "not a tiktoken ranks file (base64 token + rank per line)", e) from None
    if not ranks:
        raise _fail(path, "empty ranks file")
    specials: dict[str, int] = {}
    vocab_size = None
    if pattern is None:
        pj = path.parent / "pattern.json"
        if pj.exists():
            try:
                meta = json.loads(pj.read_text(encoding="utf-8"))
                pattern = meta["pattern"]
            except Exception as e:  # noqa: BLE001
                raise _fail(pj, "pattern.json needs a string field 'pattern'", e) from None
    if pattern is None:
        definition = _openai_definition(path, ranks)
        if definition is None:
            raise QazlmError(f"{path}: no split pattern for this tiktoken file; put a pattern.json "
                             '({"pattern": "<regex>"}) beside it or name the file after a known encoding '
                             "(cl100k_base.tiktoken, o200k_base.tiktoken)")
        pattern, specials = definition["pat_str"], definition.get("special_tokens", {})
        vocab_size = definition.get("explicit_n_vocab")
    try:
        enc = tiktoken.Encoding(name=name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)
    except Exception as e:  # noqa: BLE001
        raise _fail(path, "tiktoken rejected the ranks or pattern", e) from None
    return TiktokenTokenizer(enc, name, str(path), vocab_size)


def _load_tekken(path: Path, name: str) -> TiktokenTokenizer:
    """Mistral Tekken json: pattern + base64 ranks; the first `default_num_special_tokens` ids are specials.

    Ids here are ranks (not shifted by the special block); vocab_size is Tekken's default_vocab_size.
    """
    import tiktoken

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        cfg = data["config"]
        n_special = int(cfg.get("default_num_special_tokens", 0))
        vocab_size = int(cfg.get("default_vocab_size", len(data["vocab"]) + n_special))
        ranks = {base64.b64decode(v["token_bytes"]): v["rank"] for v in data["vocab"][: vocab_size - n_special]}
        enc = tiktoken.Encoding(name=name, pat_str=cfg["pattern"], mergeable_ranks=ranks, special_tokens={})
    except Exception as e:  # noqa: BLE001
        raise _fail(path, "not a Tekken json (config.pattern + vocab[].token_bytes)", e) from None
    return TiktokenTokenizer(enc, name, str(path), vocab_size)


def _load_sentencepiece(path: Path, name: str) -> SentencePieceTokenizer:
    import sentencepiece as spm

    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except Exception as e:  # noqa: BLE001
        raise _fail(path, "not a SentencePiece model", e) from None
    return SentencePieceTokenizer(sp, name, str(path))


def _load_file(path: Path, name: str) -> LoadedTokenizer:
    if path.stat().st_size == 0:
        raise _fail(path, "empty file")
    if path.suffix == ".tiktoken":
        return _load_tiktoken_file(path, name)
    if path.suffix == ".model":
        return _load_sentencepiece(path, name)
    if path.suffix == ".json":
        if path.name.startswith("tekken"):
            return _load_tekken(path, name)
        return _load_hf_json(path, name)
    raise _fail(path, f"unknown tokenizer file type {path.suffix!r}")


def _load_folder(folder: Path, name: str) -> LoadedTokenizer:
    if (folder / "tokenizer.json").exists():
        return _load_hf_json(folder / "tokenizer.json", name)
    if (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
        return _load_vocab_merges(folder, name)
    for pattern in ("*.tiktoken", "tekken*.json", "*.model"):
        found = sorted(folder.glob(pattern))
        if found:
            return _load_file(found[0], name)
    raise _fail(folder, "folder holds no tokenizer.json, vocab.json+merges.txt, *.tiktoken, tekken*.json or *.model")


def _hub_snapshot(repo_id: str) -> Path:
    """Download (or, offline, find in the cache) only the tokenizer files of a hub repo."""
    from huggingface_hub import snapshot_download

    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=offline))
    except Exception as e:  # noqa: BLE001
        hint = " (offline: HF_HUB_OFFLINE=1 and not in the cache)" if offline else ""
        raise QazlmError(f"{repo_id}: not a local path and the hub download failed{hint} "
                         f"({type(e).__name__}); pass a local tokenizer folder instead") from None


def default_name(spec: str) -> str:
    """Readable label: the folder name (also for tokenizer.json inside one), else the file stem."""
    p = Path(spec)
    if p.name in ("tokenizer.json", "tokenizer.model") or p.is_dir():
        return (p.parent if not p.is_dir() else p).resolve().name
    if p.exists():
        return p.name.split(".")[0]
    return spec.rstrip("/").split("/")[-1]


def load_tokenizer(spec: str, name: str | None = None) -> LoadedTokenizer:
    """Load `spec` (path or hub id); `name` labels it in tables (default: folder or file name)."""
    name = name or default_name(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _load_folder(path, name)
    if path.is_file():
        return _load_file(path, name)
    if HUB_ID.match(spec) and not spec.startswith((".", "/")):
        return _load_folder(_hub_snapshot(spec), name)
    raise QazlmError(f"{spec}: no such tokenizer file or folder (and not a hub id org/name); check the path")
