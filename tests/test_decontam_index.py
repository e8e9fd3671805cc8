"""The decontamination index: never unpickled, rebuilt when its inputs change, honest about missing sets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from cli_harness import assert_one_line_error
from qazlm.data.decontam import (INDEX_DIR, INDEX_FILE, LEGACY_FILE, NgramIndex, index_fingerprint, prepare_index,
                                  read_meta)
from qazlm.errors import QazlmError

ITEM = "the quick brown fox jumps over the lazy dog while the farmer watches from the old red barn"


class _Payload:
    """Unpickling this creates `marker` (stands for any code a planted pickle could run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(_Payload(marker)))


def test_payload_is_live(tmp_path):
    """The payload really runs when unpickled, so the tests below prove something."""
    plant(tmp_path / "p.pkl", tmp_path / "ran")
    pickle.loads((tmp_path / "p.pkl").read_bytes())
    assert (tmp_path / "ran").exists()


@pytest.fixture()
def items_file(tmp_path) -> Path:
    path = tmp_path / "my_eval.txt"
    path.write_text(ITEM + "\n", encoding="utf-8")
    return path


def test_load_refuses_a_pickle(tmp_path):
    plant(tmp_path / INDEX_FILE, tmp_path / "ran")
    with pytest.raises(QazlmError, match=r"index.npz: not a qazlm decontamination index") as e:
        NgramIndex.load(tmp_path / INDEX_FILE)
    assert "\n" not in str(e.value) and not (tmp_path / "ran").exists()


def test_legacy_pickle_is_deleted_unread(tmp_path, items_file, capfd):
    plant(tmp_path / LEGACY_FILE, tmp_path / "ran")
    prepare_index(tmp_path, [str(items_file)])
    err = capfd.readouterr().err
    assert not (tmp_path / "ran").exists() and not (tmp_path / LEGACY_FILE).exists()
    assert len(err.strip().splitlines()) == 1 and "deleted unread" in err


def _data_config(tmp_path: Path, tokenizer: Path, sets: list[str]) -> Path:
    corpus = tmp_path / "kk.txt"
    corpus.write_text("Балалар мектепке барды.\n", encoding="utf-8")
    cfg = tmp_path / "data.toml"
    cfg.write_text(f"out_dir = {json.dumps(str(tmp_path / 'out'))}\ntokenizer = {json.dumps(str(tokenizer))}\n"
                   f"decontaminate = {json.dumps(sets)}\n\n[[sources]]\nname = \"kk\"\n"
                   f"paths = [{json.dumps(str(corpus))}]\nlang = \"kk\"\n", encoding="utf-8")
    return cfg


def test_cli_refuses_planted_pickles_at_both_paths(tmp_path, items_file, tiny_tokenizer_dir, capfd):
    """A valid index (matching fingerprint) whose npz was replaced by a pickle, plus a legacy decontam.pkl:
    `qazlm data prepare` runs neither payload, deletes the legacy file and stops with one line."""
    out = tmp_path / "out"
    prepare_index(out, [str(items_file)])
    plant(out / INDEX_DIR / INDEX_FILE, tmp_path / "ran_npz")
    plant(out / LEGACY_FILE, tmp_path / "ran_pkl")
    capfd.readouterr()
    line = assert_one_line_error(["data", "prepare", "--config", _data_config(tmp_path, tiny_tokenizer_dir,
                                                                              [str(items_file)])],
                                 capfd, match=r"decontam/index.npz: not a qazlm decontamination index")
    assert "delete its folder" in line
    assert not (tmp_path / "ran_npz").exists() and not (tmp_path / "ran_pkl").exists()
    assert not (out / LEGACY_FILE).exists()


def test_cli_unknown_set_names_the_valid_ones(tmp_path, tiny_tokenizer_dir, capfd):
    cfg = _data_config(tmp_path, tiny_tokenizer_dir, ["flores", "nosuchset"])
    assert_one_line_error(["data", "prepare", "--config", cfg], capfd,
                          match=r"'nosuchset' is neither a known evaluation set \(flores, sib200, kkcopa, kazqad, safety, "
                                r"kkwikispell, nis_math, wic\)")
    assert not (tmp_path / "out" / INDEX_DIR).exists()


