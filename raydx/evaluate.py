"""The winner, and only the winner, meets the test split once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raydx.cv import CKPT_META, fold_file, oof_file


def read_oof(ckpt: Path, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold probabilities of a trial's best epoch, ordered by pool row."""
    rows, probs = [], []
    for i in range(folds):
        with np.load(ckpt / oof_file(i)) as z:
            rows.append(z["row"])
            probs.append(z["prob"])
    row = np.concatenate(rows)
    prob = np.concatenate(probs)
    order = np.argsort(row)
    return row[order], prob[order]


def checkpoint_best_epoch(ckpt: Path) -> int:
    """The epoch whose fold models and out-of-fold predictions the checkpoint holds."""
    return int(json.loads((ckpt / CKPT_META).read_text())["best_epoch"])


def fold_weight_files(ckpt: Path, folds: int) -> list[Path]:
    return [ckpt / fold_file(i) for i in range(folds)]


def ensemble_predict(model: Any, x: np.ndarray) -> np.ndarray:
    """``model`` is a :class:`raydx.artifact.DiagnosisModel`; ``x`` normalised (N, C, H, W)."""
    return model.predict_proba_tensor(torch.from_numpy(x))
