"""Each fold model's probabilities put on one scale before they are pooled or averaged.

A binary winner's k fold models each rank their own held-out fold, but nothing makes
them agree on what a probability means: in a user audit (167 dermoscopy photos, 3 folds)
fold 2 scored its benign images at a median of 0.88 where folds 0 and 1 gave 0.02.
Each fold's AUC was 0.97 or more, their pooled out-of-fold AUC 0.850, and the threshold
chosen on the pool called every test image malignant. The ensemble, which averages the
fold models' probabilities, inherits the same disagreement.

So each fold model's probabilities are recalibrated on the fold it did not train on,
before anything is pooled, thresholded or averaged, as scikit-learn's
``CalibratedClassifierCV(ensemble=True)`` calibrates each cross-validated member on its
own held-out part. raydx's default (``DEFAULT``) is one intercept per fold model
(calibration in the large, the pooled shift of ``raydx.prior`` made per fold); Platt's
slope as well is kept for comparison. ``bench/fold_calibration.py`` (README, *One
intercept per fold model*): on the audit's run, pooled out-of-fold AUC 0.850 with one
pooled shift, 0.988 with an intercept per fold, 0.985 with Platt per fold, and every
test image called right instead of all called malignant; on three BreastMNIST winners,
whose folds already agreed, a little more cross-fitted specificity (0.819 -> 0.841).
There the ensembles of Platt-scaled members were too timid (test calibration slope
1.32 against 0.86), as an average of members each calibrated alone tends to be.

Both are monotone (Platt's slope is kept >= 0), so every fold's ranking and AUC, and
the search's CV AUC, stay as they were; what changes is the pooled out-of-fold scale,
the threshold chosen on it and the ensemble's average. Fitted on the rows it then
scores, a fold's fit flatters them a little: ``raydx.cross_fit`` refits it within each
fold to say by how much.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

# The methods, by the name config.json and best.yaml record them under.
METHODS = ("platt per fold", "intercept per fold")
DEFAULT = "intercept per fold"


def with_slope(method: str) -> bool:
    """Whether ``method`` fits a slope as well as an intercept."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, but got method={method!r}.")
    return method == METHODS[0]


# Clipping for a map applied to probabilities, which must keep their order (these
# scalings; a prevalence moved at predict time, raydx.prior.to_prevalence): float64's
# own limits. Fits clip at raydx.metrics.PROB_EPS (1e-7), where float32 networks'
# probabilities are no longer exact; applied with that clip, every probability beyond
# it would come out as one value, and confident images of both classes would tie.
KEEP_ORDER = float(np.finfo(np.float64).tiny)


# The saved model's format_version (raydx.artifact.FORMAT_VERSION) from which its
# scalings apply at KEEP_ORDER. Models saved before applied them at PROB_EPS and chose
# their threshold on probabilities that tied there: they keep that clip (from_config),
# or a threshold on the tie would now classify the images beyond it otherwise.
KEEP_ORDER_SINCE = 2


@dataclass(frozen=True)
class Platt:
    """``p -> expit(slope * logit(p) + intercept)``; the identity is ``Platt(1, 0)``.

    ``eps``: where ``p`` is clipped before the logit (``logit``'s); not saved with the
    fit (``to_dict``), but chosen by the model's format when read (``from_config``).
    """

    slope: float = 1.0
    intercept: float = 0.0
    eps: float = KEEP_ORDER

    def __call__(self, p: ArrayLike) -> np.ndarray:
        from scipy.special import expit

        return expit(self.slope * logit(p, self.eps) + self.intercept)

    def to_dict(self) -> dict[str, float]:
        return {"slope": float(self.slope), "intercept": float(self.intercept)}


def fit_platt(is_pos: ArrayLike, p_pos: ArrayLike, *, slope: bool = True) -> Platt | None:
    """Platt's sigmoid fitted to ``p_pos``'s logits, None with one class (nothing to fit).

    Platt's smoothed targets ((n+ + 1) / (n+ + 2) for positives, 1 / (n- + 2) for
    negatives, as scikit-learn's sigmoid calibration uses) keep the fit finite when a
    fold's classes do not overlap, which small folds often do not. The slope is kept
    >= 0: a fold model that ranks worse than chance is flattened towards its fold's
    positive share, never turned upside down by the rows it is judged on. With
    ``slope=False`` the slope stays 1 (an intercept alone: calibration in the large,
    fitted to the plain labels).
    """
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    y = np.asarray(is_pos, dtype=bool)
    f = logit(p_pos)
    if len(y) != len(f) or f.ndim != 1:
        raise ValueError(
            f"is_pos and p_pos must be 1-D and of one length, but got {len(y)} and {len(f)}."
        )
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0 or not np.isfinite(f).all():
        return None
    # An intercept alone always has a finite fit, which makes each fold's mean
    # probability its positive share exactly; only the slope needs Platt's smoothing.
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0)) if slope else y * 1.0

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w[0] * f + w[1]
        value = -float(np.sum(t * log_expit(z) + (1 - t) * log_expit(-z)))
        r = expit(z) - t
        return value, np.array([float(r @ f), float(r.sum())])

    got = minimize(
        loss,
        np.array([1.0, 0.0]),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, None) if slope else (1.0, 1.0), (None, None)],
    )
    return Platt(float(got.x[0]), float(got.x[1]))


