"""The pretraining loop: one function, `train(cfg)`, from a token folder to checkpoints and a final model.

Same code for 1 CPU process, 1 GPU and torchrun worlds (DDP or FSDP2). The batch of every step is a pure
function of (seed, step), and checkpoints hold model, optimizer, RNG and the step, so a killed run resumes
onto exactly the curve it would have followed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

from qazlm.errors import QazlmError
from qazlm.train import checkpoint as ckpt
from qazlm.train.config import SCHEDULES, PretrainConfig, tri_state
from qazlm.train.distributed import DistInfo

SAMPLE_PROMPTS = {"kk": "Қазақстан Республикасы", "ru": "Россия является", "en": "The capital of Kazakhstan is"}


@dataclasses.dataclass
class Plan:
    """Derived run geometry, validated once."""

    steps: int
    accum: int
    rows_per_step: int
    tokens_per_step: int


def plan(cfg: PretrainConfig, world: int) -> Plan:
    if cfg.schedule not in SCHEDULES:
        raise QazlmError(f"[pretrain] schedule = {cfg.schedule!r}: use one of {', '.join(SCHEDULES)}")
    if cfg.parallel not in ("ddp", "fsdp"):
        raise QazlmError(f"[pretrain] parallel = {cfg.parallel!r}: use ddp or fsdp")
    per_micro = cfg.micro_batch * cfg.seq_len * world
    if cfg.micro_batch < 1 or cfg.seq_len < 2 or cfg.global_batch_tokens % per_micro:
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

    try:
        mcfg = preset(cfg.model, vocab_size)
    except (KeyError, ValueError) as e:
        raise QazlmError(f"[pretrain] model = {cfg.model!r}: {e}") from None
    fields = {f.name for f in dataclasses.fields(mcfg)}
    bad = sorted(set(cfg.model_overrides) - fields)
    if bad:
        raise QazlmError(f"[pretrain] model_overrides: unknown key(s) {bad}; valid: {', '.join(sorted(fields))}")
    mcfg = dataclasses.replace(mcfg, **cfg.model_overrides)
    if mcfg.max_seq_len < cfg.seq_len:
        mcfg = dataclasses.replace(mcfg, max_seq_len=cfg.seq_len)
    return mcfg


def load_tokenizer(cfg: PretrainConfig, tokens):
    """The HF tokenizer (for bpb, samples and the final model folder), or None for a plain token file."""
    path = cfg.tokenizer or getattr(tokens, "meta", {}).get("tokenizer", "")
    if not path:
        return None, None
    from qazlm.eval.loading import load_tokenizer as load_hf

    if not Path(path).exists():
        raise QazlmError(f"{path}: tokenizer folder (from [pretrain] tokenizer or meta.json) not found; "
                         "set pretrain.tokenizer")
    return load_hf(path), Path(path)


def val_texts(cfg: PretrainConfig) -> dict[str, list[str]]:
    """Held-out text per language: the data stage's val/{lang}.jsonl.gz, else FLORES+ dev."""
    from qazlm.eval import texts as T

    if cfg.val_data:
        sets = T.val_texts(Path(cfg.val_data))
    else:
        from qazlm.eval.hook import default_texts

        sets = default_texts("dev", cfg.eval_docs)
    return {T.set_lang(k): v[:cfg.eval_docs] for k, v in sets.items()}


class _Scorer:
    """`input_ids -> float32 logits` under the run's autocast, for qazlm.eval.bpb."""

    def __init__(self, model, autocast):
        self.model, self.autocast = model, autocast

    def __call__(self, ids):
        with self.autocast():
            return self.model(ids).float()


def build_model(mcfg, device: str, seed: int):
    """The model engine's meta-device build, seeded so that every rank starts from identical weights."""
    from qazlm.model.transformer import build_model as build

    return build(mcfg, device=device, seed=seed)


