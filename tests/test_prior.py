"""Mapping probabilities from the training class mix to the data's (``raydx.prior``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax
from sklearn.linear_model import LogisticRegression

from raydx.families.gan import top_up
from raydx.metrics import PROB_EPS, auc, calibration
from raydx.prior import fitted_class_mix, shift, to_prevalence, training_mix, why


def _gaussian_posteriors(
    n: int, prior: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classes with unit Gaussians at 0, 1.5, 3, ...: labels, balanced and true posteriors."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(prior), size=n, p=prior)
    x = rng.normal(size=n) + 1.5 * y
    loglik = -0.5 * (x[:, None] - 1.5 * np.arange(len(prior))) ** 2
    return y, softmax(loglik, axis=1), softmax(loglik + np.log(prior), axis=1)


@pytest.mark.parametrize("prior", [[0.73, 0.27], [0.5, 0.3, 0.2], [0.1, 0.6, 0.1, 0.2]])
def test_shift_turns_balanced_posteriors_into_the_true_ones(prior: list[float]) -> None:
    pi = np.array(prior)
    k = len(pi)
    _, balanced, true = _gaussian_posteriors(500, pi)
    uniform = np.full(k, 1 / k)
    np.testing.assert_allclose(shift(balanced, uniform, pi), true, rtol=1e-10)
    if k == 2:  # the binary form takes the second class's probability
        np.testing.assert_allclose(shift(balanced[:, 1], uniform, pi), true[:, 1], rtol=1e-10)
    # Back again, and no change between equal mixes.
    np.testing.assert_allclose(shift(true, pi, uniform), balanced, rtol=1e-10)
    np.testing.assert_allclose(shift(true, pi, pi), true, rtol=1e-12)


def test_binary_shift_keeps_the_ranking_and_the_auc() -> None:
    y, balanced, _ = _gaussian_posteriors(400, np.array([0.8, 0.2]), seed=1)
    p = balanced[:, 1]
    q = shift(p, np.array([0.5, 0.5]), np.array([0.8, 0.2]))
    assert (np.argsort(p, kind="stable") == np.argsort(q, kind="stable")).all()
    assert auc(y, q) == auc(y, p)
    assert (q < p).all()  # the rare class was overstated
    # saturated float32 sigmoids move as the clipped scores the calibration fit sees
    mixes = np.array([0.5, 0.5]), np.array([0.8, 0.2])
    eps = PROB_EPS
    assert (
        shift(np.array([0.0, 1.0]), *mixes).tolist()
        == shift(np.array([eps, 1 - eps]), *mixes).tolist()
    )


def test_the_fitted_shift_leaves_no_intercept_even_with_saturated_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(160) < 0.3
    p = np.where(rng.random(160) < 0.3, 1.0, rng.uniform(0.2, 1.0, 160))  # 1.0 as float32 gives
    mix = fitted_class_mix({"family": "cnn"}, y, p)
    assert mix is not None and abs(mix["shift"]) > 1  # far from the pool's odds
    moved = shift(p, mix["trained"], mix["mapped_to"])
    assert abs(calibration(y, moved)["calibration_intercept"]) < 1e-6


# Confident probabilities of both classes, as over-confident networks give them, with
# exact 0 (float32 sigmoids saturate there) and both sides of the fit's clip at 1e-7.
LOW = [0.0, 1e-300, 1e-200, 1e-30, 1e-12, 1e-9, PROB_EPS]
CONFIDENT = np.array([*LOW, 0.3, 0.6, 1 - 1e-9, 1 - 1e-12, 1 - 1e-14])


@pytest.mark.parametrize("share", [0.001, 0.05, 0.5, 0.9])
def test_a_prevalence_move_is_bayes_rule_keeping_the_order_of_confident_probabilities(
    share: float,
) -> None:
    now = 0.3
    moved = to_prevalence(CONFIDENT, now, share)
    assert (np.diff(moved) > 0).all()  # no two tie, however confident
    # Bayes' rule: within the fit's clip, shift's numbers; beyond it, the odds moved,
    # where shift gives them all one value
    inside = (CONFIDENT >= PROB_EPS) & (CONFIDENT <= 1 - PROB_EPS)
    mixes = [1 - now, now], [1 - share, share]
    np.testing.assert_allclose(moved[inside], shift(CONFIDENT[inside], *mixes), rtol=1e-12)
    odds = CONFIDENT[1:7] / (1 - CONFIDENT[1:7]) * (share / (1 - share)) / (now / (1 - now))
    np.testing.assert_allclose(moved[1:7], odds / (1 + odds), rtol=1e-12)
    assert len(set(shift(CONFIDENT[:7], *mixes).tolist())) == 1
    # Moving twice is moving once; moving back restores; the same share is the identity.
    twice = to_prevalence(to_prevalence(CONFIDENT, now, 0.7), 0.7, share)
    np.testing.assert_allclose(twice[1:], moved[1:], rtol=1e-12)
    back = to_prevalence(moved, share, now)
    np.testing.assert_allclose(back[1:], CONFIDENT[1:], rtol=1e-12)
    assert to_prevalence(CONFIDENT, now, now).tolist() == CONFIDENT.tolist()
    y = np.array([0, 1] * 6)
    assert auc(y, moved) == auc(y, CONFIDENT)


def test_a_prevalence_move_takes_shares() -> None:
    for bad in ({"now": 0.0, "share": 0.1}, {"now": 0.3, "share": 1.0}):
        with pytest.raises(ValueError, match=r"must be in \(0, 1\), but got"):
            to_prevalence(np.array([0.5]), **bad)


def test_shift_restores_the_calibration_of_class_weighted_training() -> None:
    """sklearn's class_weight='balanced' is a weighted loss as raydx's: its probabilities
    are miscalibrated by the prior shift, and mapping them back mends the intercept."""
    rng = np.random.default_rng(3)
    n = 20000
    y = (rng.random(n) < 0.15).astype(int)
    x = (rng.normal(size=n) + 1.2 * y)[:, None]
    fit = LogisticRegression(class_weight="balanced").fit(x[: n // 2], y[: n // 2])
    p = fit.predict_proba(x[n // 2 :])[:, 1]
    held = y[n // 2 :]
    prior = np.array([1 - held.mean(), held.mean()])
    before = calibration(held.astype(bool), p)
    after = calibration(held.astype(bool), shift(p, np.array([0.5, 0.5]), prior))
    assert before["calibration_intercept"] < -1.0
    assert abs(after["calibration_intercept"]) < 0.1
    assert after["brier"] < before["brier"]
    assert after["calibration_slope"] == pytest.approx(1.0, abs=0.1)


def test_training_mix_follows_the_class_balance_and_the_gans_top_up() -> None:
    counts = np.array([456.0, 168.0])  # BreastMNIST's pool: benign/normal, malignant
    np.testing.assert_allclose(training_mix({}, counts), counts / 624)
    np.testing.assert_allclose(training_mix({"class_balance": "none"}, counts), counts / 624)
    for balance in ("weighted", "sampler"):
        np.testing.assert_allclose(training_mix({"class_balance": balance}, counts), [0.5, 0.5])
    gan = {"family": "gan", "gan_mode": "augment", "synthetic_ratio": 0.5}
    topped = counts + top_up(counts.astype(int), 312)
    assert topped.tolist() == [468, 468]
    np.testing.assert_allclose(training_mix(gan, counts), [0.5, 0.5])
    small = training_mix({**gan, "synthetic_ratio": 0.25}, counts)  # 156 generated
    np.testing.assert_allclose(small, [456 / 780, 324 / 780])
    # Defaults are the family's: augment mode at ratio 0.5.
    np.testing.assert_allclose(training_mix({"family": "gan"}, counts), [0.5, 0.5])
    disc = {"family": "gan", "gan_mode": "disc_features"}
    np.testing.assert_allclose(training_mix(disc, counts), counts / 624)
    anomaly = {"family": "autoencoder", "ae_mode": "anomaly", "class_balance": "weighted"}
    np.testing.assert_allclose(training_mix(anomaly, counts), counts / 624)
    three = np.array([10.0, 30.0, 60.0])
    np.testing.assert_allclose(training_mix({"class_balance": "sampler"}, three), [1 / 3] * 3)


def test_expit_form_agrees() -> None:
    """Binary shift is a logit offset of log(prior ratio / train ratio)."""
    z = np.linspace(-6, 6, 25)
    got = shift(expit(z), np.array([0.5, 0.5]), np.array([0.7, 0.3]))
    np.testing.assert_allclose(got, expit(z + np.log(0.3 / 0.7)), rtol=1e-12)


def test_fitted_class_mix_is_the_out_of_fold_intercept_written_as_a_mix() -> None:
    """Balanced posteriors of a 27%-positive pool: the fitted mix finds the balanced
    training mix that Bayes' rule assumes, and the mapped probabilities match the pool's
    share in the large; networks that learnt other odds get their own shift."""
    y, balanced, true = _gaussian_posteriors(20000, np.array([0.73, 0.27]), seed=3)
    is_pos = y == 1
    mix = fitted_class_mix({"class_balance": "sampler"}, is_pos, balanced[:, 1])
    assert mix is not None
    assert mix["nominal"] == [0.5, 0.5]
    assert mix["trained"] == pytest.approx([0.5, 0.5], abs=0.02)
    assert mix["mapped_to"] == pytest.approx([1 - is_pos.mean(), is_pos.mean()])
    mapped = shift(balanced[:, 1], mix["trained"], mix["mapped_to"])
    assert mapped.sum() == pytest.approx(is_pos.sum(), rel=1e-6)  # the intercept's equation
    assert calibration(is_pos, mapped)["calibration_intercept"] == pytest.approx(0, abs=1e-6)
    own = calibration(is_pos, balanced[:, 1])["calibration_intercept"]
    assert mix["shift"] == pytest.approx(own)
    # A network that learnt odds 3 times too low, though nominally trained on the pool.
    low = expit(np.log(true[:, 1] / true[:, 0]) - np.log(3))
    fit = fitted_class_mix({"class_balance": "none"}, is_pos, low)
    assert fit is not None and fit["nominal"] == pytest.approx(fit["mapped_to"])
    assert fit["shift"] == pytest.approx(np.log(3), abs=0.1)
    np.testing.assert_allclose(shift(low, fit["trained"], fit["mapped_to"]), true[:, 1], atol=0.03)
    # Anomaly scores are no posteriors; one class has no intercept.
    assert fitted_class_mix({"family": "autoencoder", "ae_mode": "anomaly"}, is_pos, low) is None
    assert fitted_class_mix({}, np.ones(5, bool), np.full(5, 0.5)) is None


def test_why_names_what_changed_the_training_mix() -> None:
    assert why({"class_balance": "sampler"}) == "class balancing, `class_balance: sampler`"
    assert "GAN augmentation" in why({"family": "gan", "class_balance": "none"})
