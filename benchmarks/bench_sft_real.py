"""A real model before and after `qazlm sft`: SmolLM2-135M-Instruct fine-tuned on Kazakh-heavy instruction data.

1. data: `qazlm sft-data` with lang shares kk=0.6, ru=0.2, en=0.2 (reused when the folder already holds that build);
2. before: the converted SmolLM2 folder (benchmarks/_smollm2.py) is evaluated;
3. training: `qazlm.sft.train.run_sft`, full fine-tuning in fp32 (LoRA with --lora), qazlm's ChatML template
   (SmolLM2's own has no {% generation %} markers; the tokens are the same <|im_start|>/<|im_end|>), packed
   rows of --max-len, time-capped: training stops after --minutes (30 by default). With a time cap the step
   count is not known up front, so the LR is constant after a short warm-up (no decay);
4. after: `<out>/sft/final` is evaluated the same way.

Evaluation, both models with the same prompts, the same tokenizer and qazlm's template (the base model is
thus asked without SmolLM2's default system prompt), greedy:
- Kazakh language fidelity: held-out items (never trained on) whose reply must be in Kazakh, by
  `qazlm.eval.chat` (language ID on the reply; replies under 3 words are not judged), with end-of-turn rate;
- chat bits per byte on held-out Kazakh dialogues (the user writes in Kazakh): the log-loss of the LAST
  assistant reply (its tokens and the closing <|im_end|>) given the dialogue before it, per UTF-8 byte of
  the reply, via `qazlm.infer.scoring.score_windows`;
- translation chrF kk->en and en->kk on the first --flores sentences of FLORES+ devtest.
Prints a table, then one JSON line.

    python benchmarks/bench_sft_real.py                        # the full run: 30 min of training
    python benchmarks/bench_sft_real.py --minutes 2 --fidelity-items 8 --bpb-dialogues 8 --flores 4 \\
        --max-new-tokens 48                                    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

LANG_SHARES = {"kk": 0.6, "ru": 0.2, "en": 0.2}
FLORES_TASKS = ("flores_kk_en", "flores_en_kk")


def time_cap(minutes: float, log):
    """A TrainerCallback that stops training at the end of the first step past `minutes` of training."""
    from transformers import TrainerCallback

    class TimeCap(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.t0 >= minutes * 60:
                log(f"time cap: {minutes:g} min reached after step {state.global_step}; stopping")
                control.should_training_stop = True

    return TimeCap()


def build_data(folder: Path, per_task: int, log) -> Path:
    from qazlm.sft.data import SftDataConfig, run

    t0 = time.perf_counter()
    run(SftDataConfig(out_dir=str(folder), per_task=per_task, lang_shares=dict(LANG_SHARES)))
    log(f"data: {folder} ({time.perf_counter() - t0:.0f} s)")
    return folder


def eval_tokenizer(model_dir: Path, out: Path) -> Path:
    """The model's tokenizer with qazlm's ChatML template, which both models are asked through."""
    from transformers import AutoTokenizer

    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(out))
    return out


def round_robin(rows: list[dict], n: int, key: str = "task") -> list[dict]:
    """Up to n rows taking one of each `key` value in turn (every task represented, in file order)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    out, depth = [], 0
    while len(out) < n and any(depth < len(g) for g in groups.values()):
        out += [g[depth] for g in groups.values() if depth < len(g)][:n - len(out)]
        depth += 1
    return out


def eval_items(data: Path, n_fidelity: int, n_flores: int) -> tuple[list[dict], list[dict]]:
    """(chat eval items: held-out replies expected in Kazakh + FLORES+ kk->en / en->kk, held-out Kazakh
    dialogues for bits per byte)."""
    from qazlm.eval.chat_items import flores_items, heldout_items, multiturn_items, read_heldout

    records, _ = read_heldout(data)
    kk_reply = [it for it in heldout_items(records, None) + multiturn_items(records, None) if it["expect"] == "kk"]
    flores = [it for it in flores_items(n_flores) if it["task"] in FLORES_TASKS] if n_flores else []
    dialogues = [r for r in records if r["lang"] == "kk"]
    return round_robin(kk_reply, n_fidelity) + flores, dialogues


def reply_bpb(loaded, dialogues: list[dict], n: int, batch_size: int) -> dict:
    """Bits per byte of each dialogue's last assistant reply (+ its <|im_end|>) given what came before."""
    from qazlm.infer.chat import render_chat
    from qazlm.infer.scoring import score_windows
    from qazlm.tokenizer.special_tokens import IM_END

    tok = loaded.tokenizer
    end = tok.convert_tokens_to_ids(IM_END)
    windows, n_bytes = [], 0
    for d in round_robin(dialogues, n):
        context, reply = d["messages"][:-1], d["messages"][-1]["content"]
        prompt = tok(render_chat(tok, context), add_special_tokens=False)["input_ids"]
        target = tok(reply, add_special_tokens=False)["input_ids"] + [end]
        windows.append((prompt + target[:-1], target))
        n_bytes += len(reply.encode("utf-8"))
    if not windows:
        return {"bpb": None, "n_dialogues": 0}
    scores = score_windows(loaded.model, windows, batch_size=batch_size)
    nll = -sum(s for s, _ in scores)
    return {"bpb": nll / n_bytes / math.log(2), "n_dialogues": len(windows), "n_bytes": n_bytes,
            "n_tokens": sum(len(t) for _, t in windows)}