def fit_per_fold(
    is_pos: ArrayLike, p_pos: ArrayLike, fold: ArrayLike, method: str = DEFAULT
) -> dict[int, Platt]:
    """Each fold's scaling by ``method``, fitted on its own out-of-fold rows (the
    identity for a fold that holds one class)."""
    slope = with_slope(method)
    y, p, f = np.asarray(is_pos, dtype=bool), np.asarray(p_pos, dtype=np.float64), np.asarray(fold)
    return {int(k): fit_platt(y[f == k], p[f == k], slope=slope) or Platt() for k in np.unique(f)}


def unapply_per_fold(p_pos: ArrayLike, fold: ArrayLike, scalings: Sequence[Platt]) -> np.ndarray:
    """Saved out-of-fold probabilities back to each fold model's own (``apply_per_fold``'s
    inverse, for benchmarks that compare the two; a slope of 0 loses them)."""
    from scipy.special import expit

    p, f = np.asarray(p_pos, dtype=np.float64), np.asarray(fold)
    out = np.empty_like(p)
    for k, s in enumerate(scalings):
        held = f == k
        out[held] = expit((logit(p[held]) - s.intercept) / s.slope)
    return out


def apply_per_fold(p_pos: ArrayLike, fold: ArrayLike, scalings: Mapping[int, Platt]) -> np.ndarray:
    """Each row's probability through its own fold's scaling."""
    p, f = np.asarray(p_pos, dtype=np.float64), np.asarray(fold)
    out = np.empty_like(p)
    for k in np.unique(f):
        out[f == k] = scalings[int(k)](p[f == k])
    return out


def aligned_to_share(p_pos: ArrayLike, fold: ArrayLike, share: float) -> np.ndarray:
    """Each fold's probabilities shifted on the logit scale until their mean is ``share``
    (the pool's positive share): the fold models put on one scale without their folds'
    labels, for the pooled out-of-fold AUCs.

    The per-fold intercepts make each fold's mean its own positive share, so a fold with
    more positives than the others gets higher probabilities all through, and pooled
    across folds that ranks its rows by their fold's labels (``bench/pooled_auc_bias.py``,
    simulated): models with no signal score 0.585 on 150 images in 5 folds whose shares
    differ by 0.1 (0.496 with one share), and on BreastMNIST-sized stratified folds the
    intercepts add 0.002 to the truth where one share takes 0.002 off it. One share for
    every fold carries no fold's labels; where the folds' shares differ it errs low (0.743
    against a truth of 0.758, where the intercepts give 0.791). Invariant to any earlier
    shift of a fold's logits, so the saved probabilities give the same as the networks'.
    """
    from scipy.optimize import brentq
    from scipy.special import expit

    z, f = logit(p_pos, KEEP_ORDER), np.asarray(fold)
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), but got share={share}.")
    if not np.isfinite(z).all():  # NaN probabilities: nothing to align, no AUC either
        return np.asarray(p_pos, dtype=np.float64)
    out = np.empty_like(z)
    for k in np.unique(f):
        zk = z[f == k]
        # at these ends every row sits below, then above, the share: a root between
        lo, hi = -float(zk.max()) - 40.0, -float(zk.min()) + 40.0
        c = brentq(lambda c, zk=zk: float(expit(zk + c).mean()) - share, lo, hi)
        out[f == k] = expit(zk + c)
    return out


def ensemble(member_probs: Sequence[np.ndarray], scalings: Sequence[Platt]) -> np.ndarray:
    """The fold models' mean probability, each through its own scaling first."""
    if len(member_probs) != len(scalings):
        raise ValueError(
            f"one scaling per member, but got {len(member_probs)} members and "
            f"{len(scalings)} scalings."
        )
    return np.mean([s(p) for s, p in zip(scalings, member_probs, strict=True)], axis=0)


def from_config(config: Mapping[str, Any]) -> list[Platt] | None:
    """The members' scalings saved in a model's ``config.json`` (None for a model saved
    without them: before raydx fitted them, multi-class, anomaly scores, one refit
    model), applied as they were when its threshold was chosen (``KEEP_ORDER_SINCE``)."""
    from raydx.metrics import PROB_EPS

    saved = config.get("member_calibration")
    if not saved:
        return None
    old = int(config.get("format_version", 1)) < KEEP_ORDER_SINCE
    eps = PROB_EPS if old else KEEP_ORDER
    return [Platt(float(s["slope"]), float(s["intercept"]), eps) for s in saved["members"]]


def logit(p: ArrayLike, eps: float | None = None) -> np.ndarray:
    """Log-odds of probabilities clipped as ``raydx.metrics.calibration`` clips them
    (``eps=None``), or at ``eps`` (``KEEP_ORDER``: float64's limits)."""
    from raydx.metrics import PROB_EPS

    lo = PROB_EPS if eps is None else eps
    hi = min(1.0 - lo, float(np.nextafter(1.0, 0.0)))
    q = np.clip(np.asarray(p, dtype=np.float64), lo, hi)
    return np.log(q) - np.log1p(-q)
