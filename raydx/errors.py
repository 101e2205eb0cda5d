"""Errors that reach the user as one line, never as a traceback."""

from __future__ import annotations


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 row``, ``2 rows``: counts in messages, in good English."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class RaydxError(ValueError):
    """A problem with the user's input (data, space file, options).

    The CLI prints ``str(error)`` alone, so the message must name the offending
    parameter, quote its value and say what is allowed.
    """


class DataError(RaydxError):
    """The image source cannot be read or is unfit for cross-validation."""


class SpaceError(RaydxError):
    """The search-space file is malformed."""
