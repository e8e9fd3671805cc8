"""How the next token is picked: `SamplingParams` (validated once, for every caller) and `pick_next`."""

from __future__ import annotations

from dataclasses import dataclass, field

from qazlm.config import check_fields
from qazlm.errors import QazlmError


@dataclass
class SamplingParams:
    """How the next token is picked. temperature 0 = greedy (deterministic)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)          # stop strings (not included in the output)
    stop_token_ids: list[int] = field(default_factory=list)  # extra stop tokens besides EOS
    seed: int = 0

    def __post_init__(self):
        check_fields(self, "sampling: ", {"max_new_tokens": ">= 1", "temperature": ">= 0", "top_p": "> 0, <= 1",
                                          "top_k": ">= 1", "repetition_penalty": "> 0"})
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise QazlmError(f"sampling: stop strings must be non-empty text, got {self.stop!r}")


def pick_next(logits, seen, params: SamplingParams, generator):
    """Next token per row from last-position logits [B, V], with repetition penalty, temperature, top-k/p.

    `seen` [B, n] holds the tokens of the reply so far; the penalty divides a seen token's logit by
    `repetition_penalty` if positive and multiplies it if negative (HF's rule), but over the reply only, as
    OpenAI's presence/frequency penalties count generated tokens. HF and vLLM also penalize the prompt, and a
    chat prompt holds the end-of-turn token, the label list a topic answer must copy, the word to inflect, and
    penalizing those keeps a small model from ending its turn (measured in docs/sft.md)."""
    import torch

    logits = logits.float()
    if params.repetition_penalty != 1.0 and seen is not None and seen.shape[1]:
        prev = logits.gather(1, seen)
        prev = torch.where(prev > 0, prev / params.repetition_penalty, prev * params.repetition_penalty)
        logits = logits.scatter(1, seen, prev)
    if params.temperature <= 0:
        return argmax_rows(logits)
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None and params.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= params.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def argmax_rows(logits):
    """`logits.argmax(-1)` for [B, V], same index (the first maximum), faster on CPU.

    torch's CPU argmax is scalar code, paid at every decoding step; a vectorized max over blocks, then an
    argmax inside the first block that holds it, reads the row once more but in SIMD (docs/benchmarks.md)."""
    import torch

    B, V = logits.shape
    block = next((b for b in (256, 128, 64) if V % b == 0 and V >= 4 * b), None)
    if block is None or logits.device.type != "cpu":
        return logits.argmax(-1)
    blocks = logits.view(B, V // block, block)
    first = blocks.amax(-1).argmax(-1)  # [B]: the first block holding the row's maximum
    return first * block + blocks[torch.arange(B), first].argmax(-1)
