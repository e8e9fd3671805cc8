"""Every stage command reads its settings in one order: the `[table]` of --config, then its flags, then --set
(later wins). Each case sets three keys in the TOML, two of them again by flag and one of those again by --set,
and checks the config the stage's run function receives; nothing is trained or loaded."""

from __future__ import annotations

import importlib

import pytest

from qazlm.cli import build_parser

# command argv, (module, run function), TOML table, {key: (toml, flag argv, --set value, expected)}.
# A flag of None: the key comes from the TOML only; a --set of None: the flag wins.
CASES = {
    "sft-data": (["sft-data"], ("qazlm.sft.data", "run"), "sft_data", {
        "heldout_fraction": (0.2, None, None, 0.2),
        "per_task": (7, ["--per-task", "9"], None, 9),
        "task_sizes": ({"identity": 3}, ["--task-sizes", "identity=4"], None, {"identity": 4}),
        "seed": (1, ["--seed", "2"], "3", 3)}),
    "sft": (["sft", "M", "--data", "D"], ("qazlm.sft.train", "run_sft"), "sft", {
        "warmup": (0.1, None, None, 0.1),
        "max_steps": (5, ["--max-steps", "6"], None, 6),
        "batch_size": (2, ["--batch-size", "3"], "4", 4)}),
    "pref-data": (["pref-data", "--sft-data", "D"], ("qazlm.align.pairs", "run"), "pref_data", {
        "samples": (3, None, None, 3),
        "types": (["language"], ["--types", "language,tool_call"], None, ["language", "tool_call"]),
        "per_type": (5, ["--per-type", "6"], "7", 7)}),
    "rm train": (["rm", "train", "M", "--data", "D"], ("qazlm.align.reward", "run_rm"), "rm", {
        "warmup": (0.2, None, None, 0.2),
        "lr": (1e-4, ["--lr", "2e-4"], None, 2e-4),
        "max_steps": (5, ["--max-steps", "6"], "7", 7)}),
    "dpo": (["dpo", "M", "--data", "D"], ("qazlm.align.dpo", "run_dpo"), "dpo", {
        "win_prompts": (12, None, None, 12),
        "loss_type": (["ipo"], ["--loss-type", "sigmoid,sft"], None, ["sigmoid", "sft"]),
        "beta": (0.2, ["--beta", "0.3"], "0.4", 0.4)}),
    "quantize": (["quantize", "M"], ("qazlm.quantize.quantize", "run_quantize"), "quantize", {
        "check_sentences": (3, None, None, 3),
        "scheme": ("int8-dynamic", ["--scheme", "int4-weight"], None, "int4-weight"),
        "group_size": (64, ["--group-size", "128"], "256", 256)}),
    "export gguf": (["export", "gguf", "M"], ("qazlm.gguf.export", "run_gguf"), "gguf", {
        "calibration_chunks": (8, None, None, 8),
        "types": (["f32"], ["--type", "q8_0", "--type", "q4_k_m,f16"], None, ["q8_0", "q4_k_m", "f16"]),
        "check_sentences": (3, ["--check-sentences", "4"], "5", 5)}),
    "package": (["package", "M"], ("qazlm.package.package", "run_package"), "package", {
        "run": ("R", None, None, "R"),
        "license": ("mit", ["--license", "cc-by-4.0"], None, "cc-by-4.0"),
        "repo_id": ("a/b", ["--repo-id", "c/d"], "e/f", "e/f")}),
}


def _argv(case, toml_path) -> list[str]:
    argv, _, _, keys = case
    argv = [*argv, "--config", str(toml_path)]
    for _toml, flag, _set, _expected in keys.values():
        argv += flag or []
    for key, (_toml, _flag, set_value, _expected) in keys.items():
        if set_value is not None:
            argv += ["--set", f"{key}={set_value}"]
    return argv


