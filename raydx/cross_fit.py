"""Out-of-fold scores with nothing fitted on the rows they score.

A binary winner's decision threshold and its calibration shift
(``raydx.prior.fitted_class_mix``) are both fitted on its out-of-fold predictions, so
those predictions flatter them: the shift makes their calibration intercept 0 by
construction, and a sensitivity target holds on them exactly. Fitting both on the other
k-1 folds' rows and applying them to the k-th, fold by fold (cross-fitting), says what
images the fits did not see should get, without the test split: the figure to read where
there is none (``raydx cv --no-test``), and to set beside it where there is.

A winner whose fold models are scaled each on its own fold (``raydx.fold_calibration``,
``per_fold``) has no other folds to fit that scaling on: a fold's rows are then scaled
by fits on the rest of that fold's rows (dealt into parts by rank within each class),
the threshold still by the other folds'.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from raydx.metrics import calibration
from raydx.operating_point import OperatingPoint
from raydx.prior import fitted_class_mix, shift


def cross_fitted_scores(
    params: Mapping[str, Any],
    is_pos: ArrayLike,
    p_pos: ArrayLike,
    fold: ArrayLike,
    point: OperatingPoint,
    *,
    per_fold: str | None = None,
) -> dict[str, float | None]:
    """Sensitivity, specificity and calibration of the out-of-fold probabilities ``p_pos``
    when each fold's shift and threshold come from the other folds' rows, fitted exactly
    as raydx fits them on all of them.

    ``p_pos`` may be the networks' own probabilities or those raydx saved (shifted by the
    fit on every row): a shift of the logits is absorbed by the intercept fitted after
    it, so both give the same scores (up to the 1e-7 clip of probabilities, reached by
    logits beyond about +-16, where they differ by up to 4e-4). A rate is None when its
    class is absent; a fold whose other folds hold one class alone keeps its
    probabilities as they are and the rule's threshold for one class. With ``per_fold``
    (a ``raydx.fold_calibration`` method), ``p_pos`` are the probabilities as saved,
    each fold's scaled on its rows.
    """
    y, p, fold = _checked(is_pos, p_pos, fold)
    moved = np.empty_like(p)
    flagged = np.empty(len(p), dtype=bool)
    folds = _within_folds(y, p, fold, per_fold) if per_fold else _per_fold(params, y, p, fold)
    for held, q in folds:
        threshold = point.threshold(y[~held].astype(int), q[~held])
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


def cross_fitted_probabilities(
    params: Mapping[str, Any], is_pos: ArrayLike, p_pos: ArrayLike, fold: ArrayLike
) -> np.ndarray:
    """``p_pos`` with each fold's rows shifted by the intercept fitted on the other folds'."""
    y, p, fold = _checked(is_pos, p_pos, fold)
    moved = np.empty_like(p)
    for held, q in _per_fold(params, y, p, fold):
        moved[held] = q[held]
    return moved


def _per_fold(
    params: Mapping[str, Any], y: np.ndarray, p: np.ndarray, fold: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each fold's mask, with every probability shifted by the other folds' fit."""
    for f in np.unique(fold):
        held = fold == f
        mix = fitted_class_mix(params, y[~held], p[~held])
        yield held, (p if mix is None else shift(p, mix["trained"], mix["mapped_to"]))


def _within_folds(
    y: np.ndarray, p: np.ndarray, fold: np.ndarray, method: str, inner: int = 5
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each fold's mask, with its rows rescaled by fits on the rest of its rows (``inner``
    parts, fewer when a class is rarer) and the other folds' rows as saved. A fold with
    under two images of a class keeps its rows as saved.

    The parts are dealt by rank: each class's rows in order of probability, in turn, so
    that each part holds both classes across their range, and the parts, like the
    scores, do not depend on the order in which the rows come (``predictions.parquet``
    lists them by sample id, the model folder by fold and probability). A fit is unchanged by a
    prior increasing affine map of the logits, so refitting on the saved, already
    scaled probabilities is refitting on the fold model's own; the inner fits are then
    undone by the fold's fit on all its saved rows (the identity, unless
    ``DiagnosisModel.at_prevalence`` moved every row since), so that the held rows stay
    on the scale of the rows that the threshold is chosen on.
    """
    from scipy.special import expit

    from raydx.fold_calibration import KEEP_ORDER, fit_platt, logit, with_slope

    slope = with_slope(method)
    for f in np.unique(fold):
        held = fold == f
        q = p.copy()
        idx = np.flatnonzero(held)
        parts = min(inner, int(y[idx].sum()), int((~y[idx]).sum()))
        whole = fit_platt(y[idx], p[idx], slope=slope)
        if parts >= 2 and whole is not None and whole.slope > 0:
            part = np.empty(len(idx), dtype=np.int64)
            for c in (False, True):
                mine = np.flatnonzero(y[idx] == c)
                part[mine[np.argsort(p[idx[mine]], kind="stable")]] = np.arange(len(mine)) % parts
            for k in range(parts):
                fitted = fit_platt(y[idx[part != k]], p[idx[part != k]], slope=slope)
                if fitted is not None:
                    z = fitted.slope * logit(p[idx[part == k]], KEEP_ORDER) + fitted.intercept
                    q[idx[part == k]] = expit((z - whole.intercept) / whole.slope)
        yield held, q


def _checked(
    is_pos: ArrayLike, p_pos: ArrayLike, fold: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(is_pos, dtype=bool)
    p = np.asarray(p_pos, dtype=np.float64)
    f = np.asarray(fold)
    if not (len(y) == len(p) == len(f)) or p.ndim != 1:
        raise ValueError(
            "is_pos, p_pos and fold must be 1-D and of one length, but got lengths "
            f"{len(y)}, {len(p)} and {len(f)} and p_pos.ndim={p.ndim}."
        )
    if len(np.unique(f)) < 2:
        raise ValueError(f"cross-fitting needs >= 2 folds, but got {len(np.unique(f))}.")
    return y, p, f
