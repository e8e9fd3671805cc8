"""`qazlm rm train`: a reward model through TRL's RewardTrainer; `qazlm rm score`: rank responses with it.

The reward model is the causal LM with a one-number head: a `Qwen3ForSequenceClassification` /
`LlamaForSequenceClassification` folder that transformers loads without remote code (our folders go through the
same in-memory conversion as `qazlm export hf`). It reads a conversation rendered by the model's chat template
(tools included) and scores its last token. The output folder follows `qazlm sft`'s contract: `final/` (model +
tokenizer + qazlm_lineage.json), `checkpoints/` (a rerun resumes), `metrics.jsonl`, `rm_report.{json,md}` with
held-out pairwise accuracy per type and language, the stage record last.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from qazlm.align.common import (
    PairTraining,
    dataset,
    finish,
    heldout_note,
    render,
    run_locked,
    set_aside_counts,
    train_monitored,
    training_pairs,
)
from qazlm.align.pairs import CHECKABLE
from qazlm.errors import QazlmError

STAGE = "rm"


@dataclass
class RmConfig(PairTraining):
    """[rm] table / `qazlm rm train` flags (the shared keys: qazlm.align.common.PairTraining)."""
    out_dir: str = "runs/rm"

    def __post_init__(self):
        self.check("rm", {})


def load_reward_start(path: str | Path, device: str, seed: int = 0, chat_template: str = ""):
    """A sequence-classification model (one label) built from a causal LM folder, and the chat tokenizer. The
    score head is new, so it is drawn under `seed`: the Trainer seeds only after the model exists, and an unseeded
    head made two runs of the same config differ from the first step. Built from the causal LM's weights in
    memory (its head unused), not through a saved folder: under torchrun `save_pretrained` writes on rank 0 only."""
    import copy

    import torch
    from transformers import set_seed
    from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

    from qazlm.sft.load import load_chat_tokenizer, load_model

    causal, kind = load_model(path, "cpu")
    tok = load_chat_tokenizer(path, kind, chat_template)
    config = copy.deepcopy(causal.config)
    config.num_labels = 1
    set_seed(seed)
    model = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)].from_pretrained(
        None, config=config, state_dict=causal.state_dict(), dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    return model.to(device), tok, kind


def rewards(model, tok, texts: list[str], batch_size: int = 8) -> list[float]:
    import torch

    from qazlm.sft.packing import use_packed_attention

    use_packed_attention(model)
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            out += unpadded_rewards(model, enc["input_ids"].to(model.device),
                                    enc["attention_mask"].to(model.device))[:, 0].float().tolist()
    return out


def unpadded_rewards(model, input_ids, attention_mask):
    """Rewards of a padded batch computed on its real tokens only. The sequences are laid end to end in one row
    with restarting position ids (attention stays inside each: `qazlm.sft.packing`), the backbone runs once over
    them, and the score head reads each sequence's last real token, the one transformers' pooling reads. Chosen
    and rejected sides differ in length and a batch pads to its longest, so padding is a large share of a padded
    batch (docs/alignment.md)."""
    keep = attention_mask.bool()
    positions = attention_mask.long().cumsum(-1) - 1
    return row_scores(model, input_ids[keep], positions[keep], keep.sum(-1).cumsum(0) - 1)


def row_scores(model, ids, positions, last):
    """The score head at the tokens `last` of one row holding many sequences (`ids`, `positions`: 1-D; the
    position ids tell the packed attention where each sequence, or branch, starts)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT: the LoRA-injected model
    backbone = getattr(core, core.base_model_prefix)
    hidden = backbone(input_ids=ids[None], position_ids=positions[None], use_cache=False).last_hidden_state[0]
    return core.score(hidden[last])


