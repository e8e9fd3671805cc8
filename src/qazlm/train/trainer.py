"""The pretraining loop: `train(cfg)` runs a `Trainer` from a token folder to checkpoints and a final model.

Same code for 1 CPU process, 1 GPU and torchrun worlds (DDP or FSDP2). The batch of every step is a pure
function of (seed, step), and checkpoints hold model, optimizer, RNG and the step, so a killed run resumes
onto exactly the curve it would have followed.

The shape follows torchtitan: `Trainer.run` reads as the list of what a run does (set up, resume, loop over
`train_step`, evaluate and checkpoint on schedule, finish), and each of those is one short method.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.train import checkpoint as ckpt
from qazlm.train.config import PretrainConfig, tri_state
from qazlm.train.distributed import DistInfo


@dataclasses.dataclass
class Plan:
    """Derived run geometry, validated once."""

    steps: int
    accum: int
    rows_per_step: int
    tokens_per_step: int


def plan(cfg: PretrainConfig, world: int) -> Plan:
    per_micro = cfg.micro_batch * cfg.seq_len * world
    if cfg.global_batch_tokens % per_micro:
        raise QazlmError(f"[pretrain] global_batch_tokens = {cfg.global_batch_tokens} is not a multiple of "
                         f"micro_batch * seq_len * world_size = {cfg.micro_batch}*{cfg.seq_len}*{world} = {per_micro}; "
                         "adjust one of them")
    accum = cfg.global_batch_tokens // per_micro
    steps = cfg.steps or cfg.token_budget // cfg.global_batch_tokens
    if steps < 1:
        raise QazlmError("[pretrain] set steps > 0 or a token_budget of at least one global batch")
    return Plan(steps, accum, cfg.micro_batch * accum * world, cfg.global_batch_tokens)


def model_config(cfg: PretrainConfig, vocab_size: int):
    """ModelConfig from the preset + overrides; the vocabulary comes from the data, max_seq_len >= seq_len."""
    from qazlm.model.presets import preset

    mcfg = preset(cfg.model, vocab_size)
    fields = {f.name for f in dataclasses.fields(mcfg)}
    bad = sorted(set(cfg.model_overrides) - fields)
    if bad:
        raise QazlmError(f"[pretrain] model_overrides: unknown key(s) {bad}; valid: {', '.join(sorted(fields))}")
    try:
        mcfg = dataclasses.replace(mcfg, **cfg.model_overrides)
    except (TypeError, ValueError, QazlmError) as e:
        raise QazlmError(f"[pretrain] model_overrides: {e}") from None
    if mcfg.max_seq_len < cfg.seq_len:
        mcfg = dataclasses.replace(mcfg, max_seq_len=cfg.seq_len)
    return mcfg


def load_tokenizer(cfg: PretrainConfig, tokens):
    """The HF tokenizer (for bpb, samples and the final model folder), or (None, None) for a plain token file."""
    path = cfg.tokenizer or getattr(tokens, "meta", {}).get("tokenizer", "")
    if not path:
        return None, None
    from qazlm.infer.loading import load_tokenizer as load_hf

    if not Path(path).exists():
        raise QazlmError(f"{path}: tokenizer folder (from [pretrain] tokenizer or meta.json) not found; "
                         "set pretrain.tokenizer")
    return load_hf(path), Path(path)


def vocab_size(cfg: PretrainConfig, tokens, tokenizer) -> int:
    """The model's vocabulary: an explicit override, else the token folder's, else the tokenizer's. The
    three must agree where they are known (shards made with another tokenizer would train nonsense)."""
    from_data = int(getattr(tokens, "vocab_size", 0) or 0)
    from_tok = len(tokenizer) if tokenizer is not None else 0
    vocab = int(cfg.model_overrides.get("vocab_size") or from_data or from_tok)
    if not vocab:
        raise QazlmError(f"{cfg.data}: vocabulary size unknown for a plain token file; set pretrain.tokenizer "
                         "(or model_overrides.vocab_size)")
    if from_data and from_data > vocab:
        raise QazlmError(f"{cfg.data}: the token folder's vocabulary ({from_data:,}) is larger than the model's "
                         f"({vocab:,}); remove model_overrides.vocab_size or rerun `qazlm data prepare`")
    if from_data and from_tok and from_tok != from_data:
        raise QazlmError(f"{cfg.tokenizer or cfg.data}: tokenizer has {from_tok:,} tokens but the token folder was "
                         f"made with a {from_data:,}-token vocabulary; use the tokenizer of `qazlm data prepare`")
    return vocab


def val_texts(cfg: PretrainConfig) -> dict[str, list[str]]:
    """Held-out text per language: the data stage's val/{lang}.jsonl.gz, else FLORES+ dev."""
    from qazlm import heldout

    sets = heldout.val_texts(Path(cfg.val_data)) if cfg.val_data else heldout.flores_texts("dev")
    return {heldout.set_lang(k): v[:cfg.eval_docs] for k, v in sets.items()}


