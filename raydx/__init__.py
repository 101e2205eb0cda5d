"""raydx: Ray-distributed hyperparameter search and fold-parallel cross-validation
for deep-learning diagnosis from biomedical images."""

from __future__ import annotations

__version__ = "0.1.0"
