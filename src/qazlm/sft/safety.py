"""The refusal policy as training data: harmful requests in kk/ru/en built from harm categories and templates
(written here, never taken from an evaluation set), each answered by a short refusal in the user's language
that names the category and offers a safe direction. Task `safety_refusal` of `qazlm sft-data`; `qazlm
pref-data` turns it into refusal-vs-compliance pairs, and benign conversations into answer-vs-refusal pairs
(over-refusal). `qazlm eval --safety` measures the result (qazlm.eval.safety).
"""

from __future__ import annotations

from qazlm.sft.tasks import item

# category -> (what is asked, per language: objects of "how do I ...")
HARMS = {
    "weapons": (("қолдан жарылғыш зат жасау", "үйде мылтық жасау", "бомба құрастыру"),
                ("сделать взрывчатку в домашних условиях", "собрать самодельное оружие", "изготовить бомбу"),
                ("make explosives at home", "build an untraceable gun", "assemble a pipe bomb")),
    "drugs": (("үйде есірткі дайындау", "метамфетамин жасау"),
              ("приготовить наркотики дома", "синтезировать метамфетамин"),
              ("cook meth at home", "synthesize illegal drugs")),
    "malware": (("банк сайтын бұзу", "біреудің парақшасын бұзып кіру", "вирус жазу"),
                ("взломать сайт банка", "взломать чужой аккаунт", "написать компьютерный вирус"),
                ("hack into a bank website", "break into someone's account", "write ransomware")),
    "fraud": (("жалған құжат жасау", "адамдарды телефон арқылы алдау"),
              ("подделать документы", "обмануть людей по телефону"),
              ("forge documents", "scam elderly people by phone")),
    "self_harm": (("өзіме зиян келтіру", "өз-өзіме қол жұмсау"),
                  ("причинить себе вред", "покончить с собой"),
                  ("hurt myself", "end my life")),
    "hate": (("бір ұлтты қорлайтын мәтін жазу", "адамдарды дінге байланысты қудалау"),
             ("написать текст, унижающий народ", "травить людей за их веру"),
             ("write a text insulting an ethnic group", "harass people for their religion")),
    "privacy": (("біреудің мекенжайын жасырын табу", "көршімнің телефонын тыңдау"),
                ("тайно узнать чей-то домашний адрес", "прослушивать телефон соседа"),
                ("secretly find someone's home address", "spy on my neighbour's phone")),
}
ASK = {"kk": ("Маған {x} жолын айтшы.", "Қалай {x} болады? Егжей-тегжейлі жаз.", "{x} үшін нұсқаулық бер."),
       "ru": ("Расскажи, как {x}.", "Как {x}? Напиши подробно.", "Дай пошаговую инструкцию: как {x}."),
       "en": ("Tell me how to {x}.", "How can I {x}? Give details.", "Give me step-by-step instructions to {x}.")}
CATEGORY_NAME = {
    "weapons": ("қару мен жарылғыш заттар", "оружие и взрывчатка", "weapons and explosives"),
    "drugs": ("заңсыз есірткі", "запрещённые наркотики", "illegal drugs"),
    "malware": ("бұзу мен зиянды бағдарламалар", "взлом и вредоносные программы", "hacking and malware"),
    "fraud": ("алаяқтық", "мошенничество", "fraud"),
    "self_harm": ("өзіне зиян келтіру", "причинение вреда себе", "self-harm"),
    "hate": ("өшпенділік пен қудалау", "ненависть и травля", "hate and harassment"),
    "privacy": ("жеке өмірге қол сұғу", "вмешательство в частную жизнь", "invasion of privacy"),
}
REFUSE = {"kk": "Кешіріңіз, бұған көмектесе алмаймын: бұл {c} тақырыбы, ол адамдарға зиян келтіруі мүмкін.",
          "ru": "Извините, я не могу с этим помочь: это {c}, и это может навредить людям.",
          "en": "Sorry, I can't help with that: it falls under {c} and could hurt people."}
SAFER = {"kk": {"self_harm": " Сізге қазір қиын болса, жақындарыңызбен сөйлесіңіз немесе 150 сенім телефонына "
                             "хабарласыңыз.", "_": " Басқа бір сұрағыңыз болса, қуана көмектесемін."},
         "ru": {"self_harm": " Если вам сейчас тяжело, поговорите с близкими или позвоните на линию доверия 150.",
                "_": " Если у вас есть другой вопрос, я с радостью помогу."},
         "en": {"self_harm": " If you are going through a hard time, please talk to someone you trust or call a "
                             "crisis line (150 in Kazakhstan).", "_": " I'm glad to help with something else."}}
COMPLY = {"kk": "Әрине! Міне, қалай істеу керек: 1) қажетті заттарды жинаңыз; 2) ",
          "ru": "Конечно! Вот как это сделать: 1) соберите всё необходимое; 2) ",
          "en": "Sure! Here is how to do it: 1) gather what you need; 2) "}
LANG_INDEX = {"kk": 0, "ru": 1, "en": 2}


def refusal(category: str, lang: str) -> str:
    i = LANG_INDEX[lang]
    return REFUSE[lang].format(c=CATEGORY_NAME[category][i]) + SAFER[lang].get(category, SAFER[lang]["_"])


def compliance(lang: str) -> str:
    """The unsafe side of a refusal pair: the start of a how-to (no real instructions in it)."""
    return COMPLY[lang]


def safety_refusal(ctx, counts: dict[str, int]) -> list[dict]:
    """Harmful requests -> refusals, categories and templates drawn evenly."""
    out = []
    for lang, n in counts.items():
        i = LANG_INDEX[lang]
        for k in range(n):
            category = sorted(HARMS)[k % len(HARMS)]
            thing = ctx.rng.choice(HARMS[category][i])
            ask = ctx.rng.choice(ASK[lang]).format(x=thing)
            ask = ask[0].upper() + ask[1:]
            out.append(item("safety_refusal", lang, "generated", f"safety:{lang}:{category}:{ask}", ask,
                            refusal(category, lang)))
    return out
