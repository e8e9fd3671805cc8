"""`qazlm package` / `qazlm push`: a Hub-ready folder whose model card is generated from the run's records
(its numbers equal the reports'), parsed by huggingface_hub's own loader; offline push fails in one line."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from cli_harness import assert_one_line_error, run_cli  # noqa: E402
from test_eval_helpers import make_hf_folder, make_our_folder  # noqa: E402

from qazlm.package.config import PackageConfig  # noqa: E402
from qazlm.package.package import run_package  # noqa: E402

BPB = {"flores-devtest:kk": 1.2345678, "flores-devtest:ru": 1.4567891, "flores-devtest:en": 1.9876543}


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokenizer_dir):
    """A run folder with the records the stages write: base model, SFT model (+ lineage and data card),
    tokenizer/data/pretrain records, eval and chat-eval reports, a plot."""
    from qazlm.runs import write_record

    run = tmp_path_factory.mktemp("pkg") / "tiny"
    base = make_our_folder(tiny_tokenizer_dir, run / "pretrain" / "final")
    (run / "weights_only").mkdir()   # a model folder without its tokenizer (a bad input)
    for name in ("model.safetensors", "qazlm_model.json"):
        (run / "weights_only" / name).write_bytes((base / name).read_bytes())
    write_record(run / "pretrain", "pretrain", {"lr": 0.003, "schedule": "cosine", "seq_len": 128})
    (run / "pretrain" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [   # 20 s + 30 s of steps
        {"step": 0, "world_size": 1, "device": "cpu", "precision": "fp32"},
        {"step": 5, "loss": 9.0, "tokens": 10000, "tokens_per_s": 500.0},
        {"step": 10, "loss": 8.0, "tokens": 20000, "tokens_per_s": 333.3333333}]) + "\n")
    (run / "pretrain" / "plots").mkdir()
    (run / "pretrain" / "plots" / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    write(run / "tokenizer" / "training_info.json", {"vocab_size": 4096, "mix_spec": "kk=0.35,ru=0.5,en=0.15"})
    write(run / "data" / "report" / "summary.json", {
        "train": {"tokens": 123456}, "documents_in": 100, "documents_kept": 90,
        "languages": {"kk": {"share": 0.4}, "ru": {"share": 0.3}, "en": {"share": 0.3}},
        "mixture": [{"source": "kaznerd_news_sentences", "lang": "kk", "train_tokens": 50000}]})
    write(run / "eval" / "report.json", {"models": [
        {"name": "tiny/final", "path": str(base), "bpb": {k: {"bpb": v} for k, v in BPB.items()},
         "copy": {k: {"first_loss": 7.4603, "repeat_loss": 2.5, "exact_repeat": 0.25, "n_spans": 4, "span": 32}
                  for k in list(BPB)[:2]},   # the copy probe, on two of the three sets
         "tasks": {"sib200_kk": {"metric": "acc", "value": 0.25}}}], "baselines": {}})
    sft = make_hf_folder(tiny_tokenizer_dir, run / "sft" / "final")
    write(run / "sft_data" / "card.json", {"conversations": {"train": 300, "heldout": 30},
                                           "lang_shares": {"kk": 0.6, "ru": 0.2, "en": 0.2},
                                           "train": {"translation": {"kk": {"flores_plus_dev": 100}}},
                                           "licences": {"flores_plus_dev": "CC BY-SA 4.0"}, "non_commercial_tasks": []})
    write(sft / "qazlm_lineage.json", {
        "format": "qazlm-sft-lineage-v1", "stage": "sft", "parent": {"path": str(base), "fingerprint": "ab" * 32},
        "data": {"path": str(run / "sft_data")}, "config": {"lr": 0.003, "lora": {"enabled": False}},
        "summary": {"steps": 80, "tokens": 160000, "final_loss": 6.2, "heldout_loss": 7.3, "wall_s": 150.0}})
    write(run / "sft" / "metrics.jsonl", {"step": 0, "device": "cpu"})
    dpo = make_hf_folder(tiny_tokenizer_dir, run / "dpo" / "final")
    write(dpo / "qazlm_lineage.json", {
        "format": "qazlm-dpo-lineage-v1", "stage": "dpo", "parent": {"path": str(sft), "kind": "hf"},
        "data": str(run / "pref_data"), "config": {"lr": 0.0005, "beta": 0.1, "loss_type": ["sigmoid", "sft"]}})
    write(run / "dpo" / "dpo_report.json", {
        "steps": 32, "train_pairs": 738, "heldout": {"rewards/accuracies": 0.7155, "rewards/margins": 1.148},
        "win_rate": {"reward_model": {"prompts": 96, "win_rate": 0.4948}}, "wall_s": 14.2})
    write(run / "dpo" / "metrics.jsonl", {"step": 0, "device": "cpu"})
    write(run / "pref_data" / "card.json", {"pairs": {"train": 1018, "heldout": 157, "rejected": 42},
                                            "licences": {"hh-rlhf harmless-base": "MIT (Anthropic)"}})
    chat = {"eot": {"rate": 0.875, "n": 8}, "fidelity": {"kk": {"rate": 0.625, "n": 8}, "ru": {"rate": 1.0},
                                                         "en": {"rate": None},
                                                  "all": {"rate": 0.8}},
            "tasks": {"heldout:topic": {"metric": "exact", "value": 0.5, "n": 4}}}
    write(run / "chat_eval" / "chat_report.json", {"settings": {}, "models": [
        {"name": "sft", "path": str(sft), **chat},
        {"name": "base", "path": str(base), "eot": {"rate": 0.0}, "fidelity": {}, "tasks": {}}]})
    return run


def test_card_numbers_equal_the_reports(run, tmp_path):
    from huggingface_hub import ModelCard

    out = tmp_path / "pkg"
    manifest = run_package(PackageConfig(model=str(run / "sft" / "final"), out_dir=str(out),
                                         repo_id="me/qazlm-tiny-chat"), log=lambda *_: None)
    card = ModelCard.load(out / "README.md")
    d = card.data
    assert d.language == ["kk", "ru", "en"] and d.license == "apache-2.0" and d.pipeline_tag == "text-generation"
    assert d.library_name == "transformers" and "chat" in d.tags and d.datasets == ["openlanguagedata/flores_plus"]
    assert d.model_name == "qazlm-tiny-chat"
    got = {(r.dataset_name, r.metric_type): r.metric_value for r in d.eval_results}
    for name, value in BPB.items():
        assert got[(name, "bits_per_byte")] == value
    names = {r.metric_name for r in d.eval_results}   # whose figure each is, where it is not this model's own
    assert "bits per byte, flores-devtest:kk (measured on pretrain/final, the base model)" in names
    assert "language fidelity (kk)" in names and "dpo" not in d.tags
    assert got[("qazlm chat evaluation", "end_of_turn_rate")] == 0.875
    assert got[("qazlm chat evaluation", "language_fidelity_kk")] == 0.625
    assert ("qazlm chat evaluation", "language_fidelity_en") not in got      # None stays out, never invented
    text = card.text
    from qazlm.package.card import bpb_table

    assert bpb_table({"val:kk": {"bpb": 1.5}}, {})[2] == "| val:kk | 1.5000 |"   # a report from before the probe
    assert "| flores-devtest:kk | 1.2346 | 7.46 → 2.50 | 25.0% |" in text
    assert "| flores-devtest:en | 1.9877 | — | — |" in text
    assert "| end-of-turn rate | 87.5% [53–98] | 0.0% |" in text   # [a–b]: the 95% interval, where n is known
    assert f"Chat evaluation of `{run / 'sft' / 'final'}`" in text
    assert "| language fidelity (kk) | 62.5% [31–86] | — |" in text and "| language fidelity (ru) | 100.0% | — |" in text
    assert "| heldout:topic (exact, n=4) | 50.0% |" in text
    assert "123,456 training tokens" in text and "| kaznerd_news_sentences | kk | 50,000 | CC BY 4.0 |" in text
    assert "80 steps, 160,000 tokens" in text and 'from_pretrained("me/qazlm-tiny-chat")' in text
    assert "![pretrain_loss](images/pretrain_loss.png)" in text and (out / "images" / "pretrain_loss.png").is_file()
    assert "## Safety" in text and "Not evaluated" in text
    # the manifest lists every shipped file with its hash; bookkeeping files are not in it
    import hashlib

    for rel, info in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == info["sha256"]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    assert not {".qazlm.lock", "qazlm_stage.json", "qazlm_package.json"} & set(manifest["files"])
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out, local_files_only=True) is not None


def test_dpo_card_states_the_preference_stage_and_the_compute(run, tmp_path):
    """The demo packages its DPO model (through int8): the card names DPO, its data and licences, its held-out
    figures and win rate, and where and how long each stage ran, from the stages' own records."""
    from huggingface_hub import ModelCard

    out = tmp_path / "pkg"
    run_package(PackageConfig(model=str(run / "dpo" / "final"), out_dir=str(out)), log=lambda *_: None)
    card = ModelCard.load(out / "README.md")
    assert "dpo" in card.data.tags and "trilingual chat model (SFT, then DPO)" in card.text
    assert ("- DPO (TRL DPOTrainer, loss sigmoid+sft, beta 0.1): 32 steps on 738 pairs, LR 0.0005; held-out reward "
            "accuracy 71.5%, margin 1.148; win rate over its SFT parent judged by the reward model 49.5% of 96 "
            "prompts.") in card.text
    assert "1,018 training pairs, 157 held out, 42 set aside" in card.text and "| hh-rlhf harmless-base | MIT" in card.text
    assert "- Compute: pretraining 50 s of training steps on cpu × 1, fp32; SFT 2.5 min on cpu; DPO 14 s on cpu." in (
        card.text)
    names = {r.metric_name for r in card.data.eval_results}   # the chat report scored only the SFT parent
    assert "language fidelity (kk) (measured on sft/final, its parent)" in names


