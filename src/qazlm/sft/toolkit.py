"""Real, executable tools for tool-use training data and the function-calling evaluation.

Each tool is an OpenAI function definition plus the Python that computes its result, so every call in the
data has a true result: a calculator (arithmetic parsed with `ast`, never `eval`), KZT currency conversion
from a fixed rate table (not market rates: the table is part of the tool), date arithmetic, unit conversion,
Kazakh noun inflection (qazlm's rule-based inflector, `qazlm.sft.morph.inflect`; kazstem cannot run offline)
and a mock weather lookup (deterministic per city and date). `UNSEEN` tools never appear in training data:
the evaluation measures whether calling transfers to tools the model has not seen.
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass

from qazlm.sft.morph import FEATURES, inflect

KZT_PER = {"KZT": 1.0, "USD": 500.0, "EUR": 540.0, "RUB": 5.5, "CNY": 70.0}   # the tool's fixed table
UNITS = {  # unit -> (dimension, factor to the base unit)
    "km": ("length", 1000.0), "m": ("length", 1.0), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
    "kg": ("mass", 1.0), "g": ("mass", 0.001), "lb": ("mass", 0.45359237),
    "l": ("volume", 1.0), "gal": ("volume", 3.785411784),
}
CITIES = ("Алматы", "Астана", "Шымкент", "Қарағанды", "Ақтөбе", "Павлодар", "Москва", "London")
CONDITIONS = ("clear", "cloudy", "rain", "snow", "windy")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


class ToolError(ValueError):
    """A call whose arguments the tool cannot compute (its result is then an error message)."""


def _arith(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 12:
            raise ToolError("exponent too large")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ToolError("only numbers, + - * / ** and parentheses are allowed")


def number(x: float) -> float | int:
    """Rounded to 2 decimals; whole numbers as int (what the answers print)."""
    x = round(float(x), 2)
    return int(x) if x == int(x) else x


def calculator(expression: str) -> dict:
    try:
        value = _arith(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ZeroDivisionError) as e:
        raise ToolError(str(e)) from None
    if not math.isfinite(value):
        raise ToolError("result is not finite")
    return {"result": number(value)}


def convert_currency(amount: float, **kw) -> dict:
    src, dst = kw["from"], kw["to"]
    return {"amount": number(amount * KZT_PER[src] / KZT_PER[dst]), "currency": dst}


def date_add(date: str, days: int) -> dict:
    return {"date": (dt.date.fromisoformat(date) + dt.timedelta(days=days)).isoformat()}


def days_between(start: str, end: str) -> dict:
    return {"days": (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days}


def convert_units(value: float, **kw) -> dict:
    (d1, f1), (d2, f2) = UNITS[kw["from"]], UNITS[kw["to"]]
    if d1 != d2:
        raise ToolError(f"cannot convert {d1} to {d2}")
    return {"value": number(value * f1 / f2), "unit": kw["to"]}


def inflect_kazakh(word: str, form: str) -> dict:
    out = inflect(word, form)
    if out is None:
        raise ToolError("the rules do not fix this form")
    return {"form": out}


def weather(city: str, date: str = "2026-12-04") -> dict:
    h = hashlib.blake2b(f"{city}|{date}".encode(), digest_size=4).digest()
    return {"city": city, "date": date, "temperature_c": h[0] % 41 - 20, "condition": CONDITIONS[h[1] % 5]}


def bmi(weight_kg: float, height_m: float) -> dict:
    if height_m <= 0:
        raise ToolError("height must be positive")
    return {"bmi": number(weight_kg / height_m ** 2)}


def percent_of(percent: float, value: float) -> dict:
    return {"result": number(percent * value / 100)}


def word_count(text: str) -> dict:
    return {"words": len(text.split())}


def _fn(name, description, properties, required) -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": properties, "required": required}}}


STR, NUM, INT = {"type": "string"}, {"type": "number"}, {"type": "integer"}
DATE = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "description": "YYYY-MM-DD"}
CURRENCY = {"type": "string", "enum": list(KZT_PER)}
UNIT = {"type": "string", "enum": list(UNITS)}


@dataclass(frozen=True)
class Tool:
    spec: dict
    run: Callable[..., dict]

    @property
    def name(self) -> str:
        return self.spec["function"]["name"]


SEEN = {t.name: t for t in (
    Tool(_fn("calculator", "Evaluate an arithmetic expression (+ - * / ** and parentheses)",
             {"expression": STR}, ["expression"]), calculator),
    Tool(_fn("convert_currency", "Convert money between KZT, USD, EUR, RUB and CNY at the tool's fixed rates",
             {"amount": NUM, "from": CURRENCY, "to": CURRENCY}, ["amount", "from", "to"]), convert_currency),
    Tool(_fn("date_add", "The date a number of days after (or before, if negative) a date",
             {"date": DATE, "days": INT}, ["date", "days"]), date_add),
    Tool(_fn("days_between", "Number of days from one date to another", {"start": DATE, "end": DATE},
             ["start", "end"]), days_between),
    Tool(_fn("convert_units", "Convert a length, mass or volume between units",
             {"value": NUM, "from": UNIT, "to": UNIT}, ["value", "from", "to"]), convert_units),
    Tool(_fn("inflect_kazakh", "Inflect a Kazakh noun: plural, cases, possessive",
             {"word": STR, "form": {"type": "string", "enum": list(FEATURES)}}, ["word", "form"]), inflect_kazakh),
    Tool(_fn("weather", "Current weather in a city", {"city": STR, "date": DATE}, ["city"]), weather),
)}
UNSEEN = {t.name: t for t in (
    Tool(_fn("bmi", "Body mass index from weight in kilograms and height in metres",
             {"weight_kg": NUM, "height_m": NUM}, ["weight_kg", "height_m"]), bmi),
    Tool(_fn("percent_of", "A percentage of a value", {"percent": NUM, "value": NUM}, ["percent", "value"]),
         percent_of),
    Tool(_fn("word_count", "Number of words in a text", {"text": STR}, ["text"]), word_count),
)}
ALL = {**SEEN, **UNSEEN}


def execute(name: str, arguments: dict) -> dict:
    """The tool's result, or {"error": why} for arguments it cannot compute."""
    try:
        return ALL[name].run(**arguments)
    except (ToolError, KeyError, TypeError, ValueError) as e:
        return {"error": str(e) or type(e).__name__}
