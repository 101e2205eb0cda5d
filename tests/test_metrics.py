"""Diagnosis metrics against scikit-learn and hand-computed cases."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)

from raydx.metrics import (
    DIAGNOSIS_METRICS,
    _weighted_auc,
    auc,
    bootstrap_auc_ci,
    calibration,
    ci_by_text,
    diagnosis_metrics,
    net_benefit,
    patient_auc_text,
    patient_metrics,
    youden_threshold,
)

KEYS = set(DIAGNOSIS_METRICS)


def _binary(n: int, seed: int = 0, signal: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.random(n) * (1 - signal) + signal * y, 0, 1).round(2)  # rounding: ties
    return y, p


def _multiclass(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


# ---------------------------------------------------------------- auc


def test_auc_matches_sklearn_on_a_small_example() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc(y, p) == pytest.approx(0.75)
    yy, pp = _binary(200, seed=3)
    assert auc(yy, pp) == pytest.approx(roc_auc_score(yy, pp))


def test_auc_perfect_and_inverted() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auc(y, p) == 1.0
    assert auc(y, 1 - p) == 0.0
    assert auc(y, np.full(5, 0.5)) == 0.5


def test_auc_multiclass_is_macro_ovr() -> None:
    y, p = _multiclass(150, 4, seed=1)
    want = roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(4))
    assert auc(y, p) == pytest.approx(want)


def test_auc_multiclass_skips_absent_classes() -> None:
    y, p = _multiclass(90, 3, seed=2)
    keep = y != 2  # class 2 absent from this fold
    want = np.mean([roc_auc_score(y[keep] == c, p[keep, c]) for c in (0, 1)])
    assert auc(y[keep], p[keep]) == pytest.approx(want)


def test_a_non_finite_score_makes_the_auc_undefined() -> None:
    """Ranked as numbers, NaN sorts above every score: [0.1, nan, 0.2, 0.3] scored 1.0."""
    y = np.array([0, 1, 0, 1])
    assert math.isnan(auc(y, np.array([0.1, np.nan, 0.2, 0.3])))
    assert math.isnan(auc(y, np.full(4, np.nan)))
    assert math.isnan(auc(y, np.array([0.1, np.inf, 0.2, 0.3])))
    assert math.isnan(auc(np.array([0, 1, 2]), np.array([[1, 0, 0], [0, 1, 0], [np.nan] * 3])))
    assert bootstrap_auc_ci(y, np.array([0.1, np.nan, 0.2, 0.3])) == pytest.approx(
        (math.nan, math.nan), nan_ok=True
    )


def test_single_class_gives_nan() -> None:
    assert math.isnan(auc(np.ones(5, int), np.linspace(0, 1, 5)))
    assert math.isnan(auc(np.zeros(5, int), np.linspace(0, 1, 5)))
    _, p = _multiclass(5, 3)
    assert math.isnan(auc(np.full(5, 1), p))
    assert bootstrap_auc_ci(np.ones(5, int), np.linspace(0, 1, 5)) == pytest.approx(
        (math.nan, math.nan), nan_ok=True
    )


def test_bad_shapes_and_labels_raise() -> None:
    with pytest.raises(ValueError, match=r"same length, but got 2 and 3\.$"):
        auc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"0/1 labels .* but got values \[2\]\.$"):
        auc(np.array([1, 2, 2]), np.array([0.1, 0.2, 0.3]))


def test_weighted_auc_equals_auc_of_the_repeated_sample() -> None:
    y, p = _binary(60, seed=4)
    counts = np.random.default_rng(0).integers(0, 4, (3, 60)).astype(float)
    got = _weighted_auc(p, y == 1, counts)
    for row, g in zip(counts.astype(int), got, strict=True):
        assert g == pytest.approx(roc_auc_score(np.repeat(y, row), np.repeat(p, row)))


# ---------------------------------------------------------------- youden


def test_youden_on_a_separable_case() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.05, 0.1, 0.2, 0.7, 0.8, 0.95])
    t = youden_threshold(y, p)
    assert t == 0.5  # every t in (0.2, 0.7] is perfect; the tie goes to 0.5
    assert ((p >= t) == y.astype(bool)).all()
    p_high = np.array([0.6, 0.65, 0.7, 0.8, 0.9, 0.95])  # separable above 0.5
    assert youden_threshold(y, p_high) == 0.8


def test_youden_maximises_j_and_stays_in_unit_interval() -> None:
    y, p = _binary(300, seed=5)
    t = youden_threshold(y, p)
    assert 0.0 <= t <= 1.0 and math.isfinite(t)

    def j(th: float) -> float:
        pred = p >= th
        return pred[y == 1].mean() - pred[y == 0].mean()

    assert j(t) >= max(j(th) for th in np.unique(p)) - 1e-12
    assert youden_threshold(np.ones(4, int), np.array([0.1, 0.2, 0.3, 0.4])) == 0.5


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_point_and_narrows_with_n() -> None:
    y, p = _binary(156, seed=6)
    lo, hi = bootstrap_auc_ci(y, p, n_boot=500, seed=0)
    assert lo <= auc(y, p) <= hi
    y4, p4 = _binary(156 * 16, seed=6)
    lo4, hi4 = bootstrap_auc_ci(y4, p4, n_boot=500, seed=0)
    assert lo4 <= auc(y4, p4) <= hi4
    assert hi4 - lo4 < 0.5 * (hi - lo)
    assert bootstrap_auc_ci(y, p, n_boot=200, seed=1) == bootstrap_auc_ci(y, p, n_boot=200, seed=1)


def test_bootstrap_ci_perfect_scores_is_degenerate() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    assert bootstrap_auc_ci(y, y * 0.8 + 0.1, n_boot=100) == (1.0, 1.0)


def test_bootstrap_ci_multiclass_contains_the_point() -> None:
    y, p = _multiclass(200, 3, seed=7)
    lo, hi = bootstrap_auc_ci(y, p, n_boot=300)
    assert lo <= auc(y, p) <= hi


def test_bootstrap_is_fast() -> None:
    y, p = _binary(156, seed=8)
    start = time.perf_counter()
    bootstrap_auc_ci(y, p, n_boot=1000)
    assert time.perf_counter() - start < 1.0


def _clustered(
    patients: int, per_patient: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images of one patient share a patient-level score (small image noise on top), as
    views of one lesion do; half the patients positive."""
    rng = np.random.default_rng(seed)
    label = np.arange(patients) % 2
    latent = rng.normal(0, 1, patients) + 0.8 * label
    noise = rng.normal(0, 0.1, patients * per_patient)
    groups = np.repeat([f"p{i}" for i in range(patients)], per_patient)
    return np.repeat(label, per_patient), np.repeat(latent, per_patient) + noise, groups