def test_card_reports_the_nearest_safety_evaluated_model(tmp_path):
    """A quantized model is not safety-evaluated itself: the card shows its parent's figures from the run's
    safety_eval report, with the bar they are held to, and never the figures of another branch."""
    from qazlm.package.card import safety
    from qazlm.package.facts import safety_entry

    run = tmp_path / "run"
    quant, dpo, sft = run / "quantize" / "final", run / "dpo" / "final", run / "sft" / "final"
    rates = {"sft": ({"kk": 0.9, "ru": 0.85}, 0.3), "dpo": ({"kk": 0.16, "ru": 0.76}, 0.08)}
    write(run / "safety_eval" / "safety_report.json", {"classifier": {"items": 42, "accuracy": 1.0}, "models": [
        {"model": str(folder), "safe_rate": {k: {"n": 50, "rate": v} for k, v in rates[name][0].items()},
         "over_refusal": {"kk": {"n": 50, "rate": rates[name][1]}}, "judge_safe_rate": None}
        for name, folder in (("sft", sft), ("dpo", dpo))]})
    entry = safety_entry(run, [quant, dpo, sft])
    assert entry["model"] == str(dpo) and entry["safe_rate"]["kk"]["rate"] == 0.16
    text = safety(entry)
    assert f"`{dpo}`" in text and "kk 16% [8–29] (n=50), ru 76% [63–86] (n=50)" in text
    assert "kk 8% [3–19] (n=50)" in text
    assert "100% right on 42 hand-labelled replies" in text and "Below the bar" in text
    assert safety_entry(run, [quant]) is None and "Not evaluated" in safety(None)
    assert "Meets the bar" in safety({**entry, "safe_rate": {"kk": {"n": 50, "rate": 0.9}}})
    own = {"items": 152, "accuracy": 0.987, "per_source": {"model": {"items": 110, "accuracy": 0.982}}}
    assert "99% right on 152 hand-labelled replies — 98% of 110 of them small models' own" in safety(
        {**entry, "classifier": own})  # an older report without per_source keeps the shorter line (above)


