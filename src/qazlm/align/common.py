"""What `qazlm rm train` and `qazlm dpo` share: the run contract of `qazlm sft` (lock, skip, resume, record,
final/ with lineage), reading preference pairs, and setting aside pairs longer than max_len."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from qazlm.config import check_fields
from qazlm.errors import QazlmError

COLUMNS = ("prompt", "chosen", "rejected", "tools")   # what TRL reads of a pair


@dataclass
class PairTraining:
    """The keys [rm] and [dpo] share (each adds its own and its defaults)."""
    model: str = ""                 # the starting model folder (ours or Hugging Face), usually the SFT model
    data: str = ""                  # a `qazlm pref-data` folder
    out_dir: str = ""
    lr: float = 5e-5
    epochs: float = 1.0
    max_steps: int = -1             # > 0: stop after this many optimizer steps (overrides epochs)
    batch_size: int = 8
    max_len: int = 512              # tokens per rendered conversation; longer pairs are set aside
    warmup: float = 0.05            # < 1: share of the steps; >= 1: a number of steps
    seed: int = 0
    save_steps: int = 100
    logging_steps: int = 5
    max_heldout: int = 400          # held-out pairs scored for the report
    device: str = "auto"
    chat_template: str = ""         # "": the model's own (ours get qazlm's); "qazlm": install it in an HF folder

    def check(self, table: str, more: dict[str, str]) -> None:
        check_fields(self, f"[{table}] ", {"lr": "> 0", "epochs": "> 0", "batch_size": ">= 1", "max_len": ">= 16",
                                           "warmup": ">= 0", "save_steps": ">= 1", "logging_steps": ">= 1",
                                           "max_heldout": ">= 0", **more})
        if not self.model or not self.data:
            raise QazlmError(f"{table}: give the starting model and --data (a `qazlm pref-data` folder)")
        from qazlm.sft.config import CHAT_TEMPLATES

        if self.chat_template not in CHAT_TEMPLATES:
            raise QazlmError(f"[{table}] chat_template = {self.chat_template!r}: choose \"\" (the model's own) or "
                             "\"qazlm\"")

    def trainer_kwargs(self, out: Path, device: str) -> dict:
        """The TrainingArguments both trainers take, fp32 on CPU and bf16 on CUDA set explicitly (TRL turns
        bf16 on by default)."""
        return dict(output_dir=str(out / "checkpoints"), learning_rate=self.lr,
                    num_train_epochs=1,   # training_pairs' stream is the whole run: `epochs` passes or max_steps
                    max_steps=self.max_steps, per_device_train_batch_size=self.batch_size,
                    per_device_eval_batch_size=self.batch_size, warmup_steps=self.warmup, seed=self.seed,
                    data_seed=self.seed, logging_steps=self.logging_steps, save_strategy="steps",
                    save_steps=self.save_steps, save_total_limit=2, report_to="none", use_cpu=device == "cpu",
                    bf16=device == "cuda", fp16=False, gradient_checkpointing=False, max_length=self.max_len,
                    dataset_num_proc=None, dataloader_num_workers=0, disable_tqdm=False,
                    train_sampling_strategy="sequential")   # in the stream's order


def read_pairs(folder: str | Path, name: str) -> tuple[list[dict], list[dict]]:
    """(usable pairs, set aside with their line and reason) of `<folder>/<name>.jsonl`: `qazlm pref-data`'s
    conversational pairs or TRL's standard ones (prompt, chosen and rejected as plain text). A hand-made or
    external file may hold lines that cannot teach a preference; each is set aside, never trained on unseen."""
    path = Path(folder) / f"{name}.jsonl"
    if not path.is_file():
        raise QazlmError(f"{path} not found; build the folder with `qazlm pref-data --sft-data DIR -o {folder}`")
    kept, aside = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            pair, why = as_pair(json.loads(line))
        except json.JSONDecodeError as e:
            pair, why = None, f"malformed JSON ({e.msg})"
        if why:
            aside.append({"file": path.name, "line": lineno, "reason": why})
        else:
            kept.append(pair)
    return kept, aside


def as_pair(row) -> tuple[dict | None, str | None]:
    """(the pair with its sides as message lists, None) or (None, why it cannot be trained on): a side missing,
    not text or messages, empty, both sides the same, or a tool call whose arguments are no JSON object."""
    from qazlm.align.pairs import why_not
    from qazlm.infer.tools import canonical_tool_calls
    from qazlm.sft.load import ROLES

    if not isinstance(row, dict) or not {"prompt", "chosen", "rejected"} <= set(row):
        return None, "a pair needs prompt, chosen and rejected"
    pair = dict(row)
    for key, role in (("prompt", "user"), ("chosen", "assistant"), ("rejected", "assistant")):
        side = [{"role": role, "content": row[key]}] if isinstance(row[key], str) else row[key]
        if not isinstance(side, list) or not side or not all(
                isinstance(m, dict) and m.get("role") in ROLES for m in side):
            return None, f"{key}: expected text or a non-empty list of messages with a role ({', '.join(ROLES)})"
        try:
            pair[key] = canonical_tool_calls(side)
        except QazlmError as e:
            return None, f"{key}: {e}"
    why = why_not(pair)
    return (None, why) if why else (pair, None)


def render(tok, prompt: list[dict], response: list[dict], tools) -> str:
    """A conversation as the models read it: the one chat template, tools included."""
    from qazlm.infer.chat import render_chat

    tools = json.loads(tools) if isinstance(tools, str) else tools
    return render_chat(tok, prompt + response, add_generation_prompt=False, tools=tools)


def side_lengths(tok, row: dict) -> tuple[int, int]:
    """Tokens of the chosen and the rejected side, as rendered for training."""
    return tuple(len(tok(render(tok, row["prompt"], row[side], row.get("tools")), add_special_tokens=False)
                     ["input_ids"]) for side in ("chosen", "rejected"))


def pair_length(tok, row: dict) -> int:
    """Tokens of the longer side, as rendered for training."""
    return max(side_lengths(tok, row))


def length_grouped(pairs: list[dict], lengths: list[int], batch_size: int, seed: int, chunk: int = 4) -> list[dict]:
    """The pairs shuffled, sorted by length within chunks of `chunk` batches, cut into batches, and the batches
    shuffled (transformers' LengthGroupedSampler with small megabatches). A batch pads to its longest pair, and
    a few ~700-token tool pairs spread over every batch padded nearly all of them; chunks this small keep the
    pair types mixed in a batch (sorting the whole set put one type in each and the reward model stopped
    learning). The trainers read the list in order (`train_sampling_strategy="sequential"`)."""
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    size = chunk * batch_size
    order = [i for c in range(0, len(order), size) for i in sorted(order[c:c + size], key=lengths.__getitem__)]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return [pairs[i] for batch in batches for i in batch]


def training_pairs(tok, cfg) -> tuple[list[dict], list[dict], list[dict], int]:
    """(training stream, held-out, set aside, training pairs): the pairs of `cfg.data` (the first `cfg.max_heldout`
    held-out ones) that fit `cfg.max_len` tokens, and the others with their split and reason, so that no pair is
    dropped unseen. The stream is what the run reads, once and in order: `max_steps` batches, or else `epochs`
    passes, each pass in its own length-grouped order (`length_grouped`, seeded by the pass; one order repeated
    gave every epoch the same batches). DPO precomputes reference log-probs for the stream only."""
    kept, long = {}, []
    for split in ("train", "heldout"):
        pairs, invalid = read_pairs(cfg.data, split)
        pairs = pairs if split == "train" else pairs[:cfg.max_heldout]
        long += [dict(r, split=split) for r in invalid]
        sized = [(p, pair_length(tok, p)) for p in pairs]
        kept[split] = [(p, n) for p, n in sized if n <= cfg.max_len]
        long += [dict(p, split=split, reason=f"longer than max_len = {cfg.max_len}")
                 for p, n in sized if n > cfg.max_len]
        if not kept["train"]:
            why = (f"e.g. line {invalid[0]['line']}: {invalid[0]['reason']}" if invalid else
                   f"every pair is longer than max_len = {cfg.max_len} tokens; raise max_len" if sized else "no pairs")
            raise QazlmError(f"{Path(cfg.data) / 'train.jsonl'}: no training pair to use ({why})")
    from qazlm.sft.train import world_size

    train, lengths = zip(*kept["train"])
    batch = cfg.batch_size * world_size()   # under torchrun a step reads `batch` consecutive pairs, split over ranks
    reads = cfg.max_steps * batch if cfg.max_steps > 0 else math.ceil(cfg.epochs * len(train))
    stream = [p for k in range(math.ceil(reads / len(train)))
              for p in length_grouped(list(train), list(lengths), batch, cfg.seed + k)]
    return stream[:reads], [p for p, _ in kept["heldout"]], long, len(train)


def set_aside_counts(long: list[dict]) -> dict:
    """{"set_aside": train pairs set aside, "heldout_set_aside": held-out pairs not scored} for the reports."""
    return {"set_aside": sum(p["split"] == "train" for p in long),
            "heldout_set_aside": sum(p["split"] == "heldout" for p in long)}


def heldout_note(report: dict) -> str:
    n = report.get("heldout_set_aside", 0)
    return f" ({n} held-out pairs longer than max_len or invalid not scored, listed in rejected.jsonl)" if n else ""


def dataset(pairs: list[dict]):
    from datasets import Dataset

    return Dataset.from_list([{k: p.get(k) for k in COLUMNS} for p in pairs])


def run_locked(cfg, force: bool, log, stage: str, report_file: str, train) -> dict:
    """`train(cfg, out, log)` under the output folder's lock, unless the folder already holds this exact run
    (then its saved report); skip / resume / --force rules as `qazlm sft`."""
    from qazlm.runs import output_lock
    from qazlm.sft.train import is_main_process, prepare_out, quiet, rank_zeros_answer, torchrun_group

    out = Path(cfg.out_dir)
    lock, log = (output_lock(out, stage), log) if is_main_process() else (contextlib.nullcontext(), quiet)
    with torchrun_group(cfg.device), lock:
        if rank_zeros_answer(is_main_process() and prepare_out(out, cfg, force, log, stage=stage)):
            return json.loads((out / report_file).read_text(encoding="utf-8"))
        return train(cfg, out, log)


def train_monitored(trainer, out: Path, log, line: str, header: dict, evaluate: bool = False):
    """Train with a quiet progress bar and metrics.jsonl (`header` as its step-0 row, then losses, tokens and
    padding per logging window, as `qazlm sft` writes), resuming from the last complete checkpoint;
    returns (TrainOutput, held-out metrics or {})."""
    from qazlm.sft.callbacks import MetricsCallback, TokenCounter, count_trained_tokens, quiet_progress
    from qazlm.sft.train import add_tensorboard, is_main_process, last_complete_checkpoint, tokens_before
    from qazlm.train.monitor import MetricsLogger

    quiet_progress(trainer)
    add_tensorboard(trainer, out)
    resume = last_complete_checkpoint(out / "checkpoints")
    step0 = json.loads((resume / "trainer_state.json").read_text())["global_step"] if resume else 0
    counter = TokenCounter()
    count_trained_tokens(trainer, counter)          # on every rank: the count is a collective
    logger = None
    if is_main_process():
        logger = MetricsLogger(out, tensorboard=False, resume_step=step0 if resume else None)
        if not resume:
            logger.log(0, {**header, "processes": trainer.accelerator.num_processes})
        trainer.add_callback(MetricsCallback(logger, counter, tokens_before(out, step0) if resume else 0))
    log(line + (f"; resuming from {resume.name}" if resume else ""))
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return result, trainer.evaluate() if evaluate else {}
    finally:
        if logger is not None:
            logger.close()


def finish(trainer, tok, out: Path, cfg, stage: str, kind: str, report: dict, long: list[dict]) -> None:
    """final/ (model, tokenizer, lineage) and rejected.jsonl; the caller then writes its report and, last, the
    stage record, so a folder with a record is always complete."""
    from qazlm.sft.train import save_final, write_jsonl

    if long:
        write_jsonl(out / "rejected.jsonl", long)
    save_final(trainer, tok, out / "final", {"format": f"qazlm-{stage}-lineage-v1", "stage": stage,
                                             "parent": {"path": str(Path(cfg.model).resolve()), "kind": kind},
                                             "data": str(Path(cfg.data).resolve()),
                                             "config": dataclasses.asdict(cfg), "report": report})
