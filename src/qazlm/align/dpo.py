"""`qazlm dpo`: direct preference optimisation of a chat model through TRL's DPOTrainer (docs/alignment.md).

Sigmoid loss by default; any of TRL's loss types (`ipo`, `hinge`, `robust`, ... or a weighted mix) through
`loss_type`. The reference model's log-probabilities are computed once before training
(`precompute_ref_log_probs`), so memory holds one model. The output follows `qazlm sft`'s contract (final/ is
a Hugging Face causal LM folder with the chat template and qazlm_lineage.json; checkpoints/ resume a killed run;
metrics.jsonl), plus `dpo_report.{json,md}`: held-out reward accuracy and margins (TRL's implicit rewards), and
the DPO model's win rate over its parent on held-out prompts — by the reward model (`reward_model`) and by the
pairs' checkable rules (answer language, no repetition, the computed number, a valid or no tool call).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from qazlm.align.common import (
    PairTraining,
    dataset,
    finish,
    heldout_note,
    run_locked,
    set_aside_counts,
    train_monitored,
    training_pairs,
)
from qazlm.errors import QazlmError

STAGE = "dpo"
LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
          "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class DpoConfig(PairTraining):
    """[dpo] table / `qazlm dpo` flags (the shared keys: qazlm.align.common.PairTraining)."""
    out_dir: str = "runs/dpo"
    reward_model: str = ""          # a `qazlm rm train` final/ folder: judges the win rate ("" = rules only)
    loss_type: list[str] = field(default_factory=lambda: ["sigmoid"])
    loss_weights: list[float] = field(default_factory=list)   # one per loss type when mixing ([] = equal)
    beta: float = 0.1
    lr: float = 5e-6
    max_heldout: int = 200
    win_prompts: int = 48           # held-out prompts both models answer for the win rate
    max_new_tokens: int = 48

    def __post_init__(self):
        self.check("dpo", {"beta": "> 0", "win_prompts": ">= 0", "max_new_tokens": ">= 1"})
        bad = [t for t in self.loss_type if t not in LOSSES]
        if bad or not self.loss_type:
            raise QazlmError(f"[dpo] loss_type: {bad or 'empty'}; choose from {', '.join(LOSSES)}")
        if self.loss_weights and len(self.loss_weights) != len(self.loss_type):
            raise QazlmError(f"[dpo] loss_weights: {len(self.loss_weights)} weights for {len(self.loss_type)} losses")


def dpo_args(cfg: DpoConfig, out: Path, device: str):
    """One process precomputes the reference log-probs (one model in memory). Under torchrun the reference model
    is kept instead (TRL's default): TRL 1.16 caches the precomputed ones in a file each rank looks for in its own
    temporary folder, so every rank but the first fails to find it."""
    from trl import DPOConfig

    from qazlm.sft.train import world_size

    alone = world_size() == 1
    return DPOConfig(**cfg.trainer_kwargs(out, device), beta=cfg.beta, loss_type=list(cfg.loss_type),
                     loss_weights=list(cfg.loss_weights) or None, precompute_ref_log_probs=alone, eval_strategy="no")


def run_dpo(cfg: DpoConfig, force: bool = False, log=print) -> dict:
    """Train into `cfg.out_dir` (skip / resume / --force as `qazlm sft`); returns the report."""
    return run_locked(cfg, force, log, STAGE, "dpo_report.json", _train)


def _train(cfg: DpoConfig, out: Path, log) -> dict:
    from trl import DPOTrainer

    from qazlm.runs import resolve_device, write_record
    from qazlm.sft.load import load_chat_tokenizer, load_model
    from qazlm.sft.train import is_main_process, quiet_libraries

    t0 = time.perf_counter()
    quiet_libraries()
    device = resolve_device(cfg.device, "[dpo]")
    model, kind = load_model(cfg.model, device)
    tok = load_chat_tokenizer(cfg.model, kind, cfg.chat_template)
    train, held, long, n_train = training_pairs(tok, cfg)
    counts = set_aside_counts(long)
    with labelled_positions_only():  # the reference log-probs are computed in DPOTrainer's constructor
        trainer = DPOTrainer(model=model, args=dpo_args(cfg, out, device), processing_class=tok,
                             train_dataset=dataset(train), eval_dataset=dataset(held) if held else None)
        result, held_metrics = train_monitored(
            trainer, out, log, f"dpo: {cfg.model} ({kind}, {device}) on {n_train:,} pairs, loss "
                               f"{'+'.join(cfg.loss_type)}, beta {cfg.beta:g} ({counts['set_aside']} set aside: "
                               "too long or invalid)", {"device": device, "model_kind": kind, "train_pairs": n_train,
                                              "loss_type": "+".join(cfg.loss_type)}, evaluate=bool(held))
    if not is_main_process():      # under torchrun: rank 0 alone evaluates and writes
        return {}
    report = {"format": "qazlm-dpo-report-v1", "model": cfg.model, "data": cfg.data, "steps": int(result.global_step),
              "train_loss": float(result.training_loss), "train_pairs": n_train, "heldout_pairs": len(held),
              **counts,
              "heldout": {k.removeprefix("eval_"): float(v) for k, v in held_metrics.items()
                          if k.startswith(("eval_rewards/", "eval_loss"))},
              "loss_type": cfg.loss_type, "beta": cfg.beta}
    finish(trainer, tok, out, cfg, STAGE, kind, report, long)
    report["win_rate"] = win_rates(cfg, held, out / "final", log) if cfg.win_prompts else None
    report["wall_s"] = time.perf_counter() - t0
    write_report(out, report)
    write_record(out, STAGE, dataclasses.asdict(cfg))
    log(summary_line(report))
    return report


@contextmanager
def labelled_positions_only():
    """Inside the block, TRL's fused LM head projects only the labelled positions on a CPU too.

    `trl.trainer.utils.add_fused_lm_head` (the log-probs of DPO's policy and reference) sends only the positions
    with a label through the vocabulary projection where Triton runs, and every position elsewhere, because on
    Neuron their number would change the compiled shapes each batch. Eager CPU code has no such cost, and DPO's
    labels cover the completions only (prompts and padding are -100): projecting every position was most of a
    CPU step (docs/alignment.md). The same log-probs either way; without that TRL function nothing changes."""
    import trl.trainer.utils as fused

    triton = getattr(fused, "_use_triton", None)
    if triton is None:
        yield
        return
    fused._use_triton = lambda device: device.type == "cpu" or triton(device)
    try:
        yield
    finally:
        fused._use_triton = triton


# ------------------------------------------------------------------------------------------ win rate
def rule_score(p: dict, reply: str) -> float | None:
    """1 when the reply keeps the rule its pair's type checks, 0 when it breaks it, None without a rule."""
    from qazlm.infer.tools import parse_tool_calls

    kind = p.get("type")
    if kind == "language":
        import py3langid

        return float(py3langid.classify(reply)[0] == p["lang"]) if reply.strip() else 0.0
    if kind == "concise":
        sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", reply) if s.strip()]
        return float(len(sentences) == len(set(sentences)))
    if kind == "computed":
        want = re.search(r"\d+", p["chosen"][0].get("content") or "")
        return float(bool(want) and want.group() in re.findall(r"\d+", reply))
    if kind in ("refusal", "over_refusal"):   # a harmful request is declined, an ordinary one is not
        from qazlm.text.refusal import is_refusal

        return float(is_refusal(reply) == (kind == "refusal"))
    if kind in ("tool_call", "tool_irrelevant"):
        tools = json.loads(p["tools"]) if p.get("tools") else None
        calls = parse_tool_calls(reply, tools).tool_calls
        names = {t["function"]["name"] for t in tools or []}
        good = bool(calls) and all(c["function"]["name"] in names for c in calls)
        return float(good if kind == "tool_call" else not calls)
    return None


def win_rates(cfg: DpoConfig, held: list[dict], dpo_model: Path, log) -> dict:
    """The parent and the DPO model answer the same held-out prompts (greedy); the DPO model wins a prompt when
    the reward model scores its reply higher / when it keeps a rule the parent breaks. Ties are half a win."""
    from qazlm.infer.engine import generate_chat
    from qazlm.infer.loading import load_model
    from qazlm.infer.sampling import SamplingParams

    prompts = list({json.dumps(p["prompt"], sort_keys=True): p for p in held}.values())[:cfg.win_prompts]
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    groups: dict[str | None, list[int]] = {}
    for i, p in enumerate(prompts):   # one batch per tool list (the system turn lists the tools)
        groups.setdefault(p.get("tools"), []).append(i)
    replies = {}
    for name, path in (("parent", cfg.model), ("dpo", dpo_model)):
        loaded, texts = load_model(path), [""] * len(prompts)
        for tools, members in groups.items():
            got = generate_chat(loaded.model, loaded.tokenizer, [prompts[i]["prompt"] for i in members], params,
                                tools=json.loads(tools) if tools else None)
            for i, text in zip(members, got):
                texts[i] = text
        replies[name] = texts
    out = {"prompts": len(prompts), "rules": None, "reward_model": None}
    rules = [(rule_score(p, d), rule_score(p, s)) for p, d, s in zip(prompts, replies["dpo"], replies["parent"])]
    rules = [(d, s) for d, s in rules if d is not None]
    if rules:
        out["rules"] = {**tally([d - s for d, s in rules]), "dpo_rule_rate": sum(d for d, _ in rules) / len(rules),
                        "parent_rule_rate": sum(s for _, s in rules) / len(rules)}
    if cfg.reward_model:
        from qazlm.align.common import render
        from qazlm.align.reward import load_reward_model, rewards

        rm, rm_tok = load_reward_model(cfg.reward_model)
        score = {name: rewards(rm, rm_tok, [render(rm_tok, p["prompt"], [{"role": "assistant", "content": r}],
                                                   p.get("tools")) for p, r in zip(prompts, texts)])
                 for name, texts in replies.items()}
        same = [d == s for d, s in zip(replies["dpo"], replies["parent"])]   # identical replies tie: their scores
        out["reward_model"] = tally([0.0 if t else d - s                     # can differ by padding round-off
                                     for d, s, t in zip(score["dpo"], score["parent"], same)])
    out["examples"] = [{"prompt": p["prompt"][-1]["content"][:200], "parent": s[:200], "dpo": d[:200]}
                       for p, s, d in list(zip(prompts, replies["parent"], replies["dpo"]))[:6]]
    return out


def tally(margins: list[float]) -> dict:
    """Prompts, wins, ties and losses of the DPO model by its margin over the parent; a tie is half a win."""
    wins, ties = sum(m > 0 for m in margins), sum(m == 0 for m in margins)
    return {"prompts": len(margins), "wins": wins, "ties": ties, "losses": len(margins) - wins - ties,
            "win_rate": (wins + ties / 2) / len(margins)}


def summary_line(r: dict) -> str:
    held = r["heldout"]
    acc = held.get("rewards/accuracies")
    win = r.get("win_rate") or {}
    parts = [f"dpo: {r['steps']} steps, train loss {r['train_loss']:.4f}"]
    if acc is not None:
        parts.append(f"held-out reward accuracy {acc:.1%}, margin {held.get('rewards/margins', 0):+.3f}")
    if win.get("reward_model"):
        parts.append(f"win rate by the reward model {win['reward_model']['win_rate']:.1%}")
    if win.get("rules"):
        parts.append(f"by the rules {win['rules']['win_rate']:.1%}")
    return "; ".join(parts)


def record(t: dict) -> str:
    """The tally behind a win rate, with the rate's 95% interval (a tie counts half a win)."""
    from qazlm.stats import interval_text

    return f"{interval_text(t['win_rate'], t['prompts'])} ({t['wins']} wins, {t['ties']} ties, {t['losses']} losses)"


def write_report(out: Path, r: dict) -> None:
    from qazlm.io import write_json, write_text

    lines = ["# DPO", "", f"`{r['model']}` on `{r['data']}`: loss {'+'.join(r['loss_type'])}, beta {r['beta']:g}, "
             f"{r['steps']} steps, train loss {r['train_loss']:.4f}, {r['train_pairs']:,} pairs "
             f"({r['set_aside']} set aside).", "", "## Held-out pairs (TRL's implicit rewards)", "",
             f"Scored on {r.get('heldout_pairs', 'the')} held-out pairs{heldout_note(r)}.", "",
             "| metric | value |", "|---|---:|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(r["heldout"].items())]
    win = r.get("win_rate")
    if win:
        lines += ["", f"## Win rate over the parent ({win['prompts']} held-out prompts, greedy replies)", ""]
        if win.get("reward_model"):
            lines.append(f"- by the reward model: **{win['reward_model']['win_rate']:.1%}** "
                         f"{record(win['reward_model'])} (identical replies tie; ties count half)")
        if win.get("rules"):
            w = win["rules"]
            lines.append(f"- by the checkable rules ({w['prompts']} prompts): **{w['win_rate']:.1%}** {record(w)}; "
                         f"rule kept by the DPO model {w['dpo_rule_rate']:.1%}, by the parent "
                         f"{w['parent_rule_rate']:.1%}")
        lines += ["", "| prompt | parent | DPO |", "|---|---|---|"]
        lines += [f"| {e['prompt']!r} | {e['parent']!r} | {e['dpo']!r} |".replace("\n", " ") for e in win["examples"]]
    write_text(out / "dpo_report.md", "\n".join(lines) + "\n")
    write_json(out / "dpo_report.json", r)
