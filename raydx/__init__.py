"""raydx: Ray-distributed hyperparameter search and fold-parallel cross-validation
for deep-learning diagnosis from biomedical images."""

from __future__ import annotations

# Moves (with pyproject.toml's) when training, a saved format or a result file changes:
# runs and models record it, and a re-check by another version says so.
__version__ = "0.2.0"


def load_model(path, **kwargs):  # type: ignore[no-untyped-def]
    """Load ``OUT/model`` for prediction without Ray (see :mod:`raydx.artifact`)."""
    from raydx.artifact import load_model as _load

    return _load(path, **kwargs)
