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
    close = difflib.get_close_matches(str(name), opts, n=1, cutoff=0.6)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    msg += f" Available options are: {', '.join(opts)}."
    raise RaydxError(msg)
