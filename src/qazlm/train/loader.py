"""Training batches: shuffled fixed-length windows, a pure function of (seed, step, rank) for exact resume.

The token stream is cut into non-overlapping windows of `seq_len + 1` tokens (stride `seq_len`). Each epoch
visits every window once in a seeded random order. Row `g` of the whole run is window
`perm_epoch[g % n]` with `epoch = g // n`, so the data position is just the step number: resuming at step
`s` reproduces the exact batches, and any split of a global batch over ranks / micro-batches sees the same
rows (2 processes x 4 rows == 1 process x 8 rows).
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from qazlm.errors import QazlmError

PLAIN_DTYPES = {"uint16": "<u2", "uint32": "<u4", "int32": "<i4", "int64": "<i8"}


class PlainTokens:
    """A plain tokenized file: raw little-endian `.bin` of `dtype`, or a 1-D `.npy` array."""

    def __init__(self, path: str | Path, dtype: str = "uint16"):
        path = Path(path)
        if not path.exists():
            raise QazlmError(f"{path}: token file not found; give a .bin/.npy file or a `qazlm data prepare` folder")
        if path.suffix == ".npy":
            try:
                self._data = np.load(path, mmap_mode="r")
            except ValueError as e:
                raise QazlmError(f"{path}: not a valid .npy file ({e})") from None
            if self._data.ndim != 1 or self._data.dtype.kind not in "iu":
                raise QazlmError(f"{path}: expected a 1-D integer array, got {self._data.dtype}{self._data.shape}")
        else:
            if dtype not in PLAIN_DTYPES:
                raise QazlmError(f"{path}: data_dtype {dtype!r} unknown; use one of {', '.join(PLAIN_DTYPES)}")
            item = np.dtype(PLAIN_DTYPES[dtype]).itemsize
            if path.stat().st_size % item:
                raise QazlmError(f"{path}: size is not a multiple of {item} bytes; wrong data_dtype ({dtype})?")
            self._data = np.memmap(path, dtype=PLAIN_DTYPES[dtype], mode="r")
        self.path = path
        self.num_tokens = int(self._data.size)
        self.vocab_size = 0
        self.doc_sep_id = None

    def window(self, start: int, length: int) -> np.ndarray:
        return np.asarray(self._data[start:start + length], dtype=np.int64)


def open_tokens(path: str | Path, split: str = "train", dtype: str = "uint16"):
    """A token source with `.num_tokens` and `.window(start, length)`: shards folder or plain file."""
    path = Path(path)
    if path.is_dir():
        from qazlm.data.shards import TokenDataset

        return TokenDataset(path, split=split)
    return PlainTokens(path, dtype)


class WindowSampler:
    """Maps a global row index to a token window; epoch permutations are seeded and cached."""

    def __init__(self, tokens, seq_len: int, seed: int, vocab_size: int = 0):
        self.tokens, self.seq_len, self.seed, self.vocab_size = tokens, seq_len, seed, vocab_size
        self.n_windows = (tokens.num_tokens - 1) // seq_len
        if self.n_windows < 1:
            raise QazlmError(f"training data has {tokens.num_tokens} tokens, fewer than one window of "
                             f"{seq_len + 1}; prepare more data or lower seq_len")
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            self._perm_epoch = epoch
        return self._perm

    def rows(self, first: int, count: int) -> np.ndarray:
        """Rows [first, first+count) of the run as int64 [count, seq_len + 1]."""
        out = np.empty((count, self.seq_len + 1), dtype=np.int64)
        for i in range(count):
            g = first + i
            epoch, pos = divmod(g, self.n_windows)
            start = int(self._permutation(epoch)[pos]) * self.seq_len
            out[i] = self.tokens.window(start, self.seq_len + 1)
        if self.vocab_size and count and int(out.max()) >= self.vocab_size:
            row = int(out.max(axis=1).argmax())
            raise QazlmError(f"{getattr(self.tokens, 'folder', None) or getattr(self.tokens, 'path', 'training data')}: "
                             f"token id {int(out[row].max())} is outside the model's vocabulary ({self.vocab_size}) "
                             f"in the window of row {first + row}; the tokens were made with another tokenizer, "
                             "rerun `qazlm data prepare` with the model's tokenizer")
        return out

    def epoch_of_step(self, step: int, rows_per_step: int) -> float:
        return step * rows_per_step / self.n_windows


class BatchLoader:
    """Yields (step, [micro-batch int64 arrays]) for this rank, prepared ahead by a background thread.

    Rows of step `s`: global rows `s * rows_per_step + i`; micro-batch `m` of rank `r` takes rows
    `i in [(m * world + r) * micro, +micro)`. State to resume = the step (see `state_dict`).
    """

    def __init__(self, sampler: WindowSampler, *, micro_batch: int, accum: int, rank: int = 0, world: int = 1,
                 prefetch: int = 2):
        self.sampler, self.micro, self.accum, self.rank, self.world = sampler, micro_batch, accum, rank, world
        self.rows_per_step = micro_batch * accum * world
        self.prefetch = max(0, prefetch)

    def step_batches(self, step: int) -> list[np.ndarray]:
        base = step * self.rows_per_step
        return [self.sampler.rows(base + (m * self.world + self.rank) * self.micro, self.micro)
                for m in range(self.accum)]

    def state_dict(self, next_step: int) -> dict:
        return {"seed": self.sampler.seed, "next_step": next_step, "rows_per_step": self.rows_per_step,
                "epoch": self.sampler.epoch_of_step(next_step, self.rows_per_step),
                "seq_len": self.sampler.seq_len}

    def check_resume(self, state: dict, where: str) -> None:
        """The saved position is only meaningful with the same seed, batch geometry and window length."""
        for key, now in (("seed", self.sampler.seed), ("rows_per_step", self.rows_per_step),
                         ("seq_len", self.sampler.seq_len)):
            if key in state and state[key] != now:
                raise QazlmError(f"{where}: checkpoint was trained with {key}={state[key]}, this run has {now}; "
                                 "resume with the same settings or start a new out_dir")

    def iterate(self, start_step: int, end_step: int):
        """Batches for steps [start_step, end_step), computed in a daemon thread `prefetch` steps ahead."""
        if self.prefetch == 0:
            for s in range(start_step, end_step):
                yield s, self.step_batches(s)
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work():
            try:
                for s in range(start_step, end_step):
                    if stop.is_set():
                        return
                    q.put((s, self.step_batches(s)))
            except BaseException as e:  # surfaced in the consumer
                q.put(e)
            q.put(None)

        thread = threading.Thread(target=work, daemon=True, name="qazlm-prefetch")
        thread.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)