def evaluate(path: Path, tokenizer: Path, items: list[dict], dialogues: list[dict], args, log) -> dict:
    """Fidelity, end-of-turn rate, FLORES chrF (qazlm.eval.chat) and reply bits per byte of one model."""
    import torch

    from qazlm.eval.chat import ChatEvalSettings, generate_replies, score_model
    from qazlm.infer.loading import load_model

    t0 = time.perf_counter()
    s = ChatEvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.eval_batch)
    loaded = load_model(path, tokenizer=tokenizer)
    torch.manual_seed(s.seed)
    results = generate_replies(loaded.model, loaded.tokenizer, [it["messages"] for it in items], s,
                               max_len=loaded.model.max_len, progress=False)
    figures = score_model(str(path), str(path), loaded.model.kind, 0, items, results, s)
    t_gen = time.perf_counter() - t0
    bpb = reply_bpb(loaded, dialogues, args.bpb_dialogues, args.eval_batch)
    kk = figures["fidelity"]["kk"]
    tasks = figures["tasks"]
    out = {"fidelity_kk": kk["rate"], "fidelity_judged": kk["n"], "fidelity_too_short": kk["too_short"],
           "fidelity_wrong_as": kk["wrong_as"], "eot_rate": figures["eot"]["rate"],
           "chrf_kk_en": tasks.get("flores:flores_kk_en", {}).get("value"),
           "chrf_en_kk": tasks.get("flores:flores_en_kk", {}).get("value"),
           "n_flores": sum(it["set"] == "flores" for it in items), "chat_bpb_kk": bpb["bpb"],
           "bpb_dialogues": bpb["n_dialogues"], "generate_s": round(t_gen, 1),
           "eval_s": round(time.perf_counter() - t0, 1), "samples": figures["samples"].get("kk", [])[:2]}
    log(f"eval {path}: kk fidelity {fmt_pct(out['fidelity_kk'])}, bpb {fmt(out['chat_bpb_kk'], 3)}, chrF kk->en "
        f"{fmt(out['chrf_kk_en'], 1)}, en->kk {fmt(out['chrf_en_kk'], 1)} ({out['eval_s']:.0f} s)")
    return out


def train(model: Path, data: Path, out: Path, args, log) -> dict:
    from qazlm.sft.config import LoraSettings, SftConfig
    from qazlm.sft.train import run_sft

    cfg = SftConfig(model=str(model), data=str(data), out_dir=str(out), lr=args.lr, max_steps=args.max_steps,
                    batch_size=args.batch, grad_accum=args.grad_accum, max_len=args.max_len, packing=True,
                    warmup=args.warmup, schedule="constant_with_warmup", save_steps=args.save_steps,
                    save_total_limit=1, max_heldout=0, device="cpu", chat_template="qazlm", seed=0,
                    lora=LoraSettings(enabled=args.lora, r=16, alpha=32.0))
    log(f"training: {'LoRA r=16' if args.lora else 'full fine-tuning'}, lr {args.lr:g}, batch {args.batch} x "
        f"{args.max_len} tokens x accum {args.grad_accum}, time cap {args.minutes:g} min -> {out}")
    return run_sft(cfg, force=True, log=log, callbacks=[time_cap(args.minutes, log)])


