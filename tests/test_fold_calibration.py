"""Each fold model recalibrated on its own fold (``raydx.fold_calibration``), and the
cross-fitted scores of such a winner (``raydx.cross_fit`` with ``per_fold``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from raydx.cross_fit import cross_fitted_scores
from raydx.fold_calibration import (
    DEFAULT,
    METHODS,
    Platt,
    aligned_to_share,
    apply_per_fold,
    ensemble,
    fit_per_fold,
    fit_platt,
    from_config,
    with_slope,
)
from raydx.metrics import auc, calibration
from raydx.operating_point import OperatingPoint

YOUDEN = OperatingPoint()


def _disagreeing(
    seed: int, n: int = 600, offsets: tuple[float, ...] = (-3.0, 0.0, 3.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Folds whose models rank alike (the same signal) but score on scales shifted by
    ``offsets`` on the logit scale, as the audit's fold models did."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.arange(n) % len(offsets))
    y = rng.random(n) < 0.3
    z = rng.normal(size=n) + 2.5 * y - 1.0 + np.asarray(offsets)[fold]
    return y, expit(z), fold


@pytest.mark.parametrize("seed", range(10))
def test_an_intercept_per_fold_puts_disagreeing_folds_on_one_scale(seed: int) -> None:
    """Pooled, the shifted folds rank far worse than each does alone; recalibrated fold
    by fold, the pool ranks about as well as its folds, whose own AUCs do not move."""
    y, p, fold = _disagreeing(seed)
    fold_auc = [auc(y[fold == k].astype(int), p[fold == k]) for k in range(3)]
    scaled = apply_per_fold(p, fold, fit_per_fold(y, p, fold))
    assert [auc(y[fold == k].astype(int), scaled[fold == k]) for k in range(3)] == pytest.approx(
        fold_auc, abs=1e-12
    )
    before, after = auc(y.astype(int), p), auc(y.astype(int), scaled)
    assert before < np.mean(fold_auc) - 0.05
    assert after > np.mean(fold_auc) - 0.02 and after > before + 0.04


@pytest.mark.parametrize("seed", range(10))
def test_one_share_puts_disagreeing_folds_on_one_scale_without_their_labels(seed: int) -> None:
    y, p, fold = _disagreeing(seed)
    share = float(y.mean())
    one = aligned_to_share(p, fold, share)
    for k in range(3):
        assert one[fold == k].mean() == pytest.approx(share, abs=1e-9)
        assert auc(y[fold == k].astype(int), one[fold == k]) == pytest.approx(
            auc(y[fold == k].astype(int), p[fold == k]), abs=1e-12
        )
    assert auc(y.astype(int), one) > auc(y.astype(int), p) + 0.04
    # the same from the per-fold recalibrated probabilities: earlier shifts drop out
    scaled = apply_per_fold(p, fold, fit_per_fold(y, p, fold))
    np.testing.assert_allclose(aligned_to_share(scaled, fold, share), one, atol=1e-9)


def test_pooled_ranking_does_not_learn_the_folds_labels_from_their_intercepts() -> None:
    """Fold models with no signal, in folds whose positive shares differ (patient-grouped
    folds of a small cohort): intercepts fitted on each fold's own labels rank a fold with
    more positives higher all through, and the pool scores above chance."""
    rng = np.random.default_rng(0)
    own, one = [], []
    for _ in range(100):
        fold = np.repeat(np.arange(5), 30)
        y = rng.random(150) < np.array([0.1, 0.2, 0.3, 0.4, 0.5])[fold]
        if len(np.unique(y[fold == 0])) < 2:
            continue
        p = expit(rng.normal(size=150) - 1.0)
        own.append(auc(y.astype(int), apply_per_fold(p, fold, fit_per_fold(y, p, fold))))
        one.append(auc(y.astype(int), aligned_to_share(p, fold, float(y.mean()))))
    assert np.mean(own) > 0.6
    assert abs(np.mean(one) - 0.5) < 0.02


def test_one_share_must_be_a_share() -> None:
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\), but got share=1.0"):
        aligned_to_share([0.2, 0.7], [0, 1], 1.0)


@pytest.mark.parametrize("seed", range(10))
def test_each_folds_intercept_makes_its_probabilities_sum_to_its_positives(seed: int) -> None:
    """Calibration in the large, fold by fold: the intercept's defining equation, and
    the same intercept as raydx.metrics.calibration's, with the slope kept at 1."""
    y, p, fold = _disagreeing(seed)
    scalings = fit_per_fold(y, p, fold, "intercept per fold")
    scaled = apply_per_fold(p, fold, scalings)
    for k, s in scalings.items():
        assert s.slope == 1.0
        assert scaled[fold == k].sum() == pytest.approx(y[fold == k].sum(), rel=1e-5)
        expected = calibration(y[fold == k], p[fold == k])["calibration_intercept"]
        assert s.intercept == pytest.approx(expected, abs=1e-4)


