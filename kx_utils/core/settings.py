"""Type and range checks of profile values, so that a wrong override stops a run before it starts.

Overrides arrive as JSON (``--overrides``) or Python keywords; a value of the wrong
type or out of range would otherwise surface an hour later, deep in a notebook, or
never (a string budget compared with a number).  Each check returns the problems it
finds, each naming the key, what it must be and what it got; :mod:`kx_utils.config.profiles`
raises them as one :class:`ProfileError`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any


class ProfileError(ValueError):
    """An unknown profile name or override key, or a value of the wrong type or out of range (a profile's,
    a :class:`~kx_utils.core.recipe.Recipe`'s)."""


# the JSON words for Python's types, as the user writes them in --overrides
_JSON_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "an object", type(None): "null"}


def describe(hint: Any) -> str:
    """``int | None`` -> ``an integer or null``; ``tuple[int, ...]`` -> ``a list of integers``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(h) for h in typing.get_args(hint))
    if origin is tuple:
        item = describe(typing.get_args(hint)[0])
        return f"a list of {item.removeprefix('an ').removeprefix('a ')}s".replace("or nulls", "or null")
    if origin is dict:
        return "an object"
    return _JSON_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def conforms(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` (int for float is fine; bool is never a number)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if origin is tuple:  # a JSON list arrives as a list; the profiles' own values are tuples
        args = typing.get_args(hint)
        return isinstance(value, (tuple, list)) and all(conforms(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        numeric = isinstance(value, int) if hint is int else isinstance(value, (int, float))
        return numeric and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint these checks do not know: nothing to say


def _numbers(value: Any) -> list:
    if isinstance(value, (tuple, list)):
        return [v for item in value for v in _numbers(item)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


def _number_problem(number: float, count: bool, zero_ok: bool, fraction: bool) -> str | None:
    if not math.isfinite(number):
        return "must be finite"
    if count and number < (0 if zero_ok else 1):
        return "must be 0 or more" if zero_ok else "must be 1 or more"
    if number < 0:
        return "must not be negative"
    if fraction and number > 1:
        return "is a fraction, from 0 to 1"
    return None


def field_problems(instance: Any, prefix: str = "", may_be_zero: tuple[str, ...] = (),
                   fractions: tuple[str, ...] = ()) -> list[str]:
    """The type and range problems of a dataclass ``instance``'s fields.

    Every field must match its annotation; every number in it must be finite, every number of
    an integer field positive (zero too for ``may_be_zero``), every other number non-negative, and the ``fractions`` in
    [0, 1].  ``prefix`` names the instance in the messages (``"surrogate_recipe."``).
    """
    hints = typing.get_type_hints(type(instance))
    problems = []
    for f in dataclasses.fields(instance):
        value, hint, key = getattr(instance, f.name), hints[f.name], f"{prefix}{f.name}"
        if not conforms(value, hint):
            shown = list(value) if isinstance(value, (tuple, list)) else f"{value!r} ({type(value).__name__})"
            problems.append(f"{key} must be {describe(hint)}, got {shown}")
            continue
        counts = not (conforms(0.5, hint) or conforms((0.5,), hint))  # an int field: a count or a size
        for number in _numbers(value):
            problem = _number_problem(number, counts, f.name in may_be_zero, f.name in fractions)
            if problem:
                problems.append(f"{key} {problem}, got {value!r}")
                break
    return problems


def choice_problem(key: str, value: Any, choices: tuple[str, ...]) -> list[str]:
    """``[]`` when ``value`` is one of ``choices``, else the problem naming them."""
    if value in choices:
        return []
    return [f"{key} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"]
