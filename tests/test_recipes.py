"""Every recipe under recipes/ loads and plans: a typo, a stale key or a batch geometry that does not divide
fails here, not an hour into a GPU run (litgpt's test_config_hub.py does the same for its configs).

Nothing heavy runs. Run recipes (recipes/*.toml) are read the way `qazlm run` reads them: only known tables,
and each stage's table built into that stage's config dataclass (unknown keys are errors) and validated:
`[tokenizer]` -> TokenizerTrainConfig, `[data]` -> DataConfig (with the bundled sample sources when it names
none, as the data stage does), `[pretrain]` -> PretrainConfig via `qazlm pretrain`'s loader, then the run
plan (global batch / micro-batch / world size), the ModelConfig and its parameter count on the meta device,
`[eval]` -> EvalStageConfig and its task names, `[sft_data]` -> SftDataConfig, `[sft]` -> SftConfig,
`[chat_eval]` -> ChatEvalStageConfig. Data recipes (recipes/data/*.toml) -> DataConfig, with every
local source path matching files. New recipe files are picked up automatically.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from qazlm.config import from_dict, load_config, read_toml
from qazlm.paths import REPO_ROOT

RECIPES = REPO_ROOT / "recipes"
RUN_RECIPES = sorted(RECIPES.glob("*.toml"))
DATA_RECIPES = sorted((RECIPES / "data").glob("*.toml"))
# parameter count bounds by preset name; "<N>m" / "<N>b" names must be within 35% of N
SIZE_BOUNDS = {"tiny": (1e6, 10e6), "small": (10e6, 50e6)}
NAMED_SIZE_TOLERANCE = 0.35


def _id(path: Path) -> str:
    return str(path.relative_to(RECIPES))


def test_recipe_files_are_found_and_all_covered():
    assert RUN_RECIPES and DATA_RECIPES
    covered = set(RUN_RECIPES) | set(DATA_RECIPES)
    stray = sorted(_id(p) for p in RECIPES.rglob("*.toml") if p not in covered)
    assert not stray, f"recipes this test does not know how to check: {stray}"


def test_run_folders_are_distinct():
    """Two recipes writing the same folder would resume (or skip on) each other's outputs."""
    seen: dict[str, str] = {}
    for path in RUN_RECIPES + DATA_RECIPES:
        data = read_toml(path)
        out = data.get("run", {}).get("out_dir") if path in RUN_RECIPES else data.get("out_dir")
        assert out, f"{_id(path)}: no output folder set"
        assert out not in seen, f"{_id(path)} and {seen[out]} both write {out}"
        seen[out] = _id(path)


# --- run recipes -----------------------------------------------------------------------------------------

def _expected_params(name: str) -> tuple[float, float]:
    if name in SIZE_BOUNDS:
        return SIZE_BOUNDS[name]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([mb])", name)
    assert m, f"model preset {name!r}: add its expected parameter range to SIZE_BOUNDS in {Path(__file__).name}"
    n = float(m.group(1)) * (1e6 if m.group(2) == "m" else 1e9)
    return n * (1 - NAMED_SIZE_TOLERANCE), n * (1 + NAMED_SIZE_TOLERANCE)


def _documented_worlds(text: str) -> set[int]:
    """World sizes the recipe's own comments tell users to launch (`torchrun --nproc_per_node=8`, `--nnodes=2`)."""
    worlds = {1}
    for line in text.splitlines():
        m = re.search(r"--nproc_per_node[= ](\d+)", line)
        if m:
            nodes = re.search(r"--nnodes[= ](\d+)", line)
            worlds.add(int(m.group(1)) * (int(nodes.group(1)) if nodes else 1))
    return worlds


def _check_tokenizer(section: dict, where: str):
    from qazlm.tokenizer.train import TokenizerTrainConfig

    section = dict(section)
    section.pop("compare_with", None)  # a stage-only key (qazlm.tokenizer.stage)
    cfg = from_dict(TokenizerTrainConfig, section, where)
    cfg.validate()
    for item in cfg.inputs:
        path = Path(item.rpartition("=")[2] if "=" in item else item)
        assert path.exists() or (REPO_ROOT / path).exists(), f"{where}: input {item!r} not found"
    return cfg


def _check_data(section: dict, run, where: str):
    from qazlm.data.config import DataConfig
    from qazlm.data.stage import sample_sources

    section = dict(section)
    section.setdefault("out_dir", str(Path(run.out_dir) / "data"))
    section.setdefault("tokenizer", str(Path(run.out_dir) / "tokenizer"))
    section.setdefault("seed", run.seed)
    cfg = from_dict(DataConfig, section, where)
    if not cfg.sources:
        cfg.sources = sample_sources()
    _validate_data(cfg, where)
    return cfg


