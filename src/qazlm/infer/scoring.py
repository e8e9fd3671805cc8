"""Bits per byte: a tokenizer-independent score, so models with different vocabularies compare fairly.

bpb = (total negative log-likelihood in nats over all tokens of the texts) / (total UTF-8 bytes) / ln 2.

Each text is one document. It is scored exactly like lm-eval-harness's `loglikelihood_rolling` (the path
behind its `bits_per_byte` metric), using lm-eval's own window helpers so the two always agree:
the first token is predicted from a prefix token (the tokenizer's BOS, else EOS = our document boundary);
a document longer than `max_len` tokens is cut into consecutive chunks of `max_len` predicted tokens, each
chunk conditioned on the tokens right before it (a rolling window with no overlap in the *predicted*
tokens; the last chunk is right-aligned so it keeps a full `max_len` context).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager

from qazlm.errors import QazlmError


def logits(model: Callable, input_ids):
    """Float32 logits [B, T, V] from our Transformer (returns a tensor), an HF model (returns an output
    object) or a `LoadedLM` wrapping either."""
    out = model(input_ids)
    return (out.logits if hasattr(out, "logits") else out).float()


def prefix_token_id(tokenizer) -> int:
    """The token every document is conditioned on first (same rule as lm-eval's HFLM)."""
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise QazlmError("tokenizer: has neither a BOS nor an EOS token; set eos_token in tokenizer_config.json")


def rolling_windows(ids: list[int], prefix: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input tokens, predicted tokens) pairs covering every token of `ids` exactly once."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    windows = []
    for ctx, pred in map(make_disjoint_window, get_rolling_token_windows(ids, prefix, max_len, 1)):
        # lm-eval feeds (ctx + pred)[:-1] and scores the last len(pred) positions.
        windows.append(((ctx + pred)[:-1], pred))
    return windows


def document_windows(tokenizer, texts: list[str], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Every text as one document cut into rolling windows: each of its tokens is predicted exactly once."""
    prefix = prefix_token_id(tokenizer)
    windows = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        windows.extend(rolling_windows(list(ids), prefix, max_len))
    return windows


def perplexity_windows(tokenizer, texts: list[str], n_ctx: int = 512) -> list[tuple[list[int], list[int]]]:
    """llama.cpp's `llama-perplexity` protocol, behind its published quantization figures: the texts joined by
    newlines into one token stream, cut into consecutive chunks of `n_ctx` tokens (a shorter tail is dropped),
    and only the second half of each chunk scored, so every scored token has at least n_ctx/2 tokens of context.
    Fewer than n_ctx tokens: one shorter chunk. As llama-perplexity does, the first token of each chunk becomes
    the BOS token only for a tokenizer that adds one (`add_bos_token`, the GGUF's `tokenizer.ggml.add_bos_token`):
    Llama 3 does; Qwen, SmolLM2 and ours do not, and their chunks start mid-text."""
    stream = list(tokenizer("\n".join(texts), add_special_tokens=False)["input_ids"])
    bos = tokenizer.bos_token_id if getattr(tokenizer, "add_bos_token", False) else None
    size = min(n_ctx, len(stream))
    windows = []
    for start in range(0, len(stream) - size + 1, size):
        chunk = stream[start:start + size]
        if bos is not None:
            chunk[0] = bos
        windows.append((chunk[:-1], chunk[size // 2 + 1:]))
    return windows


@contextmanager
def eval_mode(model):
    """The model in eval mode for the block, back in training mode after it if it was (the training loop scores
    held-out text between steps)."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        yield model
    finally:
        if was_training:
            model.train()


def score_windows(model: Callable, windows: Sequence[tuple[list[int], list[int]]], *, batch_size: int = 8,
                  device: str = "cpu", progress: bool = False,
                  greedy: bool = False) -> list[tuple[float, bool | None]]:
    """Per window: (sum of the log-probabilities in nats of its predicted tokens, whether each of them is the
    model's argmax — computed only when `greedy`, lm-eval's `is_greedy`; else None).

    Windows of similar length are batched together; right padding is harmless (the model is causal)."""
    import torch

    order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
    result: list[tuple[float, bool | None]] = [(0.0, None)] * len(windows)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="score", unit="batch", leave=False)
    with torch.inference_mode():
        for batch in batches:
            width = max(len(windows[i][0]) for i in batch)
            inp = torch.zeros(len(batch), width, dtype=torch.long)
            for row, i in enumerate(batch):
                inp[row, :len(windows[i][0])] = torch.tensor(windows[i][0])
            logp = torch.log_softmax(logits(model, inp.to(device)), dim=-1)
            for row, i in enumerate(batch):
                n_in, pred = len(windows[i][0]), windows[i][1]
                part = logp[row, n_in - len(pred):n_in]
                tgt = torch.tensor(pred, device=logp.device)
                is_greedy = bool((part.argmax(-1) == tgt).all()) if greedy else None
                result[i] = (float(part.gather(1, tgt[:, None]).sum()), is_greedy)
    return result


def bits_per_byte(model, tokenizer, texts: list[str], *, max_len: int = 512, batch_size: int = 8,
                  device: str = "cpu", progress: bool = False) -> dict:
    """Score `texts` (one document each); returns bpb, nll_nats (total), n_bytes, n_tokens, n_docs.

    `model(input_ids) -> logits` (our Transformer, an HF causal LM, or any such callable); `tokenizer` an
    HF tokenizer. The model is put in eval mode and restored afterwards, so the training loop can call this.
    """
    texts = [t for t in texts if t]
    if not texts:
        raise QazlmError("bits_per_byte: no non-empty texts to score; check the evaluation files")
    if max_len < 2:
        raise QazlmError(f"bits_per_byte: max_len={max_len} is too small; use at least 2")
    windows = document_windows(tokenizer, texts, max_len)
    with eval_mode(model):
        scores = score_windows(model, windows, batch_size=batch_size, device=device, progress=progress)
    nll = -sum(logprob for logprob, _ in scores)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"bpb": nll / n_bytes / math.log(2), "nll_nats": nll, "n_bytes": n_bytes,
            "n_tokens": sum(len(pred) for _, pred in windows), "n_docs": len(texts)}


def copy_score(model, tokenizer, texts: list[str], *, max_len: int, span: int = 32, batch_size: int = 8,
               device: str = "cpu") -> dict:
    """In-context copying: each text's first `span` tokens (at most `max_len` / 2, so the span and its repeat
    fit one window), then the same tokens again. Returns the mean loss
    (nats per token) on the first occurrence and on the repeat (both without their first token, which the
    repeat cannot anticipate), and the share of repeats the model reproduces exactly by greedy argmax.

    Why: copying a span seen earlier in the context is what induction heads do, and every SFT task that
    carries text over from the prompt (script conversion, inflection, tool arguments, a label from a list)
    needs it. A model without them scores the repeat like new text (the repeat's loss equals the first's)."""
    import torch

    span = min(span, max_len // 2)
    prefix = prefix_token_id(tokenizer)
    spans = [list(ids[:span]) for ids in tokenizer([t for t in texts if t], add_special_tokens=False)["input_ids"]
             if min(len(ids), span) >= 2]
    if not spans:
        raise QazlmError(f"copy_score: no text of at least 2 tokens to repeat in windows of {max_len}; check the "
                         "evaluation files")
    first = repeat = 0.0
    exact = 0
    with eval_mode(model), torch.inference_mode():
        for i in range(0, len(spans), batch_size):
            batch = spans[i:i + batch_size]
            inp = torch.zeros(len(batch), 2 * max(map(len, batch)), dtype=torch.long)
            for row, ids in enumerate(batch):  # one pass scores both: [prefix] ids ids[:-1]
                inp[row, :2 * len(ids)] = torch.tensor([prefix] + ids + ids[:-1])
            logp = torch.log_softmax(logits(model, inp.to(device)), dim=-1)
            for row, ids in enumerate(batch):
                n, tgt = len(ids), torch.tensor(ids[1:], device=logp.device)
                first -= float(logp[row, 1:n].gather(1, tgt[:, None]).sum())
                part = logp[row, n + 1:2 * n]
                repeat -= float(part.gather(1, tgt[:, None]).sum())
                exact += bool((part.argmax(-1) == tgt).all())
    n_tokens = sum(len(ids) - 1 for ids in spans)
    return {"first_loss": first / n_tokens, "repeat_loss": repeat / n_tokens, "exact_repeat": exact / len(spans),
            "n_spans": len(spans), "span": span}


def bpb_per_language(model, tokenizer, texts_by_lang: dict[str, list[str]], **kwargs) -> dict[str, dict]:
    """`bits_per_byte` for each language (the in-training hook: call it every N steps)."""
    return {lang: bits_per_byte(model, tokenizer, texts, **kwargs) for lang, texts in texts_by_lang.items()}