def test_platt_recovers_a_known_sigmoid_and_stays_finite_under_separation() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=20000)
    y = rng.random(20000) < expit(0.5 * f - 1.0)  # the true scaling of expit(f)
    got = fit_platt(y, expit(f))
    assert got is not None
    assert (got.slope, got.intercept) == pytest.approx((0.5, -1.0), abs=0.05)
    # Classes that do not overlap: Platt's smoothed targets keep both numbers finite.
    sep = fit_platt([False, False, True, True], [0.1, 0.2, 0.8, 0.9])
    assert sep is not None and np.isfinite([sep.slope, sep.intercept]).all() and sep.slope > 0


def test_a_fold_model_worse_than_chance_is_flattened_not_turned_upside_down() -> None:
    """Platt's slope is kept >= 0: a reversed ranking gets slope 0 (every image of the
    fold at about its positive share), never the inversion that its own rows reward."""
    rng = np.random.default_rng(1)
    y = rng.random(400) < 0.4
    p = expit(-2.0 * y + rng.normal(size=400))
    got = fit_platt(y, p)
    assert got is not None and got.slope == 0.0
    assert got(p) == pytest.approx(np.full(400, y.mean()), abs=0.01)


def test_a_fold_with_one_class_keeps_its_probabilities() -> None:
    y = np.array([True, False, True, False, False, False])
    p = np.array([0.9, 0.2, 0.7, 0.1, 0.3, 0.6])
    fold = np.array([0, 0, 0, 0, 1, 1])  # fold 1 holds negatives only
    assert fit_platt(y[fold == 1], p[fold == 1]) is None
    scalings = fit_per_fold(y, p, fold)
    assert scalings[1] == Platt()
    np.testing.assert_allclose(apply_per_fold(p, fold, scalings)[fold == 1], p[fold == 1])


def test_the_ensemble_averages_each_member_on_its_own_scale() -> None:
    a, b = np.array([0.2, 0.6]), np.array([0.5, 0.9])
    scalings = [Platt(1.0, 1.0), Platt(1.0, -1.0)]
    expected = (expit(logit(a) + 1.0) + expit(logit(b) - 1.0)) / 2
    np.testing.assert_allclose(ensemble([a, b], scalings), expected)
    with pytest.raises(ValueError, match="one scaling per member, but got 2 members and 1"):
        ensemble([a, b], scalings[:1])


def test_the_saved_scalings_round_trip_through_a_config() -> None:
    members = [Platt(1.0, 0.25), Platt(1.0, -0.5)]
    saved = {"method": DEFAULT, "members": [m.to_dict() for m in members]}
    assert saved["members"][0] == {"slope": 1.0, "intercept": 0.25}  # no clip in the file
    config = {"format_version": 2, "member_calibration": saved}
    assert from_config(config) == members
    assert from_config({}) is None  # models saved before, and refit models


def test_a_model_saved_before_format_2_scales_as_it_did() -> None:
    # Its threshold was chosen on probabilities clipped at 1e-7 before the logit, where
    # every probability beyond it tied; format 2 keeps them apart.
    saved = {"method": DEFAULT, "members": [{"slope": 1.0, "intercept": 0.5}]}
    p = np.array([1e-12, 1e-9, 1e-7, 0.5, 1 - 1e-7, 1 - 1e-12])
    old = from_config({"member_calibration": saved})  # no format_version: 1
    assert old is not None and old == from_config(
        {"format_version": 1, "member_calibration": saved}
    )
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    np.testing.assert_array_equal(old[0](p), expit(logit(clipped) + 0.5))
    assert len(np.unique(old[0](p))) == 3  # each tail ties with the clip
    new = from_config({"format_version": 2, "member_calibration": saved})
    assert new == [Platt(1.0, 0.5)]
    assert list(np.argsort(new[0](p))) == list(range(6))
    assert len(np.unique(new[0](p))) == 6


def test_methods_are_named() -> None:
    assert DEFAULT == "intercept per fold" and DEFAULT in METHODS
    assert with_slope("platt per fold") and not with_slope(DEFAULT)
    with pytest.raises(ValueError, match="but got method='platt'"):
        with_slope("platt")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(5))
