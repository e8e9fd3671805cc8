"""`qazlm sft` (TRL SFTTrainer): the exact tokens trained on, packing that keeps conversations apart, a short
full fine-tune (golden first loss, output folder, lineage, metrics), LoRA merged on save, resume after a kill."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from cli_harness import TORCHRUN_2, logged_steps, weights_diff
from test_chat_template import (  # one multi-turn conversation, one marker-less template
    CONVERSATION,
    PLAIN_CHATML,
)

from qazlm.errors import QazlmError
from qazlm.infer.chat import GENERATION_MARKER
from qazlm.sft.config import SftConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Pinned first logged loss of the short run below (tiny 2-layer model, seed 0, 16 real conversations, packed
# rows of 256); any change to masking, packing, the template or the model conversion moves it.
GOLDEN_FIRST_LOSS = 6.9636   # 6.9777 before conversations that open alike shared their opening (rows changed)
GOLDEN_TOL = 2e-3
RUN = dict(lr=2e-3, max_steps=6, batch_size=2, max_len=512, save_steps=3, eval_steps=3, warmup=0,
           schedule="constant", max_heldout=4, seed=0, device="cpu")


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_tokenizer_dir):
    """A random tiny qazlm model folder whose tokenizer has NO chat template (it gets qazlm's)."""
    from transformers import AutoTokenizer

    from qazlm.model.io import save_model_folder
    from qazlm.model.presets import preset
    from qazlm.model.transformer import Transformer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = Transformer(preset("tiny", len(tok), n_layers=2, max_seq_len=512))
    model.init_weights()
    return save_model_folder(model.eval(), tmp_path_factory.mktemp("sft_base") / "final", tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def data(tmp_path_factory, shared):
    """A real `qazlm sft-data` folder, small: five tasks (multi-turn and system prompts included)."""
    from qazlm.sft.data import SftDataConfig, run

    out = tmp_path_factory.mktemp("sft_data") / "sft_data"
    run(SftDataConfig(out_dir=str(out), per_task=5, heldout_fraction=0.2, decontaminate=[],
                      tasks=["translation", "multiturn", "system_language", "topic", "count_words"]))
    return out


def config(base, data, out, **kw) -> SftConfig:
    return SftConfig(model=str(base), data=str(data), out_dir=str(out), **{**RUN, **kw})


def trainer_for(base, data, out, conversations, **kw):
    from qazlm.sft.load import load_chat_tokenizer, load_model
    from qazlm.sft.train import build_trainer

    cfg = config(base, data, out, **kw)
    model, kind = load_model(cfg.model, "cpu")
    tok = load_chat_tokenizer(cfg.model, kind, cfg.chat_template)
    return build_trainer(cfg, model, tok, conversations, [], out, "cpu"), tok


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, base, data):
    from qazlm.sft.train import run_sft

    out = tmp_path_factory.mktemp("sft_full") / "sft"
    lines = []
    summary = run_sft(config(base, data, out), log=lines.append)
    return out, summary, lines


# ------------------------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("packing", [False, True])
def test_labels_are_exactly_the_assistant_spans(base, data, tmp_path, packing):
    """Through the trainer's own dataset and collator: a label is set exactly on each assistant reply and its
    <|im_end|>; system, user, the assistant header and the newline after <|im_end|> are -100."""
    trainer, tok = trainer_for(base, data, tmp_path, [{"messages": CONVERSATION}], packing=packing)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert tok.decode(ids) == text
    spans, start = [], None
    for i, lab in enumerate(labels + [-100]):
        if lab != -100 and start is None:
            start = i
        elif lab == -100 and start is not None:
            spans.append(tok.decode(ids[start:i]))
            start = None
    assert spans == ["Сәлем! Қалың қалай?<|im_end|>", "Қайырлы таң<|im_end|>"]
    assert all(lab in (-100, tid) for lab, tid in zip(labels, ids))
    assert ("position_ids" in batch and "attention_mask" not in batch) == packing


def test_template_without_markers_is_one_error(base, tmp_path, tiny_tokenizer_dir):
    from test_eval_helpers import make_hf_folder

    from qazlm.sft.load import check_template, load_chat_tokenizer

    hf = make_hf_folder(tiny_tokenizer_dir, tmp_path / "hf")
    with pytest.raises(QazlmError, match=r"hf: has no chat template; set chat_template = \"qazlm\""):
        load_chat_tokenizer(hf, "hf", "")
    cfg = json.loads((hf / "tokenizer_config.json").read_text())
    (hf / "tokenizer_config.json").write_text(json.dumps({**cfg, "chat_template": PLAIN_CHATML}))
    tok = load_chat_tokenizer(hf, "hf", "")
    with pytest.raises(QazlmError, match=r"no \{% generation %\} markers.*chat_template = \"qazlm\""):
        check_template(tok, CONVERSATION, hf)
    check_template(load_chat_tokenizer(hf, "hf", "qazlm"), CONVERSATION, hf)  # the offered fix works


def test_max_len_shorter_than_every_conversation_is_an_error(base, data, tmp_path):
    """A max_len below every conversation would cut each before its reply (nothing to learn): conversations that
    do not fit are set aside (never truncated), and with none left it is one error."""
    from qazlm.sft.train import run_sft

    with pytest.raises(QazlmError, match=r"every conversation is longer than max_len = 8 tokens; raise max_len"):
        run_sft(config(base, data, tmp_path / "out", max_len=8, packing=False), log=lambda *a: None)


def test_overlong_conversations_are_set_aside_with_a_reason(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from qazlm.sft.load import set_aside_overlong
    from qazlm.tokenizer.special_tokens import CHAT_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.chat_template = CHAT_TEMPLATE
    short = {"messages": [{"role": "user", "content": "Сәлем"}, {"role": "assistant", "content": "Сәлем!"}]}
    long = {"messages": [{"role": "user", "content": "сөз " * 300}, {"role": "assistant", "content": "иә"}],
            "tools": json.dumps([{"type": "function", "function": {"name": "f", "parameters": {}}}])}
    kept, rejected = set_aside_overlong(tok, [short, long], 64)
    assert kept == [short] and rejected[0]["line"] == 2 and "longer than max_len" in rejected[0]["reason"]


# ------------------------------------------------------------------------------------------------ packing
def conversations_in(position_ids: list[int]):
    """(start of its sequence, start, end, position of its first token) of each conversation in a packed row:
    a sequence starts at position 0; inside it, a drop in position starts a conversation that shares the
    sequence's first tokens below that position (a shared opening)."""
    out, seq = [], 0
    for i, p in enumerate(position_ids):
        if i == 0 or p == 0:
            seq = i
        if i == 0 or p != position_ids[i - 1] + 1:
            out.append([seq, i, i + 1, p])
        else:
            out[-1][2] = i + 1
    return out


@pytest.mark.parametrize("attn", ["qazlm_packed_sdpa", "sdpa", "eager"])
def test_packed_rows_equal_separate_conversations(base, data, tmp_path, attn):
    """Logits of every conversation inside a packed batch (several per row, rows padded, conversations that open
    alike sharing one copy of the opening) equal those of the conversation run alone, and so does the loss: no
    attention crosses a conversation boundary. The trainer's model runs qazlm's per-conversation attention;
    transformers' sdpa and eager (dense block masks, which know no shared openings) agree on the others."""
    from qazlm.sft.load import read_sft_data

    train, _, _ = read_sft_data(data, 0)
    trainer, _ = trainer_for(base, data, tmp_path, train, packing=True)
    model = trainer.model.eval()
    assert model.config._attn_implementation == "qazlm_packed_sdpa"
    model.set_attn_implementation(attn)
    data_rows = list(trainer.train_dataset)
    forked = [r for r in data_rows
              if any(p > 0 and p != q + 1 for q, p in zip(r["position_ids"], r["position_ids"][1:]))]
    rows = (forked[:1] + data_rows[-2:])   # one with a shared opening; best-fit decreasing: the fullest rows last
    batch = trainer.data_collator([dict(r) for r in rows])
    batch.pop("qazlm_real_tokens")
    assert batch["input_ids"].shape[0] == 3 and max(len(r["seq_lengths"]) for r in rows) >= 2
    forks = 0
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        nll_sum, count = 0.0, 0
        for b, row in enumerate(rows):
            ids = row["input_ids"]
            for seq, start, end, first in conversations_in(batch["position_ids"][b, :len(ids)].tolist()):
                forks += first > 0
                if first > 0 and attn != "qazlm_packed_sdpa":
                    continue
                whole = torch.tensor(ids[seq:seq + first] + ids[start:end])[None]
                alone = model(input_ids=whole).logits[0, first:]
                assert (packed[b, start:end] - alone).abs().max().item() < 1e-5
                labels = batch["labels"][b, start:end]
                nll = torch.nn.functional.cross_entropy(alone[:-1], labels[1:], ignore_index=-100, reduction="sum")
                nll_sum, count = nll_sum + nll.item(), count + int((labels[1:] != -100).sum())
        loss = model(**batch).loss.item()
    assert forks > 0 and trainer.shared_saved > 0    # the data's system-prompt conversations open alike
    if attn == "qazlm_packed_sdpa":
        assert loss == pytest.approx(nll_sum / count, abs=1e-5)


def test_forked_sequences_share_an_untrained_opening_within_max_len():
    """Conversations with the same opening turn (>= 16 tokens, nothing trained in it) become forks of one sequence,
    as many as fit in max_len; a branch's first token is never a target; others are left as they are."""
    from qazlm.sft.packing import forked_sequences

    S = 1                                                       # the turn-start token
    opening = [S] + list(range(100, 119))                       # 20 tokens, untrained
    convs = [(opening + [S, 7, 8, 9], [-100] * 21 + [8, 9, -100]),
             (opening + [S, 5, 6], [-100] * 21 + [6, -100]),
             (opening + [S, 4, 4, 4, 4], [-100] * 21 + [4, 4, 4, -100]),
             ([S] + list(range(100, 104)) + [S, 2], [-100] * 6 + [2]),      # opening too short to share
             (opening + [S, 3], [-100] * 19 + [5, -100, -100])]        # trains on its opening's last token
    seqs = forked_sequences(convs, max_len=30, im_start=S)
    by_len = sorted(seqs, key=lambda q: -len(q["input_ids"]))
    first, second = by_len[0], by_len[1]
    assert first["input_ids"] == opening + [S, 4, 4, 4, 4] + [S, 7, 8, 9]               # 25 + 4 <= 30; the third
    assert first["position_ids"] == list(range(25)) + [20, 21, 22, 23]                # does not fit: its own fork
    assert first["labels"] == [-100] * 21 + [4, 4, 4, -100] + [-100, 8, 9, -100]
    assert second["input_ids"] == opening + [S, 5, 6] and second["position_ids"] == list(range(23))
    assert sorted(len(q["input_ids"]) for q in seqs) == [7, 22, 23, 29]
    assert all(q["position_ids"] == list(range(len(q["input_ids"]))) for q in seqs if len(q["input_ids"]) in (7, 22))


def test_gathered_rows_get_their_gradients_in_a_fixed_order():
    """packed_sdpa gathers keys through `rows`: an opening's keys are read by every branch, and the gradients of a
    row read several times must add up the same way on every run (advanced indexing adds them in parallel on a
    CPU: two runs of the same SFT then differed in the last bits after 40 steps)."""
    from qazlm.sft.packing import rows

    seeded = torch.Generator().manual_seed(0)
    src = torch.randn(1000, 3, 64, generator=seeded)
    index = torch.randint(0, 1000, (100, 500), generator=seeded)
    weight = torch.randn(100, 500, 3, 64, generator=seeded)

    def grad():
        leaf = src.clone().requires_grad_()
        (rows(leaf, index) * weight).sum().backward()
        return leaf.grad

    first = grad()
    assert torch.equal(rows(src, index), src[index]) and all(torch.equal(first, grad()) for _ in range(3))


def test_packed_attention_gradients_equal_sdpa_with_the_block_mask(base):
    """Training through the per-conversation attention gives the outputs and gradients of transformers' sdpa with
    its block mask, for rows of mixed lengths (several width groups, one-token padding conversations); unpacked
    rows and generation with a cache go to transformers' sdpa itself."""
    from qazlm.model.hf import to_transformers
    from qazlm.sft.packing import use_packed_attention

    model = to_transformers(base)
    rows = [[70, 1, 130, 40, 3, 1, 1], [200, 45, 1]]  # conversation lengths per row; 1 = a pad token
    position_ids = torch.tensor([[p for n in row for p in range(n)] for row in rows])
    seeded = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, model.config.vocab_size, position_ids.shape, generator=seeded)

    def run(packed: bool):
        use_packed_attention(model) if packed else model.set_attn_implementation("sdpa")
        model.zero_grad()
        logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits  # as in training
        logits.log_softmax(-1)[..., 5].sum().backward()
        with torch.no_grad():
            unpacked = model(input_ids=input_ids[:, :50]).logits
        generated = model.generate(input_ids[:1, :5], max_new_tokens=4, do_sample=False)
        return logits.detach(), [p.grad.clone() for p in model.parameters()], unpacked, generated.tolist()

    (ref, ref_grads, ref_unpacked, ref_gen), (ours, our_grads, our_unpacked, our_gen) = run(False), run(True)
    assert model.config._attn_implementation == "qazlm_packed_sdpa"
    assert (ours - ref).abs().max().item() < 1e-5 and (our_unpacked - ref_unpacked).abs().max().item() < 1e-5
    assert len(our_grads) == len(ref_grads) > 0
    assert all((a - b).abs().max() <= 1e-5 * b.abs().max() for a, b in zip(our_grads, ref_grads))  # float noise
    assert our_gen == ref_gen


def test_trl_padding_free_batch_is_isolated_too(base, data, tmp_path):
    """TRL's own padding-free collator (one flattened row; what FlashAttention gets) also keeps the
    conversations apart under sdpa: the position ids alone make transformers build the block mask."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from qazlm.sft.load import read_sft_data

    train, _, _ = read_sft_data(data, 0)
    trainer, tok = trainer_for(base, data, tmp_path, train, packing=True)
    model = trainer.model.eval()
    rows = [trainer.train_dataset[len(trainer.train_dataset) - i] for i in (2, 1)]
    flat = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=True)(rows)
    with torch.no_grad():
        packed = model(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).logits[0]
        start = 0
        for length in [n for r in rows for n in r["seq_lengths"]]:
            alone = model(input_ids=flat["input_ids"][:, start:start + length]).logits[0]
            assert (packed[start:start + length] - alone).abs().max().item() < 1e-5
            start += length


def test_cpu_loss_projects_only_labelled_positions_and_equals_trl(base, data, tmp_path):
    """On a CPU the trainer sends only the labelled (assistant) positions through the LM head; the loss and its
    gradient equal TRL's fused head, which projects every position there."""
    from qazlm.sft.callbacks import labelled_positions_loss
    from qazlm.sft.load import read_sft_data

    train, _, _ = read_sft_data(data, 0)
    trainer, _ = trainer_for(base, data, tmp_path, train, packing=True)
    model = trainer.model.train()
    n = len(trainer.train_dataset)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n - 2, n)])
    batch.pop("qazlm_real_tokens")
    labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < labelled < batch["labels"].numel() // 2  # prompts and system turns are most of a row

    def loss_and_grad(fn):
        model.zero_grad()
        loss = fn()
        loss.backward()
        return loss.item(), model.get_output_embeddings().weight.grad.clone()

    rows_seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape[0]))
    ours, ours_grad = loss_and_grad(lambda: labelled_positions_loss(trainer, model, dict(batch)))
    hook.remove()
    trl, trl_grad = loss_and_grad(lambda: model(**batch, fused_lm_head=True).loss)
    assert rows_seen == [labelled]
    assert ours == pytest.approx(trl, abs=1e-5) and torch.allclose(ours_grad, trl_grad, atol=1e-6)
    assert trainer._metrics["train"]["mean_token_accuracy"] and trainer._metrics["train"]["entropy"][-1] > 0