def capture_run(monkeypatch, module: str, function: str) -> dict:
    """Replace the stage's run function; what it is called with lands in the returned dict (cfg, force)."""
    received = {}

    def fake_run(cfg, force=False):
        received.update(cfg=cfg, force=force)
        return {"conversations": {"train": 0, "heldout": 0, "rejected": 0}}  # what sft-data prints from

    monkeypatch.setattr(importlib.import_module(module), function, fake_run)
    return received


def _toml(table: str, keys: dict) -> str:
    def value(v):
        if isinstance(v, list):
            return "[" + ", ".join(f'"{x}"' for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return f'"{v}"' if isinstance(v, str) else repr(v)
    return f"[{table}]\n" + "".join(f"{k} = {value(t)}\n" for k, (t, *_rest) in keys.items())


@pytest.mark.parametrize("name", sorted(CASES))
def test_config_then_flags_then_set(name, tmp_path, monkeypatch):
    case = CASES[name]
    _, (module, function), table, keys = case
    toml_path = tmp_path / "stage.toml"
    toml_path.write_text(_toml(table, keys))
    received = capture_run(monkeypatch, module, function)
    args = build_parser().parse_args(_argv(case, toml_path))
    assert args.func(args) == 0
    cfg = received["cfg"]
    for key, (_toml_value, _flag, _set, expected) in keys.items():
        assert getattr(cfg, key) == expected, (name, key)
    assert received["force"] is False


def test_sft_lora_switch_keeps_the_tables_lora_settings(tmp_path, monkeypatch):
    """--lora turns LoRA on without dropping the [sft.lora] keys of --config; --set still wins over both."""
    toml_path = tmp_path / "sft.toml"
    toml_path.write_text("[sft]\nlr = 1e-4\n[sft.lora]\nr = 4\nalpha = 8\n")
    received = capture_run(monkeypatch, "qazlm.sft.train", "run_sft")
    args = build_parser().parse_args(["sft", "M", "--data", "D", "--config", str(toml_path), "--lora",
                                      "--set", "lora.alpha=16"])
    args.func(args)
    lora = received["cfg"].lora
    assert (lora.enabled, lora.r, lora.alpha) == (True, 4, 16)
    assert received["cfg"].lr == 1e-4


def test_serve_config_then_flags_then_set(tmp_path, monkeypatch):
    """`qazlm serve` reads the same order; the model load, the app and uvicorn are replaced."""
    import torch
    import uvicorn

    toml_path = tmp_path / "serve.toml"
    toml_path.write_text(f"[serve]\nmax_queue = 5\nslots = 2\nport = 9001\nthreads = {torch.get_num_threads()}\n")
    received = {}
    monkeypatch.setattr(importlib.import_module("qazlm.infer.loading"), "load_model", lambda path: None)
    monkeypatch.setattr(importlib.import_module("qazlm.serve.app"), "create_app",
                        lambda cfg, model: received.update(cfg=cfg))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: received.update(uvicorn=kw))
    args = build_parser().parse_args(["serve", "M", "--config", str(toml_path), "--slots", "3",
                                      "--port", "9002", "--set", "port=9003"])
    assert args.func(args) == 0
    cfg = received["cfg"]
    assert (cfg.max_queue, cfg.slots, cfg.port, cfg.host) == (5, 3, 9003, "127.0.0.1")
    assert received["uvicorn"]["port"] == 9003 and received["uvicorn"]["host"] == "127.0.0.1"


def test_pref_data_policy_flag_adds_on_policy_pairs_to_the_default_types(monkeypatch):
    """`--policy DIR` alone (the documented on-policy command) keeps every default pair type and adds on_policy."""
    from qazlm.align.pairs import TYPES

    received = capture_run(monkeypatch, "qazlm.align.pairs", "run")
    args = build_parser().parse_args(["pref-data", "--sft-data", "D", "--policy", "P", "--reward-model", "R"])
    args.func(args)
    cfg = received["cfg"]
    assert cfg.types == [*(t for t in TYPES if t != "on_policy"), "on_policy"]
    assert (cfg.policy, cfg.reward_model) == ("P", "R")