@pytest.mark.parametrize("seed", range(3))
def test_patient_bootstrap_is_wider_when_a_patients_images_move_together(seed: int) -> None:
    """40 patients of 10 near-identical images are 40 observations, not 400: resampling
    images one by one gave an interval a third as wide (it held the true AUC 45% of the
    time); resampling patients gives the width of 40."""
    y, s, groups = _clustered(40, 10, seed)
    lo, hi = bootstrap_auc_ci(y, s, n_boot=1000, seed=0)
    glo, ghi = bootstrap_auc_ci(y, s, groups=groups, n_boot=1000, seed=0)
    assert glo <= auc(y, s) <= ghi
    assert ghi - glo > 2.0 * (hi - lo)
    # One image per patient: patients are images, and the interval is the image one's.
    y1, s1, g1 = _clustered(400, 1, seed)
    lo1, hi1 = bootstrap_auc_ci(y1, s1, n_boot=1000, seed=0)
    glo1, ghi1 = bootstrap_auc_ci(y1, s1, groups=g1, n_boot=1000, seed=0)
    assert ghi1 - glo1 == pytest.approx(hi1 - lo1, rel=0.15)
    assert glo1 == pytest.approx(lo1, abs=0.02) and ghi1 == pytest.approx(hi1, abs=0.02)


def test_patient_bootstrap_is_seeded_and_blind_to_how_ids_are_spelt() -> None:
    y, s, groups = _clustered(30, 4, seed=1)
    first = bootstrap_auc_ci(y, s, groups=groups, n_boot=300, seed=7)
    assert bootstrap_auc_ci(y, s, groups=groups, n_boot=300, seed=7) == first
    assert bootstrap_auc_ci(y, s, groups=groups, n_boot=300, seed=8) != first
    numbers = np.array([int(g[1:]) for g in groups])  # the same patients as ints
    assert bootstrap_auc_ci(y, s, groups=numbers, n_boot=300, seed=7) == first