def _validate_data(cfg, where: str) -> None:
    from qazlm.data.readers import expand_paths

    cfg.validate()
    assert not set(cfg.quality) - set(cfg.langs), f"{where}: [quality.*] for languages not in langs {cfg.langs}"
    for s in cfg.sources:
        if s.paths and not s.hf:
            expand_paths(s.paths, base=REPO_ROOT)  # raises for a pattern that matches no file


def _check_pretrain(path: Path, vocab: int, where: str):
    import torch

    from qazlm.model.flops import param_counts
    from qazlm.model.transformer import Transformer
    from qazlm.train.cli import load_pretrain_config
    from qazlm.train.config import SCHEDULES, TRI_STATE
    from qazlm.train.trainer import model_config, plan

    cfg = load_pretrain_config(str(path))
    assert cfg.schedule in SCHEDULES and cfg.parallel in ("ddp", "fsdp"), where
    assert cfg.dtype in ("auto", "fp32", "bf16"), f"{where}: dtype {cfg.dtype!r}"
    for key in ("compile", "activation_checkpointing"):
        assert str(getattr(cfg, key)).lower() in TRI_STATE, f"{where}: {key} = {getattr(cfg, key)!r}"
    assert re.fullmatch(r"auto|cpu|cuda(:\d+)?", cfg.device), f"{where}: device {cfg.device!r}"
    for world in sorted(_documented_worlds(path.read_text(encoding="utf-8"))):
        p = plan(cfg, world)
        assert p.tokens_per_step == cfg.global_batch_tokens, where
        assert p.accum * cfg.micro_batch * cfg.seq_len * world == cfg.global_batch_tokens, where
        assert p.steps > cfg.warmup_steps, f"{where}: {p.steps} steps at world {world}, warmup {cfg.warmup_steps}"
        if cfg.schedule == "wsd":
            assert p.steps * cfg.decay_fraction >= 1, f"{where}: wsd decay phase shorter than one step"

    mcfg = model_config(cfg, vocab)
    assert mcfg.max_seq_len >= cfg.seq_len and cfg.eval_max_len <= mcfg.max_seq_len, where
    with torch.device("meta"):
        model = Transformer(mcfg)
    n = sum(p.numel() for p in model.parameters())
    assert n == param_counts(mcfg)["total"], f"{where}: qazlm.model.flops.param_counts disagrees with the model"
    lo, hi = _expected_params(cfg.model)
    assert lo <= n <= hi, f"{where}: model {cfg.model!r} has {n / 1e6:.1f}M params at vocab {vocab}, " \
                          f"expected {lo / 1e6:.0f}M-{hi / 1e6:.0f}M"
    return cfg, mcfg


def _check_eval(section: dict, run, where: str):
    from qazlm.eval.stage import EvalStageConfig
    from qazlm.eval.tasks import expand_tasks

    cfg = from_dict(EvalStageConfig, {"seed": run.seed, **section}, where)
    assert expand_tasks(cfg.tasks), f"{where}: no tasks"  # unknown names raise
    for spec in cfg.bpb:
        if spec == "flores" or spec.startswith("flores:"):
            assert spec.partition(":")[2] in ("", "dev", "devtest"), f"{where}: bpb set {spec!r}"
    return cfg


def _check_sft_data(section: dict, run, where: str):
    from qazlm.sft.data import SftDataConfig

    assert "out_dir" not in section, f"{where}: the stage writes <run>/sft_data; drop out_dir"
    return from_dict(SftDataConfig, {"seed": run.seed, **section}, where)


def _check_sft(section: dict, run, where: str):
    from qazlm.sft.config import SftConfig

    assert "out_dir" not in section, f"{where}: the stage writes <run>/sft; drop out_dir"
    out = Path(run.out_dir)  # the stage's defaults: the run's base model and instruction data
    defaults = {"seed": run.seed, "model": str(out / "pretrain" / "final"), "data": str(out / "sft_data")}
    return from_dict(SftConfig, {**defaults, **section, "out_dir": str(out / "sft")}, where)


def _check_chat_eval(section: dict, run, where: str):
    from qazlm.eval.chat_stage import ChatEvalStageConfig

    return from_dict(ChatEvalStageConfig, {"seed": run.seed, **section}, where)


def _check_quantize(section: dict, run, where: str):
    from qazlm.quantize.config import QuantizeConfig

    assert "out_dir" not in section, f"{where}: the stage writes <run>/quantize; drop out_dir"
    out = Path(run.out_dir)  # the stage's default: the run's chat model
    return from_dict(QuantizeConfig, {"model": str(out / "sft" / "final"), **section,
                                      "out_dir": str(out / "quantize")}, where)


def _check_gguf(section: dict, run, where: str):
    from qazlm.gguf.config import GGUFConfig

    assert "out_dir" not in section, f"{where}: the stage writes <run>/gguf; drop out_dir"
    out = Path(run.out_dir)  # the stage's default: the run's fp32 chat model
    return from_dict(GGUFConfig, {"model": str(out / "sft" / "final"), "name": run.name, **section,
                                  "out_dir": str(out / "gguf")}, where)


