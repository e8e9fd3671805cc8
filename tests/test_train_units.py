"""Pretraining building blocks: schedules, AdamW groups, grad accumulation, loader determinism, config
errors, plots. Tiny model, a few steps each."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from test_train_support import losses, make_tokens, write_recipe

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qazlm.errors import QazlmError  # noqa: E402
from qazlm.train.config import PretrainConfig  # noqa: E402
from qazlm.train.loader import BatchLoader, PlainTokens, WindowSampler, open_tokens  # noqa: E402
from qazlm.train.schedule import lr_at  # noqa: E402


@pytest.fixture(scope="module")
def tokens_dir(tmp_path_factory, tiny_tokenizer_dir, sample_lines):
    return make_tokens(tmp_path_factory.mktemp("tok") / "tokens", tiny_tokenizer_dir, sample_lines)


def small_cfg(tokens_dir, out, **kw) -> PretrainConfig:
    base = dict(data=str(tokens_dir), out_dir=str(out), seq_len=32, global_batch_tokens=256, micro_batch=8,
                steps=4, warmup_steps=1, lr=3e-3, eval_every=-1, ckpt_every=0, log_every=1, prefetch=1,
                tensorboard=False, model_overrides={"n_layers": 2})
    base.update(kw)
    return PretrainConfig(**base)


# --- schedules ---------------------------------------------------------------------------------------

def test_cosine_schedule_values():
    kw = dict(lr=1.0, min_lr=0.1, warmup=10, total=110, schedule="cosine")
    assert lr_at(0, **kw) == pytest.approx(0.1)          # warmup is linear from lr/warmup
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(10, **kw) == pytest.approx(1.0)         # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx(0.55)        # halfway: (lr + min_lr) / 2
    assert lr_at(110, **kw) == pytest.approx(0.1)
    vals = [lr_at(s, **kw) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))   # monotone decay


def test_wsd_schedule_values():
    kw = dict(lr=1.0, min_lr=0.0, warmup=10, total=100, schedule="wsd", decay_fraction=0.2)
    assert lr_at(5, **kw) == pytest.approx(0.6)
    assert lr_at(50, **kw) == lr_at(79, **kw) == 1.0     # stable phase
    assert lr_at(80, **kw) == pytest.approx(1.0)
    assert lr_at(90, **kw) == pytest.approx(0.5)         # linear decay over the last 20 steps
    assert lr_at(100, **kw) == 0.0


# --- optimizer groups --------------------------------------------------------------------------------

def test_no_weight_decay_on_norms_embeddings_biases():
    import torch

    from qazlm.train.optim import build_optimizer, param_groups
    from qazlm.model.transformer import build_model
    from qazlm.train.trainer import model_config

    cfg = PretrainConfig(weight_decay=0.1)
    model = build_model(model_config(cfg, 500), "cpu", seed=0)
    model.extra_bias = torch.nn.Parameter(torch.zeros(4))  # a bias-like 1-D parameter
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    undecayed = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert not any("norm" in n for n in decayed)
    emb = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Embedding)}
    assert emb and not any(n.rsplit(".", 1)[0] in emb for n in decayed)
    assert "extra_bias" in undecayed
    assert all(p.ndim == 2 for p in decay["params"]) and decay["params"]
    assert len(decayed) + len(undecayed) == len({id(p) for p in model.parameters()})
    opt = build_optimizer(model, cfg, "cpu")
    assert opt.defaults["foreach"] is True


# --- loader ------------------------------------------------------------------------------------------

def test_loader_is_deterministic_and_resumable(tokens_dir):
    ds = open_tokens(tokens_dir)
    a = BatchLoader(WindowSampler(ds, 16, seed=7), micro_batch=4, accum=2, prefetch=2)
    run = [b for _, b in a.iterate(0, 6)]
    again = [b for _, b in BatchLoader(WindowSampler(ds, 16, seed=7), micro_batch=4, accum=2).iterate(0, 6)]
    resumed = [b for _, b in BatchLoader(WindowSampler(ds, 16, seed=7), micro_batch=4, accum=2).iterate(3, 6)]
    other = [b for _, b in BatchLoader(WindowSampler(ds, 16, seed=8), micro_batch=4, accum=2).iterate(0, 1)]
    for x, y in zip(run, again):
        assert all(np.array_equal(p, q) for p, q in zip(x, y))
    for x, y in zip(run[3:], resumed):                       # resume at step 3 = the same batches
        assert all(np.array_equal(p, q) for p, q in zip(x, y))
    assert not np.array_equal(run[0][0], other[0][0])        # the seed shuffles
    rows = run[0][0]
    assert rows.shape == (4, 17)
    start = int(np.flatnonzero(np.all(
        np.lib.stride_tricks.sliding_window_view(ds.window(0, ds.num_tokens), 17) == rows[0], axis=1))[0])
    assert start % 16 == 0                                   # windows are real, aligned slices of the stream


def test_loader_rank_split_covers_the_global_batch(tokens_dir):
    ds = open_tokens(tokens_dir)
    one = BatchLoader(WindowSampler(ds, 16, 1), micro_batch=2, accum=4, prefetch=0).step_batches(5)
    r0 = BatchLoader(WindowSampler(ds, 16, 1), micro_batch=2, accum=2, rank=0, world=2).step_batches(5)
    r1 = BatchLoader(WindowSampler(ds, 16, 1), micro_batch=2, accum=2, rank=1, world=2).step_batches(5)
    as_set = lambda bs: sorted(map(tuple, np.concatenate(bs).tolist()))  # noqa: E731
    assert as_set(one) == as_set(r0 + r1)
    assert not set(map(tuple, np.concatenate(r0).tolist())) & set(map(tuple, np.concatenate(r1).tolist()))


def test_epoch_visits_every_window_once(tokens_dir):
    ds = open_tokens(tokens_dir)
    s = WindowSampler(ds, 64, 3)
    first = s.rows(0, s.n_windows)
    assert len({r.tobytes() for r in first}) == s.n_windows


def test_plain_token_files(tmp_path, tokens_dir):
    ids = open_tokens(tokens_dir).window(0, 5000)
    np.save(tmp_path / "t.npy", ids.astype(np.int32))
    ids.astype("<u2").tofile(tmp_path / "t.bin")
    assert np.array_equal(PlainTokens(tmp_path / "t.npy").window(10, 50), ids[10:60])
    assert np.array_equal(PlainTokens(tmp_path / "t.bin", "uint16").window(10, 50), ids[10:60])
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(QazlmError, match="odd.bin.*multiple of 2"):
        PlainTokens(tmp_path / "odd.bin", "uint16")
    with pytest.raises(QazlmError, match="missing.bin.*not found"):
        PlainTokens(tmp_path / "missing.bin")
    with pytest.raises(QazlmError, match="fewer than one window"):
        WindowSampler(PlainTokens(tmp_path / "t.npy"), 10_000, 0)


# --- training ----------------------------------------------------------------------------------------

def test_grad_accumulation_matches_one_big_batch(tmp_path, tokens_dir):
    from qazlm.train.trainer import train

    train(small_cfg(tokens_dir, tmp_path / "big", micro_batch=8))          # 8 rows x 1
    train(small_cfg(tokens_dir, tmp_path / "acc", micro_batch=2))          # 2 rows x 4 micro-batches
    big, acc = losses(tmp_path / "big" / "metrics.jsonl"), losses(tmp_path / "acc" / "metrics.jsonl")
    assert sorted(big) == [1, 2, 3, 4]
    assert big[4] < big[1]                                                  # it learns
    for s in big:
        assert acc[s] == pytest.approx(big[s], rel=1e-5, abs=1e-5)


def test_bad_config_key_and_geometry(tmp_path, tokens_dir):
    from qazlm.train.cli import load_pretrain_config
    from qazlm.train.trainer import plan

    recipe = write_recipe(tmp_path / "r.toml", data=str(tokens_dir), learning_rate=1e-3)
    with pytest.raises(QazlmError, match=r"unknown key 'learning_rate'"):
        load_pretrain_config(str(recipe))
    with pytest.raises(QazlmError, match="not a multiple"):
        plan(PretrainConfig(seq_len=32, micro_batch=3, global_batch_tokens=256, steps=1), 1)
    with pytest.raises(QazlmError, match="schedule"):
        plan(PretrainConfig(schedule="linear", steps=1), 1)
    with pytest.raises(QazlmError, match="model_overrides.*n_layer"):
        from qazlm.train.trainer import model_config

        model_config(PretrainConfig(model_overrides={"n_layer": 2}), 100)
    cfg = load_pretrain_config(str(write_recipe(tmp_path / "ok.toml", steps=3)), ["lr=1e-3"])
    assert cfg.lr == 1e-3 and cfg.steps == 3 and cfg.data.endswith("data/tokens")


def test_cli_prints_one_line_error(tmp_path, capsys):
    from qazlm.cli import main

    recipe = write_recipe(tmp_path / "r.toml", data=str(tmp_path / "nope.bin"), steps=2)
    assert main(["pretrain", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.bin" in err[0]


def test_run_with_eval_logs_bpb_and_plots(tmp_path, tokens_dir, tiny_tokenizer_dir, capsys):
    """A short run with validation: unigram baseline logged once, bpb per language, final folder, PNGs."""
    from qazlm.train.plot import plot_run
    from qazlm.train.trainer import train

    final = train(small_cfg(tokens_dir, tmp_path / "run", steps=6, eval_every=3, eval_docs=4, eval_max_len=32,
                            sample_tokens=4))
    assert (final / "qazlm_model.json").exists() and (final / "tokenizer.json").exists()
    from qazlm.io import read_jsonl

    recs = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert sum("unigram_bpb/kk" in r for r in recs) == 1
    assert [r["step"] for r in recs if "val/bpb_kk" in r] == [3, 6]
    assert all(r["val/bpb_en"] > 0 for r in recs if "val/bpb_en" in r)
    gains = [r["val/copy_gain_kk"] for r in recs if "val/copy_gain_kk" in r]   # the copy probe beside bpb
    assert len(gains) == 2 and all(math.isfinite(g) and abs(g) < 5 for g in gains)
    said = [line for line in capsys.readouterr().out.splitlines() if "eval @ 3:" in line]
    assert len(said) == 1 and f"copy gain (nats/token) kk {gains[0]:+.2f}" in said[0]   # the console shows it too
    step_rec = next(r for r in recs if "loss" in r)
    assert {"lr", "grad_norm", "tokens_per_s", "mfu", "memory_gb"} <= set(step_rec)
    pngs = plot_run(tmp_path / "run")
    assert {p.name for p in pngs} == {"loss.png", "lr.png", "grad_norm.png", "tokens_per_s.png", "val_bpb.png",
                                     "val_copy.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    with pytest.raises(QazlmError, match="no metrics.jsonl"):
        plot_run(tmp_path / "empty")


def test_unigram_bpb_matches_hand_computation(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from qazlm.train.monitor import unigram_bpb

    tok = AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))
    counts = np.ones(len(tok), dtype=np.int64)                 # uniform -> log2(V) bits per token
    text = "Қазақстан"
    n_tok = len(tok(text, add_special_tokens=False)["input_ids"])
    expected = n_tok * np.log2(len(tok)) / len(text.encode())
    assert unigram_bpb(counts, tok, [text]) == pytest.approx(expected)


def test_estimate_table_mentions_presets():
    """The cost table (docs/pretraining.md) has one row per preset and GPU count, with the numbers of
    `estimate`, which follow the documented formulas from the model's own parameter and FLOP counts."""
    from qazlm.model.flops import flops_per_token, param_counts
    from qazlm.model.presets import PRESETS, preset
    from qazlm.train.estimate import H100_BF16, estimate, table

    text = table()
    rows = [r for r in text.splitlines()[2:] if r.strip()]
    names = list(dict.fromkeys(r.split("|")[1].strip() for r in rows))
    assert names == ["small", "200m", "350m", "500m"] and set(names) <= set(PRESETS)
    assert len(rows) == len(names) * 3                                   # GPU counts 1, 8, 16
    for name in names:
        mcfg = preset(name, 65536)
        counts = param_counts(mcfg)
        e1, e8 = estimate(name, gpus=1), estimate(name, gpus=8)
        assert (e1.params, e1.non_embedding) == (counts["total"], counts["non_embedding"])
        assert e1.tokens == e8.tokens == 20 * counts["total"]           # Chinchilla default
        assert e1.flops == pytest.approx(flops_per_token(mcfg, 2048) * e1.tokens)
        assert e1.flops > 6 * e1.non_embedding * e1.tokens
        assert e1.hours == pytest.approx(e1.flops / (H100_BF16 * 0.40) / 3600)
        assert e8.hours == pytest.approx(e1.hours / 8)
        states = 16 * counts["total"] / 1e9                               # fp32 params + grads + 2 Adam moments
        assert e8.mem_ddp_gb == pytest.approx(e1.mem_ddp_gb)                # DDP replicates everything
        assert e1.mem_fsdp_gb == pytest.approx(e1.mem_ddp_gb)               # one GPU: nothing to shard
        assert e8.mem_ddp_gb - e8.mem_fsdp_gb == pytest.approx(states * 7 / 8)  # FSDP shards the states
        assert e1.mem_ddp_gb > states
        row = (f"| {name} | {e8.params / 1e6:.0f}M ({e8.non_embedding / 1e6:.0f}M) | {e8.tokens / 1e9:.1f}B | "
               f"{e8.flops:.2e} | 8 | {e8.hours:.2f} | {e8.mem_ddp_gb:.0f} GB | {e8.mem_fsdp_gb:.0f} GB |")
        assert row in rows
    params = [estimate(n).params for n in names]
    assert params == sorted(params) and params[-1] > 10 * params[0]
    custom = estimate("tiny", vocab_size=1000, tokens=10**9, gpus=2, seq_len=256, mfu=0.5, peak=1e15)
    assert custom.tokens == 10**9 and custom.hours == pytest.approx(custom.flops / (2 * 1e15 * 0.5) / 3600)


