"""Instruction wording in Kazakh, Russian and English (a user writes in the language of the item)."""

from __future__ import annotations

SIB_LABELS = ("science/technology", "travel", "politics", "sports", "health", "entertainment", "geography")
LABELS = {
    "en": {c: c for c in SIB_LABELS},
    "kk": dict(zip(SIB_LABELS, ("ғылым/технология", "саяхат", "саясат", "спорт", "денсаулық", "ойын-сауық",
                                "география"))),
    "ru": dict(zip(SIB_LABELS, ("наука/технологии", "путешествия", "политика", "спорт", "здоровье",
                                "развлечения", "география"))),
}
NAMES = ("Aru", "Dana", "Timur", "Aigerim", "Nurlan", "Saule", "Arman", "Zhanna")

P = {
    "kk": {
        "lang": {"kk": "қазақ", "ru": "орыс", "en": "ағылшын"},
        "translate": "Мына мәтінді {tgt} тіліне аударыңыз:\n{text}",
        "now_into": "Енді {tgt} тіліне аударыңыз.",
        "what_says": "Бұл сөйлемде не айтылған?\n{text}",
        "only_lang": "Сен тек қазақ тілінде жауап бересің.",
        "topic": "Мәтіннің тақырыбын анықтаңыз. Нұсқалар: {options}.\nМәтін: {text}\nТек тақырыпты жазыңыз.",
        "count_words": "Мына сөйлемде неше сөз бар? Тек санды жазыңыз.\n{text}",
        "fill_gap": "Бос орынға (___) қай сөз келеді? Тек сол сөзді жазыңыз.\n{text}",
        "one_word": "Әр жауабың бір сөзден аспасын.",
        "continue": "Мәтінді жалғастырыңыз:\n{text}",
        "reorder": "Сөйлемдердің реті бұзылған. Оларды дұрыс ретпен бір абзац етіп жазыңыз:\n{text}",
        "who": ["Сен кімсің?", "Өзіңді таныстыршы.", "Сенің атың кім?"],
        "i_am": "Мен {name} — қазақ, орыс және ағылшын тілдерінде сөйлейтін тілдік модельмін.",
        "your_name": ["Сенің атың кім?", "Есіміңді айтшы."],
        "persona": "Сенің атың {name}. Сен көмекші ассистентсің.",
        "my_name": "Менің атым {name}.",
        "title": "Бұл үзінді энциклопедиялық мақаладан алынған. Мақаланың тақырыбы қандай? Тек тақырыпты жазыңыз.\n{text}",
        "keywords": ("Мәтіннің түйінді сөздерін жазыңыз: мәтінде кемінде екі рет кездесетін мағыналы сөздер (көмекші "
                     "сөздер емес), ең жиісі бірінші (тең болса, мәтінде бұрын кездескені), ең көбі үшеуі, кіші "
                     "әріппен, үтір арқылы.\n{text}"),
        "count_sentences": "Мәтінде неше сөйлем бар? Тек санды жазыңыз.\n{text}",
        "shorter": "Қысқарақ: тек бірінші сөйлемін жазыңыз.",
        "in_latin": "Енді соны латын әліпбиімен (2021) жазыңыз.",
        "count_answer": "Сол жауабыңызда неше сөз бар? Тек санды жазыңыз.",
        "inflect": "«{lemma}» сөзін мына түрге қойыңыз: {form}. Тек сөзді жазыңыз.",
    },
    "ru": {
        "lang": {"kk": "казахский", "ru": "русский", "en": "английский"},
        "translate": "Переведите текст на {tgt} язык:\n{text}",
        "now_into": "Теперь переведите на {tgt} язык.",
        "what_says": "Что сказано в этом предложении?\n{text}",
        "only_lang": "Отвечай только на русском языке.",
        "topic": "Определите тему текста. Варианты: {options}.\nТекст: {text}\nНапишите только тему.",
        "count_words": "Сколько слов в этом предложении? Напишите только число.\n{text}",
        "fill_gap": "Какое слово пропущено на месте ___? Напишите только это слово.\n{text}",
        "one_word": "Отвечай одним словом.",
        "continue": "Продолжите текст:\n{text}",
        "reorder": "Предложения перепутаны. Запишите их в правильном порядке одним абзацем:\n{text}",
        "who": ["Кто ты?", "Представься, пожалуйста.", "Как тебя зовут?"],
        "i_am": "Я {name} — языковая модель, которая говорит на казахском, русском и английском.",
        "your_name": ["Как тебя зовут?", "Назови своё имя."],
        "persona": "Тебя зовут {name}. Ты полезный ассистент.",
        "my_name": "Меня зовут {name}.",
        "title": "Этот отрывок взят из энциклопедической статьи. Как называется статья? Напишите только название.\n{text}",
        "keywords": ("Назовите ключевые слова текста: знаменательные слова (не служебные), которые встречаются в нём "
                     "не меньше двух раз, самое частое первым (при равенстве — то, что встречается раньше), не больше "
                     "трёх, строчными буквами, через запятую.\n{text}"),
        "count_sentences": "Сколько предложений в тексте? Напишите только число.\n{text}",
        "shorter": "Короче: только первое предложение.",
        "in_latin": "Теперь запишите это казахским латинским алфавитом (2021).",
        "count_answer": "Сколько слов в вашем ответе? Напишите только число.",
        "inflect": "Поставьте казахское слово «{lemma}» в форму: {form}. Напишите только слово.",
    },
    "en": {
        "lang": {"kk": "Kazakh", "ru": "Russian", "en": "English"},
        "translate": "Translate the text into {tgt}:\n{text}",
        "now_into": "Now translate it into {tgt}.",
        "what_says": "What does this sentence say?\n{text}",
        "only_lang": "Answer only in English.",
        "topic": "Name the topic of the text. Options: {options}.\nText: {text}\nWrite only the topic.",
        "count_words": "How many words are in this sentence? Write only the number.\n{text}",
        "fill_gap": "Which word is missing at ___? Write only that word.\n{text}",
        "one_word": "Answer with a single word.",
        "continue": "Continue the text:\n{text}",
        "reorder": "The sentences are shuffled. Write them in the right order as one paragraph:\n{text}",
        "who": ["Who are you?", "Introduce yourself.", "What is your name?"],
        "i_am": "I am {name}, a language model that speaks Kazakh, Russian and English.",
        "your_name": ["What is your name?", "Tell me your name."],
        "persona": "Your name is {name}. You are a helpful assistant.",
        "my_name": "My name is {name}.",
        "title": "This passage is from an encyclopedia article. What is the article's title? Write only the title.\n{text}",
        "keywords": ("List the keywords of the text: the content words (not function words) that occur in it at "
                     "least twice, the most frequent first (ties: the one that comes first in the text), at most "
                     "three, in lowercase, separated by commas.\n{text}"),
        "count_sentences": "How many sentences are in the text? Write only the number.\n{text}",
        "shorter": "Shorter, please: only the first sentence.",
        "in_latin": "Now write it in the Kazakh Latin alphabet (2021).",
        "count_answer": "How many words are in your answer? Write only the number.",
        "inflect": "Put the Kazakh word «{lemma}» into this form: {form}. Write only the word.",
    },
}

