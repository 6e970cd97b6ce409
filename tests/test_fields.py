"""Declared parameter ranges and the one ``--set`` string conversion (dvcl.utils.fields)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Tuple

import pytest

from dvcl.errors import ConfigError
from dvcl.utils.fields import convert_field, convert_value, describe_range, param, validate_params


@dataclass
class Example:
    iterations: int = param(10, ge=1)
    weight: float = param(0.1, ge=0)
    momentum: float = param(0.99, ge=0, lt=1)
    fraction: float = param(0.5, gt=0, le=1)
    enabled: bool = param(True)
    mode: str = param("xavier", choices=("xavier", "kaiming"))
    threshold: Optional[float] = param(None, ge=0, le=1)
    limit: Optional[int] = param(None, ge=1, nullable=True)
    patch: Tuple[int, int, int] = param((2, 4, 4), ge=1)
    plain: float = 3.0

    def __post_init__(self) -> None:
        validate_params(self)


@dataclass(frozen=True)
class Frozen:
    rate: float = param(1, gt=0)

    def __post_init__(self) -> None:
        validate_params(self, what="option")


def test_defaults_pass_and_ints_become_floats() -> None:
    ex = Example()
    assert ex.iterations == 10 and ex.threshold is None
    assert Example(weight=2).weight == 2.0 and isinstance(Example(weight=2).weight, float)
    fr = Frozen()
    assert fr.rate == 1.0 and isinstance(fr.rate, float)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"iterations": 0}, "method parameter 'iterations' must be >= 1, got 0"),
        ({"iterations": 3.5}, "method parameter 'iterations' must be an integer, got 3.5"),
        ({"weight": -0.5}, "method parameter 'weight' must be >= 0, got -0.5"),
        ({"momentum": 1.0}, "method parameter 'momentum' must be in [0, 1), got 1.0"),
        ({"fraction": 0.0}, "method parameter 'fraction' must be in (0, 1], got 0.0"),
        ({"mode": "he"}, "method parameter 'mode' must be one of 'xavier', 'kaiming', got 'he'"),
        ({"threshold": 1.5}, "method parameter 'threshold' must be in [0, 1], got 1.5"),
        ({"enabled": "maybe"}, "method parameter 'enabled' must be true/false"),
        ({"patch": (2, 0, 4)}, "method parameter 'patch' must be >= 1"),
        ({"patch": (2, 4)}, "method parameter 'patch' must be 3 numbers"),
        ({"weight": float("nan")}, "method parameter 'weight' must be >= 0"),
        ({"weight": True}, "method parameter 'weight' must be a number"),
    ],
)
def test_out_of_range_values_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Example(**kwargs)
    assert str(info.value).startswith(message)


def test_frozen_dataclass_uses_its_own_wording() -> None:
    with pytest.raises(ConfigError, match="option 'rate' must be > 0, got 0"):
        Frozen(rate=0)


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("iterations", "3", 3),
        ("iterations", "2e4", 20000),
        ("iterations", " 7 ", 7),
        ("weight", "3", 3.0),
        ("weight", "1e-3", 1e-3),
        ("enabled", "true", True),
        ("enabled", "False", False),
        ("enabled", "1", True),
        ("enabled", "0", False),
        ("threshold", "null", None),
        ("threshold", "None", None),
        ("threshold", "0.3", 0.3),
        ("limit", "none", None),
        ("limit", "4", 4),
        ("mode", "kaiming", "kaiming"),
        ("patch", "16,32,32", (16, 32, 32)),
        ("patch", "[16, 32, 32]", (16, 32, 32)),
        ("patch", "(16,32,32)", (16, 32, 32)),
    ],
)
def test_set_strings_convert_by_field_type(name: str, text: str, expected: object) -> None:
    value = convert_field(Example, name, text, what="method parameter")
    assert value == expected and type(value) is type(expected)
    Example(**{name: value})  # and the converted value validates


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("iterations", "3.5", "option 'iterations' must be an integer, got '3.5'"),
        ("iterations", "ten", "option 'iterations' must be an integer"),
        ("iterations", "true", "option 'iterations' must be an integer"),
        ("weight", "abc", "option 'weight' must be a number"),
        ("enabled", "2", "option 'enabled' must be true/false"),
        ("weight", "null", "option 'weight' must be a number, got 'null'"),
        ("patch", "1,2", "option 'patch' must be 3 numbers"),
        ("patch", "1,2.5,3", "option 'patch' must be an integer"),
    ],
)
def test_bad_set_strings_are_refused(name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        convert_field(Example, name, text)
    assert str(info.value).startswith(message)


def test_unknown_field_and_plain_values() -> None:
    with pytest.raises(ConfigError, match="unknown option 'nope'"):
        convert_field(Example, "nope", "1")
    assert convert_value("2", float, name="x") == 2.0
    np = pytest.importorskip("numpy")
    assert type(convert_value(np.int64(3), int)) is int and type(convert_value(np.float32(0.5), float)) is float
    assert convert_value(np.float64(4.0), int) == 4
    assert convert_value(5, Optional[int], name="x") == 5


def test_describe_range_for_help_texts() -> None:
    fields = {f.name: f for f in dataclasses.fields(Example)}
    assert describe_range(fields["momentum"]) == "in [0, 1)"
    assert describe_range(fields["iterations"]) == ">= 1"
    assert describe_range(fields["plain"]) == ""


def test_union_and_nested_sequences() -> None:
    """Network strides: each entry an int or a (z, y, x) triple, written as JSON on the command line."""
    from typing import Union

    hint = Tuple[Union[int, Tuple[int, int, int]], ...]
    assert convert_value("[2, [1, 2, 2], 2]", hint, name="strides") == (2, (1, 2, 2), 2)
    assert convert_value("2,2", hint, name="strides") == (2, 2)
    assert convert_value("[]", hint, name="strides") == ()
    with pytest.raises(ConfigError, match="'strides' must be"):
        convert_value("[2, [1, 2]]", hint, name="strides")


def test_params_base_inherits_ranges_and_runs_cross_checks() -> None:
    from dvcl.utils.fields import Params

    @dataclass
    class Base(Params):
        weight: float = param(0.5, ge=0)
        low: int = param(1, ge=1)
        high: int = param(3, ge=1)

        def check(self) -> None:
            if self.low >= self.high:
                raise ConfigError("method parameters need low < high")

    @dataclass
    class Child(Base):
        weight: float = 0.0  # a new default, the base's range

    assert Child().weight == 0.0 and Child(weight=2).weight == 2.0
    with pytest.raises(ConfigError, match="'weight' must be >= 0, got -1"):
        Child(weight=-1)
    with pytest.raises(ConfigError, match="low < high"):
        Child(low=3)


def test_list_defaults_are_not_shared() -> None:
    @dataclass
    class WithList:
        items: list = param([1, 2])

    a, b = WithList(), WithList()
    a.items.append(3)
    assert b.items == [1, 2]