def train(cfg: PretrainConfig, log=print) -> Path | None:
    """Run (or resume) pretraining into `cfg.out_dir`; returns the final model folder (None if stopped early)."""
    import torch

    from qazlm.train import distributed as D
    from qazlm.train.loader import BatchLoader, WindowSampler, open_tokens
    from qazlm.train.monitor import MetricsLogger, memory_gb, peak_flops, token_counts, unigram_bpb
    from qazlm.train.optim import build_optimizer
    from qazlm.train.schedule import lr_at

    if not cfg.data:
        raise QazlmError("[pretrain] data is empty; point it at a tokens/ folder (meta.json) or a .bin/.npy file")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    info: DistInfo = D.init_distributed(cfg.device)
    say = log if info.is_main else (lambda *a, **k: None)
    device, device_type = info.device, info.device.split(":")[0]
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"
    p = plan(cfg, info.world)

    tokens = open_tokens(cfg.data, "train", cfg.data_dtype)
    tokenizer, tokenizer_dir = load_tokenizer(cfg, tokens)
    vocab = int(cfg.model_overrides.get("vocab_size") or getattr(tokens, "vocab_size", 0)
                or (len(tokenizer) if tokenizer is not None else 0))
    if not vocab:
        raise QazlmError(f"{cfg.data}: vocabulary size unknown for a plain token file; set pretrain.tokenizer "
                         "(or model_overrides.vocab_size)")
    mcfg = model_config(cfg, vocab)
    model = build_model(mcfg, device, cfg.seed)
    raw = model
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and device_type == "cuda")
    if cfg.dtype not in ("auto", "fp32", "bf16"):
        raise QazlmError(f"[pretrain] dtype = {cfg.dtype!r}: use auto, fp32 or bf16")
    on_cuda = device_type == "cuda"
    if tri_state(cfg.activation_checkpointing, auto=on_cuda and mcfg.n_layers >= 24):
        D.apply_activation_checkpointing(raw)
    if tri_state(cfg.compile, auto=on_cuda):
        D.compile_blocks(raw)
    model = D.wrap_model(raw, info, cfg.parallel, mixed_bf16=use_bf16 and cfg.parallel == "fsdp")
    optimizer = build_optimizer(model, cfg, device_type)

    def autocast():
        if use_bf16 and not (cfg.parallel == "fsdp" and info.enabled):  # FSDP casts via its policy
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    sampler = WindowSampler(tokens, cfg.seq_len, cfg.seed)
    loader = BatchLoader(sampler, micro_batch=cfg.micro_batch, accum=p.accum, rank=info.rank, world=info.world,
                         prefetch=cfg.prefetch)
    start_step, tokens_seen = 0, 0
    if info.is_main:
        ckpt.clean_partial(ckpt_root)
    D.barrier(info)
    last = ckpt.latest(ckpt_root) if cfg.resume else None
    if last is not None:
        state = ckpt.load(last, model=model, raw_model=raw, optimizer=optimizer)
        loader.check_resume(state.get("loader", {}), str(last))
        start_step, tokens_seen = int(state["step"]), int(state.get("tokens_seen", 0))
        say(f"pretrain: resumed from {last} (step {start_step}/{p.steps})")
    n_params, n_embed = raw.num_params(), raw.num_params() - raw.num_params(non_embedding=True)
    flops_tok = float(raw.flops_per_token(cfg.seq_len))
    peak, peak_src = peak_flops(device) if info.is_main else (float("nan"), "")
    say(f"pretrain: {cfg.model} {n_params / 1e6:.2f}M params ({n_embed / 1e6:.2f}M embedding), "
        f"{tokens.num_tokens:,} train tokens, {p.steps} steps x {p.tokens_per_step:,} tokens "
        f"(micro {cfg.micro_batch} x accum {p.accum} x world {info.world}), device {device}"
        f"{' bf16' if use_bf16 else ' fp32'}, peak {peak / 1e12:.2f} TFLOP/s ({peak_src})")

    logger = None
    texts = {}
    if info.is_main:
        logger = MetricsLogger(out, tensorboard=cfg.tensorboard, wandb=cfg.wandb, run_name=out.name,
                               config=dataclasses.asdict(cfg), resume_step=start_step if last else None)
    need_eval = tokenizer is not None and cfg.eval_every >= 0
    do_eval_here = info.is_main or (info.enabled and cfg.parallel == "fsdp")  # FSDP forward is collective
    if need_eval and do_eval_here:
        texts = val_texts(cfg)
    if info.is_main and start_step == 0:
        logger.log(0, {"params": n_params, "params_embedding": n_embed, "flops_per_token": flops_tok,
                       "peak_flops": peak, "peak_source": peak_src, "world_size": info.world,
                       "tokens_per_step": p.tokens_per_step, "steps": p.steps})
    if need_eval and info.is_main and start_step < p.steps:
        # logged at every (re)start: a resumed run may score other held-out texts (eval_docs changed)
        counts = token_counts(tokens, vocab)
        base = {f"unigram_bpb/{lang}": unigram_bpb(counts, tokenizer, t) for lang, t in texts.items()}
        logger.log(start_step, base)
        say("pretrain: unigram baseline bpb " + ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in base.items()))

    def evaluate(step: int, final: bool = False) -> None:
        if not (need_eval and do_eval_here):
            return
        from qazlm.eval.bpb import bits_per_byte

        t0 = time.time()
        scorer = _Scorer(model if cfg.parallel == "fsdp" and info.enabled else raw, autocast)
        raw.eval()
        rec = {}
        try:
            with torch.no_grad():
                for lang, docs in texts.items():
                    r = bits_per_byte(scorer, tokenizer, docs, max_len=min(cfg.eval_max_len, mcfg.max_seq_len),
                                      batch_size=8, device=device)
                    rec[f"val/bpb_{lang}"] = r["bpb"]
                    rec[f"val/loss_{lang}"] = r["nll_nats"] / max(1, r["n_tokens"])
            if final or (cfg.sample_every and step % cfg.sample_every == 0):
                if info.is_main and not (cfg.parallel == "fsdp" and info.enabled):
                    from qazlm.eval.generation import generate
                    from qazlm.model.decode import Decoder

                    try:
                        outs = generate(raw, tokenizer, list(SAMPLE_PROMPTS.values()),
                                        max_new_tokens=cfg.sample_tokens, repetition_penalty=1.3, device=device)
                    except Exception as e:  # noqa: BLE001 - a sampling bug must not kill a long run
                        say(f"  samples skipped ({type(e).__name__}: {e})")
                        outs = []
                    finally:
                        Decoder.release(raw)  # the next step changes the weights: keep no stale copy in memory
                    for (lang, prompt), text in zip(SAMPLE_PROMPTS.items(), outs):
                        rec[f"sample/{lang}"] = prompt + text
        finally:
            raw.train()
        rec["eval_seconds"] = time.time() - t0
        if logger is not None:
            logger.log(step, rec)
            say(f"  eval @ {step}: " + ", ".join(f"{k.split('_')[-1]} {v:.3f}" for k, v in rec.items()
                                                   if k.startswith("val/bpb")))
            for k, v in rec.items():
                if k.startswith("sample/"):
                    say(f"  {k}: {v!r}")

    def save(step: int) -> None:
        extra = {"loader": loader.state_dict(step), "tokens_seen": tokens_seen, "config": dataclasses.asdict(cfg)}
        path = ckpt.save(ckpt_root, step, model=model, raw_model=raw, optimizer=optimizer, extra=extra,
                         is_main=info.is_main, keep_last_k=cfg.keep_last_k)
        D.barrier(info)
        say(f"  checkpoint {path}")

    end_step = p.steps
    if cfg.max_steps_this_run:
        end_step = min(end_step, start_step + cfg.max_steps_this_run)
    model.train()
    progress = _progress(info.is_main, p.steps, start_step)
    t_log, tok_log = time.perf_counter(), 0
    done = start_step
    try:
        for step, micro in loader.iterate(start_step, end_step):
            lr = lr_at(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=p.steps,
                       schedule=cfg.schedule, decay_fraction=cfg.decay_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for m, rows in enumerate(micro):
                batch = torch.from_numpy(rows).to(device, non_blocking=True)
                last_micro = m == p.accum - 1
                with _grad_sync(model, last_micro):
                    with autocast():
                        loss = model(batch[:, :-1], targets=batch[:, 1:])
                    (loss / p.accum).backward()
                loss_sum += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0
                                                       else float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += p.tokens_per_step
            tok_log += p.tokens_per_step
            done = step + 1
            if cfg.log_every and (done % cfg.log_every == 0 or done == end_step):
                loss_v = D.all_reduce_mean(float(loss_sum.item()) / p.accum, info, device)
                gn = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
                if not math.isfinite(loss_v):
                    raise QazlmError(f"[pretrain] loss became {loss_v} at step {done}; lower lr or check the data")
                if device_type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t_log
                tps = tok_log / dt
                rec = {"loss": loss_v, "lr": lr, "grad_norm": gn, "tokens_per_s": tps,
                       "mfu": flops_tok * tps / (peak * info.world) if peak == peak else None,
                       "memory_gb": memory_gb(device), "tokens": tokens_seen,
                       "epoch": sampler.epoch_of_step(done, p.rows_per_step)}
                if logger is not None:
                    logger.log(done, rec)
                progress.update(done, loss_v, tps)
                t_log, tok_log = time.perf_counter(), 0
            if cfg.eval_every > 0 and done % cfg.eval_every == 0 and done != p.steps:
                evaluate(done)
            if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done != p.steps:
                save(done)
    finally:
        progress.close()
    if done < p.steps:
        if done > start_step and not (cfg.ckpt_every and done % cfg.ckpt_every == 0):
            save(done)
        say(f"pretrain: stopped at step {done}/{p.steps} (max_steps_this_run); rerun to resume")
        if logger is not None:
            logger.close()
        D.shutdown(info)
        return None
    final = out / "final"
    if start_step < p.steps or not (final / "qazlm_model.json").exists():
        evaluate(p.steps, final=True)
        save(p.steps)
        if info.is_main:
            _save_final(raw, model, final, tokenizer_dir, p.steps, tokens_seen)
    D.barrier(info)
    if logger is not None:
        logger.close()
    say(f"pretrain: final model -> {final}")
    D.shutdown(info)
    return final


def _save_final(raw, model, final: Path, tokenizer_dir, step: int, tokens_seen: int) -> None:
    import shutil

    from qazlm.io import write_json
    from qazlm.model.io import save_model_folder

    src = ckpt.latest(final.parent / "checkpoints")
    tmp = final.parent / ".tmp_final"
    shutil.rmtree(tmp, ignore_errors=True)
    if src is not None and int(src.name.split("_")[1]) == step:
        from qazlm.model.io import load_model_folder

        save_model_folder(load_model_folder(src), tmp, tokenizer_dir=tokenizer_dir)  # full weights even under FSDP
    else:
        save_model_folder(raw, tmp, tokenizer_dir=tokenizer_dir)
    write_json(tmp / "training.json", {"step": step, "tokens": tokens_seen})
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


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


class _progress:
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