def test_cross_fitting_refits_each_folds_scaling_within_it(method: str, seed: int) -> None:
    """The saved (per-fold scaled) probabilities, cross-fitted: the threshold from the
    other folds and each fold's scaling from the rest of its own rows. Moving every
    probability by one shift (DiagnosisModel.at_prevalence) changes no decision; the
    fitted rates flatter the cross-fitted ones; scaling per fold beats one pooled
    shift on folds that disagree."""
    y, p, fold = _disagreeing(seed)
    saved = apply_per_fold(p, fold, fit_per_fold(y, p, fold, method))
    got = cross_fitted_scores({}, y, saved, fold, YOUDEN, per_fold=method)
    moved = cross_fitted_scores({}, y, expit(logit(saved) - 1.3), fold, YOUDEN, per_fold=method)
    assert (moved["sensitivity"], moved["specificity"]) == pytest.approx(
        (got["sensitivity"], got["specificity"])
    )
    pooled = cross_fitted_scores({}, y, p, fold, YOUDEN)
    assert got["sensitivity"] + got["specificity"] > pooled["sensitivity"] + pooled["specificity"]
    assert abs(got["calibration_intercept"]) < 0.3


def test_cross_fitting_keeps_a_fold_too_small_to_split() -> None:
    """Folds with one positive each cannot be split in two with a positive in each part:
    their rows stay as saved, and only the threshold comes from the other fold."""
    y = np.array([True, False, False, False, True, False, False, False])
    p = np.array([0.8, 0.3, 0.2, 0.1, 0.35, 0.7, 0.4, 0.2])
    fold = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    got = cross_fitted_scores({}, y, p, fold, YOUDEN, per_fold=DEFAULT)
    flagged = np.empty(len(p), dtype=bool)
    for k in (0, 1):
        t = YOUDEN.threshold(y[fold != k].astype(int), p[fold != k])
        flagged[fold == k] = p[fold == k] >= t
    assert got["sensitivity"] == flagged[y].mean()
    assert got["specificity"] == (~flagged[~y]).mean()
    assert got["brier"] == pytest.approx(calibration(y, p)["brier"])


@pytest.mark.parametrize("seed", range(5))
def test_cross_fitting_does_not_depend_on_the_order_of_the_rows(seed: int) -> None:
    """best.yaml's block is computed on rows by pool row, predictions.parquet lists them
    by sample id: the same rows in any order give the same scores."""
    y, p, fold = _disagreeing(seed, n=300)
    saved = apply_per_fold(p, fold, fit_per_fold(y, p, fold))
    order = np.random.default_rng(seed).permutation(len(y))
    got = cross_fitted_scores({}, y, saved, fold, YOUDEN, per_fold=DEFAULT)
    again = cross_fitted_scores({}, y[order], saved[order], fold[order], YOUDEN, per_fold=DEFAULT)
    assert again == pytest.approx(got, rel=1e-9)


def test_confident_probabilities_keep_their_order_through_the_fold_scalings() -> None:
    # The fits clip at 1e-7; applied with that clip, every probability beyond it came
    # out as one value, and the pooled AUC counted confident images as ties.
    p = np.array([1e-12, 1e-10, 1e-8, 0.2, 0.5, 0.9, 1 - 1e-9, 1 - 1e-11, 0.3, 0.6])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1, 0, 1], bool)
    fold = np.array([0] * 5 + [1] * 5)
    scaled = apply_per_fold(p, fold, fit_per_fold(y, p, fold))
    one = aligned_to_share(scaled, fold, 0.5)
    for q in (scaled, one):
        for k in (0, 1):
            assert list(np.argsort(q[fold == k])) == list(np.argsort(p[fold == k]))
        assert len(np.unique(q)) == len(p)
    assert aligned_to_share([0.2, np.nan], [0, 1], 0.5)[0] == 0.2  # nothing to align
    # a confident fold: most logits near -80 (p ~ 1e-35), beyond a fixed search bracket
    z = np.r_[np.full(7, -80.0) + np.arange(7), np.full(3, 8.0)]
    got = aligned_to_share(expit(z), np.zeros(10, int), 0.35)
    assert got.mean() == pytest.approx(0.35) and list(np.argsort(got)) == list(np.argsort(z))


def test_unapply_per_fold_undoes_apply_per_fold() -> None:
    from raydx.fold_calibration import Platt, apply_per_fold, unapply_per_fold

    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 60)
    fold = np.repeat([0, 1, 2], 20)
    scalings = [Platt(1.0, 0.4), Platt(0.7, -0.2), Platt(1.3, 0.0)]
    saved = apply_per_fold(p, fold, dict(enumerate(scalings)))
    np.testing.assert_allclose(unapply_per_fold(saved, fold, scalings), p, rtol=1e-9)