KK = {
    "to_latin": "Мына мәтінді қазақ латын әліпбиіне (2021) көшіріңіз:\n{text}",
    "to_cyrillic": "Мына латын әліпбиіндегі мәтінді кирилл әрпімен жазыңыз:\n{text}",
    "homoglyph": "Мәтінде кирилл әріптерінің орнына латын әріптері жазылған. Қатесін түзетіп, мәтінді қайта жазыңыз:\n{text}",
    "segment": "«{word}» сөзін түбір мен қосымшаларға бөліңіз (сызықша арқылы).",
    "lemma": "«{word}» сөзінің түбірі қандай? Тек түбірді жазыңыз.",
}

# grammatical forms of `qazlm.sft.morph.FEATURES`, named in each language (the Kazakh case name added in ru/en)
_CASES = {
    "kk": {"gen": "ілік септік", "acc": "табыс септік", "dat": "барыс септік", "loc": "жатыс септік",
           "abl": "шығыс септік", "ins": "көмектес септік"},
    "ru": {"gen": "родительный падеж (ілік септік)", "acc": "винительный падеж (табыс септік)",
           "dat": "дательно-направительный падеж (барыс септік)", "loc": "местный падеж (жатыс септік)",
           "abl": "исходный падеж (шығыс септік)", "ins": "творительный падеж (көмектес септік)"},
    "en": {"gen": "genitive case (ілік септік)", "acc": "accusative case (табыс септік)",
           "dat": "dative case (барыс септік)", "loc": "locative case (жатыс септік)",
           "abl": "ablative case (шығыс септік)", "ins": "instrumental case (көмектес септік)"},
}
_OTHER = {
    "kk": {"pl": "көпше түр", "poss3": "III жақ тәуелдік жалғауы (оның ...)",
           "poss1": "I жақ жекеше тәуелдік жалғауы (менің ...)"},
    "ru": {"pl": "множественное число", "poss3": "притяжательная форма 3-го лица (его/её ...)",
           "poss1": "притяжательная форма 1-го лица ед. ч. (мой ...)"},
    "en": {"pl": "plural", "poss3": "3rd person possessive (his/her/its ...)",
           "poss1": "1st person singular possessive (my ...)"},
}
FORM_NAMES = {lang: {**_OTHER[lang], **_CASES[lang], **{f"pl_{c}": f"{_OTHER[lang]['pl']}, {name}"
                                                        for c, name in _CASES[lang].items()}}
              for lang in _CASES}