def test_card_chat_figures_are_the_packaged_models_own(tmp_path):
    """The chat report scores the SFT and the DPO model: a DPO model's card shows its own figures, a model
    quantized from it its parent's, never the SFT model's."""
    from qazlm.package.facts import nearest_entry

    run = tmp_path / "run"
    quant, dpo, sft = run / "quantize" / "final", run / "dpo" / "final", run / "sft" / "final"
    report = {"models": [{"path": str(sft), "eot": {"rate": 0.9}}, {"path": str(dpo), "eot": {"rate": 1.0}}]}
    assert nearest_entry(report, [dpo, sft])["eot"]["rate"] == 1.0
    assert nearest_entry(report, [quant, dpo, sft])["eot"]["rate"] == 1.0
    assert nearest_entry(report, [sft])["eot"]["rate"] == 0.9 and nearest_entry(report, [quant, None]) is None
    assert nearest_entry(None, [dpo]) is None


def test_without_reports_the_card_says_not_evaluated(tiny_tokenizer_dir, tmp_path):
    from huggingface_hub import ModelCard

    model = make_our_folder(tiny_tokenizer_dir, tmp_path / "lonely")
    run_package(PackageConfig(model=str(model), out_dir=str(tmp_path / "pkg")), log=lambda *_: None)
    card = ModelCard.load(tmp_path / "pkg" / "README.md")
    assert card.data.eval_results is None and "base-model" in card.data.tags
    assert "Pretrained model: not evaluated (no report in the run)." in card.text
    assert "Pretraining corpus: not recorded" in card.text
    assert (tmp_path / "pkg" / "config.json").is_file()        # our folder shipped as its transformers export