# ------------------------------------------------------------------------------------------------ full run
def test_cpu_runs_train_in_fp32_not_trls_bf16_default(full_run, base, data, tmp_path):
    """TRL turns bf16 on by default (on this CPU its own config refuses to start: no bf16 GPU); qazlm's
    arguments say fp32 on a CPU, without checkpointing, and the trained weights are saved in float32."""
    from safetensors import safe_open
    from trl import SFTConfig

    from qazlm.align.dpo import DpoConfig, dpo_args
    from qazlm.sft.train import sft_args

    with pytest.raises(ValueError, match="bf16"):
        SFTConfig(output_dir=str(tmp_path / "trl"))
    for args in (sft_args(config(base, data, tmp_path / "s"), tmp_path / "s", "cpu", True),
                 dpo_args(DpoConfig(model="m", data="d", loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.5]),
                          tmp_path / "d", "cpu")):
        assert args.use_cpu and not args.bf16 and not args.fp16 and not args.gradient_checkpointing
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5] and args.precompute_ref_log_probs
    with safe_open(str(full_run[0] / "final" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}


def test_full_run_learns_and_pins_the_first_loss(full_run):
    out, s, lines = full_run
    assert s["steps"] == 6 and s["final_loss"] < s["first_loss"]
    assert s["first_loss"] == pytest.approx(GOLDEN_FIRST_LOSS, abs=GOLDEN_TOL)
    # packed rows of at most 512 tokens, 2 per batch, each batch padded to its longest row
    assert s["padding_waste"] == pytest.approx(0.0418, abs=1e-4) and s["padding_waste"] <= 0.05
    assert s["shared_opening_tokens_per_epoch"] > 0 and "computed once" in lines[0]
    assert s["tokens"] > 0 and s["tokens_per_s"] > 0 and math.isfinite(s["heldout_loss"])
    assert lines[-1].startswith("sft: 6 steps,") and "padding waste" in lines[-1] and str(out / "final") in lines[-1]


def test_final_folder_loads_everywhere(full_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qazlm.infer.loading import load_model

    final = full_run[0] / "final"
    model = AutoModelForCausalLM.from_pretrained(final, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(final, local_files_only=True)
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nСәлем!<|im_end|>\n<|im_start|>assistant\n")
    assert GENERATION_MARKER.search(tok.chat_template)  # the folder can be fine-tuned again
    assert tok.convert_tokens_to_ids("<|im_end|>") in model.generation_config.eos_token_id
    loaded = load_model(final)
    assert loaded.model.kind == "hf"
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(loaded.model(ids), model(ids).logits, atol=1e-5)


def test_lineage_metrics_and_record(full_run, base, data):
    from qazlm.runs import read_record
    from qazlm.io import read_jsonl
    from qazlm.train.plot import plot_run

    out, s, _ = full_run
    lin = json.loads((out / "final" / "qazlm_lineage.json").read_text())
    meta = json.loads((base / "qazlm_model.json").read_text())
    assert lin["parent"]["path"] == str(base.resolve()) and lin["parent"]["kind"] == "qazlm"
    assert len(lin["parent"]["fingerprint"]) == 64 and meta["sha256"]
    assert lin["data"]["counts"] == json.loads((data / "card.json").read_text())["conversations"]
    assert lin["config"]["lr"] == RUN["lr"] and lin["summary"]["steps"] == 6 and lin["summary"]["versions"]["trl"]
    rows = read_jsonl(out / "metrics.jsonl")
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] and all(r["tokens_per_s"] > 0 for r in rows if "loss" in r)
    assert rows[0]["step"] == 0 and rows[0]["trainable_params"] > 0
    heldout = [(r["step"], r["heldout_loss"]) for r in rows if "heldout_loss" in r]
    assert [step for step, _ in heldout] == [3, 6] and heldout[-1][1] == s["heldout_loss"]  # the last one not rerun
    assert {p.name for p in plot_run(out)} >= {"loss.png", "lr.png", "tokens_per_s.png"}
    assert read_record(out)["lr"] == RUN["lr"] and any((out / "tb").iterdir())


def test_rerun_is_skipped_and_other_settings_refused(full_run, base, data):
    from qazlm.sft.train import run_sft

    out = full_run[0]
    lines = []
    assert run_sft(config(base, data, out), log=lines.append)["steps"] == 6
    assert lines == [f"sft: {out} is up to date (same config); skipping (--force to retrain)"]
    with pytest.raises(QazlmError, match=r"other settings \(lr: 0.002 -> 0.001\); pass --force"):
        run_sft(config(base, data, out, lr=1e-3), log=lines.append)


def test_force_leaves_nothing_of_the_old_run(full_run, base, data, tmp_path):
    """--force on a finished folder clears every result of the old run (a forced rerun that then fails must not
    leave the old figures looking current); only the new run's pending config is there."""
    import shutil

    from qazlm.sft.train import PENDING, prepare_out

    out = tmp_path / "sft"
    shutil.copytree(full_run[0], out)
    (out / "rm_report.md").write_text("old")        # the reports of rm/dpo, which share this contract
    assert prepare_out(out, config(base, data, out, lr=1e-3), force=True, log=print) is False
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [PENDING]   # .qazlm.lock stays


def test_gradient_accumulation_trains_like_the_bigger_batch(full_run, base, data, tmp_path):
    """2 micro-batches of 1 row accumulated = 1 batch of 2 rows: the loss is normalized by the tokens of the
    whole accumulated batch (not averaged per micro-batch), so the same losses, tokens and weights. Saved every
    2 steps with save_total_limit 2, only the last two checkpoints are kept (the disk of a long run is bounded)."""
    from qazlm.sft.train import run_sft

    out = tmp_path / "sft"
    run_sft(config(base, data, out, batch_size=1, grad_accum=2, save_steps=2, save_total_limit=2),
            log=lambda *a: None)
    assert len(logged_steps(full_run[0])) == RUN["max_steps"] and logged_steps(out) == logged_steps(full_run[0])
    assert weights_diff(out, full_run[0]) < 1e-4
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]


def test_epochs_and_a_warmup_share_as_the_real_size_recipes_set_them(base, data, tmp_path):
    """No max_steps: `epochs` passes over the packed rows (the real-size recipes' setting, with a warmup given as
    a share of the steps): the steps are the rows' batches times the epochs, the run ends at that epoch, and the
    learning rate climbs during the first half."""
    import math

    from qazlm.io import read_jsonl
    from qazlm.sft.train import run_sft

    out = tmp_path / "sft"
    summary = run_sft(config(base, data, out, max_steps=-1, epochs=2, warmup=0.5, schedule="linear"),
                      log=lambda *a: None)
    rows = read_jsonl(out / "metrics.jsonl")
    logged = [r for r in rows if "loss" in r]
    assert summary["steps"] == 2 * math.ceil(rows[0]["rows"] / RUN["batch_size"]) == len(logged)
    assert logged[-1]["epoch"] == pytest.approx(2.0)
    lrs = [r["lr"] for r in logged]
    peak = lrs.index(max(lrs))
    assert 0 < peak and lrs[:peak + 1] == sorted(lrs[:peak + 1]) and max(lrs) <= RUN["lr"]


def test_failed_start_does_not_block_the_corrected_run(base, data, tmp_path):
    """A run that stopped before its first checkpoint (here: a wrong data path) leaves nothing to resume, so
    the corrected command starts over instead of asking for --force."""
    from qazlm.sft.train import prepare_out, run_sft

    out = tmp_path / "sft"
    with pytest.raises(QazlmError, match=r"no such data folder"):
        run_sft(config(base, tmp_path / "nodata", out), log=lambda *a: None)
    assert prepare_out(out, config(base, data, out), force=False, log=print) is False
    (out / "checkpoints" / "checkpoint-3").mkdir(parents=True)  # with progress to lose, other settings are refused
    with pytest.raises(QazlmError, match=r"other settings \(lr: 0.002 -> 0.001\); pass --force"):
        prepare_out(out, config(base, data, out, lr=1e-3), force=False, log=print)


# ------------------------------------------------------------------------------------------------ LoRA
def test_a_hugging_face_llama_folder_fine_tunes_with_qazlms_template(data, tmp_path, tiny_tokenizer_dir):
    """The imported-model path: a Hugging Face Llama folder whose tokenizer has no chat template gets qazlm's
    (`chat_template = "qazlm"`), trains through TRL like our own folders, and is saved as a Llama folder that
    transformers and `qazlm generate` load, with the template and an `hf` lineage."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from qazlm.infer.engine import generate
    from qazlm.infer.loading import load_model
    from qazlm.sft.train import run_sft

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=512, tie_word_embeddings=True,
                                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    llama.save_pretrained(tmp_path / "llama")
    tok.save_pretrained(tmp_path / "llama")
    out = tmp_path / "sft"
    summary = run_sft(config(tmp_path / "llama", data, out, max_steps=2, max_heldout=0, chat_template="qazlm"),
                      log=lambda *a: None)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    trained = AutoModelForCausalLM.from_pretrained(out / "final")
    assert type(trained).__name__ == "LlamaForCausalLM"
    assert not torch.equal(trained.model.layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight)
    assert GENERATION_MARKER.search(AutoTokenizer.from_pretrained(out / "final").chat_template)
    assert json.loads((out / "final" / "qazlm_lineage.json").read_text())["parent"]["kind"] == "hf"
    loaded = load_model(out / "final")
    assert len(generate(loaded.model, loaded.tokenizer, ["Сәлем!"], max_new_tokens=3, chat=True)) == 1


def test_lora_is_merged_on_save(base, data, tmp_path):
    from safetensors.torch import load_file

    from qazlm.model.hf import to_transformers
    from qazlm.sft.train import run_sft

    out = tmp_path / "lora"
    run_sft(config(base, data, out, max_steps=2, lr=1e-2, max_heldout=0,
                   lora={"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}),
            log=lambda *a: None)
    merged = load_file(out / "final" / "model.safetensors")
    assert not [k for k in merged if "lora" in k]
    parent = to_transformers(base).state_dict()
    assert set(merged) <= set(parent)
    changed = {k for k in merged if not torch.equal(merged[k], parent[k])}
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_lora_target_matching_nothing(base, data, tmp_path):
    from qazlm.sft.train import run_sft

    with pytest.raises(QazlmError, match=r"'attn' matches no layer of .*; available: down_proj, gate_proj, k_proj"):
        run_sft(config(base, data, tmp_path / "o", lora={"enabled": True, "target_modules": ["attn"]}),
                log=lambda *a: None)


# ------------------------------------------------------------------------------------------------ resume
class Kill(Exception):
    pass


def test_killed_run_resumes_to_the_same_result(full_run, base, data, tmp_path):
    """Killed after step 4 (checkpoint 3 complete, a half-written checkpoint-5 left behind), rerun: it resumes
    from checkpoint-3 and ends with the uninterrupted run's losses and weights (tolerance 1e-5: CPU fp32 is
    deterministic here, the margin is for summation order)."""
    from transformers import TrainerCallback

    from qazlm.sft.train import run_sft

    class KillAtStep4(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 4:
                raise Kill

    out = tmp_path / "sft"
    with pytest.raises(Kill):
        run_sft(config(base, data, out), log=lambda *a: None, callbacks=[KillAtStep4()])
    assert not (out / "final").exists() and (out / "checkpoints" / "checkpoint-3" / "trainer_state.json").exists()
    (out / "checkpoints" / "checkpoint-5").mkdir()
    (out / "checkpoints" / "checkpoint-5" / "model.safetensors").write_bytes(b"half")
    lines = []
    s = run_sft(config(base, data, out), log=lines.append)
    assert "resuming from checkpoint-3" in lines[0] and s["resumed_from_step"] == 3
    ref = full_run[1]
    assert s["final_loss"] == pytest.approx(ref["final_loss"], abs=1e-5)
    assert s["tokens"] == ref["tokens"]
    assert weights_diff(out, full_run[0]) < 1e-5
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]  # no -5
    from qazlm.io import read_jsonl

    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_sigkill_mid_run_then_rerun_resumes(full_run, base, data, tmp_path):
    """A real kill -9 of `qazlm sft` once its first checkpoint is complete (no Python cleanup: the lock and an
    open metrics.jsonl stay behind): the same command then resumes from that checkpoint and ends with the
    uninterrupted run's loss."""
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "sft"
    argv = [sys.executable, "-m", "qazlm.cli", *sft_argv(base, data, out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 180
    while not (out / "checkpoints" / "checkpoint-3" / "trainer_state.json").exists():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (out / "final").exists()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from checkpoint-" in done.stdout + done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_loss"] == pytest.approx(full_run[1]["final_loss"], abs=1e-5)


def sft_argv(base, data, out, **overrides) -> list[str]:
    """`qazlm sft` arguments for the RUN settings (with `overrides`)."""
    run = {**RUN, **overrides}
    return ["sft", str(base), "--data", str(data), "-o", str(out), "--device", "cpu", "--lr", str(run["lr"]),
            "--max-steps", str(run["max_steps"]), "--batch-size", str(run["batch_size"]), "--max-len",
            str(run["max_len"])] + [a for k in ("save_steps", "eval_steps", "warmup", "schedule", "max_heldout",
                                                 "seed") for a in ("--set", f"{k}={run[k]}")]


def test_two_processes_train_like_one_with_the_same_global_batch(full_run, base, data, tmp_path):
    """torchrun with 2 CPU processes (gloo) and 1 row each trains what one process does with 2 rows a step: the
    same losses and weights (the gradients are all-reduced; a loss computed past the DDP wrapper would leave each
    rank its own copy), tokens counted over both ranks. A rerun of the finished folder returns at once on every
    rank (rank 0 alone finds the run done and tells the others, which would otherwise wait in training)."""
    import subprocess

    from qazlm.io import read_jsonl

    out = tmp_path / "sft"
    argv = [*TORCHRUN_2, "-m", "qazlm.cli", *sft_argv(base, data, out, batch_size=1)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = (read_jsonl(d / "metrics.jsonl") for d in (full_run[0], out))
    assert two[0]["processes"] == 2 and one[0]["processes"] == 1
    assert logged_steps(out) == logged_steps(full_run[0])
    # within float summation order (padded against unpadded rows, the all-reduce)
    assert weights_diff(out, full_run[0]) < 1e-4
    again = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "up to date" in again.stdout + again.stderr


# ------------------------------------------------------------------------------------------------ stage
def test_stage_reads_the_run_folders(tmp_path):
    from qazlm.runs import RunConfig, RunContext
    from qazlm.sft.stage import stage_config

    ctx = RunContext(RunConfig(out_dir=str(tmp_path / "run"), seed=7), tmp_path / "r.toml")
    cfg = stage_config({"lr": 1e-4, "lora": {"enabled": True}}, ctx)
    assert (cfg.model, cfg.data, cfg.out_dir) == (str(tmp_path / "run" / "pretrain" / "final"),
                                                  str(tmp_path / "run" / "sft_data"), str(tmp_path / "run" / "sft"))
    assert cfg.seed == 7 and cfg.lr == 1e-4 and cfg.lora.enabled
    assert stage_config({"model": "elsewhere", "seed": 1}, ctx).model == "elsewhere"
    with pytest.raises(QazlmError, match=r"\[sft\] out_dir: not settable in a recipe"):
        stage_config({"out_dir": "x"}, ctx)