def test_cli_only_absent_sets_is_an_error(tmp_path, tiny_tokenizer_dir, capfd, monkeypatch):
    monkeypatch.setenv("QAZLM_SHARED", str(tmp_path / "no_shared"))
    cfg = _data_config(tmp_path, tiny_tokenizer_dir, ["kkcopa", "kazqad"])
    assert_one_line_error(["data", "prepare", "--config", cfg], capfd, match=r"nothing would be decontaminated")


def test_absent_set_warns_once_and_is_recorded(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("QAZLM_SHARED", str(tmp_path / "no_shared"))
    index = prepare_index(tmp_path, ["flores", "sib200", "kkcopa"])  # flores is bundled, the others are not
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if "warning" in ln]
    assert warnings == [f"qazlm: warning: decontaminate: sib200, kkcopa not found on this machine (looked under "
                        f"{tmp_path / 'no_shared' / 'data' / 'eval'}); training text is not checked against them"]
    meta = read_meta(tmp_path)
    assert meta["missing"] == ["sib200", "kkcopa"] and list(meta["used"]) == ["flores"]
    assert meta["used"]["flores"] > 5000
    assert NgramIndex.load(index).names == ["flores"]


def test_index_is_rebuilt_when_its_inputs_change(tmp_path, items_file):
    index = prepare_index(tmp_path, [str(items_file)], 13)
    built = index.stat().st_mtime_ns
    assert prepare_index(tmp_path, [str(items_file)], 13).stat().st_mtime_ns == built  # same inputs: reused
    prepare_index(tmp_path, [str(items_file)], 12)
    assert read_meta(tmp_path)["n"] == 12 and NgramIndex.load(index).n == 12          # n changed
    new_item = "an entirely different evaluation sentence that the old index could never have contained at all"
    items_file.write_text(new_item + "\n", encoding="utf-8")
    prepare_index(tmp_path, [str(items_file)], 12)                                    # the file changed
    assert NgramIndex.load(index).match(new_item) == str(items_file)
    assert NgramIndex.load(index).match(ITEM) is None
    prepare_index(tmp_path, [str(items_file), "flores"], 12)                          # the sets changed
    assert read_meta(tmp_path)["requested"] == [str(items_file), "flores"]
    assert read_meta(tmp_path)["fingerprint"] == index_fingerprint([str(items_file), "flores"], 12)  # for records


def test_filter_loads_the_index_by_path(tmp_path, items_file):
    from datatrove.data import Document

    from qazlm.data.steps import DecontamFilter

    step = DecontamFilter(str(prepare_index(tmp_path, [str(items_file)])))
    doc = Document(text="A blog post. " + ITEM.upper() + "! More text.", id="1", metadata={})
    assert step.filter(doc) == (False, "contaminated") and doc.metadata["contaminated_by"] == str(items_file)
    assert step.filter(Document(text="The quick brown fox.", id="2", metadata={})) is True


def test_kazakh_eval_sets_catch_the_bundled_corpus_lines_they_hold():
    """The bundled Kazakh Wikipedia sample holds kkWikiSpell sentences word for word, some of 6-7 words: the
    index matches that set's sentences whole from 5 words, so these lines never reach training."""
    import gzip

    from qazlm.data.decontam import build_index
    from qazlm.paths import shared_dir

    if not (shared_dir() / "data" / "eval" / "kk" / "kkwikispell.jsonl").is_file():
        pytest.skip("../shared evaluation data not on this machine")
    idx = build_index(["kkwikispell", "nis_math", "wic"])
    assert idx.items == {"kkwikispell": 320, "nis_math": 89, "wic": 481}
    lines = gzip.open(Path(__file__).parents[1] / "data/sample/kk/apertium_wiki_texts.txt.gz", "rt").read().split("\n")
    hits = [line for line in lines if idx.match(line) == "kkwikispell"]
    assert any("Хантәңірі шыңы" in line for line in hits)             # a 6-word item, below the 8-word floor
    assert len(hits) == 14
    assert idx.match("Қазақстанның ең биік жері туралы") is None      # part of an item is not the item
