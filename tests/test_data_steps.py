"""Unit tests of the corpus pipeline's steps: PII, language ID, quality, boilerplate, decontam, mixture, config."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import pytest
from datatrove.data import Document

from qazlm.config import from_dict
from qazlm.data import pii
from qazlm.data.config import DataConfig, ExecutorConfig, MixtureConfig, SourceConfig
from qazlm.data.finalize import compute_epochs
from qazlm.text.langid import detect_language, kazakh_word_ratio
from qazlm.errors import QazlmError
from qazlm.paths import flores_path


def test_iin_bin_checksum_official_algorithm():
    # 9 0 0 1 0 1 3 0 0 0 1: 1*9+4*1+6*1+7*3+11*1 = 51, 51 mod 11 = 7 -> control digit 7
    assert pii.iin_checksum("90010130001") == 7
    assert pii.is_valid_iin_bin("900101300017")
    assert not pii.is_valid_iin_bin("900101300018")  # wrong control digit
    # first pass gives 10 -> second weights (3..11,1,2): 27+6+8+27+8+2 = 78, 78 mod 11 = 1
    assert pii.iin_checksum("90010130081") == 1 and pii.is_valid_iin_bin("900101300811")
    assert not pii.is_valid_iin_bin("900101300810")
    assert not pii.is_valid_iin_bin("90010130001")  # 11 digits
    assert not pii.is_valid_iin_bin("901301300012")  # month 13, and not a BIN either


def test_pii_scrubber_replaces_only_valid_numbers():
    from qazlm.data.steps import PIIScrubber

    s = PIIScrubber()
    text = ("ЖСН 900101300017, қате 900101300018. Карта 4111 1111 1111 1111, емес 4111111111111112. "
            "Тел: +7 (701) 123-45-67, mail: aigerim.n@mail.kz, IP 93.184.216.34.")
    out = s.format(text)
    assert "<IIN>" in out and "900101300017" not in out and "900101300018" in out
    assert "<CARD>" in out and "4111111111111112" in out
    assert "<PHONE>" in out and "123-45-67" not in out
    assert "aigerim.n@mail.kz" not in out and "93.184.216.34" not in out
    assert pii.luhn_valid("4111111111111111") and not pii.luhn_valid("4111111111111112")


def test_langid_flores_slice_and_kazakh_letters():
    n, ok = 0, 0
    for lang in ("kk", "ru", "en"):
        path = flores_path("devtest", lang)
        if not path.exists():
            pytest.skip(f"{path} absent")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in itertools.islice(f, 200):
                n += 1
                ok += detect_language(line.strip())[0] == lang
    assert ok / n >= 0.99
    assert kazakh_word_ratio("Мен қазақша сөйлеймін") > 0.5 and kazakh_word_ratio("Я говорю по-русски") == 0
    # code-mixed kk/ru review: Kazakh letters decide
    assert detect_language("Өте жақсы қосымша, но иногда тормозит, бірақ бәрібір ұнайды")[0] == "kk"
    assert detect_language("Это предложение написано полностью на русском языке без казахских букв.")[0] == "ru"
    assert detect_language("Das ist ein ganz normaler deutscher Satz über das Wetter.")[0] == "other"


def test_langid_kazsandra_code_mixed(shared):
    path = shared / "data" / "corpus" / "kk" / "kazsandra_reviews.txt.gz"
    if not path.exists():
        pytest.skip(f"{path} absent")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        reviews = [ln.strip() for ln in itertools.islice(f, 400) if len(ln.split()) >= 6]
    with_letters = [r for r in reviews if kazakh_word_ratio(r) >= 0.08]
    assert with_letters and all(detect_language(r)[0] == "kk" for r in with_letters)


def _doc(text, lang="kk"):
    return Document(text=text, id="x", metadata={"lang": lang, "source": "s", "file": "f"})


def test_quality_filter_thresholds_per_language():
    from qazlm.data.config import DEFAULT_QUALITY
    from qazlm.data.steps import QualityFilter

    import dataclasses
    q = {k: dataclasses.asdict(v) for k, v in DEFAULT_QUALITY.items()}
    f = QualityFilter(q)
    good = "Қазақстан Республикасының астанасы — Астана қаласы, ол елдің солтүстігінде орналасқан."
    assert f.filter(_doc(good)) is True
    assert f.filter(_doc("Көп жаттаймын.")) == (False, "gopher_short_doc")
    assert f.filter(_doc("12 345 678 910 11 12 13 қазақ")) == (False, "gopher_below_alpha_threshold")
    # stopword ratio applies to long Kazakh documents without any function words
    no_stop = " ".join(["керемет"] * 5 + ["тамаша", "ғажайып", "әдемі", "жарқын", "салтанатты"] * 3)
    assert f.filter(_doc(no_stop)) == (False, "stopword_ratio")
    # a Russian dialogue line starting with a dash is fine (bullet rule off for ru)
    assert f.filter(_doc("— Вы куда же теперь пойдёте, князь? — спросил генерал.", "ru")) is True
    rep = "\n".join(["Купить дешево телефон в Алматы сегодня"] * 30 + ["Другой текст про телефоны и цены"] * 30)
    assert f.filter(_doc(rep, "ru"))[0] is False


def test_boilerplate_gutenberg_and_repeated_lines():
    from qazlm.data.steps import BoilerplateLines

    docs = [_doc("The Project Gutenberg eBook of Robinson Crusoe\nTitle: Robinson Crusoe", "en"),
            _doc("I was born in the year 1632, in the city of York.", "en"),
            _doc("*** END OF THE PROJECT GUTENBERG EBOOK ROBINSON CRUSOE ***", "en"),
            _doc("Section 1. General Terms of Use of Project Gutenberg-tm works.", "en")]
    web = [_doc(f"Story number {i} is here.\nRead more on our site", "en") for i in range(8)]
    for d in web:  # another file: the Gutenberg END marker only affects its own file
        d.metadata["file"] = "web.jsonl"
    docs += web
    step = BoilerplateLines(min_docs=3)
    kept = list(step.run(iter(docs)))
    texts = [d.text for d in kept]
    assert "I was born in the year 1632, in the city of York." in texts
    assert not any("Gutenberg" in t for t in texts)
    assert sum("Read more on our site" in t for t in texts) == 3
    assert len(kept) == 1 + 8


def test_decontam_index(tmp_path):
    from qazlm.data.decontam import NgramIndex

    idx = NgramIndex(13)
    sent = ("The quick brown fox jumps over the lazy dog while the farmer watches from the old red barn "
            "near the river")
    idx.add(sent, "flores")
    idx.add("Элемент көпіршік орамаларына оралды және жөнелтілді бүгін таңертең ерте", "kkcopa")
    idx.add("too short to matter", "x")
    idx.save(tmp_path / "i.pkl")
    idx = NgramIndex.load(tmp_path / "i.pkl")
    assert idx.match("Blog post. " + sent.upper() + " And more.") == "flores"
    assert idx.match("элемент көпіршік орамаларына оралды және жөнелтілді бүгін таңертең ерте!") == "kkcopa"
    assert idx.match("The quick brown fox jumps over the lazy dog.") is None
    assert idx.match("too short to matter") is None


def test_compute_epochs_ratios_and_cap():
    sizes = {"kk_a": ("kk", 100, 1.0), "kk_b": ("kk", 100, 2.0), "ru": ("ru", 10_000, 1.0), "en": ("en", 10_000, 1.0)}
    ep, total = compute_epochs(sizes, {"kk": 0.5, "ru": 0.25, "en": 0.25}, max_epochs=4.0)
    assert ep["kk_b"] == pytest.approx(4.0) and ep["kk_a"] == pytest.approx(2.0)  # cap binds on kk_b
    kk = 100 * ep["kk_a"] + 100 * ep["kk_b"]
    assert kk / total == pytest.approx(0.5) and 10_000 * ep["ru"] / total == pytest.approx(0.25)
    ep2, total2 = compute_epochs(sizes, {"kk": 0.5, "ru": 0.25, "en": 0.25}, 4.0, max_total=400)
    assert total2 == 400 and ep2["ru"] == pytest.approx(0.01)
    ep3, _ = compute_epochs({"ru": ("ru", 10, 1.0)}, {"kk": 0.5, "ru": 0.5}, 4.0)  # absent kk renormalised
    assert ep3["ru"] == pytest.approx(4.0)


def test_config_errors_and_executor_configs(tmp_path):
    with pytest.raises(QazlmError, match="did you mean 'sources'"):
        from_dict(DataConfig, {"source": []})
    with pytest.raises(QazlmError, match="no \\[\\[sources\\]\\]"):
        DataConfig().validate()
    src = [SourceConfig(name="a", paths=["data/sample/kk"], lang="kk")]
    with pytest.raises(QazlmError, match="needs executor.partition"):
        DataConfig(sources=src, executor=ExecutorConfig(kind="slurm")).validate()
    with pytest.raises(QazlmError, match="format = 'xml': unknown"):  # refused when built, however built
        SourceConfig(name="a", paths=["x"], format="xml")
    with pytest.raises(QazlmError, match="max_epochs = nan"):
        MixtureConfig(max_epochs=float("nan"))
    with pytest.raises(QazlmError, match="not in langs"):
        DataConfig(sources=[SourceConfig(name="a", paths=["x"], lang="de")]).validate()
    from qazlm.data.prepare import build_executors

    for kind, cls in (("slurm", "SlurmPipelineExecutor"), ("ray", "RayPipelineExecutor"), ("local", "LocalPipelineExecutor")):
        cfg = DataConfig(sources=src, executor=ExecutorConfig(kind=kind, partition="cpu", tasks=8))
        ex = build_executors(cfg, tmp_path / kind, None)
        assert [type(e).__name__ for e in ex] == [cls] * 4
        assert ex[0].world_size == 8 and ex[1].world_size == cfg.minhash_buckets and ex[2].world_size == 1
        assert ex[3].depends is ex[2] and ex[1].depends is ex[0]


def test_recipes_load():
    from qazlm.config import load_config

    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "recipes" / "data").glob("*.toml")):
        cfg = load_config(DataConfig, path)
        cfg.validate()
        assert cfg.sources


def test_reader_formats_striping_and_gutenberg_flag(tmp_path):
    import dataclasses

    from qazlm.data.readers import CorpusReader

    book = ("Title: A Book\n\nFirst paragraph line one\nline two.\n\nSecond paragraph.\n\n"
            "*** END OF THE PROJECT GUTENBERG EBOOK A BOOK ***\n\nLicence paragraph.\n\nMore licence.\n")
    (tmp_path / "book.txt").write_text(book, encoding="utf-8")
    src = dataclasses.asdict(SourceConfig(name="b", paths=[str(tmp_path / "book.txt")], format="txt_blank", lang="en"))
    docs = [d for rank in (0, 1) for d in CorpusReader([src]).run(rank=rank, world_size=2)]
    by_text = {d.text: d for d in docs}
    assert len(docs) == 6 and "First paragraph line one\nline two." in by_text
    assert by_text["Licence paragraph."].metadata.get("gutenberg_licence")
    assert by_text["More licence."].metadata.get("gutenberg_licence")  # flagged in the other task too
    assert not by_text["Second paragraph."].metadata.get("gutenberg_licence")
    (tmp_path / "t.csv").write_text("id,body\n1,hello\n", encoding="utf-8")
    bad = dataclasses.asdict(SourceConfig(name="c", paths=[str(tmp_path / "t.csv")]))
    with pytest.raises(QazlmError, match="no column 'text'"):
        list(CorpusReader([bad]).run())
