"""Does picture size bound reading? Stage 0 alone (the vision encoder and its label heads, no language model)
at several picture sizes with the same patch size, steps, batch and seed; prints the heads' accuracy on
held-out pictures (letters of unseen words, shapes of unseen colour x shape pairs), a table, then one JSON line.

    .venv/bin/python scripts/multimodal_resolution_check.py --sizes 64 96 --steps 600   # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lm", default="runs/tiny/sft/final", help="a text model (only its tokenizer and width count)")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96], help="picture sizes (multiples of 16)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    if args.steps < 1 or args.batch < 1 or any(s < 16 or s % 16 for s in args.sizes):
        p.error("--steps and --batch must be >= 1 and --sizes multiples of 16")

    import torch

    from qazlm.experiments.multimodal.encoders import pretrain
    from qazlm.experiments.multimodal.model import EncoderShapes, MultimodalLM, build_vision, load_lm

    lm, tokenizer = load_lm(args.lm)
    results = []
    for size in args.sizes:
        shapes = EncoderShapes(image_size=size)
        torch.manual_seed(0)
        model = MultimodalLM(lm, tokenizer, build_vision(shapes), None, shapes)
        t0 = time.time()
        rows = pretrain(model, "image", args.steps, args.batch, 1e-3, 0, lambda _: None)
        results.append({"size": size, "seconds": round(time.time() - t0, 1), "loss": rows[-2]["loss_image"],
                        "heldout": rows[-1]["heldout_accuracy"]})
    print(f"\n{'size':>5} {'seconds':>8} {'loss':>7} {'letters':>8} {'shape':>6} {'colour':>7} {'count':>6}")
    for r in results:
        h = r["heldout"]
        print(f"{r['size']:>5} {r['seconds']:>8} {r['loss']:>7.3f} {h['chars']:>8.3f} {h['shape']:>6.3f} "
              f"{h['colour']:>7.3f} {h['count']:>6.3f}")
    print(json.dumps({"bench": "multimodal_resolution", "steps": args.steps, "batch": args.batch,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