def test_pipeline_stage_reads_data_stage_and_skips_when_done(tmp_path, tokens_dir, capsys):
    import shutil

    from qazlm.runs import RunConfig, RunContext
    from qazlm.train.stage import run_stage

    run = tmp_path / "run"
    shutil.copytree(tokens_dir, run / "data" / "tokens")
    ctx = RunContext(run=RunConfig(out_dir=str(run), seed=3), recipe_path=tmp_path / "r.toml")
    section = dict(seq_len=32, global_batch_tokens=256, micro_batch=8, steps=2, eval_every=-1, ckpt_every=0,
                   tensorboard=False, model_overrides={"n_layers": 1})
    run_stage(section, ctx)
    out = run / "pretrain"
    assert (out / "final" / "model.safetensors").exists() and (out / "plots" / "loss.png").exists()
    assert (out / "checkpoints" / "step_000002").is_dir()          # the final step is always checkpointed
    mtime = (out / "final" / "model.safetensors").stat().st_mtime
    run_stage(section, ctx)
    assert "skipping" in capsys.readouterr().out
    assert (out / "final" / "model.safetensors").stat().st_mtime == mtime
    with pytest.raises(QazlmError, match=r"\[pretrain\]: unknown key 'stepz'"):
        run_stage({**section, "stepz": 3}, ctx)
