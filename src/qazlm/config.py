"""Typed dataclass configs from TOML, with `key=value` CLI overrides. Unknown keys are errors.

Each stage defines a dataclass; nested dataclasses become TOML tables. Example:

    cfg = load_config(TrainConfig, "recipes/tiny.toml", section="train", overrides=["lr=3e-4"])
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from qazlm.errors import QazlmError

T = TypeVar("T")


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise QazlmError(f"{path}: config file not found; see recipes/ for examples")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise QazlmError(f"{path}: invalid TOML ({e})") from None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert a TOML or CLI value to the annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        return _coerce(value, args[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise QazlmError(f"{where}: expected a table")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise QazlmError(f"{where}: expected a list, got {value!r}")
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        if isinstance(value, str):  # "kk=0.4,ru=0.3"
            try:
                value = dict(item.split("=", 1) for item in value.split(",") if item)
            except ValueError:
                raise QazlmError(f"{where}: expected k=v,k=v, got {value!r}") from None
        if not isinstance(value, dict):
            raise QazlmError(f"{where}: expected a table, got {value!r}")
        return {_coerce(k, kt, where): _coerce(v, vt, where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise QazlmError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool):
            raise QazlmError(f"{where}: expected a number, got {value!r}")
        try:
            number = float(value) if tp is int and isinstance(value, (str, float)) else tp(value)
            if tp is int and isinstance(number, float):
                if not number.is_integer():  # 1e6 is fine; 2.5 or nan for a count is not
                    raise ValueError
                number = int(number)
            return number
        except (TypeError, ValueError, OverflowError):
            raise QazlmError(f"{where}: expected {'a whole number' if tp is int else 'a number'}, got {value!r}") from None
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass `cls` from a dict; unknown keys raise with a did-you-mean hint."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(sorted(names))}"
            raise QazlmError(f"{where}: unknown key {key!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise QazlmError(f"{where}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `a.b=value` strings to a nested dict (values are parsed as TOML when possible)."""
    for item in overrides or []:
        if "=" not in item:
            raise QazlmError(f"override {item!r}: expected key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise QazlmError(f"override {item!r}: {p!r} is not a table")
        node[leaf] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, section: str | None = None,
                overrides: list[str] | None = None) -> T:
    """Load `cls` from a TOML file (optionally one `[section]` of it) plus CLI overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_toml(path)
        if section is not None:
            data = data.get(section, {})
    data = apply_overrides(dict(data), overrides)
    return from_dict(cls, data, where=f"{path}[{section}]" if section else str(path or "config"))


def config_from_cli(cls: type[T], section: str, args: Any, flags: dict[str, str], command: str,
                    adjust: Callable[[dict[str, Any]], None] | None = None) -> T:
    """A stage's config from its command line: the `[section]` table of `--config`, then the flags that were
    given (`flags`: argparse dest -> field), then `adjust(data)` (e.g. a switch that sets a nested table), then
    `--set` overrides; later wins. Errors name the file and table, or the command."""
    data = dict(read_toml(args.config).get(section, {})) if args.config else {}
    for dest, key in flags.items():
        value = getattr(args, dest)
        if value is not None:
            data[key] = value
    if adjust is not None:
        adjust(data)
    data = apply_overrides(data, args.set)
    return from_dict(cls, data, where=f"{args.config}[{section}]" if args.config else command)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


_RULE = re.compile(r"^\s*(>=|<=|>|<)\s*(-?[0-9.e+-]+)\s*$")
_OPS = {">": lambda v, b: v > b, ">=": lambda v, b: v >= b, "<": lambda v, b: v < b, "<=": lambda v, b: v <= b}


def check_value(where: str, value: Any, rules: str) -> None:
    """One clear error unless `value` is a finite number meeting every comma-separated rule (`"> 0"`,
    `">= 1, <= 64"`). None passes (optional settings), booleans and NaN/inf never do.

    The single range/NaN check behind every config dataclass and CLI flag."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise QazlmError(f"{where} = {value!r}: expected a finite number ({rules})")
    for rule in rules.split(","):
        m = _RULE.match(rule)
        if m is None:
            raise ValueError(f"bad rule {rule!r}")
        if not _OPS[m.group(1)](value, float(m.group(2))):
            raise QazlmError(f"{where} = {value!r}: must be {rules.replace(',', ' and')}")


def check_fields(obj: Any, where: str, rules: dict[str, str]) -> None:
    """`check_value` for each named field of a config dataclass: `{"lr": "> 0", "workers": ">= 1"}`.

    Call it from the dataclass's `__post_init__`, so a bad value is refused however the config was built
    (TOML, `--set`, CLI flags or code)."""
    for name, rule in rules.items():
        check_value(f"{where}{name}", getattr(obj, name), rule)
