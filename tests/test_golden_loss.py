"""Golden loss curve: a fixed 20-step CPU pretraining run must reproduce the committed curve.

Other training tests compare one run with another (resume == straight, accumulation == one big batch), so a
change that shifts every run the same way (init, schedule, loss, optimizer groups, data order) passes them.
This test pins the absolute numbers, as torchtitan's tests/assets/losses/ do: the real trainer
(`qazlm.train.trainer.train`) runs the `tiny` preset for 20 steps on a fixed slice of the bundled sample text
and its per-step loss, learning rate and gradient norm (metrics.jsonl, log_every = 1) are compared with
tests/assets/losses/tiny_20steps.json.

Data: the first LINES_PER_FILE non-empty lines of every data/sample/{kk,ru,en}/*.txt.gz, joined with newlines,
as UTF-8 bytes (vocab 256). Bytes keep the curve independent of any tokenizer library's training algorithm;
the token stream's sha256 is in the golden file, so a changed sample corpus fails with its own message.

Tolerances: loss abs 2e-4 and grad_norm rel 1e-3 at every step, lr rel 1e-6 (a pure function of the
schedule). The run is bit-identical run to run and with 1 or 2 threads, but not across CPUs (an AMD EPYC's
matmul kernels differ from an Intel's by ~1e-7). The learning rate is chosen so that such differences do not
grow: at lr 3e-3 a 1e-7 relative perturbation of the initial weights grew to 6e-2 in the loss by step 13
(Adam's first steps are sign-like, and this small model sits at the edge of stability); at lr 1e-3 it stays
below 1e-6 over all 20 steps. What the tolerances still catch (measured): a 1% change of lr moves steps 2-20
by 2e-3 to 2e-2, beta2 0.95 -> 0.96 by up to 7e-3, one more warmup step by 5e-2; a changed init, loss or data
order moves step 1.

An intended change of the training numerics (or a torch upgrade that moves the curve beyond the tolerance):
regenerate the file, check the diff and say why in the commit message:

    QAZLM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_loss.py -q -p no:cacheprovider
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import math
import os
import platform
from pathlib import Path

import numpy as np
import pytest

from qazlm.paths import SAMPLE_DIR

GOLDEN = Path(__file__).parent / "assets" / "losses" / "tiny_20steps.json"
UPDATE = os.environ.get("QAZLM_UPDATE_GOLDEN", "") not in ("", "0")
LINES_PER_FILE = 40
VOCAB = 256  # UTF-8 bytes
# Everything that shapes the curve; data/out_dir are filled in per run. Explicit device/dtype/compile so
# that "auto" defaults changing later do not silently change what is pinned.
RUN = dict(model="tiny", model_overrides={"vocab_size": VOCAB}, seq_len=64, global_batch_tokens=1024,
           micro_batch=8, steps=20, warmup_steps=5, lr=1e-3, min_lr=1e-4, schedule="cosine", weight_decay=0.1,
           beta1=0.9, beta2=0.95, eps=1e-8, grad_clip=1.0, seed=1234, device="cpu", dtype="fp32",
           compile="false", activation_checkpointing="false", num_threads=1, prefetch=0, log_every=1,
           eval_every=-1, ckpt_every=0, tensorboard=False, wandb=False, resume=False)
LOSS_ABS, LR_REL, GRAD_NORM_REL = 2e-4, 1e-6, 1e-3


def sample_bytes() -> tuple[np.ndarray, list[str]]:
    """The token stream (uint16 byte values) and the files it came from (relative to data/sample)."""
    lines, files = [], []
    for lang in ("kk", "ru", "en"):
        for f in sorted((SAMPLE_DIR / lang).glob("*.txt.gz")):
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                lines += list(itertools.islice((ln.strip() for ln in fh if ln.strip()), LINES_PER_FILE))
            files.append(f"{lang}/{f.name}")
    ids = np.frombuffer("\n".join(lines).encode("utf-8"), dtype=np.uint8).astype(np.uint16)
    return ids, files


def run_curve(tmp_path: Path) -> tuple[dict, dict[int, dict[str, float]]]:
    """Run the fixed pretraining; (data description, {step: {loss, lr, grad_norm}})."""
    import torch

    from qazlm.train.config import PretrainConfig
    from qazlm.train.trainer import train

    ids, files = sample_bytes()
    np.save(tmp_path / "tokens.npy", ids)
    cfg = PretrainConfig(**RUN, data=str(tmp_path / "tokens.npy"), out_dir=str(tmp_path / "run"))
    threads = torch.get_num_threads()
    try:
        assert train(cfg, log=lambda *a, **k: None) is not None
    finally:
        torch.set_num_threads(threads)  # the trainer sets the process-wide thread count
    curve = {}
    for line in (tmp_path / "run" / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            curve[rec["step"]] = {k: rec[k] for k in ("loss", "lr", "grad_norm")}
    data = {"files": files, "lines_per_file": LINES_PER_FILE, "encoding": "utf-8 bytes, lines joined by \\n",
            "num_tokens": int(ids.size), "sha256": hashlib.sha256(ids.tobytes()).hexdigest()}
    return data, curve


def test_golden_loss_curve(tmp_path):
    import torch

    data, curve = run_curve(tmp_path)
    assert sorted(curve) == list(range(1, RUN["steps"] + 1))            # every step logged exactly once
    if UPDATE or not GOLDEN.exists():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        head = json.dumps({
            "description": "tests/test_golden_loss.py: per-step metrics of a fixed tiny CPU run",
            "regenerate": "QAZLM_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden_loss.py",
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "config": RUN, "data": data,
        }, indent=1, ensure_ascii=False)
        steps = ",\n".join("  " + json.dumps({"step": s, **curve[s]}) for s in sorted(curve))
        GOLDEN.write_text(f'{head[:-2]},\n "steps": [\n{steps}\n ]\n}}\n', encoding="utf-8")  # a step a line
        if not UPDATE:
            pytest.fail(f"{GOLDEN} was missing and has been written; review and commit it")

    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert golden["config"] == json.loads(json.dumps(RUN)), \
        "RUN in this test differs from the golden file's config: regenerate with QAZLM_UPDATE_GOLDEN=1"
    assert golden["data"] == data, "the sample-text token stream changed (data/sample or its slicing)"
    want = {r["step"]: r for r in golden["steps"]}
    assert sorted(want) == sorted(curve)
    where = f"(golden: torch {golden['torch']}; here: torch {torch.__version__})"
    bad = [f"step {s}: loss {curve[s]['loss']:.6f} vs golden {want[s]['loss']:.6f}" for s in sorted(curve)
           if abs(curve[s]["loss"] - want[s]["loss"]) > LOSS_ABS]
    assert not bad, f"loss curve moved beyond {LOSS_ABS} {where}:\n" + "\n".join(bad)
    for s in sorted(curve):
        assert curve[s]["lr"] == pytest.approx(want[s]["lr"], rel=LR_REL), f"lr at step {s} {where}"
        assert curve[s]["grad_norm"] == pytest.approx(want[s]["grad_norm"], rel=GRAD_NORM_REL), \
            f"grad_norm at step {s} {where}"

    # the pinned curve itself must be a learning curve, so a broken trainer cannot be committed as golden
    loss = [want[s]["loss"] for s in sorted(want)]
    assert abs(loss[0] - math.log(VOCAB)) < 0.25                         # starts near a uniform guess
    assert loss[-1] < loss[0] - 1.5                                      # and clearly learns in 20 steps
    assert np.mean(loss[-5:]) < np.mean(loss[:5]) - 1.0
    assert all(math.isfinite(x) for x in loss)
