"""Checks and parsing shared by the families' parameter dataclasses."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, TypeVar

P = TypeVar("P")


def is_real(v: object) -> bool:
    """A real number, not a bool (``True`` is an ``int`` to Python)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_int(v: object) -> bool:
    """An integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def parse_params(cls: type[P], defaults: Mapping[str, Any], params: Mapping[str, Any]) -> P:
    """Family params -> the family's frozen dataclass ``cls`` (which checks them), with
    ``defaults`` filling in the rest; keys that are not fields of ``cls`` are ignored
    (``TrialConfig.family_params`` holds only the family's own keys)."""
    if not dataclasses.is_dataclass(cls):  # (narrows cls for the type checker too)
        raise TypeError(f"{cls!r} is not a dataclass")
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**defaults, **{k: v for k, v in params.items() if k in known}})