def pair_rewards(model, input_ids, attention_mask):
    """Rewards of RewardTrainer's pair batch (the chosen sides, then the rejected sides, right-padded) with each
    pair's shared prefix — the prompt, tools included — computed once. A pair becomes one forked conversation
    (`qazlm.sft.packing`): the chosen side whole, then the rejected side's own tokens positioned right after the
    shared part, which they see; the chosen reply they do not. The backbone runs once over all pairs laid end to
    end; the score head reads each side's last token. Same rewards as two separate sequences, without computing
    the prompt twice (its share of the tokens: docs/alignment.md)."""
    import torch

    seqs = [row[keep] for row, keep in zip(input_ids, attention_mask.bool())]
    half = len(seqs) // 2
    ids, positions, last, end = [], [], [], 0
    for chosen, rejected in zip(seqs[:half], seqs[half:]):
        n = min(len(chosen), len(rejected)) - 1          # each side keeps at least its last token of its own
        differ = (chosen[:n] != rejected[:n]).nonzero()
        shared = int(differ[0]) if len(differ) else n
        ids += [chosen, rejected[shared:]]
        positions += [torch.arange(len(chosen)), torch.arange(shared, len(rejected))]
        end += len(chosen) + len(rejected) - shared
        last += [end - len(rejected) + shared - 1, end - 1]
    scores = row_scores(model, torch.cat(ids), torch.cat(positions).to(input_ids.device),
                        torch.tensor(last, device=input_ids.device))
    return torch.cat([scores[0::2], scores[1::2]])


class PairForward:
    """Stands in for the reward model inside RewardTrainer.compute_loss: called with the collated pair batch, it
    returns the logits of `pair_rewards`, so TRL's loss, margin and metrics run unchanged."""

    def __init__(self, model):
        self.model = model

    def __call__(self, input_ids, attention_mask, **_):
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        return SequenceClassifierOutputWithPast(logits=pair_rewards(self.model, input_ids, attention_mask))


