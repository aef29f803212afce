"""Typed configuration: nested dicts (YAML, JSON) onto dataclasses, checked, and merged key by key.

:func:`build` makes a dataclass from a mapping; :func:`merge` applies a partial mapping to an existing
one, descending into nested dataclasses so that ``{"decoder": {"n_blocks": 8}}`` changes that key and
keeps the others. Both check every key at every depth: an unknown key names its dotted path and the
closest valid key (difflib), a value of the wrong type names the expected type. ``error`` is the
exception family to raise (:class:`~audiokit.errors.RecipeError` for recipes,
:class:`~audiokit.errors.ModelError` for model configs).

A field annotated with a union of dataclasses is told apart by a sibling field: declare it with
``field(metadata={KIND_FROM: "encoder_type"})``; each member class has a ``kind`` class variable
(``"stft"``, ...), and the member whose ``kind`` equals the sibling's value is used.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, TypeVar

from audiokit.errors import AudiokitError

KIND_FROM = "kind_from"  # field metadata key: the sibling field that picks a union member
T = TypeVar("T")


def json_number(value: object) -> float:
    """A JSON or YAML number as a float; NaN for anything else (a bool, a string, a list) and for an
    integer beyond float's range (on which ``float`` and ``math.isfinite`` raise OverflowError)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _dotted(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def unknown_key(where: str, key: str, valid: list[str], error: type[AudiokitError]) -> AudiokitError:
    """The error for the unknown dotted ``key``, suggesting the closest of ``valid``."""
    name = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return error(f"{where}: unknown key '{key}'{hint}")


def _member(cls: type, name: str, kind: Any, where: str, key: str, error: type[AudiokitError]) -> type:
    """The union member of field ``name`` of ``cls`` whose ``kind`` is ``kind``."""
    members = [a for a in typing.get_args(typing.get_type_hints(cls)[name]) if dataclasses.is_dataclass(a)]
    for member in members:
        if member.kind == kind:
            return member
    kinds = ", ".join(repr(m.kind) for m in members)
    raise error(f"{where}: '{key}' must be one of {kinds}, got {kind!r}")


def _field_types(cls: type, values: dict, current: Any, where: str, prefix: str, error) -> dict[str, Any]:
    """Annotation of each field of ``cls``, unions of dataclasses resolved by their sibling field."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        sibling = f.metadata.get(KIND_FROM)
        if sibling is None:
            continue
        kind = values[sibling] if sibling in values else getattr(current, sibling, None)
        if kind is None:
            kind = next(x.default for x in dataclasses.fields(cls) if x.name == sibling)
        hints[f.name] = _member(cls, f.name, kind, where, _dotted(prefix, sibling), error)
    return hints


def convert(value: Any, tp: Any, where: str, key: str, error: type[AudiokitError]) -> Any:
    """``value`` checked against (and converted to) the annotation ``tp``; ``error`` if it does not fit."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(value, inner[0], where, key, error)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise error(f"{where}: '{key}' must be a mapping of keys, got {value!r}")
        return build(tp, value, where, error, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: '{key}' must be a list, got {value!r}")
        items = [convert(v, args[0], where, f"{key}[{i}]", error) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise error(f"{where}: '{key}' must be a mapping, got {value!r}")
        key_type, value_type = args or (Any, Any)
        out = {}
        for name, item in value.items():
            if key_type is not Any and type(name) is not key_type:  # YAML reads a key such as 1 as an int
                raise error(f"{where}: '{key}' keys must be {_type_name(key_type)}, got {name!r}")
            out[name] = convert(item, value_type, where, _dotted(key, str(name)), error)
        return out
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # PyYAML reads ``1e-4`` (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
        else:  # ``1e400`` (a string to PyYAML) is inf, ``nan`` NaN: the checks of YAML's .inf never saw them
            if not math.isfinite(number):
                raise error(f"{where}: '{key}' must be a finite number, got {value!r}")
            return number
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and type(value) is tp:
        return value
    raise error(f"{where}: '{key}' must be {_type_name(tp)}, got {value!r}")


def _check_keys(cls: type, values: dict, where: str, prefix: str, error) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    for name in values:
        if name not in names:
            raise unknown_key(where, _dotted(prefix, str(name)), names, error)


def build(cls: type[T], values: dict, where: str, error: type[AudiokitError], prefix: str = "") -> T:
    """A ``cls`` from ``values`` (missing keys take their defaults; nested mappings build nested
    dataclasses the same way). ``where`` names the source and ``prefix`` the dotted path in errors."""
    _check_keys(cls, values, where, prefix, error)
    hints = _field_types(cls, values, None, where, prefix, error)
    kwargs = {
        name: convert(v, hints[name], where, _dotted(prefix, name), error) for name, v in values.items()
    }
    for f in dataclasses.fields(cls):
        if f.metadata.get(KIND_FROM) and f.name not in kwargs:
            kwargs[f.name] = hints[f.name]()  # the defaults of the kind its sibling names
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.name not in kwargs
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise error(f"{where}: '{_dotted(prefix, missing[0])}' is required")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, AudiokitError) as exc:
        raise error(f"{where}: '{prefix or cls.__name__}' is not valid ({exc})") from None


def merge(config: T, overrides: dict, where: str, error: type[AudiokitError], prefix: str = "") -> T:
    """``config`` with ``overrides`` applied key by key, at any depth.

    A nested mapping updates the nested dataclass it names and keeps its other keys; when the sibling
    that picks a union member changes (e.g. ``encoder_type``), that member starts from its defaults.
    """
    cls = type(config)
    _check_keys(cls, overrides, where, prefix, error)
    hints = _field_types(cls, overrides, config, where, prefix, error)
    changes = {}
    for f in dataclasses.fields(cls):
        current = getattr(config, f.name)
        key = _dotted(prefix, f.name)
        if f.name in overrides:
            value = overrides[f.name]
            if dataclasses.is_dataclass(hints[f.name]) and isinstance(value, dict):
                base = current if type(current) is hints[f.name] else hints[f.name]()
                changes[f.name] = merge(base, value, where, error, key)
            else:
                changes[f.name] = convert(value, hints[f.name], where, key, error)
        elif f.metadata.get(KIND_FROM) and type(current) is not hints[f.name]:
            changes[f.name] = hints[f.name]()  # its kind changed: the new kind's defaults
    try:
        return dataclasses.replace(config, **changes)
    except (TypeError, ValueError, AudiokitError) as exc:
        raise error(f"{where}: '{prefix or cls.__name__}' is not valid ({exc})") from None
