"""What a run reports: metrics.jsonl (the source of truth, plotted by `qazlm plot`), TensorBoard and
optional W&B, plus MFU, memory and the unigram bits-per-byte baseline every model must beat."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

from qazlm.errors import QazlmError

def peak_flops(device: str) -> tuple[float, str]:
    """(peak FLOP/s, source) for MFU: the bf16 table of qazlm.model.flops, else a 0.3 s fp32 matmul measurement (CPU)."""
    import torch

    from qazlm.model.flops import device_peak_flops

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        peak = device_peak_flops(name)
        if peak:
            return peak, f"table ({name})"
        return measure_matmul_flops(device, n=4096), f"measured fp32 matmul ({name} not in the table)"
    return measure_matmul_flops(device), "measured fp32 matmul"


def measure_matmul_flops(device: str = "cpu", n: int = 1024, trials: int = 5) -> float:
    """Best observed fp32 matmul FLOP/s (the best of `trials`, so a busy moment does not lower the peak)."""
    import torch

    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = 0.0
    for _ in range(trials):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def memory_gb(device: str) -> float:
    """Peak memory: CUDA allocator peak, or the process's max RSS on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 1e9
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux
    except ImportError:  # pragma: no cover
        return float("nan")


def token_counts(tokens, vocab_size: int, max_tokens: int = 50_000_000):
    """Token frequencies of (the first `max_tokens` of) the training stream."""
    import numpy as np

    n = min(tokens.num_tokens, max_tokens)
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, n, 10_000_000):
        chunk = tokens.window(start, min(10_000_000, n - start))
        found = np.bincount(chunk, minlength=vocab_size)
        if found.size > vocab_size:
            raise QazlmError(f"training tokens hold id {found.size - 1}, outside the vocabulary ({vocab_size}); "
                             "rerun `qazlm data prepare` with the model's tokenizer")
        counts += found
    return counts


def unigram_bpb(counts, tokenizer, texts: list[str]) -> float:
    """Bits per byte of a token unigram model (add-one smoothing) fit on training token counts: the
    floor a language model must beat on held-out `texts`."""
    import numpy as np

    logp = np.log2((counts + 1) / (counts.sum() + counts.size))
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    bits = -sum(float(logp[np.minimum(np.asarray(x, dtype=np.int64), counts.size - 1)].sum()) for x in ids if x)
    return bits / max(1, sum(len(t.encode("utf-8")) for t in texts))


class MetricsLogger:
    """Appends one JSON object per line to metrics.jsonl (line-buffered, fsync'ed) and mirrors scalars to
    TensorBoard / W&B. Only rank 0 creates one."""

    def __init__(self, out_dir: str | Path, *, tensorboard: bool = True, wandb: bool = False, run_name: str = "",
                 config: dict | None = None, resume_step: int | None = None):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / "metrics.jsonl"
        if resume_step is not None:
            self._truncate_after(resume_step)
        elif self.path.exists():
            self.path.unlink()
        self._f = open(self.path, "a", encoding="utf-8")
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboard missing
                self._tb = None
        if wandb:
            try:
                import wandb as wb

                os.environ.setdefault("WANDB_MODE", "offline")
                self._wandb = wb.init(project="qazlm", name=run_name or None, config=config or {},
                                      dir=str(self.out_dir), resume="allow")
            except ImportError:
                print("pretrain: wandb = true but wandb is not installed; logging to metrics.jsonl only")

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint so the curve has each step once."""
        if not self.path.exists():
            return
        from qazlm.io import atomic_write

        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by the kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        with atomic_write(self.path) as f:
            f.write("".join(k + "\n" for k in keep))

    def log(self, step: int, record: dict) -> None:
        rec = {"step": step, **record}
        self._f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        scalars = {k: v for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)
                   and math.isfinite(v)}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            for k, v in record.items():
                if isinstance(v, str):
                    self._tb.add_text(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def close(self) -> None:
        self._f.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
