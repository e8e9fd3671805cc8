"""Tool-use conversations in kk/ru/en, correct by construction: every call's result is computed by the real
tool (`qazlm.sft.toolkit`), and the final answer restates it in the user's language.

Four task families, named after BFCL's categories: `tool_simple` (one tool offered, one call),
`tool_multiple` (several tools offered, the right one called), `tool_parallel` (two requests in one message,
two calls, two results, one answer) and `tool_irrelevant` (tools offered, none fits: a direct answer, no
call). A conversation is user -> assistant tool_calls -> tool result(s) -> assistant answer. Arguments are
stored as JSON strings (the chat template emits a string as is): records of different tools then share one
column type when TRL builds its dataset, and a number is never turned into null.
"""

from __future__ import annotations

import datetime as dt
import json
import random

from qazlm.sft import toolkit
from qazlm.sft.morph import inflect
from qazlm.sft.tasks import flores_ids
from qazlm.sft.toolkit import CITIES, KZT_PER, UNITS

FEATURE_NAMES = {  # the cases the data asks for, named in each language
    "pl": ("көпше түрі", "множественное число", "plural"), "gen": ("ілік септігі", "родительный падеж", "genitive"),
    "acc": ("табыс септігі", "винительный падеж", "accusative"), "dat": ("барыс септігі", "дательный падеж", "dative"),
    "loc": ("жатыс септігі", "местный падеж", "locative"), "abl": ("шығыс септігі", "исходный падеж", "ablative"),
    "ins": ("көмектес септігі", "творительный падеж", "instrumental"),
}
STEMS = ("кітап", "қала", "бала", "мектеп", "дала", "ағаш", "көл", "тау", "су", "жол", "үй", "ел", "дәптер",
         "мұғалім", "дос", "аула", "терезе", "көше", "бақ", "өзен")
CONDITION_NAMES = {"clear": ("ашық", "ясно", "clear"), "cloudy": ("бұлтты", "облачно", "cloudy"),
                   "rain": ("жаңбыр", "дождь", "rain"), "snow": ("қар", "снег", "snow"),
                   "windy": ("жел", "ветрено", "windy")}
TEXTS = ("Алматы — Қазақстанның ең үлкен қаласы", "Сегодня в Астане идёт снег", "The library opens at nine",
         "Біз ертең таудағы көлге барамыз", "Он читает книгу каждый вечер")
LANG_INDEX = {"kk": 0, "ru": 1, "en": 2}
AND = {"kk": " Және ", "ru": " И ещё: ", "en": " Also: "}
DIRECT = {  # requests no offered tool fits, with their answers (model name filled in)
    "kk": [("Сәлем! Қалың қалай?", "Сәлем! Жақсы, рақмет. Сізге қалай көмектесе аламын?"),
           ("Сен кімсің?", "Мен {model} — қазақ, орыс және ағылшын тілдерінде жауап беретін көмекшімін."),
           ("Рақмет, көмегің үшін!", "Оқасы жоқ! Тағы сұрағыңыз болса, жазыңыз.")],
    "ru": [("Привет! Как дела?", "Привет! Всё хорошо, спасибо. Чем могу помочь?"),
           ("Кто ты?", "Я {model} — помощник, который отвечает на казахском, русском и английском."),
           ("Спасибо за помощь!", "Пожалуйста! Если будут ещё вопросы, пишите.")],
    "en": [("Hi! How are you?", "Hi! I'm fine, thank you. How can I help?"),
           ("Who are you?", "I am {model}, an assistant that answers in Kazakh, Russian and English."),
           ("Thanks for your help!", "You're welcome! Write if you have more questions.")],
}