def test_patient_bootstrap_keeps_every_class_and_checks_its_ids() -> None:
    # Patients with images of both classes, and a multi-class task: every resample keeps
    # each class (patients stratified by their classes), so the interval is a number.
    y = np.array([0, 1, 0, 0, 1, 1, 0, 1])
    p = np.array([0.2, 0.7, 0.4, 0.3, 0.6, 0.9, 0.5, 0.4])
    groups = np.array(list("aabbccdd"))
    lo, hi = bootstrap_auc_ci(y, p, groups=groups, n_boot=500)
    assert 0.0 <= lo <= auc(y, p) <= hi <= 1.0
    ym, pm = _multiclass(90, 3, seed=2)
    lo, hi = bootstrap_auc_ci(ym, pm, groups=np.arange(90) // 3, n_boot=300)
    assert lo <= auc(ym, pm) <= hi
    with pytest.raises(ValueError, match=r"one patient id per image \(8\), but got shape=\(7,\)"):
        bootstrap_auc_ci(y, p, groups=groups[:7])
    missing = np.array(["a", "a", None, "b", "c", "c", "d", "d"], dtype=object)
    with pytest.raises(ValueError, match="but got None at index 2 \\(1 without one\\)"):
        bootstrap_auc_ci(y, p, groups=missing)


def test_a_mixed_class_patient_like_no_other_is_resampled_too() -> None:
    """Alone in its stratum (the only patient with images of both classes), a patient
    was drawn exactly once in every resample; here it decides the AUC (its images are
    scored backwards), so the interval missed that a resample without it separates the
    classes perfectly, as a third of resamples are."""
    neg, pos = np.linspace(0.0, 0.4, 30), np.linspace(0.6, 1.0, 30)
    y = np.r_[np.zeros(30), np.ones(30), np.zeros(10), np.ones(10)].astype(int)
    p = np.r_[neg, pos, np.full(10, 0.9), np.full(10, 0.1)]
    groups = np.r_[np.arange(60), np.full(20, 60)]
    lo, hi = bootstrap_auc_ci(y, p, groups=groups, n_boot=1000, seed=0)
    assert lo <= auc(y, p) < hi == 1.0
    # two mixed-class patients are a stratum of their own, as before; a lone one joins
    # the largest stratum of some of its classes
    from raydx.metrics import _patient_strata

    pure = [[True, False]] * 30 + [[False, True]] * 20
    two = _patient_strata(np.array([*pure, [True, True], [True, True]]))
    assert two[50] == two[51] and two[50] not in set(two[:50])
    one = _patient_strata(np.array([*pure, [True, True]]))
    assert one[50] == one[0]


def test_diagnosis_metrics_say_which_bootstrap_gave_the_interval() -> None:
    y, s, groups = _clustered(20, 5, seed=4)
    p = 1 / (1 + np.exp(-s))
    by_image = diagnosis_metrics(y, p, positive=1, threshold=0.5, n_boot=200)
    by_patient = diagnosis_metrics(y, p, positive=1, threshold=0.5, n_boot=200, groups=groups)
    patients = {"n_positive_patients", "n_negative_patients"}
    assert set(by_patient) - patients == set(by_image) == KEYS
    assert by_patient["n_positive_patients"] == len(set(groups[y == 1]))
    assert by_patient["n_negative_patients"] == len(set(groups[y == 0]))
    assert by_image["auc_ci95_by"] == "image" and by_patient["auc_ci95_by"] == "patient"
    assert by_patient["auc_ci95"] == list(bootstrap_auc_ci(y, p, groups=groups, n_boot=200))
    # the interval alone changes: every other figure is the images'
    same = {k for k in KEYS if by_image[k] == by_patient[k]}
    assert same == KEYS - {"auc_ci95", "auc_ci95_by"}
    assert ci_by_text(by_patient) == " by patient bootstrap" and ci_by_text(by_image) == ""
    assert ci_by_text({"auc_ci95": [0.7, 0.9]}) == ""  # scores saved before the key
    with pytest.raises(ValueError, match="one patient id per image"):
        diagnosis_metrics(y, p, positive=1, threshold=0.5, groups=groups[:3])


@pytest.mark.parametrize("multi", [False, True])
def test_pr_auc_is_undefined_with_one_class_as_the_auc_is(multi: bool) -> None:
    """All positive, average precision is 1.0 whatever the scores: no figure of the model."""
    p = np.random.default_rng(0).random(30)
    probs = np.stack([1 - p, p], axis=1) if multi else p
    for y in (np.ones(30, int), np.zeros(30, int)):
        m = diagnosis_metrics(y, probs, positive=1, threshold=0.5, n_boot=50)
        assert math.isnan(m["auc"]) and math.isnan(m["pr_auc"])
    y = np.r_[np.ones(15, int), np.zeros(15, int)]
    m = diagnosis_metrics(y, probs, positive=1, threshold=0.5, n_boot=50)
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))


# ---------------------------------------------------------------- diagnosis_metrics