def test_rerun_skips_changes_rebuild_and_stale_files_go(run, tmp_path):
    gguf = tmp_path / "model-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    out, logs = tmp_path / "pkg", []
    cfg = PackageConfig(model=str(run / "pretrain" / "final"), out_dir=str(out), gguf=[str(gguf)])
    first = run_package(cfg, log=logs.append)
    assert "model-q8_0.gguf" in first["files"] and (out / "model-q8_0.gguf").is_file()
    assert "llama-cli -m model-q8_0.gguf --jinja" in (out / "README.md").read_text()
    run_package(cfg, log=logs.append)
    assert "up to date" in logs[-1]
    second = run_package(PackageConfig(model=cfg.model, out_dir=str(out), license="mit"), log=logs.append)
    assert "model-q8_0.gguf" not in second["files"] and not (out / "model-q8_0.gguf").exists()
    assert "license: mit" in (out / "README.md").read_text()


def test_push_dry_run_lists_the_manifest_and_offline_push_is_one_line(run, tmp_path, capfd):
    out = tmp_path / "pkg"
    run_package(PackageConfig(model=str(run / "sft" / "final"), out_dir=str(out)), log=lambda *_: None)
    code, stdout, _ = run_cli(["push", out, "--repo", "me/x", "--dry-run"], capfd)
    assert code == 0 and "would upload" in stdout and "README.md" in stdout and "model.safetensors" in stdout
    assert ".qazlm.lock" not in stdout and "qazlm_stage.json" not in stdout
    assert_one_line_error(["push", out, "--repo", "me/x"], capfd, match=r"push me/x: the Hub refused or could not "
                          r"be reached \(OfflineModeIsEnabled")
    (out / "tokenizer.json").write_text("{}")
    assert_one_line_error(["push", out, "--repo", "me/x", "--dry-run"], capfd, match=r"changed since")


