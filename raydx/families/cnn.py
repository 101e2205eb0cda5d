"""The CNN family: a registry classifier trained directly on the diagnosis."""

from __future__ import annotations

from raydx.families import register_family
from raydx.train import FoldTrainer

# any registry CNN; cnn_seed when a configuration names none
register_family("cnn", FoldTrainer, {}, default_model="cnn_seed", model_kind="cnn")