@pytest.mark.parametrize("positive", [0, 1])
def test_binary_diagnosis_metrics_match_sklearn(positive: int) -> None:
    y, p1 = _binary(156, seed=9)
    p_pos = p1 if positive == 1 else 1 - p1
    is_pos = y == positive
    m = diagnosis_metrics(y, p_pos, positive=positive, threshold=0.4, n_boot=200)
    assert set(m) == KEYS
    pred = p_pos >= 0.4
    assert m["auc"] == pytest.approx(roc_auc_score(is_pos, p_pos))
    assert m["accuracy"] == pytest.approx(accuracy_score(is_pos, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(is_pos, pred))
    assert m["sensitivity"] == pytest.approx(pred[is_pos].mean())
    assert m["specificity"] == pytest.approx((~pred[~is_pos]).mean())
    assert m["pr_auc"] == pytest.approx(average_precision_score(is_pos, p_pos))
    assert m["accuracy_at_0_5"] == pytest.approx(accuracy_score(is_pos, p_pos >= 0.5))
    assert m["threshold"] == 0.4 and m["n"] == 156
    lo, hi = m["auc_ci95"]
    assert lo <= m["auc"] <= hi


def test_multiclass_diagnosis_metrics() -> None:
    y, p = _multiclass(120, 3, seed=10)
    m = diagnosis_metrics(y, p, positive=2, threshold=0.3, n_boot=200, class_names="abc")
    assert set(m) == KEYS | {"per_class"}
    pred = p.argmax(axis=1)
    assert list(m["per_class"]) == ["a", "b", "c"]  # each class's, as the macro AUC hides
    for c, name in enumerate("abc"):
        got = m["per_class"][name]
        assert got["auc"] == pytest.approx(roc_auc_score(y == c, p[:, c]))
        assert got["recall"] == pytest.approx((pred[y == c] == c).mean())
        assert (got["n"], got["predicted"]) == ((y == c).sum(), (pred == c).sum())
    assert m["auc"] == pytest.approx(np.mean([m["per_class"][n]["auc"] for n in "abc"]))
    assert m["auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro", labels=range(3))
    )
    assert m["accuracy"] == m["accuracy_at_0_5"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    pos_pred = p[:, 2] >= 0.3
    assert m["sensitivity"] == pytest.approx(pos_pred[y == 2].mean())
    assert m["specificity"] == pytest.approx((~pos_pred[y != 2]).mean())
    assert m["pr_auc"] == pytest.approx(average_precision_score(y == 2, p[:, 2]))


def test_diagnosis_metrics_are_plain_json() -> None:
    y, p = _binary(40, seed=11)
    m = diagnosis_metrics(y, p.astype(np.float32), positive=1, threshold=0.5, n_boot=50)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    for k, v in m.items():
        if k == "auc_ci95":
            assert isinstance(v, list) and all(type(x) is float for x in v)
        elif k == "auc_ci95_by":
            assert v == "image"
        elif k in ("n", "n_positive", "n_negative", "n_classes"):
            assert type(v) is int
        else:
            assert type(v) is float, (k, type(v))


def test_diagnosis_metrics_single_class_is_nan_not_error() -> None:
    m = diagnosis_metrics(np.zeros(6, int), np.linspace(0, 1, 6), positive=1, threshold=0.5)
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"]) and math.isnan(m["pr_auc"])
    assert m["specificity"] == 0.5 and m["balanced_accuracy"] == 0.5
    json.dumps(m)


@pytest.mark.parametrize("seed", range(10))
def test_auc_equals_sklearn_with_ties_and_multiclass(seed: int) -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    for p in (rng.random(200), np.round(rng.random(200), 1), rng.random(200).astype(np.float32)):
        assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    probs = rng.dirichlet(np.ones(3), 200)
    labels = rng.integers(0, 3, 200)
    want = roc_auc_score(labels, probs, multi_class="ovr", average="macro")
    assert auc(labels, probs) == pytest.approx(want, abs=1e-12)


def test_fold_workers_do_not_import_sklearn() -> None:
    """scikit-learn costs every fold worker 0.7 s of import; the training path avoids it."""
    import subprocess
    import sys

    code = "import sys, raydx.train, raydx.families, raydx.cv; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_patient_auc_gives_each_patient_one_vote() -> None:
    # Patient A (negative) has four confidently wrong images; B-D have one each.
    groups = np.array(["A", "A", "A", "A", "B", "C", "D"])
    y = np.array([0, 0, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.8, 0.1, 0.95])
    m = patient_metrics(y, p, groups, positive=1)
    # Per patient: A 0.9 (neg), B 0.8 (pos), C 0.1 (neg), D 0.95 (pos): 3 of 4 pairs right.
    assert m["patient_auc"] == pytest.approx(0.75)
    assert m["n_patients"] == 4
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p))  # the image level differs
    assert auc(y, p) != pytest.approx(0.75)
    lo, hi = m["patient_auc_ci95"]
    assert lo <= 0.75 <= hi
    json.dumps(m)  # plain JSON, as test_metrics.json needs


def test_patient_is_positive_if_any_image_is_and_scores_its_mean() -> None:
    groups = np.array(["A", "A", "B", "B", "C"])
    y = np.array([0, 1, 0, 0, 0])  # A has one positive image
    p = np.array([0.2, 0.6, 0.5, 0.5, 0.1])  # A's mean 0.4 < B's 0.5: a wrong pair
    m = patient_metrics(y, p, groups, positive=1)
    assert m["patient_auc"] == pytest.approx(0.5)  # A above C, below B
    # One image per patient: the image-level AUC exactly; multi-class picks the positive.
    single = np.array(["a", "b", "c", "d"])
    yb, pb = np.array([0, 1, 0, 1]), np.array([0.3, 0.7, 0.8, 0.9])
    assert patient_metrics(yb, pb, single, positive=1)["patient_auc"] == auc(yb, pb)
    pm = np.stack([1 - pb, pb], axis=1)
    assert patient_metrics(yb, pm, single, positive=1)["patient_auc"] == auc(yb, pb)
    with pytest.raises(ValueError, match="groups and y must have the same length"):
        patient_metrics(yb, pb, single[:3], positive=1)


def test_patient_auc_text_is_one_wording_with_markup_and_nan() -> None:
    m = {"patient_auc": 0.91234, "patient_auc_ci95": [0.85, 0.96], "n_patients": 40}
    assert patient_auc_text(m) == "AUC 0.912 (95% CI 0.850-0.960, 40 patients)"
    assert patient_auc_text(m, lambda s: f"<b>{s}</b>").startswith("AUC <b>0.912</b> (")
    one_class = {
        "patient_auc": float("nan"),
        "patient_auc_ci95": [float("nan")] * 2,
        "n_patients": 3,
    }
    assert patient_auc_text(one_class) == "AUC undefined: the 3 patients are of one class"


