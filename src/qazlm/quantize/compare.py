"""How far a quantized model is from its fp32 parent on the same text, per language: bits per byte of both,
the KL divergence of the quantized next-token distribution from fp32's, and how often both pick the same
top token (llama.cpp's `perplexity --kl-divergence` reports the same three).

Both models score exactly the windows `qazlm.infer.scoring.bits_per_byte` scores (lm-eval's rolling
windows), so the fp32 column equals `qazlm eval`'s bits per byte on the same texts."""

from __future__ import annotations

import math


def compare_texts(ref, test, tokenizer, texts: list[str], *, max_len: int = 512, batch_size: int = 8,
                  protocol: str = "documents") -> dict:
    """{bpb_ref, bpb_test, delta_pct, ppl_ref, ppl_test, ppl_delta_pct, kl, top1, max_logit_diff, tokens} of
    `test` against `ref` on `texts` (max_logit_diff: the largest |logit difference| at a scored position)
    (`ref`/`test`: anything `qazlm.infer.scoring.logits` accepts).

    protocol "documents": every token of every text, each text its own document (bits per byte as `qazlm
    eval`); "llama-perplexity": llama.cpp's `llama-perplexity` chunks of `max_len` over the joined texts, the
    second half of each scored (`qazlm.infer.scoring.perplexity_windows`; bytes are those of the scored spans)."""
    import torch

    from qazlm.infer.scoring import document_windows, logits, perplexity_windows

    texts = [t for t in texts if t]
    if protocol == "documents":
        windows = document_windows(tokenizer, texts, max_len)
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    elif protocol == "llama-perplexity":
        windows = perplexity_windows(tokenizer, texts, max_len)
        n_bytes = sum(len(tokenizer.decode(pred).encode("utf-8")) for _, pred in windows)
    else:
        raise ValueError(f"protocol: {protocol!r} is neither 'documents' nor 'llama-perplexity'")
    windows = sorted(windows, key=lambda w: len(w[0]))  # batches of like lengths: padding costs a GGUF scorer in full
    nll_ref = nll_test = kl = max_diff = 0.0
    same = tokens = 0
    with torch.inference_mode():
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            width = max(len(inp) for inp, _ in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            for row, (inp, _) in enumerate(batch):
                ids[row, :len(inp)] = torch.tensor(inp)
            raw_ref, raw_test = logits(ref, ids), logits(test, ids)
            lp_ref, lp_test = torch.log_softmax(raw_ref, -1), torch.log_softmax(raw_test, -1)
            for row, (inp, pred) in enumerate(batch):
                sl = slice(len(inp) - len(pred), len(inp))
                max_diff = max(max_diff, float((raw_ref[row, sl] - raw_test[row, sl]).abs().max()))
                r, t, tgt = lp_ref[row, sl], lp_test[row, sl], torch.tensor(pred)[:, None]
                nll_ref -= float(r.gather(1, tgt).sum())
                nll_test -= float(t.gather(1, tgt).sum())
                kl += float((r.exp() * (r - t)).sum())
                same += int((r.argmax(-1) == t.argmax(-1)).sum())
                tokens += len(pred)
    bpb_ref, bpb_test = nll_ref / n_bytes / math.log(2), nll_test / n_bytes / math.log(2)
    ppl_ref, ppl_test = math.exp(nll_ref / max(tokens, 1)), math.exp(nll_test / max(tokens, 1))
    return {"bpb_ref": bpb_ref, "bpb_test": bpb_test, "delta_pct": 100 * (bpb_test / bpb_ref - 1),
            "ppl_ref": ppl_ref, "ppl_test": ppl_test, "ppl_delta_pct": 100 * (ppl_test / ppl_ref - 1),
            "kl": kl / max(tokens, 1), "top1": same / max(tokens, 1), "max_logit_diff": max_diff, "tokens": tokens}


def compare_languages(ref, test, tokenizer, texts_by_lang: dict[str, list[str]], **kwargs) -> dict[str, dict]:
    return {lang: compare_texts(ref, test, tokenizer, texts, **kwargs) for lang, texts in texts_by_lang.items()}
