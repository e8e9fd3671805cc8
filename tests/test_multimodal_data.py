"""The multimodal experiment's images (qazlm.experiments.multimodal.images): answers true by construction,
held-out combinations and words never in training, the three languages evenly, deterministic, written
atomically."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("PIL")


def test_answers_are_true_by_construction():
    from qazlm.experiments.multimodal.images import COLOURS, LANGS, SHAPES, SIDES, make_items

    items = make_items(180, "train", seed=1)
    for it in items:
        if it.task == "read":
            continue
        m = it.meta
        assert len(m["centres"]) == m["count"]
        for x, y in m["centres"]:   # the shape's own colour at its centre (triangles: a little below it)
            assert it.image.getpixel((x, y + (3 if m["shape"] == "triangle" else 0))) == m["rgb"]
        i = LANGS.index(it.lang)
        expected = {"colour": COLOURS[m["colour"]][1][i], "shape": SHAPES[m["shape"]][i], "count": str(m["count"]),
                    "side": SIDES[m["side"]][i] if m["side"] else None}.get(it.task)
        if it.task == "side":
            assert all((x < 32) == (m["side"] == "left") for x, _ in m["centres"])
        if expected is not None:
            assert it.answer == expected
        else:
            assert str(m["count"]) in it.answer and SHAPES[m["shape"]][i] in it.answer   # the caption
    tasks = {it.task for it in items}
    assert tasks == {"colour", "shape", "count", "side", "caption", "read"}
    assert {it.lang: sum(1 for j in items if j.lang == it.lang) for it in items} == {"kk": 60, "ru": 60, "en": 60}


def test_heldout_combinations_and_words_are_never_trained_on():
    from qazlm.experiments.multimodal.images import HELDOUT_COMBOS, is_heldout_word, make_items, words

    train, held = make_items(300, "train"), make_items(90, "heldout")
    colours, shapes = {c for c, _ in HELDOUT_COMBOS}, {s for _, s in HELDOUT_COMBOS}
    assert len(HELDOUT_COMBOS) == 8 and len(colours) == 8 and len(shapes) == 5   # each colour and shape once+
    seen = {(it.meta["colour"], it.meta["shape"]) for it in make_items(3000, "train") if it.task != "read"}
    assert len(seen) == 32     # every colour with four shapes: colour does not predict shape
    assert all((it.meta["colour"], it.meta["shape"]) not in HELDOUT_COMBOS for it in train if it.task != "read")
    assert all((it.meta["colour"], it.meta["shape"]) in HELDOUT_COMBOS for it in held if it.task != "read")
    read_train = {it.meta["text"] for it in train if it.task == "read"}
    read_held = {it.meta["text"] for it in held if it.task == "read"}
    assert all(it.answer == " ".join(it.meta["text"]) for it in train + held if it.task == "read")   # spelled
    assert read_train and read_held and not read_train & read_held
    assert not any(is_heldout_word(w) for w in read_train if not w.isdigit())   # numbers: training only
    assert all(is_heldout_word(w) for w in read_held)
    pool = words()
    # training also prints random letters of one language (reading, not recalling a word)
    from qazlm.experiments.multimodal.images import letters

    known = {w for ws in pool.values() for w in ws}
    made_up = [w for w in read_train if not w.isdigit() and w not in known]
    assert len(made_up) > len(read_train) / 5
    assert all(3 <= len(w) <= 6 and any(set(w) <= set(abc) for abc in letters().values()) for w in made_up)
    assert all(len(ws) == 1500 for ws in pool.values()) and "және" in pool["kk"] and "the" in pool["en"]
    assert 0.05 < sum(map(is_heldout_word, pool["kk"])) / 1500 < 0.15
    again = make_items(300, "train")
    assert [a.answer for a in again] == [b.answer for b in train]
    assert again[0].image.tobytes() == train[0].image.tobytes()


def test_dataset_folder(tmp_path):
    from PIL import Image

    from qazlm.experiments.multimodal.images import write_dataset

    assert write_dataset(tmp_path / "mm", 12, 6) == {"train": 12, "heldout": 6}
    rows = [json.loads(line) for line in (tmp_path / "mm" / "heldout.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and Image.open(tmp_path / "mm" / rows[0]["image"]).size == (64, 64)
    with pytest.raises(Exception, match="split"):
        from qazlm.experiments.multimodal.images import make_items

        make_items(1, "test")