def test_push_sends_the_manifest_with_the_flags_given(run, tmp_path, capfd, monkeypatch):
    """What `qazlm push` asks of huggingface_hub (no network: HfApi is replaced by a recorder): the repo created
    private, the branch created, and the manifest's files uploaded there with the commit message."""
    import huggingface_hub

    calls = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *args, **kwargs: calls.append((name, args, kwargs))

    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    out = tmp_path / "pkg"
    manifest = run_package(PackageConfig(model=str(run / "sft" / "final"), out_dir=str(out)), log=lambda *_: None)
    code, stdout, err = run_cli(["push", out, "--repo", "me/x", "--private", "--revision", "v0.1", "-m", "first"], capfd)
    assert code == 0, err
    assert [c[0] for c in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[0][1] == ("me/x",) and calls[0][2]["private"] is True and calls[0][2]["exist_ok"] is True
    assert calls[1][1] == ("me/x",) and calls[1][2]["branch"] == "v0.1"
    upload = calls[2][2]
    assert upload["repo_id"] == "me/x" and upload["revision"] == "v0.1" and upload["commit_message"] == "first"
    assert upload["folder_path"] == str(out) and upload["allow_patterns"] == sorted(manifest["files"])
    assert "https://huggingface.co/me/x/tree/v0.1" in stdout


BAD = [  # (argv after `package`, regex)
    (["{r}/missing"], r"missing: model folder not found"),
    (["{r}/pretrain/final", "--license", "Apache 2.0"], r"license = 'Apache 2.0': use a Hub licence id"),
    (["{r}/pretrain/final", "--repo-id", "noslash"], r"repo_id = 'noslash': expected OWNER/NAME"),
    (["{r}/pretrain/final", "--gguf", "{r}/tokenizer/training_info.json"], r"not a GGUF file"),
    (["{r}/pretrain/final", "--gguf", "{r}/none.gguf"], r"none.gguf: file not found"),
    (["{r}/pretrain/final", "--run", "{r}/nowhere"], r"--run .*nowhere: no such folder"),
    (["{r}/weights_only"], r"weights_only.*tokenizer"),
    ([], r"\[package\] model: not set"),
]


@pytest.mark.parametrize("argv, match", BAD, ids=[" ".join(a[1:]) or "none" for a, _ in BAD])
def test_package_bad_input_is_one_line(argv, match, run, tmp_path, capfd):
    assert_one_line_error(["package", *[a.format(r=run) for a in argv], "-o", tmp_path / "pkg"], capfd, match=match)


def test_package_into_an_unwritable_folder_is_one_line(run, tmp_path, capfd):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(["package", run / "pretrain" / "final", "-o", tmp_path / "file" / "pkg"], capfd,
                          match=r"cannot write to the output folder")


def test_package_refuses_a_folder_with_other_files(run, tmp_path, capfd):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert_one_line_error(["package", run / "pretrain" / "final", "-o", tmp_path / "mine"], capfd,
                          match=r"folder holds other files \(notes.txt, ...\) and is not a qazlm package")
    assert_one_line_error(["push", tmp_path / "mine", "--repo", "me/x"], capfd, match=r"no qazlm_package.json")


def test_stage_packages_the_runs_last_model(tmp_path):
    from qazlm.errors import QazlmError
    from qazlm.package.stage import stage_config
    from qazlm.runs import RunConfig, RunContext

    ctx = RunContext(RunConfig(out_dir=str(tmp_path)), tmp_path / "recipe.toml")
    assert stage_config({}, ctx).model == str(tmp_path / "pretrain" / "final")
    for stage in ("sft", "dpo", "quantize"):
        (tmp_path / stage / "final").mkdir(parents=True)
        cfg = stage_config({"license": "mit"}, ctx)
        assert cfg.model == str(tmp_path / stage / "final") and cfg.run == str(tmp_path)
    assert cfg.out_dir == str(tmp_path / "package") and cfg.license == "mit" and cfg.gguf == []
    # the [gguf] stage's model files, by its report: not the quantizer's importance matrix beside them
    (tmp_path / "gguf").mkdir()
    (tmp_path / "gguf" / "gguf_report.json").write_text(json.dumps({"files": {"q8_0": {"file": "t-Q8_0.gguf"}}}))
    for name in ("t-Q8_0.gguf", "t.imatrix.gguf"):
        (tmp_path / "gguf" / name).write_bytes(b"GGUF")
    assert stage_config({}, ctx).gguf == [str(tmp_path / "gguf" / "t-Q8_0.gguf")]
    with pytest.raises(QazlmError, match=r"\[package\] out_dir: not settable"):
        stage_config({"out_dir": "x"}, ctx)
