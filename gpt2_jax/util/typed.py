"""Field types checked at construction, from a dataclass's own annotations.

Each config dataclass calls ``check_field_types(self)`` in its ``__post_init__``, after
converting the Python API's natural forms (a list for a tuple, a dict of class weights)
and before checking values, so a wrong type is one line naming the class, the field,
what it expects and what it got: ``TrainConfig.epochs: expected int, got str '3'``.

Understood: plain classes, ``None``, ``X | Y`` (and ``Optional``), ``tuple[X, ...]``,
``tuple[X, Y]`` and ``Literal[...]``. ``bool`` is not an ``int`` here; an ``int`` is
accepted where a ``float`` is expected; a path (``os.PathLike``) given for a ``str``
field is stored as its string. Values from JSON (lists for tuples) are the reader's to
convert (``RunConfig.from_dict``), not this checker's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from typing import Any


class ConfigTypeError(TypeError, ValueError):
    """A config field given a value of the wrong type (a ``ValueError`` too, so the
    command lines' handling of bad settings reports it as one line)."""


@functools.cache
def _field_hints(cls: Any) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _alternatives(hint: Any) -> tuple | None:
    """The members of a union type, or None if ``hint`` is not one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return None


def fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of the annotated type ``hint``."""
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    union = _alternatives(hint)
    if union is not None:
        return any(fits(value, member) for member in union)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(type(value) is type(a) and value == a for a in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin or hint)


def type_words(hint: Any) -> str:
    """``int``, ``int or float``, ``str or None``, ``tuple of str``, ``one of 'a', 'b'``."""
    if hint is None or hint is type(None):
        return "None"
    union = _alternatives(hint)
    if union is not None:
        return " or ".join(type_words(member) for member in union)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"tuple of {type_words(args[0])}"
        return "tuple (" + ", ".join(type_words(a) for a in args) + ")"
    return getattr(hint, "__name__", str(hint))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_field_types(obj: Any) -> None:
    """Raise ``ConfigTypeError`` naming the first field of the dataclass instance
    ``obj`` whose value is not of its annotated type."""
    cls: Any = type(obj)
    for name, hint in _field_hints(cls):
        value = getattr(obj, name)
        if isinstance(value, os.PathLike) and fits("", hint):  # a Path for a str field
            value = os.fspath(value)
            object.__setattr__(obj, name, value)
        if not fits(value, hint):
            raise ConfigTypeError(
                f"{cls.__name__}.{name}: expected {type_words(hint)}, "
                f"got {type(value).__name__} {_shown(value)}"
            )
