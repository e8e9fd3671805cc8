"""End-to-end `qazlm data prepare` on small real slices: bad inputs, invariant, PII, dedup, decontam,
parquet through the HF streaming loader, shards/val outputs, report, resume after a crash, CLI errors."""

from __future__ import annotations

import gc
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from qazlm.config import from_dict  # noqa: E402
from qazlm.data.config import DataConfig  # noqa: E402
from qazlm.paths import flores_path  # noqa: E402

FLORES_KK = None


def _flores_line(lang: str) -> str:
    path = flores_path("devtest", lang)
    if not path.exists():
        pytest.skip(f"{path} absent")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return next(ln.strip() for ln in f if len(ln.split()) > 15)


def make_corpus(root: Path, lines: dict[str, list[str]]) -> dict:
    """kk txt (+ planted duplicates), ru jsonl with bad records, en parquet (FineWeb-2 schema) and csv."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    kk = lines["kk"][:120]
    near = kk[10] + " " + kk[11] + " " + kk[12]
    near_dup = near.replace(".", ",", 1)  # one character differs: Jaccard ≫ 0.8
    pii_line = ("Өтініш берушінің ЖСН 900101300017, телефоны +7 701 123 45 67, поштасы aigerim.n@mail.kz "
                "болып табылады және ол бүгін келді.")
    contaminated = "Жаңалықтар. " + _flores_line("kk")
    with gzip.open(root / "kk_news.txt.gz", "wb") as f:
        body = kk + [near, near_dup, kk[5], pii_line, contaminated]
        f.write(("\n".join(body) + "\n").encode())
        f.write(b"\xff\xfe broken \xc3\x28 utf8 line\n")
        f.write(("\x00\x01\x02\x03\x04\x05\x06" * 20 + "\n").encode())
        f.write(("Қазақ " * 2000 + "\n").encode())  # gigantic (max_doc_chars = 5000 below)
    ru = lines["ru"][:100]
    with open(root / "ru.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(ru):
            f.write(json.dumps({"id": f"ru{i}", "text": t}, ensure_ascii=False) + "\n")
        f.write('{"id": "bad1", "text": "unterminated\n')
        f.write('not json at all\n')
        f.write(json.dumps({"id": "notext", "body": "x"}) + "\n")
        f.write(json.dumps({"id": "empty", "text": "   "}) + "\n")
    en = lines["en"][:100]
    table = pa.table({"text": en[:60], "id": [f"<urn:uuid:{i}>" for i in range(60)],
                      "dump": ["CC-MAIN-2024-10"] * 60, "url": [f"https://example.com/{i}" for i in range(60)],
                      "date": ["2024-02-20T00:00:00Z"] * 60, "file_path": ["s3://x.warc.gz"] * 60,
                      "language": ["eng"] * 60, "language_score": [0.9] * 60, "language_script": ["Latn"] * 60})
    (root / "en_pq").mkdir(exist_ok=True)
    pq.write_table(table, root / "en_pq" / "train-00000.parquet")
    with open(root / "en.csv", "w", encoding="utf-8", newline="") as f:
        import csv
        w = csv.DictWriter(f, ["id", "text"])
        w.writeheader()
        for i, t in enumerate(en[60:]):
            w.writerow({"id": i, "text": t})
    return {"kk": len(body) + 3, "ru_bad": 4}


def data_cfg(root: Path, out: Path, tok: Path, tasks: int = 2) -> DataConfig:
    return from_dict(DataConfig, {
        "out_dir": str(out), "tokenizer": str(tok), "max_doc_chars": 5000, "decontaminate": ["flores"],
        "executor": {"kind": "local", "tasks": tasks, "workers": 1},
        "mixture": {"ratios": {"kk": 0.5, "ru": 0.25, "en": 0.25}, "val_fraction": 0.1, "max_epochs": 3},
        "sources": [
            {"name": "kk_news", "paths": [str(root / "kk_*.txt.gz")], "lang": "kk", "weight": 1.0},
            {"name": "ru_web", "paths": [str(root / "ru.jsonl")], "lang": "ru"},
            {"name": "en_fineweb", "hf": "parquet", "paths": [str(root / "en_pq")], "lang": "en"},
            {"name": "en_csv", "paths": [str(root / "en.csv")], "lang": "en", "weight": 0.5},
        ]})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_lines, tiny_tokenizer_dir):
    from qazlm.data.prepare import prepare

    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, sample_lines)
    out = root / "out"
    summary = prepare(data_cfg(root, out, tiny_tokenizer_dir))
    return root, out, summary


def _rejects(out: Path) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {}
    for path in sorted((out / "rejects").glob("*/*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                d = json.loads(line)
                got.setdefault(d["metadata"].get("filter_reason", "near_duplicate"), []).append(d)
    return got


def test_nothing_lost_invariant_and_reasons(prepared):
    _, out, s = prepared
    assert s["invariant_ok"] and s["documents_in"] == s["documents_kept"] + s["documents_removed"]
    removed = s["removed"]
    assert removed["unreadable"]["invalid_utf8"] == 1
    assert removed["unreadable"]["binary"] == 1
    assert removed["unreadable"]["gigantic"] == 1
    assert removed["unreadable"]["malformed_json"] == 2
    assert removed["unreadable"]["no_text_field"] == 1
    assert removed["unreadable"]["empty"] == 1
    assert removed["decontam"]["contaminated"] == 1
    assert removed["minhash"]["near_duplicate"] + removed.get("exact_dedup", {}).get("exact_duplicate", 0) >= 2
    rej = _rejects(out)
    total_rejected = sum(len(v) for v in rej.values())
    assert total_rejected == s["documents_removed"]  # every removed document is in a rejects file
    assert any("unterminated" in d["text"] for d in rej["malformed_json"])
    assert rej["contaminated"][0]["metadata"]["contaminated_by"] == "flores"


def test_pii_scrubbed_and_sources_read(prepared):
    _, out, s = prepared
    texts = []
    for path in sorted((out / "work" / "deduped").glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
    pii_doc = next(t for t in texts if "Өтініш берушінің" in t)
    assert "900101300017" not in pii_doc and "<IIN>" in pii_doc and "<PHONE>" in pii_doc
    assert "aigerim.n@mail.kz" not in pii_doc
    read = s["steps"]["0_read"]
    assert read["en"]["en_fineweb"]["docs"] == 60  # parquet via datasets' streaming loader
    assert read["en"]["en_csv"]["docs"] == 40 and read["ru"]["ru_web"]["docs"] == 104


def test_shards_val_and_report(prepared, tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from qazlm.data.shards import TokenDataset

    _, out, s = prepared
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ds = TokenDataset(out / "tokens", "train")
    meta = ds.meta
    assert meta["dtype"] == "uint16" and meta["doc_sep_id"] == tok.eos_token_id == 0
    assert ds.num_tokens == s["train"]["tokens"] > 0
    stream = ds.window(0, ds.num_tokens)
    assert (stream == meta["doc_sep_id"]).sum() == ds.num_documents()
    for lang in ("kk", "ru", "en"):
        val = TokenDataset(out / "tokens", f"val_{lang}")
        with gzip.open(out / "val" / f"{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
            raw = [json.loads(line)["text"] for line in f]
        assert val.num_documents() == len(raw) == s["val"][lang]["docs"]
        if raw:  # first val document round-trips through the tokenizer
            first = val.window(0, int(val.document_starts()[1]) - 1 if len(raw) > 1 else val.num_tokens - 1)
            assert tok.decode(first.tolist()) == raw[0]
    shares = {lang: v["share"] for lang, v in s["languages"].items()}
    assert abs(shares["kk"] - 0.5) < 0.1
    report = (out / "report" / "report.md").read_text()
    assert report.startswith("# Corpus report")
    used = s["decontamination"]["used"]
    assert list(used) == ["flores"] and used["flores"] > 4000 and s["decontamination"]["missing"] == []
    assert f"Decontaminated against: flores ({used['flores']:,} items)." in report
    assert (out / "report" / "data_lengths.png").stat().st_size > 1000
    assert (out / "report" / "data_funnel.png").exists()


def test_resume_after_crash_gives_same_output(tmp_path, sample_lines, tiny_tokenizer_dir, monkeypatch, prepared):
    from qazlm.data import steps
    from qazlm.data.prepare import prepare

    root, clean_out, clean = prepared
    out = tmp_path / "out"
    cfg = data_cfg(root, out, tiny_tokenizer_dir)
    original = steps.QualityFilter.filter

    def crashing(self, doc):
        if doc.id.endswith(":ru51"):  # record 51 -> task 1 (records are striped over tasks)
            raise RuntimeError("simulated kill")
        return original(self, doc)

    monkeypatch.setattr(steps.QualityFilter, "filter", crashing)
    with pytest.raises(RuntimeError, match="simulated kill") as crash:
        prepare(cfg)
    # a killed process takes its open files with it; here the traceback still holds the dead task's
    # half-written MinHash files open, so release them before the rerun (else they flush into it later)
    crash = None  # noqa: F841
    gc.collect()
    done = list((out / "logs" / "filter" / "completions").glob("*"))
    assert len(done) == 1  # one task finished, the other died midway
    monkeypatch.setattr(steps.QualityFilter, "filter", original)
    resumed = prepare(cfg)
    for name in ("train_00000.bin", "val_kk_00000.bin", "val_ru_00000.bin"):
        assert (out / "tokens" / name).read_bytes() == (clean_out / "tokens" / name).read_bytes()
    for key in ("documents_in", "documents_kept", "removed", "mixture"):
        assert resumed[key] == clean[key]
    # a second rerun skips everything and returns the same summary
    assert prepare(cfg)["train"] == clean["train"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from qazlm.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('out_dir = "x"\ntokenizr = "y"\n')
    assert main(["data", "prepare", "--config", str(bad)]) == 2
    assert "did you mean 'tokenizer'" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'out_dir = "{tmp_path}/o"\ntokenizer = "{tmp_path}/none"\n[[sources]]\nname = "a"\n'
                   f'paths = ["{tmp_path}/missing.txt"]\n')
    assert main(["data", "prepare", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tokenizer folder not found" in err
    assert main(["data", "report", str(tmp_path / "nothing")]) == 2
    assert "no report yet" in capsys.readouterr().err


def test_missing_input_path_is_clear(tmp_path, tiny_tokenizer_dir, capsys):
    from qazlm.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'out_dir = "{tmp_path}/o"\ntokenizer = "{tiny_tokenizer_dir}"\ndecontaminate = []\n'
                   f'[[sources]]\nname = "a"\npaths = ["{tmp_path}/missing_*.txt"]\n')
    assert main(["data", "prepare", "--config", str(cfg)]) == 2
    assert "no input files here" in capsys.readouterr().err


def test_pipeline_stage_writes_into_run_dirs(tmp_path, tiny_tokenizer_dir):
    import shutil

    from qazlm.data.stage import run_stage, sample_sources
    from qazlm.data.shards import TokenDataset
    from qazlm.pipeline import RunConfig, RunContext
    from qazlm.runs import read_record

    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run")), recipe_path=Path("recipes/tiny.toml"))
    shutil.copytree(tiny_tokenizer_dir, ctx.stage_dir("tokenizer"))
    srcs = [{"name": s.name, "paths": s.paths, "lang": s.lang, "format": s.format, "limit": 60}
            for s in sample_sources()]
    assert {s["lang"] for s in srcs} == {"kk", "ru", "en"}
    run_stage({"decontaminate": [], "executor": {"tasks": 1, "workers": 1}, "sources": srcs}, ctx)
    data = ctx.stage_dir("data")
    assert TokenDataset(data / "tokens", "train").num_tokens > 0
    assert all((data / "val" / f"{lang}.jsonl.gz").exists() for lang in ("kk", "ru", "en"))
    mtime = (data / "tokens" / "meta.json").stat().st_mtime_ns
    run_stage({"decontaminate": [], "executor": {"tasks": 1, "workers": 1}, "sources": srcs}, ctx)
    assert (data / "tokens" / "meta.json").stat().st_mtime_ns == mtime  # complete outputs: skipped
    # other settings: redone from scratch (with force), not skipped and not refused
    run_stage({"decontaminate": [], "executor": {"tasks": 1, "workers": 1}, "sources": srcs,
               "mixture": {"max_epochs": 1.0}}, ctx)
    assert (data / "tokens" / "meta.json").stat().st_mtime_ns != mtime
    assert read_record(data)["mixture"]["max_epochs"] == 1.0 and read_record(data)["seed"] == ctx.run.seed


def test_killed_finalize_leaves_a_folder_pretraining_refuses(tmp_path, tiny_tokenizer_dir, monkeypatch, prepared):
    """A `data prepare` killed while writing train shards leaves meta.json listing only some of them: the
    folder is not marked complete, so the pretraining reader refuses it; the rerun completes it identically."""
    from qazlm.data import finalize
    from qazlm.data.prepare import prepare
    from qazlm.errors import QazlmError
    from qazlm.runs import read_record
    from qazlm.train.loader import open_tokens

    root, clean_out, _ = prepared
    cfg = data_cfg(root, tmp_path / "out", tiny_tokenizer_dir)
    cfg.shard_tokens = 2000  # several train shards, so some are listed before the kill
    calls, original = [], finalize.copy_epochs

    def killed_on_second_source(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated kill")
        return original(*args)

    monkeypatch.setattr(finalize, "copy_epochs", killed_on_second_source)
    with pytest.raises(RuntimeError, match="simulated kill"):
        prepare(cfg)
    tokens = tmp_path / "out" / "tokens"
    assert json.loads((tokens / "meta.json").read_text())["splits"]["train"]  # partial shards are listed
    with pytest.raises(QazlmError, match="incomplete.*rerun the same `qazlm data prepare`"):
        open_tokens(tokens)
    assert read_record(tmp_path / "out") is None
    monkeypatch.setattr(finalize, "copy_epochs", original)
    prepare(cfg)
    stream = open_tokens(tokens).window(0, open_tokens(tokens).num_tokens)
    clean = open_tokens(clean_out / "tokens")
    assert np.array_equal(stream, clean.window(0, clean.num_tokens))
    assert read_record(tmp_path / "out")["shard_tokens"] == 2000


def test_record_follows_the_tokenizer_files(tmp_path, tiny_tokenizer_dir):
    """A tokenizer retrained in place (same path, other vocabulary) changes the recorded settings, so the
    data stage is redone rather than skipped with shards of the old tokenizer."""
    import shutil

    from qazlm.data.prepare import run_record

    tok = tmp_path / "tok"
    shutil.copytree(tiny_tokenizer_dir, tok)
    cfg = from_dict(DataConfig, {"tokenizer": str(tok), "sources": [{"name": "a", "paths": ["x"]}]})
    before = run_record(cfg)
    (tok / ".qazlm.lock").write_text("not a tokenizer file")
    assert run_record(cfg) == before
    (tok / "tokenizer.json").write_text((tok / "tokenizer.json").read_text() + " ")
    assert run_record(cfg)["tokenizer_sha256"] != before["tokenizer_sha256"]
    assert "out_dir" not in before and before["executor"] == {"tasks": 2}  # where it runs is not a setting


def test_record_follows_the_evaluation_files(tmp_path, tiny_tokenizer_dir):
    """An evaluation set that changed means another decontamination index: the recorded settings change."""
    from qazlm.data.prepare import run_record

    evalset = tmp_path / "heldout.txt"
    evalset.write_text("one two three four five six seven eight nine ten eleven twelve thirteen\n")
    cfg = from_dict(DataConfig, {"tokenizer": str(tiny_tokenizer_dir), "decontaminate": [str(evalset)],
                                 "sources": [{"name": "a", "paths": ["x"]}]})
    before = run_record(cfg)
    evalset.write_text("another held-out sentence that is long enough to be indexed as a whole item\n")
    assert run_record(cfg)["decontam_sha256"] != before["decontam_sha256"]


def test_report_cli(prepared, capsys):
    from qazlm.cli import main

    _, out, s = prepared
    assert main(["data", "report", str(out)]) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Corpus report") and "| minhash | near_duplicate |" in md and "Final mixture" in md
    assert main(["data", "report", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["documents_in"] == s["documents_in"]
