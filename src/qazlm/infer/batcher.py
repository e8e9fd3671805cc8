"""Continuous batching: requests join and leave the running batch at every decoding step.

`ContinuousBatcher.step()` admits waiting requests into free slots, feeds one prompt chunk of one joining
request (so a long prompt never stalls the others for more than a chunk), then runs one decode step for every
request that is generating, and retires the ones that finished (stop token, max tokens, context full or
cancelled): their slots are free for the next request at once. Each request has its own sampling settings,
random generator (its seed) and optional grammar (`qazlm.infer.constrain.Constraint`), so a request decodes
the same tokens whatever else is in the batch — the same tokens `generate_ids` gives it alone.

Our models decode all generating slots in one call (`qazlm.model.slots`); transformers models (SmolLM2, the
torchao folders) step each slot through its own cache — continuous, not batched.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

from qazlm.errors import QazlmError
from qazlm.infer.engine import is_hf_model, unwrap
from qazlm.infer.sampling import SamplingParams, argmax_rows, pick_next


class QueueFull(QazlmError):
    """More requests waiting than the batcher accepts (a server answers 429)."""


@dataclass(eq=False)
class Request:
    prompt: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    constraint: object | None = None
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None           # stop | length | cancelled
    slot: int | None = None
    fed: int = 0                        # prompt tokens already in the cache
    pending: int | None = None          # the last sampled token, fed at the next step
    done: threading.Event = field(default_factory=threading.Event)
    generator: object = None


class _OurSlots:
    """All generating slots in one forward (qazlm.model.slots)."""

    def __init__(self, model, slots: int, max_len: int):
        from qazlm.model.decode import Decoder
        from qazlm.model.slots import SlotCache

        self.decoder = Decoder.for_model(model)
        self.cache = SlotCache(self.decoder, slots, max_len)

    def feed(self, slots: list[int], ids):
        from qazlm.model.slots import slot_step

        return slot_step(self.decoder, ids, slots, self.cache)

    def free(self, slot: int) -> None:
        self.cache.free(slot)


class _HFSlots:
    """One transformers cache per slot, stepped one slot at a time."""

    def __init__(self, model, slots: int, max_len: int):
        self.model, self.max_len = model, max_len
        self.steppers: list = [None] * slots

    def feed(self, slots: list[int], ids):
        import torch

        from qazlm.infer.engine import _HFStepper

        rows = []
        for slot, row in zip(slots, ids):
            if self.steppers[slot] is None:
                self.steppers[slot] = _HFStepper(self.model, 1, self.max_len, row.device)
            rows.append(self.steppers[slot](row[None], torch.ones(1, row.shape[0], dtype=torch.long)))
        return torch.cat(rows)

    def free(self, slot: int) -> None:
        self.steppers[slot] = None


class ContinuousBatcher:
    def __init__(self, model, *, slots: int = 8, max_len: int, prefill_chunk: int = 64, max_queue: int = 64):
        module = unwrap(model)
        if is_hf_model(module):  # a Qwen3/Llama folder (our SFT output, SmolLM2) decodes as our Transformer
            from qazlm.model.hf import ours_for

            ours = ours_for(module)
            module = module if ours is None else ours
        backend = _HFSlots if is_hf_model(module) else _OurSlots
        self.backend = backend(module.eval(), slots, max_len)
        self.slots, self.max_len, self.chunk, self.max_queue = slots, max_len, prefill_chunk, max_queue
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.lock = threading.Lock()

    def submit(self, prompt: list[int], params: SamplingParams, stop_ids, *, constraint=None) -> Request:
        import torch

        if not prompt:
            raise QazlmError("generate: an empty prompt")
        if len(prompt) + params.max_new_tokens > self.max_len:
            raise QazlmError(f"generate: prompt ({len(prompt)} tokens) + max_new_tokens ({params.max_new_tokens}) "
                             f"exceeds the context ({self.max_len} tokens)")
        if constraint is not None:
            constraint.limit_tokens(params.max_new_tokens)  # a grammar-bound reply is finished within its budget
        req = Request(list(prompt), params, frozenset(stop_ids), constraint,
                      generator=torch.Generator().manual_seed(params.seed))
        with self.lock:  # requests about to take a free slot at the next step are not waiting for one
            if len(self.waiting) >= self.max_queue + self.slots - len(self.running):
                raise QueueFull(f"queue full ({self.max_queue} requests waiting); retry later")
            self.waiting.append(req)
        return req

    def cancel(self, req: Request) -> None:
        """Stop a request (e.g. its client left); its slot is freed at once."""
        with self.lock:
            if req in self.waiting:
                self.waiting.remove(req)
                req.finish = "cancelled"
                req.done.set()
            elif req in self.running:
                self._retire(req, "cancelled")

    def idle(self) -> bool:
        return not self.waiting and not self.running

    def step(self) -> bool:
        """One scheduling step; False when there was nothing to do."""
        import torch

        with self.lock:
            self._admit()
            joining = next((r for r in self.running if r.fed < len(r.prompt)), None)
            generating = sorted((r for r in self.running if r.pending is not None), key=lambda r: r.slot)
            if joining is None and not generating:
                return False
            with torch.inference_mode():
                if joining is not None:
                    chunk = joining.prompt[joining.fed:joining.fed + self.chunk]
                    logits = self.backend.feed([joining.slot], torch.tensor([chunk]))
                    joining.fed += len(chunk)
                    if joining.fed == len(joining.prompt):
                        self._sample(joining, logits[0])
                if generating:
                    ids = torch.tensor([[r.pending] for r in generating])
                    logits = self.backend.feed([r.slot for r in generating], ids)
                    self._sample_rows(generating, logits)
            return True

    def run_until_idle(self) -> None:
        while self.step():
            pass

    def _admit(self) -> None:
        used = {r.slot for r in self.running}
        for slot in range(self.slots):
            if not self.waiting:
                return
            if slot not in used:
                req = self.waiting.popleft()
                req.slot = slot
                self.running.append(req)

    def _sample_rows(self, reqs: list[Request], logits) -> None:
        """Plain greedy rows (no grammar, no penalty) take one argmax together; the others sample alone, each
        with its own generator, so a request draws the same tokens whoever shares the step."""
        plain = [i for i, r in enumerate(reqs) if r.params.temperature <= 0 and r.constraint is None
                 and r.params.repetition_penalty == 1.0]
        picked = dict(zip(plain, argmax_rows(logits[plain].float()).tolist())) if plain else {}
        for i, (req, row) in enumerate(zip(reqs, logits)):
            self._sample(req, row, picked.get(i))

    def _sample(self, req: Request, logits, token: int | None = None) -> None:
        import torch

        if token is None:
            row = logits[None].float()
            if req.constraint is not None:
                row = req.constraint.mask(row)
            seen = torch.tensor([req.tokens], dtype=torch.long) if req.params.repetition_penalty != 1.0 else None
            token = int(pick_next(row, seen, req.params, req.generator)[0])
        req.pending = None
        if token in req.stop_ids:
            return self._retire(req, "stop")
        if req.constraint is not None:
            req.constraint.advance([0], [token])
        req.tokens.append(token)
        if len(req.tokens) >= req.params.max_new_tokens or len(req.prompt) + len(req.tokens) >= self.max_len:
            return self._retire(req, "length")
        req.pending = token

    def _retire(self, req: Request, why: str) -> None:
        self.running.remove(req)
        self.backend.free(req.slot)
        req.slot, req.pending, req.finish = None, None, why
        req.done.set()