def fmt(v, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def fmt_pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def print_table(before: dict, after: dict, summary: dict, args, timings: dict) -> None:
    mode = "LoRA r=16 (merged)" if args.lora else "full fine-tuning"
    print(f"| SmolLM2-135M-Instruct, `qazlm sft` {mode}, fp32 CPU, {summary['steps']} steps in "
          f"{summary['train_s'] / 60:.1f} min | before | after |")
    print("|---|---|---|")
    print(f"| Kazakh language fidelity, held-out replies expected in kk (judged n) | {fmt_pct(before['fidelity_kk'])} "
          f"({before['fidelity_judged']}) | {fmt_pct(after['fidelity_kk'])} ({after['fidelity_judged']}) |")
    print(f"| end-of-turn rate (max {args.max_new_tokens} new tokens) | {fmt_pct(before['eot_rate'])} | "
          f"{fmt_pct(after['eot_rate'])} |")
    print(f"| chat bits/byte, last reply of {before['bpb_dialogues']} held-out Kazakh dialogues | "
          f"{fmt(before['chat_bpb_kk'], 3)} | {fmt(after['chat_bpb_kk'], 3)} |")
    print(f"| chrF FLORES+ devtest kk->en ({args.flores} sentences) | {fmt(before['chrf_kk_en'], 1)} | "
          f"{fmt(after['chrf_kk_en'], 1)} |")
    print(f"| chrF FLORES+ devtest en->kk ({args.flores} sentences) | {fmt(before['chrf_en_kk'], 1)} | "
          f"{fmt(after['chrf_en_kk'], 1)} |")
    print(f"| training: tokens (real), tokens/s, first -> last loss | | {summary['tokens']:,}, "
          f"{summary['tokens_per_s']:.0f}/s, {fmt(summary['first_loss'], 3)} -> {fmt(summary['final_loss'], 3)} |")
    print("| wall time: data / eval before / training (incl. load, save) / eval after | "
          f"{timings['data_s']:.0f} s / {timings['eval_before_s']:.0f} s | {timings['train_s']:.0f} s / "
          f"{timings['eval_after_s']:.0f} s |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="training time cap (default 30; 2-3 for a smoke run)")
    ap.add_argument("--out", default="runs/bench_sft_real", help="folder for the data, the SFT run and results.json")
    ap.add_argument("--smollm2-dir", help="converted SmolLM2 folder (default $QAZLM_SMOLLM2_DIR or the cache)")
    ap.add_argument("--data", help="a `qazlm sft-data` folder (default: built into OUT/sft_data)")
    ap.add_argument("--per-task", type=int, default=200, help="conversations per task when building the data")
    ap.add_argument("--lora", action="store_true", help="LoRA r=16 on every linear layer instead of full fine-tuning")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=1, help="packed rows per step")
    ap.add_argument("--grad-accum", type=int, default=2)
    ap.add_argument("--max-len", type=int, default=1024,
                    help="tokens per packed row (SmolLM2 needs ~4-5 tokens per Kazakh word: at 512, 10%% of the "
                         "conversations are cut)")
    ap.add_argument("--warmup", type=float, default=5, help="warm-up steps")
    ap.add_argument("--max-steps", type=int, default=100_000, help="upper bound; the time cap ends training first")
    ap.add_argument("--save-steps", type=int, default=50, help="resume checkpoint every N steps")
    ap.add_argument("--fidelity-items", type=int, default=60, help="held-out items whose reply must be Kazakh")
    ap.add_argument("--bpb-dialogues", type=int, default=100, help="held-out Kazakh dialogues scored")
    ap.add_argument("--flores", type=int, default=50, help="FLORES+ devtest sentences per direction (0: none)")
    ap.add_argument("--max-new-tokens", type=int, default=160, help="reply length cap (a Kazakh FLORES sentence is "
                                                                    "~120 SmolLM2 tokens)")
    ap.add_argument("--eval-batch", type=int, default=16)
    args = ap.parse_args()

    from qazlm.errors import QazlmError

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        return run(args, log)
    except QazlmError as e:
        print(f"qazlm: error: {e}", file=sys.stderr)
        return 2


def run(args, log) -> int:
    import torch

    from _smollm2 import ensure_smollm2
    from qazlm.io import write_json

    t_all = time.perf_counter()
    out = Path(args.out)
    base = ensure_smollm2(args.smollm2_dir, log=log)
    timings = {}
    t0 = time.perf_counter()
    data = Path(args.data) if args.data else build_data(out / "sft_data", args.per_task, log)
    timings["data_s"] = time.perf_counter() - t0
    tokenizer = eval_tokenizer(base, out / "eval_tokenizer")
    items, dialogues = eval_items(data, args.fidelity_items, args.flores)
    log(f"eval set: {len(items)} prompts ({sum(it['set'] != 'flores' for it in items)} held-out kk-reply, "
        f"{sum(it['set'] == 'flores' for it in items)} FLORES+), {min(len(dialogues), args.bpb_dialogues)} dialogues "
        "for bits per byte")
    t0 = time.perf_counter()
    before = evaluate(base, tokenizer, items, dialogues, args, log)
    timings["eval_before_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = train(base, data, out / "sft", args, log)
    timings["train_s"] = time.perf_counter() - t0
    shutil.rmtree(out / "sft" / "checkpoints", ignore_errors=True)  # 1.6 GB of resume state, not needed after
    t0 = time.perf_counter()
    after = evaluate(out / "sft" / "final", tokenizer, items, dialogues, args, log)
    timings["eval_after_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_all

    print_table(before, after, summary, args, timings)
    result = {
        "bench": "sft_real", "model": "SmolLM2-135M-Instruct", "mode": "lora" if args.lora else "full",
        "threads": torch.get_num_threads(), "minutes_cap": args.minutes, "lr": args.lr, "batch": args.batch,
        "grad_accum": args.grad_accum, "max_len": args.max_len, "lang_shares": LANG_SHARES,
        "train": {k: summary.get(k) for k in ("steps", "tokens", "tokens_per_s", "s_per_step", "train_s",
                                               "first_loss", "final_loss", "padding_waste", "rows")},
        "before": {k: v for k, v in before.items() if k != "samples"},
        "after": {k: v for k, v in after.items() if k != "samples"},
        "delta": {k: (after[k] - before[k]) if after[k] is not None and before[k] is not None else None
                  for k in ("fidelity_kk", "eot_rate", "chat_bpb_kk", "chrf_kk_en", "chrf_en_kk")},
        "timings_s": {k: round(v, 1) for k, v in timings.items()}, "out": str(out)}
    write_json(out / "results.json", {**result, "samples": {"before": before["samples"], "after": after["samples"]}})
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
