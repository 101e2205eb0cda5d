"""raydx: Ray-distributed hyperparameter search and fold-parallel cross-validation
for deep-learning diagnosis from biomedical images."""

from __future__ import annotations

__version__ = "0.1.0"


def load_model(path, **kwargs):  # type: ignore[no-untyped-def]
    """Load ``OUT/model`` for prediction without Ray (see :mod:`raydx.artifact`)."""
    from raydx.artifact import load_model as _load

    return _load(path, **kwargs)
