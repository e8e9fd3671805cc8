"""`qazlm data prepare` on bad input, through the real CLI: one line naming the setting, file or folder and
the fix, exit 2, never a traceback, never a silent `train 0 tokens`; reruns skip only identical settings."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from cli_harness import assert_one_line_error, run_cli  # noqa: E402

from qazlm.paths import REPO_ROOT  # noqa: E402


def write_config(folder: Path, tokenizer: Path, kk_source: str = "", out: Path | None = None) -> Path:
    """A small data recipe: two line-per-document sources of real kk/ru text, one datatrove task."""
    path = folder / "data.toml"
    path.write_text(f'''out_dir = "{out or folder / 'out'}"
tokenizer = "{tokenizer}"
decontaminate = []
shard_tokens = 4000
[executor]
tasks = 1
workers = 1
[mixture]
ratios = {{ kk = 0.5, ru = 0.5 }}
max_epochs = 3.0
val_fraction = 0.05
[[sources]]
name = "kk"
paths = ["{folder / 'kk.txt'}"]
lang = "kk"
{kk_source}
[[sources]]
name = "ru"
paths = ["{folder / 'ru.txt'}"]
lang = "ru"
''', encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path, sample_lines) -> Path:
    for lang in ("kk", "ru"):
        (tmp_path / f"{lang}.txt").write_text("\n".join(sample_lines[lang][:60]) + "\n", encoding="utf-8")
    return tmp_path


def prepare_argv(config: Path, *extra: str) -> list[str]:
    return ["data", "prepare", "--config", str(config), *extra]


CONFIG_CASES = [  # (--set overrides, TOML lines of the kk source, expected error line)
    (["executor.workers=0"], "", r"executor\.workers = 0: must be >= 1"),
    (["executor.tasks=0"], "", r"executor\.tasks = 0: must be >= 1"),
    (["executor.kind=spark"], "", r"executor\.kind = 'spark'.*local, slurm or ray"),
    (["minhash_buckets=0"], "", r"minhash_buckets = 0: must be >= 1"),
    (["minhash_hashes_per_bucket=0"], "", r"minhash_hashes_per_bucket = 0: must be >= 1"),
    (["shard_tokens=0"], "", r"shard_tokens = 0: must be >= 1"),
    (["shard_tokens=-5"], "", r"shard_tokens = -5: must be >= 1"),
    (["seed=-1"], "", r"seed = -1: must be >= 0"),
    (["lang_kk_ratio=1.5"], "", r"lang_kk_ratio = 1\.5: must be >= 0 and <= 1"),
    (["min_doc_chars=10", "max_doc_chars=5"], "", r"min_doc_chars = 10 exceeds max_doc_chars = 5"),
    (["mixture.max_epochs=nan"], "", r"mixture\.max_epochs = nan: expected a finite number"),
    (["mixture.max_epochs=inf"], "", r"mixture\.max_epochs = inf: expected a finite number"),
    (["mixture.max_epochs=-1"], "", r"mixture\.max_epochs = -1(\.0)?: must be > 0"),
    (["mixture.max_epochs=0"], "", r"mixture\.max_epochs = 0(\.0)?: must be > 0"),
    (["mixture.ratios.kk=nan"], "", r"mixture\.ratios\.kk = nan: expected a finite number"),
    (["mixture.ratios.kk=-0.5"], "", r"mixture\.ratios\.kk = -0\.5: must be >= 0"),
    (["mixture.ratios={kk=0,ru=0}"], "", r"mixture\.ratios gives no language a share"),
    (["mixture.val_fraction=1"], "", r"mixture\.val_fraction = 1(\.0)?: must be >= 0 and < 1"),
    (["mixture.max_train_tokens=-1"], "", r"mixture\.max_train_tokens = -1: must be >= 0"),
    (["quality.kk.min_doc_words=-1"], "", r"quality\.min_doc_words = -1: must be >= 0"),
    (["quality.kk.dup_line_frac=nan"], "", r"quality\.dup_line_frac = nan: expected a finite number"),
    (["quality.kk.min_doc_words=5", "quality.kk.max_doc_words=2"], "", r"min_doc_words = 5 exceeds max_doc_words"),
    ([], "weight = nan", r"sources\[kk\]\.weight = nan: expected a finite number"),
    ([], "weight = -1.0", r"sources\[kk\]\.weight = -1\.0: must be >= 0"),
    ([], "limit = 0", r"sources\[kk\]\.limit = 0 reads nothing"),
    ([], 'format = "docx"', r"sources\[kk\]\.format = 'docx': unknown"),
]


@pytest.mark.parametrize("overrides,kk_source,match", CONFIG_CASES,
                         ids=[" ".join(c[0]) or c[1] for c in CONFIG_CASES])
def test_bad_setting_is_one_line(corpus, tiny_tokenizer_dir, capfd, overrides, kk_source, match):
    config = write_config(corpus, tiny_tokenizer_dir, kk_source)
    sets = [a for o in overrides for a in ("--set", o)]
    assert_one_line_error(prepare_argv(config, *sets), capfd, match=match)
    assert not (corpus / "out" / "tokens").exists()  # refused before any work


def test_unwritable_out_dir_fails_before_work(corpus, tiny_tokenizer_dir, capfd):
    (corpus / "a_file").write_text("x")
    config = write_config(corpus, tiny_tokenizer_dir, out=corpus / "a_file" / "out")
    assert_one_line_error(prepare_argv(config), capfd, match=r"a_file/out: cannot write to the output folder")


def test_folder_in_use_by_another_run(corpus, tiny_tokenizer_dir, capfd):
    """A second run into a folder whose lock another process holds is refused, naming the holder."""
    out = corpus / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"), str(out / ".qazlm.lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        config = write_config(corpus, tiny_tokenizer_dir)
        assert_one_line_error(prepare_argv(config), capfd, match=r"in use by another qazlm run")
    finally:
        holder.kill()
        holder.wait()


NOTHING_LEFT = [  # (what the kk and ru files hold, TOML lines of the kk source, expected error line)
    ("empty", "", r"no training tokens: 0 documents read, 0 removed.*report\.md and .*rejects"),
    ("binary", "", r"no training tokens: (\d+) documents read, \1 removed \(top reasons: unreadable/"),
    ("text", "weight = 0.0", None),  # all weights 0 (the ru source gets weight 0 too, below)
]


@pytest.mark.parametrize("content,kk_source,match", NOTHING_LEFT, ids=[c[0] for c in NOTHING_LEFT])
def test_nothing_to_train_on_is_an_error(corpus, tiny_tokenizer_dir, capfd, content, kk_source, match):
    """A run that keeps no training tokens exits 2 with what was read and removed and where to look, and its
    token folder is not marked complete (pretraining would refuse it)."""
    from qazlm.data.shards import is_complete

    for lang in ("kk", "ru"):
        if content == "empty":
            (corpus / f"{lang}.txt").write_bytes(b"")
        elif content == "binary":
            (corpus / f"{lang}.txt").write_bytes(bytes(range(256)) * 8)
    config = write_config(corpus, tiny_tokenizer_dir, kk_source)
    if content == "text":
        config.write_text(config.read_text().replace('lang = "ru"\n', 'lang = "ru"\nweight = 0.0\n'))
        match = r"no training tokens: \d+ documents read.*weights and mixture\.ratios"
    assert_one_line_error(prepare_argv(config), capfd, match=match)
    out = corpus / "out"
    assert (out / "report" / "report.md").exists() and not is_complete(out / "tokens")
    assert not (out / "qazlm_stage.json").exists()
    # the unfinished run's settings are remembered: a rerun with other ones must say so, not reuse its work
    assert_one_line_error(prepare_argv(config, "--set", "seed=7"), capfd,
                          match=r"holds a data run made with other settings \(seed: 1337 -> 7\).*--force")


def limited_sample_sources():
    from qazlm.data.config import SourceConfig
    from qazlm.data.stage import BOOKS, SAMPLE_DIR

    return [SourceConfig(name=f.name.removesuffix(".txt.gz"), paths=[str(f)], lang=lang, limit=40,
                         format="txt_blank" if f.name.removesuffix(".txt.gz") in BOOKS else "txt")
            for lang in ("kk", "ru", "en") for f in sorted((SAMPLE_DIR / lang).glob("*.txt.gz"))]


def test_help_example_section_data_of_a_run_recipe(tmp_path, tiny_tokenizer_dir, capfd, monkeypatch):
    """`qazlm data prepare --config recipes/tiny.toml --section data` (the help's example) gets the run layout's
    defaults (<run>/data, <run>/tokenizer, the bundled sample); then reruns: same settings skip, other settings
    are refused with the list of changes, --force redoes."""
    from qazlm.data import stage
    from qazlm.data.shards import TokenDataset
    from qazlm.runs import read_record

    monkeypatch.setattr(stage, "sample_sources", limited_sample_sources)  # the sample, 40 records a file
    run = tmp_path / "run"
    shutil.copytree(tiny_tokenizer_dir, run / "tokenizer")
    argv = ["data", "prepare", "--config", str(REPO_ROOT / "recipes" / "tiny.toml"), "--section", "data",
            "--set", f"run.out_dir={json.dumps(str(run))}", "--set", "decontaminate=[]",
            "--set", "executor.tasks=1", "--set", "data.executor.workers=1"]
    code, out, err = run_cli(argv, capfd)
    assert code == 0, err
    data = run / "data"
    assert TokenDataset(data / "tokens", "train").num_tokens > 0
    assert read_record(data)["tokenizer"] == str(run / "tokenizer")
    assert {s for s in read_record(data)["sources"]} == {s.name for s in limited_sample_sources()}
    meta = (data / "tokens" / "meta.json").stat().st_mtime_ns

    code, out, err = run_cli(argv, capfd)
    assert code == 0 and "complete with these settings; skipping" in out
    assert (data / "tokens" / "meta.json").stat().st_mtime_ns == meta

    changed = argv + ["--set", "mixture.max_epochs=2.0"]
    assert_one_line_error(changed, capfd, match=r"run/data: holds a data run made with other settings "
                                                r"\(mixture\.max_epochs: 4\.0 -> 2\.0\); rerun with --force")
    code, out, err = run_cli(changed + ["--force"], capfd)
    assert code == 0, err
    assert read_record(data)["mixture"]["max_epochs"] == 2.0
    assert (data / "tokens" / "meta.json").stat().st_mtime_ns != meta


def test_pretrain_refuses_a_killed_prepare_folder(tmp_path, tiny_tokenizer_dir, capfd):
    """The token folder of a `data prepare` killed mid-write (shards listed, never marked complete) is refused
    by `qazlm pretrain` with one line, instead of training on part of the data."""
    from qazlm.data.shards import TokenShardWriter

    w = TokenShardWriter(tmp_path / "tokens", "train", "uint16", 8, vocab_size=1000, doc_sep_id=0,
                         tokenizer=str(tiny_tokenizer_dir))
    for _ in range(20):
        w.add_document([5, 6, 7, 8])  # shards flushed and listed in meta.json; the run dies before finishing
    assert_one_line_error(["pretrain", "--config", REPO_ROOT / "recipes" / "tiny.toml", "--data", tmp_path / "tokens",
                           "--out", tmp_path / "pretrain", "--set", f"tokenizer={json.dumps(str(tiny_tokenizer_dir))}",
                           "--set", "steps=2"], capfd,
                          match=r"tokens: token folder is incomplete.*rerun the same `qazlm data prepare`")
