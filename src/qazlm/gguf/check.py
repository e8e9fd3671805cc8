"""Checks every GGUF export runs: llama.cpp tokenizes exactly as transformers does, the f32 file computes our
logits, and each quantized file's distance from the f32 one (llama.cpp's `perplexity --kl-divergence` numbers).

llama.cpp's own pre-tokenizer check text has no Kazakh letters; PARITY_SAMPLES is ours.
"""

from __future__ import annotations

from pathlib import Path

PARITY_SAMPLES = [
    "Қазақстан Республикасы: әғқңөұүһі ӘҒҚҢӨҰҮҺІ",
    "Сәлем, әлем! Привет, мир! Hello, world!",
    "Qazaqstan Respublikasy — Қазақстан Республикасы — Республика Казахстан",
    "1 12 123 1234 12345 1234567 3.14 2026-12-04 1 000 000 ₸ 50%",
    "🚀 😶\u200d🌫️ 🇰🇿 ✅🦙🦙 (эмодзи) 👍🏽",
    "a  b\t\tc\n\n\n d   \n \n\n   e\r\nf",
    "   leading and trailing spaces   ",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "Мен'мын қазақпын — «тырнақша» (жақша) [квадрат] {фигура} ...!!! ???",
    "Қaзaқ тiлi: Latin homoglyphs inside Cyrillic; ёЁ ъ ь; soft\u00adhyphen; no\u00a0break space",
    "<|im_start|>user\nСәлем! Қалайсың?<|im_end|>\n<|im_start|>assistant\nЖақсы.<|im_end|>\n",
    "<tool_call>\n{\"name\": \"convert\", \"arguments\": {\"amount\": 100, \"from\": \"KZT\"}}\n</tool_call>",
    "日本語と中文 — and Ελληνικά, עברית, العربية",
    "",
]


def token_parity(llm, tokenizer, texts: list[str]) -> dict:
    """{lines, identical, first_mismatch}: llama.cpp's ids vs `tokenizer(text, add_special_tokens=False)`."""
    from qazlm.gguf.llamacpp import tokenize

    identical, first = 0, None
    for text in texts:
        ours = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        theirs = tokenize(llm, text)
        if ours == theirs:
            identical += 1
        elif first is None:
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            first = {"text": text[:200], "position": at, "ours": ours[at:at + 8], "llama_cpp": theirs[at:at + 8]}
    return {"lines": len(texts), "identical": identical, "first_mismatch": first}


def special_tokens(llm, tokenizer) -> dict:
    """The ids llama.cpp will use to start, stop and pad, next to transformers' (they must agree)."""
    from qazlm.tokenizer.special_tokens import IM_END

    meta = llm.metadata
    found = {name: int(meta[f"tokenizer.ggml.{name}_token_id"]) if f"tokenizer.ggml.{name}_token_id" in meta
             else None for name in ("bos", "eos", "eot", "padding")}
    expected = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id,
                "eot": tokenizer.get_vocab().get(IM_END), "padding": tokenizer.pad_token_id}
    return {"gguf": found, "transformers": expected,
            "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"), "pre_tokenizer": meta.get("tokenizer.ggml.pre"),
            "chat_template": "tokenizer.chat_template" in meta}


QK_K = 256   # a k-quant super-block: llama.cpp stores a row of any other length in a legacy type instead


def read_tensors(path: Path) -> list:
    """The tensor records of a GGUF file (name, type, shape), read once for `tensor_types` and `kquant_fallbacks`."""
    from gguf import GGUFReader

    return GGUFReader(str(path)).tensors


def by_count(names) -> dict[str, int]:
    """How often each name occurs, most frequent first (ties in order of first occurrence)."""
    from collections import Counter

    return dict(Counter(names).most_common())


def kquant_fallbacks(tensors: list) -> dict:
    """Which quantized layer tensors have rows that are no multiple of 256: {"tensors": quantized layer tensors,
    "fallbacks": {legacy type llama.cpp stored them in instead (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0): count}}.
    In a k-quant file those did not get the k-quant, so its size and quality lie between the two types. Read from
    the tensors' shapes (the C API does not report it); the output tensor (or the tied embedding that serves as
    one) is left out, since its type follows `output_type` or llama.cpp's own rule for it."""
    output = "output.weight" if any(t.name == "output.weight" for t in tensors) else "token_embd.weight"
    quantized = [t for t in tensors if t.tensor_type.name not in ("F32", "F16", "BF16") and t.name != output]
    return {"tensors": len(quantized),
            "fallbacks": by_count(t.tensor_type.name for t in quantized if int(t.shape[0]) % QK_K)}


def tensor_types(tensors: list) -> dict[str, int]:
    """How many tensors of each type the file stores (k-quants fall back where rows are not 256-multiples)."""
    return by_count(t.tensor_type.name for t in tensors)
