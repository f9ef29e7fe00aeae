"""Build typed config dataclasses from plain YAML data, collecting every problem instead of stopping at the first."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal


def did_you_mean(name: str, choices) -> str:
    """A ' Did you mean 'x'?' hint for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_keys(data: dict, allowed, where: str, problems: list[str]) -> None:
    """Report every key of `data` that is not in `allowed`, with a suggestion."""
    for key in data:
        if key not in allowed:
            problems.append(
                f"{where}: unknown key '{key}'.{did_you_mean(str(key), allowed)} "
                f"Allowed keys: {', '.join(sorted(allowed))}."
            )


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp, where: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return it (ints widened to float) or report a problem."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:
            return tp()
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping of settings, got {type(value).__name__} {value!r}.")
            return tp()
        return build(tp, value, where, problems)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            trial: list[str] = []
            result = coerce(value, option, where, trial)
            if not trial:
                return result
        problems.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}.")
        return None
    if origin is Literal:
        if value not in typing.get_args(tp):
            problems.append(
                f"{where}: expected one of {_type_name(tp)}, got {value!r}.{did_you_mean(str(value), map(str, typing.get_args(tp)))}"
            )
        return value
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}.")
            return value
        (item_tp,) = typing.get_args(tp)
        return [coerce(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {type(value).__name__} {value!r}.")
        return value
    if tp is typing.Any:
        return value
    if tp is type(None):
        if value is not None:
            problems.append(f"{where}: expected null, got {value!r}.")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        # YAML 1.1 reads `5e-5` (no dot) as a string: accept what is clearly a number.
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (not isinstance(value, tp) or (tp is int and isinstance(value, bool))):
        problems.append(f"{where}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}.")
    return value


def build(cls, data: dict, where: str, problems: list[str]):
    """Instantiate dataclass `cls` from `data`, appending every problem to `problems`.

    Unknown keys, wrong types and missing required fields are all reported; the `__post_init__`
    checks of the dataclass (ranges, combinations) run only when the types are right.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    check_keys(data, fields, where, problems)
    kwargs, before = {}, len(problems)
    for name, f in fields.items():
        if name in data:
            kwargs[name] = coerce(data[name], hints[name], f"{where}.{name}", problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            help_text = f.metadata.get("help", "")
            problems.append(f"{where}: missing required key '{name}' ({help_text}).")
    if len(problems) > before:
        return None
    try:
        obj = cls(**kwargs)
    except ValueError as err:  # __post_init__ range / combination checks
        problems.extend(f"{where}.{line}" if not line.startswith(where) else line for line in str(err).split("\n"))
        return None
    return obj


def field(default=dataclasses.MISSING, *, help: str, default_factory=dataclasses.MISSING):
    """A dataclass field that carries its help text (used by the CLI and the config reference)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})
