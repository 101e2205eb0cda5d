"""The CNN family: a registry classifier trained directly on the diagnosis."""

from __future__ import annotations

from raydx.families import register_family
from raydx.train import FoldTrainer

register_family("cnn", FoldTrainer, {}, model_kind="cnn")  # any registry CNN