def _check_model_eval(settings: str):
    def check(section: dict, run, where: str):
        import importlib

        module, name = settings.rsplit(".", 1)
        table = {"sft_data": str(Path(run.out_dir) / "sft_data"), **section}
        table.pop("models", None)
        return from_dict(getattr(importlib.import_module(module), name), table, where)
    return check


def _check_align(builder: str):
    def check(section: dict, run, where: str):
        from qazlm.align import stage
        from qazlm.runs import RunContext

        cfg = getattr(stage, builder)(section, RunContext(run, Path(where.split("[")[0])))
        assert Path(cfg.out_dir) == Path(run.out_dir) / where.split("[")[1].rstrip("]")
        return cfg
    return check


def _check_package(section: dict, run, where: str):
    from qazlm.package.config import PackageConfig

    assert "out_dir" not in section, f"{where}: the stage writes <run>/package; drop out_dir"
    out = Path(run.out_dir)
    return from_dict(PackageConfig, {"model": str(out / "quantize" / "final"), "run": str(out), **section,
                                     "out_dir": str(out / "package")}, where)


@pytest.mark.parametrize("path", RUN_RECIPES, ids=_id)
def test_run_recipe_loads_and_plans(path):
    from qazlm.runs import STAGES, RunConfig
    from qazlm.tokenizer.train import TokenizerTrainConfig

    recipe = read_toml(path)
    unknown = set(recipe) - set(STAGES) - {"run"}
    assert not unknown, f"{_id(path)}: unknown table(s) {sorted(unknown)}; valid: run, {', '.join(STAGES)}"
    assert "run" in recipe, f"{_id(path)}: a run recipe needs a [run] table"
    assert set(recipe) & set(STAGES), f"{_id(path)}: no stage tables"
    run = from_dict(RunConfig, recipe["run"], f"{path}[run]")

    vocab = TokenizerTrainConfig().vocab_size  # the recommended vocabulary when the recipe trains none
    if "tokenizer" in recipe:
        vocab = _check_tokenizer(recipe["tokenizer"], f"{path}[tokenizer]").vocab_size
    if "data" in recipe:
        _check_data(recipe["data"], run, f"{path}[data]")
    if "pretrain" in recipe:
        cfg, mcfg = _check_pretrain(path, vocab, f"{path}[pretrain]")
        assert cfg.seed == recipe["pretrain"].get("seed", run.seed)
        assert Path(cfg.out_dir) == Path(run.out_dir) / "pretrain"
        for stage in ("sft", "rm", "dpo"):  # post-training rows must fit the context the run's model is built with
            max_len = recipe.get(stage, {}).get("max_len", 0)
            assert max_len <= mcfg.max_seq_len, f"{path}[{stage}] max_len {max_len} > context {mcfg.max_seq_len}"
    checks = {"eval": _check_eval, "sft_data": _check_sft_data, "sft": _check_sft, "chat_eval": _check_chat_eval,
              "tool_eval": _check_model_eval("qazlm.eval.tools.ToolEvalSettings"),
              "safety_eval": _check_model_eval("qazlm.eval.safety.SafetySettings"),
              "pref_data": _check_align("pref_data_config"), "rm": _check_align("rm_config"),
              "dpo": _check_align("dpo_config"), "quantize": _check_quantize, "gguf": _check_gguf,
              "package": _check_package}
    for stage, check in checks.items():  # each builds the stage's config the way its stage.py does
        if stage in recipe:
            check(recipe[stage], run, f"{path}[{stage}]")


def test_evaluations_take_the_gpu_when_there_is_one(monkeypatch):
    """Every evaluation setting defaults to `auto`, as training does: a GPU recipe's evaluations run on the GPU
    without saying so (they used to default to the CPU, where a 200-500M model's thousands of replies take days);
    asking for cuda without one is one line naming the flag."""
    import torch

    from qazlm.errors import QazlmError
    from qazlm.eval.chat import ChatEvalSettings
    from qazlm.eval.evaluate import EvalSettings
    from qazlm.eval.safety import SafetySettings
    from qazlm.eval.tools import ToolEvalSettings

    kinds = (EvalSettings, ChatEvalSettings, ToolEvalSettings, SafetySettings)
    assert all(k().device == "cpu" for k in kinds)           # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert all(k().device == "cuda" for k in kinds)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(QazlmError, match="eval --tools: device = 'cuda' but no CUDA GPU is visible"):
        ToolEvalSettings(device="cuda")


# --- data recipes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DATA_RECIPES, ids=_id)
def test_data_recipe_loads_and_validates(path):
    from qazlm.data.config import DataConfig

    cfg = load_config(DataConfig, path)
    assert cfg.sources, f"{_id(path)}: no [[sources]]"
    _validate_data(cfg, _id(path))
    assert cfg.tokenizer, f"{_id(path)}: set tokenizer (the folder `qazlm data prepare` tokenizes with)"