def test_calibration_matches_logistic_recalibration() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    y = rng.random(400) < 0.3
    p = np.clip(0.25 + 0.4 * y + rng.normal(0, 0.2, 400), 0.01, 0.99)
    c = calibration(y, p)
    lp = np.log(p / (1 - p))
    fit = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(lp[:, None], y)
    assert c["calibration_slope"] == pytest.approx(fit.coef_[0, 0], rel=1e-4)
    assert c["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # The intercept with the slope fixed at 1 makes the mean recalibrated risk the prevalence.
    recal = 1 / (1 + np.exp(-(c["calibration_intercept"] + lp)))
    assert recal.mean() == pytest.approx(y.mean(), abs=1e-8)


def test_calibration_reads_too_extreme_and_too_low_risks() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0.05, 0.95, 20_000)
    y = rng.random(true.size) < true
    lt = np.log(true / (1 - true))
    ideal = calibration(y, true)
    assert ideal["calibration_slope"] == pytest.approx(1.0, abs=0.05)
    assert ideal["calibration_intercept"] == pytest.approx(0.0, abs=0.05)
    extreme = calibration(y, 1 / (1 + np.exp(-2 * lt)))  # an overfitted model's logits
    assert extreme["calibration_slope"] == pytest.approx(0.5, abs=0.03)
    low = calibration(y, 1 / (1 + np.exp(-(lt - 1))))  # every risk underestimated
    assert low["calibration_intercept"] == pytest.approx(1.0, abs=0.05)
    assert ideal["brier"] < extreme["brier"] and ideal["brier"] < low["brier"]


def test_calibration_slope_is_nan_when_separated_and_all_nan_for_one_class() -> None:
    sep = calibration(np.array([False, False, True, True]), np.array([0.1, 0.2, 0.7, 0.9]))
    assert math.isnan(sep["calibration_slope"]) and not math.isnan(sep["calibration_intercept"])
    one = calibration(np.array([True, True]), np.array([0.3, 0.9]))
    assert math.isnan(one["calibration_slope"]) and math.isnan(one["calibration_intercept"])
    assert one["brier"] == pytest.approx((0.49 + 0.01) / 2)
    # Saturated probabilities (float32 sigmoid) are clipped, not infinite logits.
    sat = calibration(np.array([False, True, False, True]), np.array([0.0, 1.0, 0.6, 0.4]))
    assert np.isfinite(sat["calibration_slope"]) and np.isfinite(sat["calibration_intercept"])


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]),  # separated but for a tie at the boundary
        ([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.6, 0.6, 0.8, 0.9]),
        ([0, 0, 0, 0, 1, 1, 1, 1], [0.05, 0.1, 0.2, 1, 1, 1, 1, 1]),  # saturated float32
        ([0, 1, 0, 1, 1], [0.3] * 5),  # every score equal: no slope to estimate
        ([0, 1, 0, 1], [1.0] * 4),
    ],
)
def test_calibration_slope_is_nan_where_no_finite_slope_exists(y: list, p: list) -> None:
    c = calibration(np.array(y, bool), np.array(p))
    assert math.isnan(c["calibration_slope"])
    assert np.isfinite(c["calibration_intercept"]) and np.isfinite(c["brier"])


def test_calibration_of_a_non_finite_probability_is_nan_not_an_exception() -> None:
    c = calibration(np.array([False, True, False, True]), np.array([0.1, np.nan, 0.3, 0.8]))
    assert all(math.isnan(v) for v in c.values())


def test_net_benefit_by_hand_and_its_reference_strategies() -> None:
    y = np.array([True, True, False, False, False])
    p = np.array([0.9, 0.3, 0.6, 0.2, 0.1])
    t = np.array([0.25, 0.5])
    # t=0.25 flags 0.9, 0.3, 0.6: TP 2, FP 1; t=0.5 flags 0.9, 0.6: TP 1, FP 1.
    expected = [2 / 5 - 1 / 5 * (0.25 / 0.75), 1 / 5 - 1 / 5 * 1.0]
    np.testing.assert_allclose(net_benefit(y, p, t), expected)
    everyone = net_benefit(y, np.ones(5), t)
    np.testing.assert_allclose(everyone, 0.4 - 0.6 * t / (1 - t))  # prevalence - odds
    perfect = net_benefit(y, y.astype(float), np.linspace(0.05, 0.95, 7))
    np.testing.assert_allclose(perfect, 0.4)  # every cancer found, no biopsy wasted
    with pytest.raises(ValueError, match="thresholds must lie in"):
        net_benefit(y, p, np.array([0.0, 0.5]))


def test_below_chance_is_named_and_chance_or_better_is_not() -> None:
    from raydx.metrics import below_chance_text

    assert below_chance_text(0.5) is None and below_chance_text(0.9) is None
    assert below_chance_text(None) is None and below_chance_text(float("nan")) is None
    text = below_chance_text(0.4321)
    assert text is not None and text.startswith("the cross-validated AUC 0.432 is below 0.5")
    assert "autoencoder" not in text
    assert "reconstruct worse" in str(below_chance_text(0.4, anomaly=True))


