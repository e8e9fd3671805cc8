"""Config loading (unknown keys, types, overrides), atomic writes and strict text reading."""

import dataclasses
import gzip
import json
import subprocess
import sys

import pytest

from qazlm.config import load_config
from qazlm.errors import QazlmError
from qazlm.io import atomic_write, expand_inputs, iter_lines, write_gzip_lines


@dataclasses.dataclass
class Inner:
    width: int = 8


@dataclasses.dataclass
class Cfg:
    lr: float = 1e-3
    steps: int = 10
    name: str = "x"
    compile: bool = False
    mix: dict[str, float] = dataclasses.field(default_factory=dict)
    sizes: list[int] = dataclasses.field(default_factory=list)
    inner: Inner = dataclasses.field(default_factory=Inner)
    note: str | None = None


def test_toml_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nlr = 3e-4\nsizes = [1, 2]\n[train.inner]\nwidth = 4\n')
    cfg = load_config(Cfg, p, section="train", overrides=["steps=5", "compile=true", "mix={kk=0.5, en=0.5}",
                                                          "inner.width=16", "note=hello"])
    assert cfg == Cfg(lr=3e-4, steps=5, compile=True, mix={"kk": 0.5, "en": 0.5}, sizes=[1, 2],
                      inner=Inner(16), note="hello")


def test_unknown_key_suggests_the_right_one(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nsetps = 3\n")
    with pytest.raises(QazlmError, match=r"unknown key 'setps'; did you mean 'steps'"):
        load_config(Cfg, p, section="train")


def test_wrong_type_and_missing_file(tmp_path):
    with pytest.raises(QazlmError, match="expected a whole number"):
        load_config(Cfg, overrides=["steps=many"])
    with pytest.raises(QazlmError, match="not found"):
        load_config(Cfg, tmp_path / "nope.toml")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temp file left


def test_write_gzip_lines_is_reproducible(tmp_path):
    """Bundled data files are rebuilt by scripts: the same lines must give the same bytes (gzip mtime 0)."""
    a, b = tmp_path / "a" / "x.txt.gz", tmp_path / "b" / "x.txt.gz"
    write_gzip_lines(a, ["Сәлем, әлем!", "hello"])
    write_gzip_lines(b, iter(["Сәлем, әлем!", "hello"]))
    assert a.read_bytes() == b.read_bytes()
    assert list(iter_lines(a)) == ["Сәлем, әлем!", "hello"]
    assert [f.name for f in a.parent.iterdir()] == ["x.txt.gz"]  # no temp file left behind


def test_iter_lines_errors_name_the_file(tmp_path):
    bad_utf8 = tmp_path / "bad.txt"
    bad_utf8.write_bytes(b"ok\n\xff\xfe broken\n")
    with pytest.raises(QazlmError, match=r"bad.txt:2: invalid UTF-8"):
        list(iter_lines(bad_utf8))
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(QazlmError, match=r"bad.jsonl:2: malformed JSON"):
        list(iter_lines(bad_json))
    good = tmp_path / "good.jsonl.gz"
    with gzip.open(good, "wt") as f:
        f.write(json.dumps({"text": "сәлем"}) + "\n\n")
    assert list(iter_lines(good)) == ["сәлем"]
    with pytest.raises(QazlmError, match="no such file"):
        expand_inputs([tmp_path / "missing"])


def test_cli_help_and_one_line_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qazlm.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "qazlm run recipes/tiny.toml" in out.stdout
    bad = tmp_path / "r.toml"
    bad.write_text("[tokeniser]\nvocab_size = 10\n")
    out = subprocess.run([sys.executable, "-m", "qazlm.cli", "run", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown table [tokeniser]; did you mean [tokenizer]?" in out.stderr