def scenario(name: str, rng: random.Random, lang: str) -> tuple[dict, str, callable]:
    """(arguments, the user's request, answer(result) -> text) for one call of tool `name`."""
    i = LANG_INDEX[lang]
    if name == "calculator":
        a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 9)
        expr = rng.choice([f"{a} + {b}", f"{a} - {b}", f"{a} * {c}", f"({a} + {b}) * {c}", f"{a} / {c}"])
        ask = (f"{expr} неге тең?", f"Сколько будет {expr}?", f"What is {expr}?")[i]
        return {"expression": expr}, ask, lambda r: (f"Жауабы: {expr} = {r['result']}.",
                                                     f"Ответ: {expr} = {r['result']}.",
                                                     f"The answer is {expr} = {r['result']}.")[i]
    if name == "convert_currency":
        other = rng.choice([c for c in KZT_PER if c != "KZT"])
        src, dst = rng.choice([("KZT", other), (other, "KZT")])
        amount = rng.choice([1, 5, 10, 20, 50, 100, 250, 1000, 5000, 20000, 100000])
        ask = (f"{amount} {src} қанша {dst} болады?", f"Сколько будет {amount} {src} в {dst}?",
               f"How much is {amount} {src} in {dst}?")[i]
        note = ("(құралдың тұрақты бағамы бойынша)", "(по фиксированному курсу инструмента)",
                "(at the tool's fixed rate)")[i]
        return ({"amount": amount, "from": src, "to": dst}, ask,
                lambda r: f"{amount} {src} ≈ {r['amount']} {dst} {note}.")
    if name in ("date_add", "days_between"):
        start = dt.date(2025, 1, 1) + dt.timedelta(days=rng.randint(0, 900))
        days = rng.randint(1, 400)
        if name == "date_add":
            ask = (f"{start} күнінен {days} күн өткен соң қай күн болады?",
                   f"Какая дата будет через {days} дней после {start}?", f"What date is {days} days after {start}?")[i]
            return ({"date": start.isoformat(), "days": days}, ask,
                    lambda r: (f"{r['date']} болады.", f"Это будет {r['date']}.", f"It will be {r['date']}.")[i])
        end = start + dt.timedelta(days=days)
        ask = (f"{start} мен {end} арасында неше күн бар?", f"Сколько дней между {start} и {end}?",
               f"How many days are there from {start} to {end}?")[i]
        return ({"start": start.isoformat(), "end": end.isoformat()}, ask,
                lambda r: (f"{r['days']} күн.", f"Количество дней: {r['days']}.", f"{r['days']} days.")[i])
    if name == "convert_units":
        src = rng.choice(list(UNITS))
        dst = rng.choice([u for u in UNITS if u != src and UNITS[u][0] == UNITS[src][0]])
        value = rng.choice([1, 2, 3, 5, 10, 12, 25, 42, 100, 250])
        ask = (f"{value} {src} неше {dst} болады?", f"Сколько {dst} в {value} {src}?",
               f"How many {dst} is {value} {src}?")[i]
        return {"value": value, "from": src, "to": dst}, ask, lambda r: (
            f"{value} {src} — {r['value']} {dst} болады.", f"{value} {src} — это {r['value']} {dst}.",
            f"{value} {src} is {r['value']} {dst}.")[i]
    if name == "inflect_kazakh":
        word, form = rng.choice([(w, f) for w in STEMS for f in FEATURE_NAMES if inflect(w, f)])
        feature = FEATURE_NAMES[form][i]
        ask = (f"«{word}» сөзінің {feature} қандай?", f"Как будет казахское слово «{word}» ({feature})?",
               f"What is the {feature} of the Kazakh word «{word}»?")[i]
        return {"word": word, "form": form}, ask, lambda r: (f"Ол былай болады: «{r['form']}».",
                                                             f"Это будет «{r['form']}».",
                                                             f"It is «{r['form']}».")[i]
    if name == "weather":
        city = rng.choice(CITIES)
        ask = (f"{city} қаласында ауа райы қандай?", f"Какая погода в городе {city}?",
               f"What's the weather in {city}?")[i]
        return ({"city": city}, ask,
                lambda r: f"{city}: {r['temperature_c']}°C, {CONDITION_NAMES[r['condition']][i]}.")
    if name == "bmi":
        w, h = rng.randint(45, 110), rng.choice([1.55, 1.6, 1.65, 1.7, 1.75, 1.8, 1.85, 1.9])
        ask = (f"Салмағым {w} кг, бойым {h} м. Дене салмағының индексі қанша?",
               f"Мой вес {w} кг, рост {h} м. Какой у меня индекс массы тела?",
               f"I weigh {w} kg and I am {h} m tall. What is my BMI?")[i]
        return {"weight_kg": w, "height_m": h}, ask, lambda r: (f"Дене салмағының индексі: {r['bmi']}.",
                                                                f"Ваш индекс массы тела: {r['bmi']}.",
                                                                f"Your BMI is {r['bmi']}.")[i]
    if name == "percent_of":
        p, v = rng.choice([5, 10, 12, 15, 20, 25, 50, 75]), rng.choice([40, 80, 120, 200, 360, 1000, 2500])
        ask = (f"{v} санының {p} пайызы қанша?", f"Сколько будет {p}% от {v}?", f"What is {p}% of {v}?")[i]
        return {"percent": p, "value": v}, ask, lambda r: (f"{v} санының {p} пайызы — {r['result']}.",
                                                           f"{p}% от {v} — это {r['result']}.",
                                                           f"{p}% of {v} is {r['result']}.")[i]
    text = rng.choice(TEXTS)  # word_count
    ask = (f"Мына мәтінде неше сөз бар: «{text}»?", f"Сколько слов в тексте: «{text}»?",
           f"How many words are in: «{text}»?")[i]
    return {"text": text}, ask, lambda r: (f"{r['words']} сөз.", f"Слов: {r['words']}.", f"{r['words']} words.")[i]