def test_a_negative_calibration_slope_is_not_called_too_extreme() -> None:
    from raydx.metrics import slope_meaning

    assert slope_meaning(0.6) == slope_meaning(1.0) == slope_meaning(None)
    assert "too extreme" in slope_meaning(0.6)
    # an audit read "below 1, too extreme" beside a slope of 26
    assert slope_meaning(26.4) == "1 is ideal; above 1, too timid (too near the middle)"
    assert "fewer positives" in slope_meaning(-0.2) and "too extreme" not in slope_meaning(-0.2)


def test_fold_models_on_different_scales_are_warned_about() -> None:
    """A user's search of 10 epochs on 160 photos: fold AUCs 0.99, 0.97 and 1.00, but
    pooled out of fold 0.85, and its threshold called every test image positive."""
    from raydx.metrics import fold_scale_text

    best = {"cv_auc_mean": 0.988, "threshold": 0.0669, "oof": {"pooled_auc": 0.850}}
    text = fold_scale_text(best)
    assert text is not None and text.startswith(
        "the fold models score on different scales: each ranks its own fold well (CV AUC "
        "0.988), but pooled out of fold, on one scale, they reach 0.850. One threshold "
        "(0.0669) fits none of them well"
    )
    # BreastMNIST's winner (0.903 and 0.901), and runs saved before pooled scores: silent
    assert fold_scale_text({**best, "cv_auc_mean": 0.903, "oof": {"pooled_auc": 0.901}}) is None
    assert fold_scale_text({"cv_auc_mean": 0.9, "threshold": 0.5}) is None


def test_one_decision_for_every_image_is_warned_about_whatever_the_auc() -> None:
    from raydx.metrics import diagnosis_metrics, one_class_text

    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])  # perfectly ranked
    low = diagnosis_metrics(y, p, positive=1, threshold=0.05)
    assert low["auc"] == 1.0 and low["specificity"] == 0.0
    assert one_class_text({**low, "positive_class": "melanoma"}, "test image").startswith(
        "at the threshold 0.05 every test image is called 'melanoma' (sensitivity 1.000, "
        "specificity 0.000): the ranking (AUC) may be good while every decision is the same"
    )
    high = {**diagnosis_metrics(y, p, positive=1, threshold=0.9), "positive_class": "m"}
    assert one_class_text(high).startswith("at the threshold 0.9 no labelled image is called 'm'")
    assert one_class_text(diagnosis_metrics(y, p, positive=1, threshold=0.5)) is None
    # a multi-class model's rule for its positive class against the rest: a threshold
    # chosen on single fold models' probabilities called every image of an ensemble that
    assert one_class_text({**low, "n_classes": 3, "positive_class": "m"}).startswith(
        "at the threshold 0.05, by the 'm'-against-the-rest rule (not the predicted classes, "
        "the most probable), every labelled image is called 'm'"
    )
    # one class only: nothing to tell apart, nothing to say
    assert one_class_text(diagnosis_metrics(y[:3], p[:3], positive=1, threshold=0.05)) is None


def test_a_class_all_called_wrong_is_warned_about_in_words_that_are_true() -> None:
    """Sensitivity 0 with specificity 0.6 is not "no image is called 'malignant'": 8 of
    the 25 are; what is true is that no malignant one is."""
    from raydx.metrics import diagnosis_metrics, one_class_text

    y = np.array([1] * 5 + [0] * 20)
    p = np.r_[np.full(5, 0.30), np.linspace(0.1, 0.6, 20)]
    m = {**diagnosis_metrics(y, p, positive=1, threshold=0.4), "positive_class": "malignant"}
    assert (m["sensitivity"], m["specificity"], int((p >= 0.4).sum())) == (0.0, 0.6, 8)
    assert one_class_text(m, "test image") == (
        "at the threshold 0.4 no 'malignant' test image is called 'malignant', though some "
        "others are (sensitivity 0.000, specificity 0.600): a whole class gets the wrong "
        "decision; choose another operating point (--operating-point), and see whether the "
        "fold models score on different scales."
    )
    # Every benign one flagged, not every malignant one: not "every image is called" either.
    y2 = np.array([1] * 4 + [0] * 4)
    p2 = np.array([0.9, 0.8, 0.2, 0.1, 0.6, 0.7, 0.6, 0.7])
    m2 = {**diagnosis_metrics(y2, p2, positive=1, threshold=0.5), "positive_class": "m"}
    assert (m2["sensitivity"], m2["specificity"]) == (0.5, 0.0)
    assert one_class_text(m2).startswith(
        "at the threshold 0.5 every labelled image that is not 'm' is called 'm', though not "
        "every 'm' one is (sensitivity 0.500, specificity 0.000): a whole class gets the "
        "wrong decision"
    )
    # Both classes all wrong: the decisions are upside down.
    m3 = {**diagnosis_metrics(y2, 1 - (y2 * 0.8 + 0.1), positive=1, threshold=0.5)}
    assert (m3["sensitivity"], m3["specificity"]) == (0.0, 0.0)
    assert one_class_text(m3).startswith(
        "at the threshold 0.5 every labelled image gets the wrong decision: no 'the positive "
        "class' one is called 'the positive class', every other one is (sensitivity 0.000, "
        "specificity 0.000)"
    )


