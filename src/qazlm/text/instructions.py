"""Instruction wording that chat evaluation shares with the instruction data (`qazlm sft-data`).

A chat model is asked evaluation questions (SIB-200 topics, FLORES+ translation, "now into <language>") in
the same words it was trained with, so a score measures the skill and not a change of wording. `eval` may
not import `sft`, so the wording both need lives here, in the foundation; `tests/test_eval_chat.py` checks
that it equals `qazlm.sft.prompts` word for word.
"""

from __future__ import annotations

SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
TOPIC_LABELS = {
    "en": {c: c for c in SIB_LABELS},
    "kk": dict(zip(SIB_LABELS, ("ғылым/технология", "саяхат", "саясат", "спорт", "денсаулық", "ойын-сауық",
                                "география"))),
    "ru": dict(zip(SIB_LABELS, ("наука/технологии", "путешествия", "политика", "спорт", "здоровье",
                                "развлечения", "география"))),
}
# LANG_NAMES[user language][target language]: how a user writing in the first names the second
LANG_NAMES = {
    "kk": {"kk": "қазақ", "ru": "орыс", "en": "ағылшын"},
    "ru": {"kk": "казахский", "ru": "русский", "en": "английский"},
    "en": {"kk": "Kazakh", "ru": "Russian", "en": "English"},
}
TRANSLATE = {
    "kk": "Мына мәтінді {tgt} тіліне аударыңыз:\n{text}",
    "ru": "Переведите текст на {tgt} язык:\n{text}",
    "en": "Translate the text into {tgt}:\n{text}",
}
NOW_INTO = {
    "kk": "Енді {tgt} тіліне аударыңыз.",
    "ru": "Теперь переведите на {tgt} язык.",
    "en": "Now translate it into {tgt}.",
}
TOPIC = {
    "kk": "Мәтіннің тақырыбын анықтаңыз. Нұсқалар: {options}.\nМәтін: {text}\nТек тақырыпты жазыңыз.",
    "ru": "Определите тему текста. Варианты: {options}.\nТекст: {text}\nНапишите только тему.",
    "en": "Name the topic of the text. Options: {options}.\nText: {text}\nWrite only the topic.",
}


def topic_prompt(lang: str, text: str) -> str:
    """The topic question with the seven labels in `lang`, in SIB-200's label order."""
    options = ", ".join(TOPIC_LABELS[lang][c] for c in SIB_LABELS)
    return TOPIC[lang].format(options=options, text=text)


def translate_prompt(src: str, tgt: str, text: str) -> str:
    return TRANSLATE[src].format(tgt=LANG_NAMES[src][tgt], text=text)
