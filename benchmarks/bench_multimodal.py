"""The multimodal experiment end to end: speech data (espeak-ng) -> stages 0-2 of training -> held-out evaluation.

Prints the targets table (held-out colour/shape/count exact match, reading CER on unseen words, spoken-command
accuracy per language in unseen voices) with the model, the blind model (blank picture / silence), the text-only
parent and chance side by side per task; the last line is one JSON object. The defaults are run g1 of
docs/multimodal.md (batch 64; on CUDA with bf16 and pictures drawn by all cores but two): ~7.5 min on one
H200; on 2 CPU cores ~1 h 45 min, so pass fewer steps there (--encoder-steps 2000 --full-steps 2500 --set
batch=32: ~45 min).

    python benchmarks/bench_multimodal.py --lm runs/tiny/sft/final --out /tmp/mm
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", default=str(REPO / "runs/tiny/sft/final"), help="the text model (make demo writes it)")
    p.add_argument("--out", default="/tmp/qazlm_bench_multimodal")
    p.add_argument("--encoder-steps", type=int, default=3100, help="stage 0, per encoder")
    p.add_argument("--projector-steps", type=int, default=500)
    p.add_argument("--full-steps", type=int, default=6200)
    p.add_argument("--train-clips", type=int, default=9000)
    p.add_argument("--heldout-clips", type=int, default=450)
    p.add_argument("--images", type=int, default=540, help="held-out image questions")
    p.add_argument("--set", action="append", default=[], help="more training settings, KEY=VALUE")
    args = p.parse_args()

    from qazlm.config import apply_overrides, from_dict
    from qazlm.experiments.multimodal import speech
    from qazlm.experiments.multimodal.evaluate import CHANCE, evaluate, overall
    from qazlm.experiments.multimodal.train import MultimodalTrainConfig, train
    from qazlm.runs import resolve_device

    out = Path(args.out)
    times = {}
    t = time.time()
    if not (out / "speech" / "report.json").is_file():
        speech.write_dataset(out / "speech", args.train_clips, args.heldout_clips)
    times["data_s"] = round(time.time() - t, 1)
    import torch

    workers = max(0, (os.cpu_count() or 1) - 2) if torch.cuda.is_available() else 0
    cfg = from_dict(MultimodalTrainConfig, apply_overrides(
        {"lm": args.lm, "speech_data": str(out / "speech"), "encoder_steps": args.encoder_steps,
         "projector_steps": args.projector_steps, "full_steps": args.full_steps, "batch": 64, "read_share": 0.5,
         "lm_lr": 5e-4, "warmup": 100, "workers": workers, "log_every": 100}, args.set))
    t = time.time()
    final = train(cfg, out / "train")
    times["train_s"] = round(time.time() - t, 1)
    t = time.time()
    report = evaluate(final, out / "eval", str(out / "speech"), n_images=args.images, n_speech=args.heldout_clips)
    times["eval_s"] = round(time.time() - t, 1)

    print(f"\n{'task':<9}{'metric':<7}{'model':>8}{'blind':>8}{'text':>8}{'chance':>8}")
    for task in report["model"]:
        for key in ("exact", "cer"):
            vals = [overall(report[n], (task,), key) for n in ("model", "blind", "text-only")]
            if vals[0] is None:
                continue
            chance = f"{CHANCE[task]:8.2f}" if key == "exact" else f"{'—':>8}"
            print(f"{task:<9}{key:<7}" + "".join(f"{v:8.3f}" if v is not None else f"{'—':>8}" for v in vals)
                  + chance)
    print()
    for name, tgt in report["targets"].items():
        print(f"{name:<44} {tgt['value']!s:>22}  target {tgt['target']}  met {tgt['met']}")
    steps = {"encoder": args.encoder_steps, "projector": args.projector_steps, "full": args.full_steps}
    device = resolve_device(cfg.device, "bench_multimodal:")
    print(json.dumps({"bench": "multimodal", **times, "steps": steps, "device": device,
                      "targets": {k: {"value": v["value"], "met": v["met"]} for k, v in report["targets"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