def test_an_interval_of_no_width_is_called_the_bootstraps_limit_not_certainty() -> None:
    from raydx.metrics import diagnosis_metrics, no_width_text, patient_metrics

    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.35, 0.6, 0.7, 0.8, 0.9])  # perfectly separated
    m = diagnosis_metrics(y, p, positive=1, threshold=0.5)
    m |= patient_metrics(y, p, np.array(list("aabbccdd")), positive=1)
    assert m["auc_ci95"] == [1.0, 1.0]
    assert no_width_text(m) == (
        "the 95% interval of the AUC over 8 images (1.000-1.000) and the AUC over 4 patients "
        "(1.000-1.000) has no width: every bootstrap resample separates the classes "
        "perfectly, which on so few is the bootstrap's limit, not certainty; a larger test "
        "set is what narrows it honestly."
    )
    # three classes: the image AUC is the macro one, the patient AUC the positive class's
    multi = {**m, "n_classes": 3, "positive_class": "malignant"}
    assert no_width_text(multi).startswith(
        "the 95% interval of the macro AUC over 8 images (1.000-1.000) and the "
        "'malignant'-against-the-rest AUC over 4 patients (1.000-1.000)"
    )
    p[0] = 0.95  # one overlap: a real interval
    assert no_width_text(diagnosis_metrics(y, p, positive=1, threshold=0.5)) is None


@pytest.mark.parametrize("multi", [False, True])
def test_test_metrics_of_a_diverged_model_are_undefined_not_a_crash(multi: bool) -> None:
    # A NaN below the threshold must not count as a correct negative call either.
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.1, np.nan, 0.3, 0.8, 0.9, 0.2])
    if multi:
        p = np.stack([1 - p, p, np.zeros(6)], axis=1)
    m = diagnosis_metrics(y, p, positive=1, threshold=0.5)
    assert m["n"] == 6 and m["n_not_finite"] == 1 and m["threshold"] == 0.5
    for k in ("auc", "accuracy", "sensitivity", "specificity", "pr_auc", "brier"):
        assert math.isnan(m[k]), k
    finite = diagnosis_metrics(y, np.nan_to_num(p), positive=1, threshold=0.5)
    assert set(m) - {"n_not_finite"} == set(finite) - {"per_class"}  # no class scored


def test_a_multi_class_prediction_that_never_picks_a_class_is_warned_of() -> None:
    """An audit: every test image predicted one class of four, accuracy below chance,
    macro AUC 0.86, and no warning (the one there was spoke of a threshold that decides
    nothing in a multi-class task)."""
    from raydx.metrics import collapsed_text, one_class_text, scored_warnings

    y = np.repeat([0, 1, 2, 3], 5)
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(4), 20) * 0.2
    p[np.arange(20), y] += 0.05  # a ranking: each class's own images score it higher
    p[:, 3] += 0.5  # but class 3 is every image's most probable
    p /= p.sum(1, keepdims=True)
    m = diagnosis_metrics(y, p, positive=0, threshold=0.3, class_names=["g", "m", "n", "p"])
    assert m["auc"] > 0.8 and m["accuracy"] == 0.25
    said = collapsed_text(m, "test image")
    assert said == (
        "every test image is predicted 'p' (the most probable class), though the labels hold "
        "5 'g', 5 'm', 5 'n': the macro AUC ranks each class against the rest and can be good "
        "while the decisions are not (each class's AUC and recall: per_class in the metrics JSON)."
    )
    assert said in scored_warnings(m, "test image")
    # the positive class's threshold decides no prediction here: its warning gives way
    assert one_class_text(m) is not None
    assert scored_warnings(m, "test image")[0] == said  # and 5 positive images: few
    p[:5, 0] += 1.0  # 'g' predicted for its own images: 'm' and 'n' are still never
    m = diagnosis_metrics(y, p / p.sum(1, keepdims=True), positive=0, threshold=0.3,
                          class_names=["g", "m", "n", "p"])  # fmt: skip
    assert collapsed_text(m).startswith("no labelled image is predicted 'm' or 'n' (the most")
    m = diagnosis_metrics(y, np.eye(4)[y] * 0.9 + 0.025, positive=0, threshold=0.3)
    assert collapsed_text(m) is None  # every class predicted


def test_a_refit_model_on_another_scale_than_its_threshold_is_warned_of() -> None:
    """An audit: the refit model scored every image above the threshold chosen on the
    fold models' out-of-fold predictions, training images and test split alike."""
    from raydx.metrics import refit_scale_text, winner_warnings

    check = {
        "n": 240,
        "called_positive_training": 1.0,
        "called_positive_oof": 0.46,
        "prob_range_training": [0.287, 0.35],
    }
    best = {"cv_auc_mean": 0.8, "threshold": 0.2697, "refit_check": check}
    said = refit_scale_text(best)
    assert said is not None and said.startswith(
        "the refit model calls each of 240 of its own training images positive at the "
        "threshold 0.2697, which was chosen on the fold models' out-of-fold predictions "
        "(they called 46% of the images so); its probabilities there lie in 0.287-0.350"
    )
    assert said in winner_warnings(best, None, anomaly=False)
    none = {**best, "refit_check": {**check, "called_positive_training": 0.0}}
    assert refit_scale_text(none).startswith("the refit model calls none of 240")  # type: ignore[union-attr]
    one = {**best, "refit_check": {**check, "called_positive_oof": 1.0}}
    assert refit_scale_text(one) is None  # the fold models decided all alike too
    fine = {**best, "refit_check": {**check, "called_positive_training": 0.4}}
    assert refit_scale_text(fine) is None and refit_scale_text({"threshold": 0.5}) is None