def train(cfg: PretrainConfig, log=print) -> Path | None:
    """Run (or resume) pretraining into `cfg.out_dir`; returns the final model folder (None if stopped early).

    Rank 0 holds the output folder's run lock for the whole run (one run per folder)."""
    from qazlm.runs import output_lock

    if not cfg.data:
        raise QazlmError("[pretrain] data is empty; point it at a tokens/ folder (meta.json) or a .bin/.npy file")
    lock = output_lock(cfg.out_dir, "pretrain") if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        return Trainer(cfg, log).run()


class Trainer:
    """One pretraining run. Build it, then `run()`; see the module docstring."""

    def __init__(self, cfg: PretrainConfig, log=print):
        import torch

        from qazlm.train import distributed as D

        self.cfg = cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.info: DistInfo = D.init_distributed(cfg.device)
        self.say = log if self.info.is_main else (lambda *a, **k: None)
        self.device = self.info.device
        self.device_type = self.device.split(":")[0]
        self.out = Path(cfg.out_dir)
        self.ckpt_root = self.out / "checkpoints"
        self.plan = plan(cfg, self.info.world)
        self.fsdp = cfg.parallel == "fsdp" and self.info.enabled
        self.logger = None
        self.texts: dict[str, list[str]] = {}
        self.start_step = self.tokens_seen = 0
        self.resumed = False

    # ------------------------------------------------------------------------------------------ the run

    def run(self) -> Path | None:
        from qazlm.train import distributed as D

        self.build_data()
        self.build_model()
        self.resume()
        self.start_logging()
        end_step = self.plan.steps
        if self.cfg.max_steps_this_run:
            end_step = min(end_step, self.start_step + self.cfg.max_steps_this_run)
        done = self.train_loop(end_step)
        try:
            if done < self.plan.steps:
                if done > self.start_step and not self.is_checkpoint_step(done):
                    self.save(done)
                self.say(f"pretrain: stopped at step {done}/{self.plan.steps} (max_steps_this_run); rerun to resume")
                return None
            return self.finish()
        finally:
            if self.logger is not None:
                self.logger.close()
            D.shutdown(self.info)

    def train_loop(self, end_step: int) -> int:
        """Steps [start_step, end_step) with logging, evaluation and checkpoints on schedule; returns the
        number of steps done."""
        cfg, p = self.cfg, self.plan
        self.model.train()
        progress = _Progress(self.info.is_main, p.steps, self.start_step)
        self.window = (time.perf_counter(), self.start_step)  # the logging window's start: time, step
        done = self.start_step
        try:
            for step, micro in self.loader.iterate(self.start_step, end_step):
                loss_sum, grad_norm, lr = self.train_step(step, micro)
                done = step + 1
                if cfg.log_every and (done % cfg.log_every == 0 or done == end_step):
                    self.log_step(done, loss_sum, grad_norm, lr, progress)
                if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done != p.steps:
                    self.evaluate(done)
                if self.is_checkpoint_step(done) and done != p.steps:
                    self.save(done)
        finally:
            progress.close()
        return done

    def train_step(self, step: int, micro) -> tuple:
        """One optimizer step over the accumulated micro-batches; returns (summed loss tensor, grad norm, lr)."""
        import torch

        from qazlm.train.schedule import lr_at

        cfg, p = self.cfg, self.plan
        lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=p.steps,
                   schedule=cfg.schedule, decay_fraction=cfg.decay_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for m, rows in enumerate(micro):
            batch = torch.from_numpy(rows).to(self.device, non_blocking=True)
            with _grad_sync(self.model, m == p.accum - 1), self.autocast():
                loss = self.model(batch[:, :-1], targets=batch[:, 1:])
            (loss / p.accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.tokens_seen += p.tokens_per_step
        return loss_sum, grad_norm, lr

    def is_checkpoint_step(self, step: int) -> bool:
        return bool(self.cfg.ckpt_every) and step % self.cfg.ckpt_every == 0

    # -------------------------------------------------------------------------------------------- setup

    def build_data(self) -> None:
        from qazlm.train.loader import BatchLoader, WindowSampler, open_tokens

        cfg = self.cfg
        self.tokens = open_tokens(cfg.data, "train", cfg.data_dtype)
        self.tokenizer, self.tokenizer_dir = load_tokenizer(cfg, self.tokens)
        self.vocab = vocab_size(cfg, self.tokens, self.tokenizer)
        self.sampler = WindowSampler(self.tokens, cfg.seq_len, cfg.seed, vocab_size=self.vocab)
        self.loader = BatchLoader(self.sampler, micro_batch=cfg.micro_batch, accum=self.plan.accum,
                                  rank=self.info.rank, world=self.info.world, prefetch=cfg.prefetch)

    def build_model(self) -> None:
        """The model (seeded: every rank starts from identical weights), its parallel wrapper and optimizer."""
        from qazlm.model.transformer import build_model
        from qazlm.train import distributed as D
        from qazlm.train.optim import build_optimizer

        cfg, on_cuda = self.cfg, self.device_type == "cuda"
        self.mcfg = model_config(cfg, self.vocab)
        self.raw = build_model(self.mcfg, device=self.device, seed=cfg.seed)
        self.use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and on_cuda)
        if tri_state(cfg.activation_checkpointing, auto=on_cuda and self.mcfg.n_layers >= 24):
            D.apply_activation_checkpointing(self.raw)
        if tri_state(cfg.compile, auto=on_cuda):
            D.compile_blocks(self.raw)
        self.model = D.wrap_model(self.raw, self.info, cfg.parallel, mixed_bf16=self.use_bf16 and cfg.parallel == "fsdp")
        self.optimizer = build_optimizer(self.model, cfg, self.device_type)

    def autocast(self):
        """bf16 autocast when asked for (FSDP casts through its own mixed-precision policy instead)."""
        import torch

        if self.use_bf16 and not self.fsdp:
            return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def resume(self) -> None:
        """Continue from the latest complete checkpoint (after removing what a killed write left)."""
        from qazlm.train import distributed as D

        if self.info.is_main:
            for leftover in ckpt.clean_partial(self.ckpt_root):
                self.say(f"pretrain: removed {leftover} (left by a checkpoint write that was killed)")
        D.barrier(self.info)
        last = ckpt.latest(self.ckpt_root) if self.cfg.resume else None
        if last is None:
            return
        state = ckpt.load(last, model=self.model, raw_model=self.raw, optimizer=self.optimizer)
        self.loader.check_resume(state.get("loader", {}), str(last))
        self.start_step, self.tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        self.resumed = True
        self.say(f"pretrain: resumed from {last} (step {self.start_step}/{self.plan.steps})")

    def start_logging(self) -> None:
        """Announce the run, open metrics.jsonl (rank 0) and log the run facts and the unigram baseline."""
        from qazlm.train.monitor import MetricsLogger, peak_flops

        cfg, p, raw = self.cfg, self.plan, self.raw
        n_params = raw.num_params()
        n_embed = n_params - raw.num_params(non_embedding=True)
        self.flops_per_token = float(raw.flops_per_token(cfg.seq_len))
        self.peak, peak_src = peak_flops(self.device) if self.info.is_main else (float("nan"), "")
        self.say(f"pretrain: {cfg.model} {n_params / 1e6:.2f}M params ({n_embed / 1e6:.2f}M embedding), "
                 f"{self.tokens.num_tokens:,} train tokens, {p.steps} steps x {p.tokens_per_step:,} tokens "
                 f"(micro {cfg.micro_batch} x accum {p.accum} x world {self.info.world}), device {self.device}"
                 f"{' bf16' if self.use_bf16 else ' fp32'}, peak {self.peak / 1e12:.2f} TFLOP/s ({peak_src})")
        self.need_eval = self.tokenizer is not None and cfg.eval_every >= 0
        if self.need_eval and (self.info.is_main or self.fsdp):  # an FSDP forward is collective
            self.texts = val_texts(cfg)
        if not self.info.is_main:
            return
        self.logger = MetricsLogger(self.out, tensorboard=cfg.tensorboard, wandb=cfg.wandb, run_name=self.out.name,
                                    config=dataclasses.asdict(cfg),
                                    resume_step=self.start_step if self.resumed else None)
        if self.start_step == 0:
            self.logger.log(0, {"params": n_params, "params_embedding": n_embed,
                                "flops_per_token": self.flops_per_token, "peak_flops": self.peak,
                                "peak_source": peak_src, "world_size": self.info.world, "device": str(self.device),
                                "precision": "bf16" if self.use_bf16 else "fp32",
                                "tokens_per_step": p.tokens_per_step, "steps": p.steps})
        if self.need_eval and self.start_step < p.steps:
            self.log_unigram_baseline()

    def log_unigram_baseline(self) -> None:
        """Logged at every (re)start: a resumed run may score other held-out texts (eval_docs changed)."""
        from qazlm.train.monitor import token_counts, unigram_bpb

        counts = token_counts(self.tokens, self.vocab)
        base = {f"unigram_bpb/{lang}": unigram_bpb(counts, self.tokenizer, t) for lang, t in self.texts.items()}
        self.logger.log(self.start_step, base)
        self.say("pretrain: unigram baseline bpb " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in base.items()))

    # ------------------------------------------------------------------------------ logging, eval, saving

    def log_step(self, done: int, loss_sum, grad_norm, lr: float, progress) -> None:
        import torch

        from qazlm.train import distributed as D
        from qazlm.train.monitor import memory_gb

        loss = D.all_reduce_mean(float(loss_sum.item()) / self.plan.accum, self.info, self.device)
        if not math.isfinite(loss):
            raise QazlmError(f"[pretrain] loss became {loss} at step {done}; lower lr or check the data")
        if self.device_type == "cuda":
            torch.cuda.synchronize()
        t0, step0 = self.window
        tps = (done - step0) * self.plan.tokens_per_step / (time.perf_counter() - t0)
        gn = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        rec = {"loss": loss, "lr": lr, "grad_norm": gn, "tokens_per_s": tps,
               "mfu": self.flops_per_token * tps / (self.peak * self.info.world) if self.peak == self.peak else None,
               "memory_gb": memory_gb(self.device), "tokens": self.tokens_seen,
               "epoch": self.sampler.epoch_of_step(done, self.plan.rows_per_step)}
        if self.logger is not None:
            self.logger.log(done, rec)
        progress.update(done, loss, tps)
        self.window = (time.perf_counter(), done)

    def evaluate(self, step: int, final: bool = False) -> None:
        """Held-out bits per byte per language, plus generation samples every `sample_every` steps and at the end."""
        if not (self.need_eval and self.texts):
            return
        t0 = time.time()
        self.raw.eval()
        try:
            rec = self.score_heldout()
            if final or (self.cfg.sample_every and step % self.cfg.sample_every == 0):
                rec.update(self.samples())
        finally:
            self.raw.train()
        rec["eval_seconds"] = time.time() - t0
        if self.logger is not None:
            self.logger.log(step, rec)
            gains = [f"{k.split('_')[-1]} {v:+.2f}" for k, v in rec.items() if k.startswith("val/copy_gain")]
            self.say(f"  eval @ {step}: " + ", ".join(f"{k.split('_')[-1]} {v:.3f}" for k, v in rec.items()
                                                        if k.startswith("val/bpb"))
                     + (f"; copy gain (nats/token) {', '.join(gains)}" if gains else ""))
            for k, v in rec.items():
                if k.startswith("sample/"):
                    self.say(f"  {k}: {v!r}")

    def score_heldout(self) -> dict:
        import torch

        from qazlm.infer.scoring import bits_per_byte, copy_score

        scorer = _Scorer(self.model if self.fsdp else self.raw, self.autocast)
        max_len = min(self.cfg.eval_max_len, self.mcfg.max_seq_len)
        rec = {}
        with torch.no_grad():
            for lang, docs in self.texts.items():
                r = bits_per_byte(scorer, self.tokenizer, docs, max_len=max_len, batch_size=8, device=self.device)
                rec[f"val/bpb_{lang}"] = r["bpb"]
                rec[f"val/loss_{lang}"] = r["nll_nats"] / max(1, r["n_tokens"])
                # in-context copying: the loss a repeated span saves (0 until induction heads form)
                c = copy_score(scorer, self.tokenizer, docs, max_len=max_len, batch_size=8, device=self.device)
                rec[f"val/copy_gain_{lang}"] = c["first_loss"] - c["repeat_loss"]
        return rec

    def samples(self) -> dict:
        """One greedy continuation per language (rank 0; not under FSDP, whose forward is collective)."""
        if not self.info.is_main or self.fsdp:
            return {}
        from qazlm.infer.engine import SAMPLE_PROMPTS, generate
        from qazlm.model.decode import Decoder

        prompts = {lang: texts[0] for lang, texts in SAMPLE_PROMPTS.items()}
        try:
            outs = generate(self.raw, self.tokenizer, list(prompts.values()), max_new_tokens=self.cfg.sample_tokens,
                            repetition_penalty=1.3, device=self.device)
        except Exception as e:  # noqa: BLE001 - a sampling bug must not kill a long run
            self.say(f"  samples skipped ({type(e).__name__}: {e})")
            return {}
        finally:
            Decoder.release(self.raw)  # the next step changes the weights: keep no stale copy in memory
        return {f"sample/{lang}": prompt + text for (lang, prompt), text in zip(prompts.items(), outs)}

    def save(self, step: int) -> None:
        from qazlm.train import distributed as D

        extra = {"loader": self.loader.state_dict(step), "tokens_seen": self.tokens_seen,
                 "config": dataclasses.asdict(self.cfg)}
        path = ckpt.save(self.ckpt_root, step, model=self.model, raw_model=self.raw, optimizer=self.optimizer,
                         extra=extra, is_main=self.info.is_main, keep_last_k=self.cfg.keep_last_k)
        D.barrier(self.info)
        self.say(f"  checkpoint {path}")

    def finish(self) -> Path:
        """Final evaluation, checkpoint and `final/` model folder (skipped when a rerun finds them done)."""
        from qazlm.train import distributed as D

        final = self.out / "final"
        if self.start_step < self.plan.steps or not (final / "qazlm_model.json").exists():
            self.evaluate(self.plan.steps, final=True)
            self.save(self.plan.steps)
            if self.info.is_main:
                self.save_final(final)
        D.barrier(self.info)
        self.say(f"pretrain: final model -> {final}")
        return final

    def save_final(self, final: Path) -> None:
        """`final/` = the last checkpoint's model (full weights even under FSDP), with the step and token count
        in its qazlm_model.json."""
        from qazlm.model.io import load_model_folder, save_model_folder

        src = ckpt.latest(self.ckpt_root)
        last_is_final = src is not None and int(src.name.split("_")[1]) == self.plan.steps
        save_model_folder(load_model_folder(src) if last_is_final else self.raw, final,
                          tokenizer_dir=self.tokenizer_dir, extra={"step": self.plan.steps, "tokens": self.tokens_seen})


class _Scorer:
    """`input_ids -> float32 logits` under the run's autocast, for qazlm.infer.scoring."""

    def __init__(self, model, autocast):
        self.model, self.autocast = model, autocast

    def __call__(self, ids):
        with self.autocast():
            return self.model(ids).float()


@contextlib.contextmanager
def _grad_sync(model, sync: bool):
    """Skip the gradient all-reduce on all but the last micro-batch (DDP no_sync / FSDP2 flag)."""
    if hasattr(model, "no_sync") and not sync:
        with model.no_sync():
            yield
        return
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(sync)
    yield


class _Progress:
    """Rich progress bar with ETA on rank 0 (a no-op elsewhere)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
            self.task = self.bar.add_task("steps", total=total, completed=start, info="")
            self.bar.start()

    def update(self, step: int, loss: float, tps: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, info=f"loss {loss:.3f} {tps:,.0f} tok/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
