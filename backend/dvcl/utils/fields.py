"""Declared hyper-parameters: a field's range lives next to its default, checked in one place.

Before this module every parameter class wrote its range checks by hand in ``__post_init__`` and two
functions converted ``--set key=value`` strings with different rules (``--set iterations=3.5`` passed as a
float). Now a dataclass declares each field with :func:`param` and calls :func:`validate_params` once::

    @dataclass
    class MyParams:
        weight: float = param(0.1, ge=0)
        momentum: float = param(0.99, ge=0, lt=1)
        mode: str = param("xavier", choices=("xavier", "kaiming"))
        threshold: Optional[float] = param(None, ge=0, le=1, nullable=True)

        def __post_init__(self) -> None:
            validate_params(self)

Strings from the command line go through :func:`convert_value` (one set of rules for every ``--set``):
ints must be whole numbers (``3.5`` is refused, ``2e4`` is 20000), floats accept ints, bools accept
``true/false/yes/no/on/off/1/0``, ``none``/``null``/``~`` gives None where the field allows it, and tuples are
written ``1,2,3`` or ``[1, 2, 3]``.

Standard library and :mod:`dvcl.errors` only: the Slicer module and torch-free CLI paths import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import sys
import typing
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from dvcl.errors import ConfigError

__all__ = ["Params", "param", "validate_params", "convert_value", "convert_field", "field_hint", "field_range",
           "describe_range", "FIELD_KEY"]

FIELD_KEY = "dvcl_param"
"""Key of the range record in ``dataclasses.Field.metadata``."""

_NULL_WORDS = ("none", "null", "~", "")
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")


@dataclasses.dataclass(frozen=True)
class Range:
    """The declared constraints of one field (the metadata :func:`param` attaches)."""

    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    lt: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    nullable: bool = False

    def describe(self) -> str:
        """Human-readable constraint, e.g. ``in [0, 1)``, ``>= 1``, ``one of 'a', 'b'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else ""
        high = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else ""
        if low and high:
            return f"in {low}, {high}"
        if low:
            return (">= " if low[0] == "[" else "> ") + low[1:]
        if high:
            return ("<= " if high[-1] == "]" else "< ") + high[:-1]
        return ""

    def contains(self, v: Any) -> bool:
        if self.choices is not None and v not in self.choices:
            return False
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if isinstance(v, float) and math.isnan(v):
                return False
            if self.ge is not None and not v >= self.ge:
                return False
            if self.gt is not None and not v > self.gt:
                return False
            if self.le is not None and not v <= self.le:
                return False
            if self.lt is not None and not v < self.lt:
                return False
        return True


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def param(
    default: Any,
    *,
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    choices: Optional[Iterable[Any]] = None,
    nullable: bool = False,
) -> Any:
    """A dataclass field with its range: ``ge``/``gt``/``le``/``lt`` bounds (numbers, or each element of a
    tuple), ``choices`` (allowed values), ``nullable`` (None allowed; also implied by an ``Optional[...]``
    annotation). Lists and dicts become default factories (copied per instance)."""
    rng = Range(ge=ge, gt=gt, le=le, lt=lt, choices=tuple(choices) if choices is not None else None,
                nullable=nullable)
    meta = {FIELD_KEY: rng}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def describe_range(field: dataclasses.Field) -> str:
    """The declared range of a field as text (empty when it has none): for help texts and docs."""
    rng = field.metadata.get(FIELD_KEY)
    return rng.describe() if rng is not None else ""


def field_range(cls: type, name: str) -> Optional[Range]:
    """The range declared for field ``name`` of dataclass ``cls`` or, when a subclass only changes the default
    (``ce_weight: float = 0.0``), of the nearest base class that declared it."""
    for klass in cls.__mro__:
        for f in getattr(klass, "__dataclass_fields__", {}).values():
            if f.name == name and FIELD_KEY in f.metadata:
                return f.metadata[FIELD_KEY]
    return None


class Params:
    """Base of hyper-parameter dataclasses: after ``__init__`` every field is converted and range-checked by
    :func:`validate_params` (ranges declared with :func:`param`), then :meth:`check` runs the rules that relate
    two fields. Subclasses are ``@dataclass``; a subclass that only changes a default keeps the base's range."""

    def __post_init__(self) -> None:
        validate_params(self)
        self.check()

    def check(self) -> None:
        """Rules between fields (override); the range of a single field belongs in its :func:`param`."""


# ------------------------------------------------------------------------------------------------- type hints
_HINTS: Dict[type, Dict[str, Any]] = {}


def _hints(cls: type) -> Dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        module = sys.modules.get(cls.__module__)
        try:
            hints = typing.get_type_hints(cls, globalns=vars(module) if module else None)
        except Exception:  # noqa: BLE001 - e.g. a class defined in a function: resolve field by field
            namespace = {**vars(typing), **(vars(module) if module else {})}
            hints = {}
            for f in dataclasses.fields(cls):
                try:
                    hints[f.name] = eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307
                except Exception:  # noqa: BLE001 - unknown name: the default's type decides
                    continue
        _HINTS[cls] = hints
    return hints


def field_hint(cls: type, name: str) -> Any:
    """The resolved type annotation of field ``name`` of dataclass ``cls`` (``Any`` when unknown)."""
    hint = _hints(cls).get(name)
    if hint is not None:
        return hint
    for f in dataclasses.fields(cls):
        if f.name == name:
            default = f.default if f.default is not dataclasses.MISSING else None
            return type(default) if default is not None else Any
    return Any