def test_patient_metrics_refuses_images_without_a_patient() -> None:
    """A review: missing ids were merged into one made-up patient ("None")."""
    y = np.array([0, 0, 1, 1, 0, 1])
    groups = np.array(["a", "b", None, None, "c", None], dtype=object)
    with pytest.raises(
        ValueError,
        match=r"name a patient for every image, but got None at index 2 \(3 without one\)",
    ):
        patient_metrics(y, [0.1, 0.2, 0.6, 0.7, 0.8, 0.9], groups, positive=1)


def test_bootstrap_and_positive_arguments_are_checked() -> None:
    y = np.array([0, 1, 0, 1, 1, 0])
    prob = np.array([0.1, 0.8, 0.3, 0.6, 0.9, 0.2])
    with pytest.raises(ValueError, match=r"^n_boot must be >= 1, but got n_boot=0\.$"):
        bootstrap_auc_ci(y, prob, n_boot=0)
    with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\), but got alpha=1\.0\.$"):
        bootstrap_auc_ci(y, prob, alpha=1.0)
    three = np.full((6, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"class index in \[0, 2\], but got positive=3\.$"):
        diagnosis_metrics(np.array([0, 1, 2, 0, 1, 2]), three, positive=3, threshold=0.5)


def test_an_auc_on_few_positives_is_warned_of_with_its_counts() -> None:
    """Screening data: 2 malignant test images among 100. The bootstrap's "95%" interval
    held the true AUC in 60% of simulated draws (bench/few_positives_ci.py); the metrics
    carry the counts, and a warning says what the interval cannot (an audit)."""
    from raydx.metrics import few_positives_text, scored_warnings

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(100, np.int64), np.ones(2, np.int64)]
    p = 1 / (1 + np.exp(-np.r_[rng.normal(0, 1, 100), rng.normal(1.5, 1, 2)]))
    m = diagnosis_metrics(y, p, positive=1, threshold=0.5, n_boot=100)
    assert (m["n_positive"], m["n_negative"]) == (2, 100)
    said = few_positives_text({**m, "positive_class": "malignant"})
    assert said is not None and said.startswith(
        "the AUC and its 95% interval rest on 2 'malignant' images and 100 others: a "
        "bootstrap resamples only those it has"
    )
    assert "one image moves the sensitivity by 1/2" in said
    assert few_positives_text(m) in scored_warnings(m, "test image")
    # by patient: 12 positive images of 3 patients are 3 units, not 12
    y12 = np.r_[np.zeros(100, np.int64), np.ones(12, np.int64)]
    p12 = np.r_[p[:100], np.full(12, 0.7)]
    g12 = np.r_[np.arange(100).astype(str), np.repeat(["a", "b", "c"], 4)]
    by_patient = diagnosis_metrics(y12, p12, positive=1, threshold=0.5, n_boot=50, groups=g12)
    assert (by_patient["n_positive"], by_patient["n_positive_patients"]) == (12, 3)
    assert "rest on 3 positive patients and 100 others" in str(few_positives_text(by_patient))
    by_image = diagnosis_metrics(y12, p12, positive=1, threshold=0.5, n_boot=50)
    assert few_positives_text(by_image) is None  # 12 images: enough, image by image
    # enough of both, or none of one (the AUC is undefined, said elsewhere): no warning
    ten = np.r_[np.zeros(100, np.int64), np.ones(10, np.int64)]
    assert (
        few_positives_text(
            diagnosis_metrics(
                ten, np.r_[p[:100], np.full(10, 0.6)], positive=1, threshold=0.5, n_boot=20
            )
        )
        is None
    )
    assert (
        few_positives_text(
            diagnosis_metrics(y[:100], p[:100], positive=1, threshold=0.5, n_boot=20)
        )
        is None
    )


def test_few_negatives_or_a_rare_class_are_said_as_such() -> None:
    """A review: with few negatives the rate that one image moves is the specificity; a
    macro AUC rests on its rarest class; an undefined AUC gets no such warning."""
    from raydx.metrics import few_positives_text

    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(3, np.int64), np.ones(100, np.int64)]
    p = rng.random(103)
    said = str(few_positives_text(diagnosis_metrics(y, p, positive=1, threshold=0.5, n_boot=20)))
    assert "rest on 100 positive images and 3 others" in said
    assert "one image moves the specificity by 1/3" in said
    ym = np.repeat([0, 1, 2], [100, 50, 3])
    pm = rng.dirichlet(np.ones(3), len(ym))
    m = diagnosis_metrics(ym, pm, positive=1, threshold=0.3, n_boot=20, class_names=["a", "b", "c"])
    assert str(few_positives_text(m)).startswith(
        "the macro AUC and its 95% interval rest on 3 'c' images"
    )
    nan = diagnosis_metrics(y, np.full(103, np.nan), positive=1, threshold=0.5, n_boot=20)
    assert few_positives_text(nan) is None
