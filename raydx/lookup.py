"""One helper for every name a user types (MONAI's ``look_up_option``)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from raydx.errors import RaydxError


def lookup(name: object, options: Iterable[str], what: str) -> str:
    """Return ``name`` if it is one of ``options``, else raise with a "did you mean".

    >>> lookup("adam", ["adam", "sgd"], "optimizer")
    'adam'
    """
    opts = sorted(set(options))
    if isinstance(name, str) and name in opts:
        return name
    msg = f"Unknown {what} {name!r}."
    close = suggest(str(name), opts)
    if close:
        msg += f" Did you mean {close!r}?"
    msg += f" Available options are: {', '.join(opts)}."
    raise RaydxError(msg)


def suggest(name: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option ``name`` was most likely a typo of: among difflib's close matches, the
    fewest edits, a swap of two neighbouring letters counting as one ("lgo" -> "log",
    where difflib alone ties it with "low")."""
    close = difflib.get_close_matches(name, sorted(set(options)), n=10, cutoff=cutoff)
    if not close:
        return None
    return min(close, key=lambda c: typo_distance(name, c))  # min keeps difflib's order on ties


def typo_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    swaps of adjacent characters, one edit each."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[len(b)]
