"""`qazlm sft-data`: script conversion, morphology, formats, dedup/decontamination and the output folder."""

from __future__ import annotations

import gzip
import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from cli_harness import run_cli  # noqa: E402

from qazlm.errors import QazlmError  # noqa: E402
from qazlm.paths import SAMPLE_DIR, flores_path  # noqa: E402
from qazlm.sft.data import SftDataConfig, build_task, split_counts, write_unseen_tools  # noqa: E402
from qazlm.sft.formats import to_messages  # noqa: E402
from qazlm.sft.script import convertible, inject_homoglyphs, to_cyrillic, to_latin  # noqa: E402
from qazlm.text.normalize import repair_homoglyphs  # noqa: E402

FAST = ["--set", "decontaminate=[]"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The first 300 lines of each bundled sample file (a small real kk/ru/en corpus)."""
    root = tmp_path_factory.mktemp("corpus")
    for f in SAMPLE_DIR.glob("*/*.txt.gz"):
        (root / f.parent.name).mkdir(exist_ok=True)
        with gzip.open(f, "rt", encoding="utf-8") as src, gzip.open(root / f.parent.name / f.name, "wt") as dst:
            dst.writelines(line for _, line in zip(range(300), src))
    return root


def build(out: Path, corpus: Path, capfd, *extra: str) -> list[dict]:
    code, _, err = run_cli(["sft-data", "-o", out, "--per-task", "6", "--set", f"corpus_dir={corpus}", *extra], capfd)
    assert code == 0, err
    return [json.loads(line) for line in (out / "train.jsonl").read_text(encoding="utf-8").splitlines()]


def kk_sentences(n: int) -> list[str]:
    with gzip.open(SAMPLE_DIR / "kk" / "kaznerd_news_sentences.txt.gz", "rt", encoding="utf-8") as f:
        return [line.strip() for _, line in zip(range(n), f)]


def test_latin_letters_of_the_2021_alphabet():
    assert to_latin("Қазақстан Республикасы") == "Qazaqstan Respublikasy"
    assert to_latin("Ұлттық ғылым, шешім, өнер, күн, ең, ит, ой, Іле") == "Ūlttyq ğylym, şeşım, öner, kün, eñ, it, oi, Ile"
    assert to_latin("Ілияс") == "Iliias" and to_latin("Ит") == "İt"
    assert to_latin("ЧЕМПИОН чемпион") == "CHEMPİON chempion"


def test_script_round_trip_on_real_kazakh_sentences():
    sentences = kk_sentences(300)
    usable = [s for s in sentences if convertible(s)]
    assert len(usable) > 100  # most news sentences qualify
    for s in usable:
        assert to_cyrillic(to_latin(s)) == s
    assert not convertible("Чемпионат")  # ч -> ch cannot be read back: never offered as a reverse item


def test_injected_homoglyphs_are_what_the_normalizer_repairs():
    rng = random.Random(0)
    s = "Бұндай ыстықта балалар ғана өз ермегін тапқан секілді."
    dirty = inject_homoglyphs(s, rng)
    assert dirty != s and any(ch.isascii() and ch.isalpha() for ch in dirty)
    assert repair_homoglyphs(dirty) == s


def test_morphology_only_unambiguous_words(shared):
    from qazlm.sft.morph import lemma_of, unambiguous_analysis
    from qazlm.tokenizer.morphology import get_segmenter

    seg = get_segmenter()
    assert unambiguous_analysis(seg, "балықшылардың") == ["балықшы", "лар", "дың"]
    assert unambiguous_analysis(seg, "алқ") is None  # one-letter suffix: the lexicon's usual false split
    assert unambiguous_analysis(seg, "бала") is None  # a dictionary entry has no suffix to find
    assert lemma_of(seg, "жүрег") == "жүрек"


def test_language_shares_split_counts():
    shares = {"kk": 0.5, "ru": 0.25, "en": 0.25}
    assert split_counts(10, shares, ("kk", "ru", "en")) == {"kk": 5, "ru": 2, "en": 3}
    assert split_counts(7, shares, ("ru", "en")) == {"ru": 3, "en": 4}  # renormalized to the task's languages
    assert split_counts(5, {"kk": 1.0, "ru": 0.0, "en": 0.0}, ("ru", "en")) == {}


def test_task_sizes_give_the_named_tasks_their_own_count():
    """The other tasks keep per_task; the named one gets its size, split by the same language shares."""
    cfg = SftDataConfig(tasks=["identity", "safety_refusal"], per_task=10, task_sizes={"safety_refusal": 40})
    assert len(build_task(cfg, "identity")) == 10
    refusals = build_task(cfg, "safety_refusal")
    assert Counter(it["lang"] for it in refusals) == {"kk": 20, "ru": 10, "en": 10}


def test_unseen_tool_set_follows_the_largest_tool_task(tmp_path):
    """4 per language and category at least, else the largest tool task / 20, whether per_task or task_sizes set it."""
    def unseen_count(**kwargs) -> int:
        return write_unseen_tools(tmp_path, SftDataConfig(tasks=["identity", "tool_simple"], **kwargs))

    assert unseen_count(per_task=20) == 4 * 4 * 3
    assert unseen_count(per_task=20, task_sizes={"tool_simple": 200}) == 10 * 4 * 3
    assert unseen_count(per_task=200, task_sizes={"tool_simple": 20}) == 4 * 4 * 3
    assert write_unseen_tools(tmp_path, SftDataConfig(tasks=["identity"])) == 0
    assert not (tmp_path / "tools_unseen.jsonl").exists()


def test_config_refuses_bad_values_however_built():
    for kwargs in ({"per_task": 0}, {"heldout_fraction": float("nan")}, {"tasks": ["translate"]},
                   {"lang_shares": {"kk": 0.9, "ru": 0.9}}, {"lang_shares": {"de": 1.0}}):
        with pytest.raises(QazlmError):
            SftDataConfig(**kwargs)


@pytest.mark.parametrize("record, expected", [
    ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 2),
    ({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}, 3),
    ({"instruction": "i", "input": "x", "output": "o"}, 2),
    ({"messages": [{"role": "user", "content": "a"}]}, "no assistant turn"),
    ({"messages": [{"role": "assistant", "content": "b"}, {"role": "user", "content": "a"}]}, "roles out of order"),
    ({"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}]}, "empty content"),
    ({"conversations": [{"from": "bot", "value": "a"}]}, "unknown role"),
    ({"text": "plain"}, "unknown format"),
])
def test_external_formats(record, expected):
    result = to_messages(record)
    if isinstance(expected, int):
        assert isinstance(result, list) and len(result) == expected and result[-1]["role"] == "assistant"
    else:
        assert isinstance(result, str) and result.startswith(expected)


def test_output_folder_is_complete_and_deterministic(tmp_path, corpus, capfd):
    rows = build(tmp_path / "a", corpus, capfd, *FAST)
    build(tmp_path / "b", corpus, capfd, *FAST)
    for name in ("train.jsonl", "heldout.jsonl", "rejected.jsonl", "card.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert all({"messages", "task", "lang", "source"} <= set(r) <= {"messages", "tools", "task", "lang", "source"}
               for r in rows)
    assert all(("tools" in r) == r["task"].startswith("tool_") for r in rows)
    assert all(m["role"] in ("system", "user", "assistant", "tool") for r in rows for m in r["messages"])
    unseen = [json.loads(x) for x in (tmp_path / "a" / "tools_unseen.jsonl").read_text().splitlines()]
    seen_names = {t["function"]["name"] for r in rows if "tools" in r for t in r["tools"]}
    assert unseen and not seen_names & {t["function"]["name"] for r in unseen for t in r["tools"]}
    card = json.loads((tmp_path / "a" / "card.json").read_text(encoding="utf-8"))
    assert card["lang_shares"]["kk"] >= 0.4
    assert "alpaca_en" not in card["train"] and card["non_commercial_tasks"] == []
    assert all(card["licences"].values())
    assert json.loads((tmp_path / "a" / "qazlm_stage.json").read_text())["stage"] == "sft-data"
    held = {r["task"] for r in map(json.loads, (tmp_path / "a" / "heldout.jsonl").read_text().splitlines())}
    assert {"translation", "script_latin"} <= held
    code, out, _ = run_cli(["sft-data", "-o", tmp_path / "a", "--per-task", "6", "--set", f"corpus_dir={corpus}",
                            *FAST], capfd)
    assert code == 0 and "up to date" in out


def test_translation_answers_are_the_aligned_flores_dev_lines(tmp_path, corpus, capfd):
    rows = build(tmp_path / "t", corpus, capfd, "--tasks", "translation,multiturn", *FAST)
    dev = {lang: gzip.open(flores_path("dev", lang), "rt", encoding="utf-8").read().splitlines()
           for lang in ("kk", "ru", "en")}
    for r in rows:
        src_line = r["messages"][0]["content"].split("\n", 1)[1]
        i = dev[r["lang"]].index(src_line)
        for m in r["messages"][1::2]:
            assert any(m["content"] == dev[x][i] for x in dev)


def test_english_alpaca_is_marked_non_commercial_when_on(tmp_path, corpus, capfd, shared):
    build(tmp_path / "o", corpus, capfd, "--tasks", "alpaca_en,identity", *FAST)
    card = (tmp_path / "o" / "card.md").read_text(encoding="utf-8")
    assert "Non-commercial" in card and "CC BY-NC 4.0" in card


def test_external_rejects_duplicates_and_contamination(tmp_path, corpus, capfd):
    devtest = gzip.open(flores_path("devtest", "en"), "rt", encoding="utf-8").readline().strip()
    good = {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi!"}]}
    leak = {"instruction": "Repeat", "output": devtest}
    story = ("The caravan left Turkistan before dawn and followed the old road along the river, where the herders "
             "had camped for three nights, and by noon the travellers reached the well that the elders had dug long "
             "ago, so they rested in the shade, watered the camels and told stories about the winter of the great "
             "snow, when the steppe lay white from the mountains to the sea and nobody could move for many weeks")
    near = [{"instruction": "Tell a story", "output": story}, {"instruction": "Tell a story",
                                                               "output": story.replace("three", "four")}]
    other = {"instruction": "Tell a story", "output": " ".join(reversed(story.split()))}   # the same words
    lines = [json.dumps(good), json.dumps(good), json.dumps(leak), "{not json",
             json.dumps({"messages": [{"role": "user", "content": "no reply"}]}), *map(json.dumps, [*near, other])]
    (tmp_path / "ext.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    build(tmp_path / "x", corpus, capfd, "--tasks", "identity", "--external", tmp_path / "ext.jsonl",
          "--decontaminate", "flores")
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "x" / "rejected.jsonl").read_text().splitlines()]
    assert "duplicate" in reasons and "contaminated: flores" in reasons and "no assistant turn" in reasons
    assert any(r.startswith("malformed JSON") for r in reasons)
    card = json.loads((tmp_path / "x" / "card.json").read_text())
    assert card["removed"]["duplicate"]["external"] == 1
    # one word changed in 70: a near-duplicate by the corpus pipeline's MinHash; the same words reordered are not
    assert card["removed"]["near-duplicate (MinHash)"]["external"] == 1
    lines = [line for x in ("train", "heldout") for line in (tmp_path / "x" / f"{x}.jsonl").read_text().splitlines()]
    kept = [m["content"] for line in lines for m in json.loads(line)["messages"] if m["role"] == "assistant"]
    assert other["output"] in kept and (story in kept) != (near[1]["output"] in kept)


def test_hub_dataset_path_loads_through_datasets(tmp_path, corpus, capfd, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    (tmp_path / "hub").mkdir()
    rows = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(3)]
    (tmp_path / "hub" / "train.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    out = build(tmp_path / "h", corpus, capfd, "--tasks", "identity", "--external", f"hf:{tmp_path / 'hub'}", *FAST)
    held = (tmp_path / "h" / "heldout.jsonl").read_text().splitlines()
    assert sum(r["task"] == "external" for r in out) + sum('"external"' in x for x in held) == 3


def test_missing_shared_folder_skips_topic_with_a_note(tmp_path, corpus, capfd, monkeypatch):
    monkeypatch.setenv("QAZLM_SHARED", str(tmp_path / "nowhere"))
    from qazlm.sft import sources
    sources.sib_rows.cache_clear()
    try:
        build(tmp_path / "n", corpus, capfd, "--tasks", "topic,identity", *FAST)
    finally:
        sources.sib_rows.cache_clear()
    card = json.loads((tmp_path / "n" / "card.json").read_text())
    assert "topic" not in card["train"] and any("topic" in n for n in card["notes"])


def test_missing_sib_is_one_warning_line(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("QAZLM_SHARED", str(tmp_path / "nowhere"))
    from qazlm.sft import sources
    from qazlm.sft.data import SftDataConfig, build_task
    sources.sib_rows.cache_clear()
    try:
        capfd.readouterr()
        assert build_task(SftDataConfig(tasks=["topic"], per_task=3, decontaminate=[]), "topic") == []
    finally:
        sources.sib_rows.cache_clear()
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "SIB-200" in warnings[0]


def test_tasks_draw_only_lines_that_pass_decontamination(corpus):
    """380 of SIB-200's 800 train/dev rows are FLORES+ devtest sentences and 89 FLORES+ dev lines are SIB-200 test
    items: the tasks used to pick them and lose them to decontamination afterwards (topic kept 94 of 200)."""
    from qazlm.sft.clean import decontaminate
    from qazlm.sft.data import build_task

    for name in ("topic", "translation", "system_language", "followup_count", "tool_irrelevant"):
        cfg = SftDataConfig(tasks=[name], per_task=120, corpus_dir=str(corpus), decontaminate=["flores", "sib200"])
        rows = build_task(cfg, name)
        kept, removed, _ = decontaminate(rows, cfg.decontaminate)
        assert len(rows) == 120 and removed == [], (name, [r["reason"] for r in removed][:3])
    topic = SftDataConfig(tasks=["topic"], per_task=800, lang_shares={"kk": 1.0}, decontaminate=["flores"])
    rows = build_task(topic, "topic")   # all of SIB-200 train/dev asked for: the clean ones come back
    assert len(rows) == 430 and decontaminate(rows, ["flores"])[1] == []


def test_help_shows_an_example(capfd):
    code, out, _ = run_cli(["sft-data", "--help"], capfd)
    assert code == 0 and "qazlm sft-data -o runs/sft-data" in out


def test_reorder_never_uses_a_paragraph_of_identical_sentences(tmp_path, capfd):
    """A paragraph like "Да. Да. Да." cannot be shuffled into a different order (it used to loop forever)."""
    for lang, word in (("kk", "Иә, солай болды."), ("ru", "Да, так и было."), ("en", "Yes, it was so.")):
        text = " ".join([word] * 3)
        (tmp_path / "c" / lang).mkdir(parents=True)
        with gzip.open(tmp_path / "c" / lang / "x.txt.gz", "wt", encoding="utf-8") as f:
            f.write((text + "\n") * 3 + "One sentence here. Another one follows it. And a third ends it.\n")
    from qazlm.sft.data import build_task
    rows = build_task(SftDataConfig(tasks=["reorder"], per_task=3, corpus_dir=str(tmp_path / "c")), "reorder")
    assert rows and all("One sentence here." in r["messages"][-1]["content"] for r in rows)


# --- issue 13: inflection, title, keywords, sentence counts, follow-ups, the [sft_data] stage ----------------

NEW_TASKS = ["morph_inflect", "title", "keywords", "count_sentences", "followup_shorter", "followup_latin",
             "followup_count"]


def task_rows(name: str, corpus: Path, per_task: int = 9) -> list[dict]:
    from qazlm.sft.data import build_task
    return build_task(SftDataConfig(tasks=[name], per_task=per_task, corpus_dir=str(corpus), decontaminate=[]), name)


def test_inflection_rules_give_the_textbook_forms():
    from qazlm.sft.morph import inflect
    expected = {("кітап", "pl"): "кітаптар", ("бала", "gen"): "баланың", ("адам", "acc"): "адамды",
                ("кітап", "dat"): "кітапқа", ("мектеп", "dat"): "мектепке", ("көл", "loc"): "көлде",
                ("адам", "abl"): "адамнан", ("жер", "abl"): "жерден", ("қыз", "ins"): "қызбен",
                ("күн", "ins"): "күнмен", ("мектеп", "ins"): "мектеппен", ("бала", "pl_gen"): "балалардың",
                ("сөз", "pl_dat"): "сөздерге", ("бала", "poss3"): "баласы", ("ауыл", "poss1"): "ауылым"}
    assert {k: inflect(*k) for k in expected} == expected
    # where the rules do not fix the form, nothing is offered
    assert inflect("кітап", "poss3") is None  # кітабы: the final consonant voices
    assert inflect("бала", "poss1") is None  # балам is also a word of its own
    assert inflect("вагон", "pl") is None and inflect("тау", "dat") is None and inflect("үй", "pl") is None


def test_inflection_pool_needs_noun_evidence_and_real_forms():
    from qazlm.sft.morph import inflection_pool
    stems = {"бала", "балалар", "кел", "адам"}
    attested = {"балалар", "балаға", "баланың", "келді", "келдің", "келге", "адамға"}
    pool = inflection_pool(stems, attested)
    # бала: two noun-only forms attested; балалар is an inflected entry, not a lemma; кел has only verb-like
    # forms (келді, келдің) and one noun form; адам has one: neither counts as a noun
    assert sorted(pool) == [("бала", "dat", "балаға"), ("бала", "gen", "баланың"), ("бала", "pl", "балалар")]


def test_morph_inflect_items_on_real_text(corpus, shared):
    from qazlm.sft import sources
    from qazlm.sft.morph import FEATURES, inflect
    from qazlm.sft.prompts import FORM_NAMES, P
    rows = task_rows("morph_inflect", corpus)
    words = {w for _, t in sources.corpus_lines(str(corpus), "kk") for w in t.lower().split()}
    assert {r["lang"] for r in rows} == {"kk", "ru", "en"} and len(rows) == 9
    for r in rows:
        lemma = r["key"].removeprefix("word:")
        feature = next(f for f in FEATURES if r["messages"][0]["content"]
                       == P[r["lang"]]["inflect"].format(lemma=lemma, form=FORM_NAMES[r["lang"]][f]))
        answer = r["messages"][1]["content"]
        assert answer == inflect(lemma, feature)
        assert any(answer in w for w in words)  # the form occurs in the corpus
    pinned = next(r for r in rows if r["key"] == "word:адам")
    assert pinned["messages"][1]["content"] == "адамдарға" and "көпше түр, барыс септік" in pinned["messages"][0]["content"]


def test_title_answers_are_the_real_article_titles(corpus):
    rows = task_rows("title", corpus)
    titles = {"Ахмет Байтұрсынұлы", "Махамбет Өтемісұлы", "Міржақып Дулатұлы", "Мұхтар Омарханұлы Әуезов",
              "Мұқағали Сүлейменұлы Мақатаев", "Ыбырай Алтынсарин"}
    with gzip.open(corpus / "kk" / "apertium_wiki_texts.txt.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    assert {r["lang"] for r in rows} == {"kk", "ru", "en"} and len(rows) == 9
    for r in rows:
        answer, paragraph = r["messages"][1]["content"], r["messages"][0]["content"].split("\n", 1)[1]
        assert answer in titles and r["source"] == "corpus:apertium_wiki_texts"
        start = text.index(answer + "\n")  # the paragraph belongs to that article: after its title, before the next
        after = [text.index(t + "\n") for t in titles if text.index(t + "\n") > start]
        assert start < text.index(paragraph) < min(after, default=len(text))


def test_keywords_are_the_most_frequent_content_words():
    from qazlm.sft.sources import stopwords
    from qazlm.sft.tasks import keywords_of
    kk = stopwords("kk")
    assert keywords_of("Кітап оқыдым. Кітап жақсы екен. Оқушы кітап алды, оқушы кетті.", kk) == ["кітап", "оқушы"]
    assert keywords_of("The cat saw the dog. The dog saw a cat and the bird.", stopwords("en")) == ["cat", "dog"]
    assert keywords_of("Cats like fish. Dogs like bones.", stopwords("en")) is None  # nothing occurs twice
    # four words twice each: the cut after three would be arbitrary, so no item
    assert keywords_of("red blue green pink red blue green pink", frozenset()) is None


def test_keyword_items_on_real_text(corpus):
    from qazlm.sft.sources import stopwords
    from qazlm.sft.tasks import keywords_of
    rows = task_rows("keywords", corpus)
    assert {r["lang"] for r in rows} == {"kk", "ru", "en"}
    for r in rows:
        text = r["messages"][0]["content"].split("\n", 1)[1]
        assert r["messages"][1]["content"] == ", ".join(keywords_of(text, stopwords(r["lang"])))
    pinned = next(r for r in rows if r["messages"][0]["content"].endswith("тарих ұмытпайтын істер болатын."))
    assert pinned["messages"][1]["content"] == "ахаң, қазақ"


def test_sentence_counts_only_where_unambiguous(corpus):
    from qazlm.sft.tasks import sentences_of
    assert sentences_of("Ол келді. Біз кеттік!") == ["Ол келді.", "Біз кеттік!"]
    assert sentences_of("One sentence here. Another one follows it.") == ["One sentence here.", "Another one follows it."]
    for unclear in ("Абай М. Ю. Лермонтовты аударды. Ол ақын.", "1909 ж. Санкт-Петербургте шықты. Кітап.",
                    "Mr. Smith came. He sat.", "Ол т.б. келді. Біз кеттік.", "Wait... What? Yes!"):
        assert sentences_of(unclear) is None, unclear
    rows = task_rows("count_sentences", corpus)
    assert {r["lang"] for r in rows} == {"kk", "ru", "en"}
    for r in rows:
        text = r["messages"][0]["content"].split("\n", 1)[1]
        assert r["messages"][1]["content"] == str(len(sentences_of(text))) and 2 <= len(sentences_of(text)) <= 6
    answers = Counter(r["messages"][1]["content"] for r in rows)  # every count, none dominant (not mostly "2")
    assert set(answers) == {"2", "3", "4", "5", "6"} and max(answers.values()) <= 0.3 * len(rows), answers


def test_followups_refer_back_to_the_first_answer(corpus):
    from qazlm.sft.followups import countable_words
    dev = {lang: gzip.open(flores_path("dev", lang), "rt", encoding="utf-8").read().splitlines()
           for lang in ("kk", "ru", "en")}
    for name in ("followup_shorter", "followup_latin", "followup_count"):
        rows = task_rows(name, corpus)
        assert {r["lang"] for r in rows} == {"kk", "ru", "en"} and all(len(r["messages"]) == 4 for r in rows), name
        for r in rows:
            first, second = r["messages"][1]["content"], r["messages"][3]["content"]
            if name == "followup_shorter":
                assert first.startswith(second) and second[-1] in ".!?" and len(second) < len(first)
            elif name == "followup_latin":
                assert first in dev["kk"] and to_latin(first) == second and to_cyrillic(second) == first
            else:
                assert any(first in d for d in dev.values()) and second == str(countable_words(first))
    assert countable_words("Он умер во вторник в Осаке.") == 6 and countable_words("Flight CG4684 landed.") is None


def test_heldout_split_is_disjoint_per_task_for_the_new_tasks(corpus):
    from qazlm.sft.data import build
    result = build(SftDataConfig(tasks=NEW_TASKS, per_task=30, corpus_dir=str(corpus), decontaminate=[]))
    for name in NEW_TASKS:
        train = {it["key"] for it in result["train"] if it["task"] == name}
        held = {it["key"] for it in result["heldout"] if it["task"] == name}
        assert train and held and not train & held, name
    # title has few units (one per article): the held-out one takes all of its paragraphs with it
    assert len({it["key"] for it in result["heldout"] if it["task"] == "title"}) >= 1


def test_default_mix_is_mostly_kazakh():
    from qazlm.sft.data import TASKS
    cfg = SftDataConfig()
    planned = {lang: 0 for lang in ("kk", "ru", "en")}
    for name in cfg.tasks:
        for lang, n in split_counts(cfg.per_task, cfg.lang_shares, TASKS[name][1]).items():
            planned[lang] += n
    assert planned["kk"] / sum(planned.values()) >= 0.5
    assert set(NEW_TASKS) <= set(cfg.tasks)


def test_sft_data_pipeline_stage(tmp_path, corpus, capsys):
    from qazlm.runs import RunConfig, RunContext
    from qazlm.sft.data_stage import run_stage
    ctx = RunContext(run=RunConfig(out_dir=str(tmp_path / "run"), seed=5), recipe_path=tmp_path / "r.toml")
    section = {"tasks": ["title", "count_sentences"], "per_task": 4, "corpus_dir": str(corpus), "decontaminate": []}
    run_stage(section, ctx)
    out = tmp_path / "run" / "sft_data"
    record = json.loads((out / "qazlm_stage.json").read_text())
    assert record["stage"] == "sft-data" and record["config"]["seed"] == 5
    assert record["config"]["out_dir"] == str(out)
    lines = (out / "train.jsonl").read_text().splitlines() + (out / "heldout.jsonl").read_text().splitlines()
    assert {json.loads(x)["task"] for x in lines} == {"title", "count_sentences"}
    first = (out / "train.jsonl").read_bytes()
    capsys.readouterr()
    run_stage(section, ctx)
    assert "skipping" in capsys.readouterr().out
    run_stage({**section, "seed": 6}, ctx)  # a changed setting redoes the stage
    assert "redoing" in capsys.readouterr().out and json.loads((out / "qazlm_stage.json").read_text())["config"]["seed"] == 6
    run_stage({**section, "seed": 5}, RunContext(run=ctx.run, recipe_path=ctx.recipe_path, force=True))
    assert (out / "train.jsonl").read_bytes() == first  # same config and seed: byte-identical
    with pytest.raises(QazlmError, match="out_dir"):
        run_stage({**section, "out_dir": str(tmp_path / "elsewhere")}, ctx)
    with pytest.raises(QazlmError, match="per_task"):
        run_stage({**section, "per_task": 0}, ctx)


def test_command_line_options_reach_the_data(tmp_path, corpus, capfd):
    """--model-name, --lang-shares, --heldout-fraction and --seed through the command line (README's form): the
    identity answers name the model, the shares hold, a different seed draws other conversations."""
    args = ["--tasks", "identity,count_words", "--model-name", "Алтын", "--lang-shares", "kk=0.5,ru=0.5,en=0",
            "--heldout-fraction", "0.2", *FAST]
    rows = build(tmp_path / "a", corpus, capfd, *args)
    held = [json.loads(x) for x in (tmp_path / "a" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    everything = rows + held
    assert {r["lang"] for r in everything} == {"kk", "ru"}
    identity = [r["messages"][-1]["content"] for r in everything if r["task"] == "identity"]
    assert identity and all("Алтын" in answer for answer in identity)
    assert held and set(json.loads((tmp_path / "a" / "card.json").read_text())["lang_shares"]) == {"kk", "ru"}
    other = build(tmp_path / "b", corpus, capfd, *args, "--seed", "7")
    assert [r["messages"] for r in other] != [r["messages"] for r in rows]
