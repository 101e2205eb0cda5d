"""Out-of-fold scores with nothing fitted on the rows they score.

A binary winner's decision threshold and its calibration shift
(``raydx.prior.fitted_class_mix``) are both fitted on its out-of-fold predictions, so
those predictions flatter them: the shift makes their calibration intercept 0 by
construction, and a sensitivity target holds on them exactly. Fitting both on the other
k-1 folds' rows and applying them to the k-th, fold by fold (cross-fitting), says what
images the fits did not see should get, without the test split: the figure to read where
there is none (``raydx cv --no-test``), and to set beside it where there is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from raydx.metrics import calibration
from raydx.operating_point import OperatingPoint
from raydx.prior import fitted_class_mix, shift


def cross_fitted_scores(
    params: Mapping[str, Any],
    is_pos: ArrayLike,
    p_raw: ArrayLike,
    fold: ArrayLike,
    point: OperatingPoint,
) -> dict[str, float | None]:
    """Sensitivity, specificity and calibration of the out-of-fold probabilities ``p_raw``
    (as the networks gave them) when each fold's shift and threshold come from the other
    folds' rows, fitted exactly as raydx fits them on all of them.

    A rate is None when its class is absent; a fold whose other folds hold one class
    alone keeps its probabilities as they are and the rule's threshold for one class.
    """
    y = np.asarray(is_pos, dtype=bool)
    p = np.asarray(p_raw, dtype=np.float64)
    fold = np.asarray(fold)
    if not (len(y) == len(p) == len(fold)) or p.ndim != 1:
        raise ValueError(
            "is_pos, p_raw and fold must be 1-D and of one length, but got lengths "
            f"{len(y)}, {len(p)} and {len(fold)} and p_raw.ndim={p.ndim}."
        )
    if len(np.unique(fold)) < 2:
        raise ValueError(f"cross-fitting needs >= 2 folds, but got {len(np.unique(fold))}.")
    moved = np.empty_like(p)
    flagged = np.empty(len(p), dtype=bool)
    for f in np.unique(fold):
        held = fold == f
        fit = ~held
        mix = fitted_class_mix(params, y[fit], p[fit])
        q = p if mix is None else shift(p, mix["trained"], mix["mapped_to"])
        threshold = point.threshold(y[fit].astype(int), q[fit])
        moved[held] = q[held]
        flagged[held] = q[held] >= threshold
    cal = calibration(y, moved)
    return {
        "sensitivity": float(flagged[y].mean()) if y.any() else None,
        "specificity": float((~flagged[~y]).mean()) if (~y).any() else None,
        "brier": cal["brier"],
        "calibration_intercept": cal["calibration_intercept"],
        "calibration_slope": cal["calibration_slope"],
    }