def _split_optional(hint: Any) -> Tuple[Any, bool]:
    """``Optional[X]`` -> ``(X, True)``; other hints -> ``(hint, False)``."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), nullable
    return hint, False


def _type_name(hint: Any) -> str:
    base, _ = _split_optional(hint)
    if base in (bool, int, float, str):
        return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[base]
    if typing.get_origin(base) in (tuple, list):
        args = typing.get_args(base)
        n = len(args) if args and args[-1] is not Ellipsis else None
        return f"{n} numbers" if n else "a list of numbers"
    return "a value"


# ------------------------------------------------------------------------------------------------- conversion
def convert_value(value: Any, hint: Any, *, name: str = "value", what: str = "option",
                  nullable: bool = False) -> Any:
    """Convert ``value`` (a string from ``--set``/a CLI flag, or a YAML/JSON value) to the type ``hint``.

    The one conversion rule of the project (see the module docstring). Raises :class:`ConfigError`
    "<what> '<name>' must be <type>, got <value>" for values that do not fit.
    """
    base, optional = _split_optional(hint)
    nullable = nullable or optional

    def fail() -> ConfigError:
        return ConfigError(f"{what} '{name}' must be {_type_name(hint)}{' or none' if nullable else ''}, "
                           f"got {value!r}")

    if value is None:
        if nullable:
            return None
        raise fail()
    if isinstance(value, str):
        text = value.strip()
        if nullable and text.lower() in _NULL_WORDS:
            return None
    else:
        text = None
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if text is not None and text.lower() in _TRUE_WORDS + _FALSE_WORDS:
            return text.lower() in _TRUE_WORDS
        raise fail()
    if base is int:
        return _to_int(value if text is None else text, fail)
    if base is float:
        return _to_float(value if text is None else text, fail)
    if base is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):  # a folder given as a Path
            return os.fspath(value)
        raise fail()
    origin = typing.get_origin(base)
    if origin is typing.Union:  # e.g. a stride: an int or a (z, y, x) triple; the first type that fits
        for option in typing.get_args(base):
            try:
                return convert_value(value, option, name=name, what=what)
            except ConfigError:
                continue
        raise fail()
    if origin in (tuple, list) or base in (tuple, list):
        args = typing.get_args(base)
        if text is not None:
            items: Sequence[Any] = _split_sequence(text)
        elif isinstance(value, (list, tuple)):
            items = value
        else:
            raise fail()
        if args and args[-1] is not Ellipsis and len(items) != len(args):
            raise fail()
        out = []
        for i, item in enumerate(items):
            elem = args[0] if args and args[-1] is Ellipsis else (args[i] if args else Any)
            out.append(convert_value(item, elem, name=name, what=what) if elem is not Any else item)
        return tuple(out) if (origin or base) is tuple else out
    return value


def _split_sequence(text: str) -> List[Any]:
    """``"1,2,3"``, ``"[1, 2, 3]"``, ``"(1, 2, 3)"`` or nested JSON ``"[[1,2,2],2]"`` -> a list of items."""
    if text[:1] in "[(" and text[-1:] in "])":
        try:
            parsed = json.loads("[" + text[1:-1] + "]")
            if isinstance(parsed, list):
                return parsed
        except ValueError:
            pass
        text = text[1:-1]
    return [s for s in (p.strip() for p in text.split(",")) if s]


def _to_int(value: Any, fail: Any) -> int:
    if isinstance(value, bool):
        raise fail()
    if isinstance(value, numbers.Integral):  # int, numpy integers
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            pass
        try:
            value = float(value)
        except ValueError as exc:
            raise fail() from exc
    if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise fail()


def _to_float(value: Any, fail: Any) -> float:
    if isinstance(value, bool):
        raise fail()
    if isinstance(value, numbers.Real):  # int, float, numpy scalars
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError as exc:
            raise fail() from exc
    raise fail()


def convert_field(cls: type, name: str, value: Any, *, what: str = "option") -> Any:
    """Convert ``value`` for field ``name`` of dataclass ``cls`` (its annotation and ``nullable`` flag)."""
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise ConfigError(f"unknown {what} '{name}'")
    rng = field_range(cls, name)
    nullable = bool(rng and rng.nullable)
    return convert_value(value, field_hint(cls, name), name=name, what=what, nullable=nullable)


# ------------------------------------------------------------------------------------------------- validation
def validate_params(obj: Any, *, what: str = "method parameter") -> None:
    """Check every field of dataclass instance ``obj``: type (converting strings and ints-for-floats in
    place with :func:`convert_value`) and declared range. Raises :class:`ConfigError` naming the field::

        method parameter 'ema_decay' must be in [0, 1), got 1.5
    """
    cls = type(obj)
    for f in dataclasses.fields(cls):
        rng = field_range(cls, f.name)
        value = getattr(obj, f.name)
        hint = field_hint(cls, f.name)
        _, optional = _split_optional(hint)
        nullable = optional or bool(rng and rng.nullable)
        converted = convert_value(value, hint, name=f.name, what=what, nullable=nullable)
        if converted is not value:
            object.__setattr__(obj, f.name, converted)  # also for frozen dataclasses
        if rng is None or converted is None:
            continue
        items = converted if isinstance(converted, (tuple, list)) and rng.choices is None else (converted,)
        if not all(rng.contains(v) for v in items):
            raise ConfigError(f"{what} '{f.name}' must be {rng.describe()}, got {value!r}")
