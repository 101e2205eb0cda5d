"""Out-of-fold scores with the threshold and shift fitted on the other folds
(``raydx.cross_fit``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from raydx.cross_fit import cross_fitted_scores
from raydx.metrics import calibration, rates
from raydx.operating_point import OperatingPoint
from raydx.prior import fitted_class_mix, shift

YOUDEN = OperatingPoint()


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from their own probabilities (calibrated by construction), 5 folds."""
    rng = np.random.default_rng(seed)
    p = expit(rng.normal(-1.0, 1.5, size=n))
    return rng.random(n) < p, p, rng.permutation(np.arange(n) % 5)


def test_folds_that_disagree_get_each_others_threshold() -> None:
    """Fold 0 scores everything low, fold 1 everything high: Youden's threshold of either
    fold separates it perfectly and fails the other, which only cross-fitting shows."""
    is_pos = np.array([True, False, True, False])
    p = np.array([0.6, 0.2, 0.9, 0.7])
    fold = np.array([0, 0, 1, 1])
    got = cross_fitted_scores({}, is_pos, p, fold, YOUDEN)
    # Fold 0's threshold flags both of fold 1's images; fold 1's flags none of fold 0's.
    assert got["sensitivity"] == 0.5 and got["specificity"] == 0.5
    # Fitted on all four rows, the same rule does better on them: the optimism.
    q = shift(p, *_mix({}, is_pos, p))
    t = YOUDEN.threshold(is_pos.astype(int), q)
    assert sum(rates(is_pos, q, t)) == 1.5


def _mix(params: dict, is_pos: np.ndarray, p: np.ndarray) -> tuple[list, list]:
    mix = fitted_class_mix(params, is_pos, p)
    assert mix is not None
    return mix["trained"], mix["mapped_to"]


@pytest.mark.parametrize("seed", range(5))
def test_miscalibrated_networks_are_shifted_out_of_fold(seed: int) -> None:
    """Probabilities off by +1.5 on the logit scale: as given their intercept is about
    -1.5; each fold shifted by the other folds' intercept lands near 0, and the slope
    (which a shift cannot change) stays near the true 1."""
    is_pos, p, fold = _calibrated(3000, seed)
    off = expit(logit(p) + 1.5)
    assert calibration(is_pos, off)["calibration_intercept"] == pytest.approx(-1.5, abs=0.2)
    got = cross_fitted_scores({}, is_pos, off, fold, YOUDEN)
    assert abs(got["calibration_intercept"]) < 0.1
    assert got["calibration_slope"] == pytest.approx(1.0, abs=0.15)
    assert got["brier"] < calibration(is_pos, off)["brier"]


@pytest.mark.parametrize("seed", range(5))
def test_a_sensitivity_target_holds_about_on_folds_it_was_not_chosen_on(seed: int) -> None:
    is_pos, p, fold = _calibrated(3000, seed)
    got = cross_fitted_scores({}, is_pos, p, fold, OperatingPoint("sensitivity", 0.9))
    assert got["sensitivity"] == pytest.approx(0.9, abs=0.03)
    assert 0 < got["specificity"] < 1


def test_anomaly_scores_are_not_shifted() -> None:
    """An anomaly-scoring autoencoder's squashed error is not a probability: no fit."""
    is_pos, p, fold = _calibrated(500, 0)
    off = expit(logit(p) + 1.0)
    params = {"family": "autoencoder", "ae_mode": "anomaly"}
    got = cross_fitted_scores(params, is_pos, off, fold, YOUDEN)
    expected = calibration(is_pos, off)
    assert got["calibration_intercept"] == pytest.approx(expected["calibration_intercept"])
    assert got["brier"] == pytest.approx(expected["brier"])


def test_a_rate_without_its_class_is_none() -> None:
    got = cross_fitted_scores(
        {}, np.zeros(6, bool), np.linspace(0.1, 0.6, 6), np.arange(6) % 2, YOUDEN
    )
    # One class on the fitted side: the rule's threshold for one class, 0.5.
    assert got["sensitivity"] is None and got["specificity"] == pytest.approx(4 / 6)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="must be 1-D and of one length"):
        cross_fitted_scores({}, [True, False], [0.2, 0.4, 0.5], [0, 1], YOUDEN)
    with pytest.raises(ValueError, match="needs >= 2 folds, but got 1"):
        cross_fitted_scores({}, [True, False], [0.2, 0.4], [0, 0], YOUDEN)


@pytest.mark.parametrize("seed", range(3))
def test_saved_and_own_probabilities_give_the_same_scores(seed: int) -> None:
    """raydx saves probabilities shifted by the fit on every row; cross-fitting them or
    the networks' own gives the same scores, since each fold's fitted intercept absorbs
    any shift of the logits made before it. So callers pass what they hold."""
    from raydx.cross_fit import cross_fitted_probabilities

    is_pos, p, fold = _calibrated(800, seed)
    own = expit(logit(p) + 0.9)
    saved = shift(own, *_mix({}, is_pos, own))
    for point in (YOUDEN, OperatingPoint("sensitivity", 0.9), OperatingPoint("specificity", 0.8)):
        a = cross_fitted_scores({}, is_pos, own, fold, point)
        b = cross_fitted_scores({}, is_pos, saved, fold, point)
        assert a == pytest.approx(b, rel=1e-9, abs=1e-8)  # brentq solves to 1e-10
    # Each fold's rows get the other folds' intercept, slope 1: logit + a.
    moved = cross_fitted_probabilities({}, is_pos, own, fold)
    for f in range(5):
        held = fold == f
        a = calibration(is_pos[~held], own[~held])["calibration_intercept"]
        np.testing.assert_allclose(logit(moved[held]), logit(own[held]) + a, rtol=1e-9)
