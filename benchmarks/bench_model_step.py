"""CPU training-step throughput: our `small` model vs transformers' Qwen3ForCausalLM with the same config.

Both run the same plain PyTorch loop (AdamW foreach, fwd + bwd + step, fp32) on the same batches,
interleaved round by round so that background load hits both alike. Prints a table, then one JSON line.
Target: ours >= 1.0x HF.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch


def build_pair(preset_name: str, vocab: int):
    from transformers import AutoModelForCausalLM

    from qazlm.model.hf import hf_config
    from qazlm.model.presets import preset
    from qazlm.model.transformer import build_model

    cfg = preset(preset_name, vocab)
    ours = build_model(cfg, seed=0)
    hf = AutoModelForCausalLM.from_config(hf_config(cfg, {}), attn_implementation="sdpa")
    hf.load_state_dict({(k if k.startswith("lm_head") else f"model.{k}"): v
                        for k, v in ours.state_dict().items() if not k.startswith("rope_")}, strict=False)
    if cfg.tie_embeddings:
        hf.tie_weights()
    return cfg, ours, hf


def step_fn(model, is_hf: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step(x, y):
        # shift_labels: HF scores exactly the same 256 positions against the same targets (no internal shift)
        loss = model(input_ids=x, labels=y, shift_labels=y).loss if is_hf else model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example:\n  python benchmarks/bench_model_step.py --rounds 4")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="steps per model per round")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (saves ~40 s of compiling)")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg, ours, hf = build_pair(args.preset, args.vocab)
    x = torch.randint(0, args.vocab, (args.batch, args.seq + 1))
    inp, tgt = x[:, :-1].contiguous(), x[:, 1:].contiguous()
    runs = {"qazlm": (step_fn(ours, False), (inp, tgt)), "transformers": (step_fn(hf, True), (inp, tgt))}
    if not args.no_compile:  # the engine's `compile = true` switch; a copy so each run owns its weights
        runs["qazlm + torch.compile"] = (step_fn(torch.compile(copy.deepcopy(ours)), False), (inp, tgt))
    times = {k: 0.0 for k in runs}
    t_compile = time.perf_counter()
    first_loss = {name: step(a, b) for name, (step, (a, b)) in runs.items()}  # warm-up; same weights, same loss
    t_compile = time.perf_counter() - t_compile
    loss_diff = abs(first_loss["qazlm"] - first_loss["transformers"])
    for r in range(args.rounds):  # alternate who goes first so a load change hits both alike
        for name, (step, (a, b)) in (list(runs.items()) if r % 2 == 0 else list(runs.items())[::-1]):
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(a, b)
            times[name] += time.perf_counter() - t0
    tokens = args.rounds * args.steps * args.batch * args.seq
    tps = {k: tokens / v for k, v in times.items()}
    ratio = tps["qazlm"] / tps["transformers"]
    ratio_compiled = tps.get("qazlm + torch.compile", 0.0) / tps["transformers"]
    print(f"| model ({args.preset}, {ours.num_params() / 1e6:.1f}M params, fp32 CPU, {torch.get_num_threads()} threads) "
          f"| tokens/s |")
    print("|---|---|")
    for k, v in tps.items():
        print(f"| {k} | {v:,.0f} |")
    print(f"| ratio qazlm / transformers (both eager) | {ratio:.2f}x |")
    if ratio_compiled:
        print(f"| ratio qazlm + torch.compile / transformers | {ratio_compiled:.2f}x (warm-up incl. compile "
              f"{t_compile:.0f} s) |")
    print(f"| first-step loss difference (same weights) | {loss_diff:.2e} |")
    print(json.dumps({"bench": "model_step", "preset": args.preset, "batch": args.batch, "seq": args.seq,
                      "qazlm_tokens_per_s": round(tps["qazlm"], 1),
                      "hf_tokens_per_s": round(tps["transformers"], 1), "ratio": round(ratio, 3), "first_loss_diff": loss_diff,
                      "compiled_tokens_per_s": round(tps.get("qazlm + torch.compile", 0.0), 1),
                      "ratio_compiled": round(ratio_compiled, 3), "target_ratio": 1.0,
                      "target_met_eager": ratio >= 1.0, "target_met": max(ratio, ratio_compiled) >= 1.0}))


if __name__ == "__main__":
    main()
