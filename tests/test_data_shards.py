"""Token shards: exact round trip, windows across shard boundaries, dtype choice, corrupt folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qazlm.data.shards import TokenDataset, TokenShardWriter, dtype_for_vocab, is_complete, mark_complete, read_meta
from qazlm.errors import QazlmError


def _write(folder, docs, shard_tokens=7, dtype="uint16", split="train"):
    with TokenShardWriter(folder, split, dtype, shard_tokens, vocab_size=70000 if dtype == "uint32" else 1000,
                          doc_sep_id=0, tokenizer="tok") as w:
        for d in docs:
            w.add_document(d)
    mark_complete(folder)
    return w


def test_roundtrip_across_shards(tmp_path):
    docs = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [], [14, 15]]
    w = _write(tmp_path, docs)
    assert len(w.shards) > 1
    stream = np.concatenate([np.array(d + [0]) for d in docs])
    ds = TokenDataset(tmp_path, "train")
    assert ds.num_tokens == stream.size and ds.num_documents() == len(docs)
    np.testing.assert_array_equal(ds.window(0, ds.num_tokens), stream)
    np.testing.assert_array_equal(ds.window(3, 9), stream[3:12])  # spans a shard boundary
    starts = ds.document_starts()
    np.testing.assert_array_equal(starts, np.cumsum([0] + [len(d) + 1 for d in docs[:-1]]))
    meta = read_meta(tmp_path)
    assert meta["format"] == "qazlm-tokens-v1" and meta["doc_sep_id"] == 0 and meta["dtype"] == "uint16"
    assert sum(s["tokens"] for s in meta["splits"]["train"]) == stream.size


def test_random_windows_match_stream(tmp_path):
    docs = [list(range(1, 50)), list(range(100, 180))]
    for shard_tokens in (10_000, 13):  # single shard (fast path) and many shards
        folder = tmp_path / str(shard_tokens)
        _write(folder, docs, shard_tokens)
        ds = TokenDataset(folder)
        stream = ds.window(0, ds.num_tokens)
        rng = np.random.default_rng(0)
        b = ds.random_windows(rng, 16, 20)
        assert b.shape == (16, 20) and b.dtype == np.int64
        for row in b:
            s = int(np.flatnonzero(stream == row[0])[0]) if row[0] != 0 else None
            if s is not None:
                np.testing.assert_array_equal(stream[s:s + 20], row)
        same = ds.random_windows(np.random.default_rng(0), 16, 20)
        np.testing.assert_array_equal(b, same)


def test_uint32_and_dtype_choice(tmp_path):
    assert dtype_for_vocab(65535) == "uint16" and dtype_for_vocab(65536) == "uint32"
    _write(tmp_path, [[70000, 1, 2]], dtype="uint32")
    ds = TokenDataset(tmp_path)
    assert ds.dtype == np.dtype("<u4")
    np.testing.assert_array_equal(ds.window(0, 4), [70000, 1, 2, 0])
    with pytest.raises(QazlmError, match="uint32"):
        _write(tmp_path / "x", [[70000]], dtype="uint16")


def test_splits_coexist_and_errors(tmp_path):
    _write(tmp_path, [[1, 2, 3]], split="train")
    _write(tmp_path, [[4, 5]], split="val_kk")
    assert TokenDataset(tmp_path, "val_kk").num_tokens == 3
    assert TokenDataset(tmp_path, "train").num_tokens == 4
    with pytest.raises(QazlmError, match="no split"):
        TokenDataset(tmp_path, "val_xx")
    with pytest.raises(QazlmError, match="fewer than one window"):
        TokenDataset(tmp_path, "val_kk").random_windows(np.random.default_rng(0), 1, 10)
    # truncated shard is detected, not silently read
    shard = tmp_path / read_meta(tmp_path)["splits"]["train"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(QazlmError, match="truncated"):
        TokenDataset(tmp_path, "train")
    with pytest.raises(QazlmError, match="meta.json not found"):
        TokenDataset(tmp_path / "none")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(QazlmError, match="not a qazlm-tokens-v1"):
        TokenDataset(tmp_path / "bad")


def test_incomplete_folder_is_refused(tmp_path):
    """A folder whose writer never called mark_complete (a killed `data prepare`) lists only some shards:
    reading it must fail with one line saying to rerun, not train on part of the data."""
    from qazlm.train.loader import open_tokens

    w = TokenShardWriter(tmp_path, "train", "uint16", 4, vocab_size=100, doc_sep_id=0)
    for d in ([1, 2, 3], [4, 5, 6], [7, 8, 9]):
        w.add_document(d)  # shards flushed, meta.json lists them, but the run "dies" before close
    assert read_meta(tmp_path)["splits"]["train"] and not is_complete(tmp_path)
    for reader in (lambda: TokenDataset(tmp_path, "train"), lambda: open_tokens(tmp_path)):
        with pytest.raises(QazlmError, match="incomplete.*rerun the same `qazlm data prepare`"):
            reader()
    w.close()
    mark_complete(tmp_path)
    assert TokenDataset(tmp_path, "train").num_documents() == 3
    w = TokenShardWriter(tmp_path, "train", "uint16", vocab_size=100)  # a rewrite reopens it before deleting
    assert not is_complete(tmp_path)
    w.close()
    assert not is_complete(tmp_path)