def call_message(calls: list[tuple[str, dict]]) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": n, "arguments": json.dumps(a, ensure_ascii=False)}}
        for n, a in calls]}


def conversation(task: str, lang: str, names: list[str], offered: list[str], rng: random.Random,
                 tools: dict) -> dict:
    """One item: the request(s), the calls, the real results, the answer; `key` = the calls made."""
    made = [scenario(n, rng, lang) for n in names]
    messages = [{"role": "user", "content": AND[lang].join(ask for _, ask, _ in made).strip()},
                call_message([(n, args) for n, (args, _, _) in zip(names, made)])]
    answers = []
    for n, (args, _, answer) in zip(names, made):
        result = toolkit.execute(n, args)
        messages.append({"role": "tool", "content": json.dumps(result, ensure_ascii=False)})
        answers.append(answer(result))
    messages.append({"role": "assistant", "content": " ".join(answers)})
    key = "|".join(f"{n}:{json.dumps(a, sort_keys=True, ensure_ascii=False)}" for n, (a, _, _) in zip(names, made))
    return {"messages": messages, "task": task, "lang": lang, "source": "qazlm-tools", "key": key,
            "tools": [tools[n].spec for n in offered]}


def tool_items(task: str, rng: random.Random, counts: dict[str, int], tools: dict, model_name: str,
               flores: tuple[int, ...] | None = None) -> list[dict]:
    """`flores`: the FLORES+ dev lines the direct requests may translate (None: any)."""
    names = list(tools)
    items = []
    for lang, n in counts.items():
        for _ in range(n):
            if task == "tool_irrelevant":
                ask, answer, key, source = direct_request(rng, lang, model_name, flores)
                offered = rng.sample(names, min(2, len(names)))
                items.append({"messages": [{"role": "user", "content": ask}, {"role": "assistant", "content": answer}],
                              "task": task, "lang": lang, "source": source, "key": key,
                              "tools": [tools[x].spec for x in offered]})
                continue
            k = 2 if task == "tool_parallel" else 1
            chosen = rng.sample(names, k)
            others = [x for x in names if x not in chosen]  # multiple: 3 tools offered; parallel: the 2 + 1
            offered = chosen if task == "tool_simple" else chosen + rng.sample(others, 3 - len(chosen))
            rng.shuffle(offered)
            items.append(conversation(task, lang, chosen, offered, rng, tools))
    return items


def direct_request(rng: random.Random, lang: str, model_name: str,
                   flores: tuple[int, ...] | None = None) -> tuple[str, str, str, str]:
    """(request, answer, key, source) that no tool serves: a greeting or identity question, or a FLORES+ dev
    translation (the aligned line is the answer)."""
    from qazlm.sft import sources
    from qazlm.sft.prompts import P

    if rng.random() < 0.3:
        ask, answer = rng.choice(DIRECT[lang])
        return ask, answer.format(model=model_name), f"direct:{lang}:{ask}", "qazlm-tools"
    lines = sources.flores_dev(lang)
    if not lines:
        ask, answer = DIRECT[lang][0]
        return ask, answer, f"direct:{lang}:{ask}", "qazlm-tools"
    i = rng.randrange(len(lines)) if flores is None else rng.choice(flores)
    tgt = rng.choice([x for x in LANG_INDEX if x != lang])
    return (P[lang]["translate"].format(tgt=P[lang]["lang"][tgt], text=lines[i]), sources.flores_dev(tgt)[i],
            f"flores:{i}", "flores_plus_dev")


def tool_simple(ctx, counts):
    return tool_items("tool_simple", ctx.rng, counts, toolkit.SEEN, ctx.model_name)


def tool_multiple(ctx, counts):
    return tool_items("tool_multiple", ctx.rng, counts, toolkit.SEEN, ctx.model_name)


def tool_parallel(ctx, counts):
    return tool_items("tool_parallel", ctx.rng, counts, toolkit.SEEN, ctx.model_name)


def tool_irrelevant(ctx, counts):
    return tool_items("tool_irrelevant", ctx.rng, counts, toolkit.SEEN, ctx.model_name, flores_ids(ctx.clean))


def unseen_items(rng: random.Random, per_lang: int, model_name: str) -> list[dict]:
    """Evaluation-only conversations with tools never in training, in all four categories."""
    counts = {lang: per_lang for lang in LANG_INDEX}
    return [it for task in ("tool_simple", "tool_multiple", "tool_parallel", "tool_irrelevant")
            for it in tool_items(task, rng, counts, toolkit.UNSEEN, model_name)]