def reward_trainer(model, tok, cfg: RmConfig, out: Path, device: str, train: list[dict]):
    """TRL's RewardTrainer whose forward skips the padding and computes each pair's shared prompt once
    (`pair_rewards`) when it runs in one process; under DDP the forward must go through DDP's wrapper, so TRL's
    padded forward runs there."""
    from trl import RewardTrainer

    from qazlm.sft.packing import use_packed_attention

    class PairRewardTrainer(RewardTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.accelerator.num_processes == 1:
                model = PairForward(self.accelerator.unwrap_model(model))
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    use_packed_attention(model)
    return PairRewardTrainer(model=model, args=rm_args(cfg, out, device), processing_class=tok,
                                 train_dataset=dataset(train))


def pairwise_accuracy(model, tok, pairs: list[dict]) -> dict:
    """Share of pairs whose chosen side scores higher, overall, on the checkable types (pairs.CHECKABLE), per type
    and per language, with margins."""
    chosen = rewards(model, tok, [render(tok, p["prompt"], p["chosen"], p.get("tools")) for p in pairs])
    rejected = rewards(model, tok, [render(tok, p["prompt"], p["rejected"], p.get("tools")) for p in pairs])
    groups: dict[str, list[float]] = {}
    for p, c, r in zip(pairs, chosen, rejected):
        keys = ["all", f"type:{p.get('type', '?')}", f"lang:{p.get('lang', '?')}"]
        for key in keys + ["checkable"] * (p.get("type") in CHECKABLE):
            groups.setdefault(key, []).append(c - r)
    return {k: {"pairs": len(v), "accuracy": sum(m > 0 for m in v) / len(v), "margin": sum(v) / len(v)}
            for k, v in sorted(groups.items())}


def rm_args(cfg: RmConfig, out: Path, device: str):
    from trl import RewardConfig

    return RewardConfig(**cfg.trainer_kwargs(out, device))


def run_rm(cfg: RmConfig, force: bool = False, log=print) -> dict:
    """Train the reward model into `cfg.out_dir` (skip / resume / --force as `qazlm sft`); returns the report."""
    return run_locked(cfg, force, log, STAGE, "rm_report.json", _train)


def _train(cfg: RmConfig, out: Path, log) -> dict:
    from qazlm.runs import resolve_device, write_record
    from qazlm.sft.train import is_main_process, quiet_libraries

    t0 = time.perf_counter()
    quiet_libraries()
    device = resolve_device(cfg.device, "[rm]")
    model, tok, kind = load_reward_start(cfg.model, device, cfg.seed, cfg.chat_template)
    train, held, long, n_train = training_pairs(tok, cfg)
    counts = set_aside_counts(long)
    trainer = reward_trainer(model, tok, cfg, out, device, train)
    result, _ = train_monitored(trainer, out, log, f"rm: {cfg.model} ({kind}, {device}) on {n_train:,} pairs "
                                                   f"({counts['set_aside']} set aside: too long or invalid)",
                                {"device": device, "model_kind": kind, "train_pairs": n_train})
    if not is_main_process():      # under torchrun: rank 0 alone evaluates and writes
        return {}
    model.eval()
    report = {"format": "qazlm-rm-report-v1", "model": cfg.model, "data": cfg.data, "steps": int(result.global_step),
              "train_loss": float(result.training_loss), "train_pairs": n_train, **counts,
              "heldout": pairwise_accuracy(model, tok, held), "wall_s": time.perf_counter() - t0}
    finish(trainer, tok, out, cfg, STAGE, kind, report, long)
    write_report(out, report)
    write_record(out, STAGE, dataclasses.asdict(cfg))
    held = report["heldout"]
    checkable = f", checkable {held['checkable']['accuracy']:.1%}" if "checkable" in held else ""
    log(f"rm: held-out pairwise accuracy {held['all']['accuracy']:.1%} on {held['all']['pairs']} pairs{checkable} "
        f"-> {out / 'final'}")
    return report


def write_report(out: Path, report: dict) -> None:
    from qazlm.io import write_json, write_text
    from qazlm.stats import interval_text

    lines = ["# Reward model", "", f"`{report['model']}` on `{report['data']}`: {report['steps']} steps, train loss "
             f"{report['train_loss']:.4f}, {report['train_pairs']:,} pairs ({report['set_aside']} set aside).", "",
             "Held-out pairwise accuracy (chosen scored above rejected) and mean margin" + heldout_note(report) + ":",
             "",
             "| group | pairs | accuracy | 95% interval | margin |", "|---|---:|---:|---:|---:|"]
    note = ["", "*checkable*: the pair types whose chosen side is right by construction (all but harmless_en and "
            "on_policy)."]
    lines += [f"| {k} | {v['pairs']} | {v['accuracy']:.1%} | {interval_text(v['accuracy'], v['pairs'])} | "
              f"{v['margin']:+.3f} |"
              for k, v in report["heldout"].items()]
    write_text(out / "rm_report.md", "\n".join(lines + note) + "\n")
    write_json(out / "rm_report.json", report)


def load_reward_model(path: str | Path, device: str = "cpu"):
    """A trained reward model folder (ours: `final/` of `qazlm rm train`) and its tokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from qazlm.infer.loading import load_tokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise QazlmError(f"{path}: not a reward model folder (no config.json); train one with `qazlm rm train`")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32,
                                                                   local_files_only=True)
    except (OSError, ValueError) as e:
        raise QazlmError(f"{path}: cannot load as a reward model ({str(e).splitlines()[0]})") from None
    if model.config.num_labels != 1:
        raise QazlmError(f"{path}: has {model.config.num_labels} labels; a reward model has one")
    return model.to(device).eval(), load_tokenizer(path)


def score(path: str | Path, prompt: str, responses: list[str], system: str | None = None) -> list[tuple[float, str]]:
    """Responses to one user prompt ranked by the reward model, best first: [(reward, response)]."""
    model, tok = load_reward_model(path)
    head = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    texts = [render(tok, head, [{"role": "assistant", "content": r}], None) for r in responses]
    return sorted(zip(rewards(model, tok, texts), responses), key=lambda x: -x[0])
