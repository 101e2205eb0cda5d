"""Diagnosis metrics: ROC AUC (binary and macro one-vs-rest), Youden's threshold,
a bootstrap CI, calibration, decision-curve net benefit, patient-level AUC and the
summary written for the held-out test set.

Scalar metrics are plain Python numbers so results can go straight to JSON. A metric
that is undefined on the given labels (one class only) is ``nan``, never an exception:
small validation folds and bootstrap resamples hit that case routinely.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# Bootstrap resamples are processed in chunks of at most this many (resample, item) cells.
_CHUNK_CELLS = 2_000_000


# What ``diagnosis_metrics`` returns: the contract of ``test_metrics.json``.
DIAGNOSIS_METRICS = (
    "auc",
    "auc_ci95",
    "auc_ci95_by",
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "pr_auc",
    "threshold",
    "accuracy_at_0_5",
    "brier",
    "calibration_intercept",
    "calibration_slope",
    "n",
    "n_positive",
    "n_negative",
    "n_classes",
)
FEW_FOR_CI = 10  # fewer positive (or other) images or patients: the interval is too narrow


def auc(y: np.ndarray, prob: np.ndarray) -> float:
    """ROC AUC; ``nan`` when fewer than two classes are present, or any score is not
    finite (a diverged network: ranked as numbers, NaN would sort above every score).

    ``prob`` 1-D: binary, ``y`` in {0, 1} marks the positive class. ``prob`` (N, C):
    macro one-vs-rest AUC over the classes, as sklearn's ``roc_auc_score(...,
    multi_class="ovr", average="macro", labels=range(C))``; classes absent from ``y``
    are left out of the mean instead of failing (a small fold may lack a rare class).
    """
    y, prob = _check(y, prob)
    if not np.isfinite(prob).all():
        return math.nan
    if prob.ndim == 1:
        y01 = _binary(y, "y")
        if y01.all() or not y01.any():
            return math.nan
        return _rank_auc(y01.astype(bool), prob)
    present = [c for c in range(prob.shape[1]) if 0 < np.count_nonzero(y == c) < len(y)]
    if len(np.unique(y)) < 2 or not present:
        return math.nan
    return float(np.mean([_rank_auc(y == c, prob[:, c]) for c in present]))


def _rank_auc(is_pos: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney U / (n_pos x n_neg), ties at half: what ``roc_auc_score`` computes.

    Plain numpy, so that fold workers need not import scikit-learn (0.7 s per process,
    paid by every worker of every trial).
    """
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]  # 1-based, ties averaged
    n_pos = int(is_pos.sum())
    n_neg = len(is_pos) - n_pos
    return float((ranks[is_pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def youden_threshold(y01: np.ndarray, prob: np.ndarray) -> float:
    """Threshold maximising sensitivity + specificity - 1 (predict positive iff p >= t).

    Candidates are the observed scores and 0.5; among equally good thresholds the one
    closest to 0.5 wins, so a separable set gets 0.5 when 0.5 separates it rather than
    an extreme score that would not transfer. ``0.5`` when only one class is present.
    """
    y01, prob = _check(y01, prob)
    if prob.ndim != 1:
        raise ValueError(
            f"prob must be 1-D (positive-class probability), but got shape={prob.shape}."
        )
    is_pos = _binary(y01, "y01")
    finite_scores(prob)
    pos = np.sort(prob[is_pos])
    neg = np.sort(prob[~is_pos])
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    cand = np.unique(np.concatenate([prob, [0.5]]))  # finite, as finite_scores checked
    cand = cand[(cand >= 0.0) & (cand <= 1.0)]  # 0.5 always stays
    tpr = 1.0 - np.searchsorted(pos, cand, side="left") / len(pos)
    fpr = 1.0 - np.searchsorted(neg, cand, side="left") / len(neg)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    t = cand[best[np.argmin(np.abs(cand[best] - 0.5))]]
    return float(np.clip(t, 0.0, 1.0))


def bootstrap_auc_ci(
    y: np.ndarray,
    prob: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc`; ``(nan, nan)`` if it is undefined.

    Resamples are stratified by class (each class resampled with replacement to its own
    size), so no resample loses a class and the interval reflects score noise rather than
    class-mix noise. All resamples are scored at once from counts, without re-sorting.

    ``groups`` (patient ids, one per image): patients are resampled instead of images,
    each image counted as often as its patient is drawn. Images of one patient are not
    independent (40 patients of 10 images: an image bootstrap's 95% interval held the
    true AUC 45% of the time); drawing them one by one would make the interval too
    narrow. Patients are stratified by the classes among their images (with one class
    per patient, by class), so again no resample loses a class; a mixed-class patient
    alone in a stratum is pooled with patients of some of their classes
    (:func:`_patient_strata`).
    """
    y, prob = _check(y, prob)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, but got n_boot={n_boot}.")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), but got alpha={alpha}.")
    patient = None if groups is None else _patient_index(groups, len(y))
    labels = _binary(y, "y").astype(np.int64) if prob.ndim == 1 else y.astype(np.int64)
    classes = np.unique(labels)
    if len(classes) < 2 or not np.isfinite(prob).all():
        return (math.nan, math.nan)
    if prob.ndim == 1:
        tasks = [(prob, labels == 1)]
    else:
        tasks = [(prob[:, c], labels == c) for c in classes if c < prob.shape[1]]
    rng = np.random.default_rng(seed)
    n = len(labels)
    if patient is None:
        units, members = n, [np.flatnonzero(labels == c) for c in classes]
    else:
        # each patient's stratum: the set of classes among their images
        has = np.zeros((patient.max() + 1, len(classes)), dtype=bool)
        has[patient, np.searchsorted(classes, labels)] = True
        stratum = _patient_strata(has)
        units, members = len(has), [np.flatnonzero(stratum == s) for s in np.unique(stratum)]
    chunk = max(1, _CHUNK_CELLS // n)
    scores = []
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        offset = np.arange(b)[:, None] * units
        draws = [idx[rng.integers(0, len(idx), size=(b, len(idx)))] for idx in members]
        flat = np.concatenate([(d + offset).ravel() for d in draws])
        counts = np.bincount(flat, minlength=b * units).reshape(b, units).astype(np.float64)
        if patient is not None:  # each image as often as its patient was drawn
            counts = counts[:, patient]
        scores.append(np.mean([_weighted_auc(s, p, counts) for s, p in tasks], axis=0))
    boot = np.concatenate(scores)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


def _patient_strata(has: np.ndarray) -> np.ndarray:
    """Each patient's bootstrap stratum, from ``has`` (patients x classes: which classes
    their images hold).

    Patients are stratified by that set of classes, so that no resample loses a class.
    A stratum of one patient would be drawn exactly once in every resample, adding no
    variance: a mixed-class patient whom no other patient resembles joins the largest
    stratum of patients whose classes are among theirs, where every class they hold
    is still guaranteed by another stratum.
    """
    sets, stratum = np.unique(has, axis=0, return_inverse=True)
    stratum = stratum.ravel()
    size = np.bincount(stratum, minlength=len(sets))
    for s in np.flatnonzero((size == 1) & (sets.sum(axis=1) > 1)):
        others = (size > 0) & (np.arange(len(sets)) != s)
        if not sets[others].any(axis=0)[sets[s]].all():
            continue  # the only patient of one of their classes' strata: kept as drawn
        within = np.flatnonzero(others & (size > 1) & ~(sets & ~sets[s]).any(axis=1))
        if len(within):
            t = within[np.argmax(size[within])]
            stratum[stratum == s] = t
            size[t], size[s] = size[t] + 1, 0
    return stratum


def _patient_index(groups: Any, n: int) -> np.ndarray:
    """Each image's patient as a number 0..P-1 (ids compared as text, as
    :func:`patient_metrics` does)."""
    groups = np.asarray(groups)
    if groups.ndim != 1 or len(groups) != n:
        raise ValueError(
            f"groups must hold one patient id per image ({n}), but got shape={groups.shape}."
        )
    missing = [i for i, g in enumerate(groups.tolist()) if g is None or g != g]  # None, NaN
    if missing:
        raise ValueError(
            f"groups must name a patient for every image, but got {groups[missing[0]]!r} "
            f"at index {missing[0]} ({len(missing)} without one)."
        )
    return np.unique(groups.astype(str), return_inverse=True)[1].ravel()


# diagnosis_metrics' figures that come from the probabilities
TEST_KEYS_OF_PROBABILITIES = (
    "auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "pr_auc",
    "accuracy_at_0_5", "brier", "calibration_intercept", "calibration_slope",
)  # fmt: skip


def diagnosis_metrics(
    y: np.ndarray,
    prob: np.ndarray,
    *,
    positive: int,
    threshold: float,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Test-set summary for one positive class, at a threshold chosen beforehand.

    ``y`` holds class indices. Binary (``prob`` 1-D, the positive-class probability):
    predicted positive iff ``prob >= threshold``; ``accuracy_at_0_5`` is MedMNIST's
    convention. Multi-class (``prob`` (N, C)): accuracies come from the argmax and AUC
    is macro one-vs-rest; sensitivity, specificity and calibration are the positive
    class vs rest at ``threshold`` on ``prob[:, positive]``.

    ``groups`` (patient ids): the AUC's interval resamples patients, not images
    (:func:`bootstrap_auc_ci`); ``auc_ci95_by`` says which (``"patient"``/``"image"``).
    Multi-class also gets ``per_class`` (by ``class_names``, else index): each class's
    one-vs-rest AUC (a macro mean hides a weak class), recall of the predicted class,
    and how many images are predicted it (``collapsed_text`` reads these).
    """
    y, prob = _check(y, prob)
    y = y.astype(np.int64)
    is_pos = y == positive
    if groups is not None:
        _patient_index(groups, len(y))  # checked before any figure, a diverged model too
    ci_by = "image" if groups is None else "patient"
    if not np.isfinite(prob).all():
        # A diverged model (NaN): every figure is undefined, and a NaN below the
        # threshold must not count as a correct negative call.
        undefined = dict.fromkeys(TEST_KEYS_OF_PROBABILITIES, math.nan)
        return {
            **undefined,
            "auc_ci95": [math.nan, math.nan],
            "auc_ci95_by": ci_by,
            "threshold": float(threshold),
            "n": len(y),
            **_counts(is_pos, groups),
            "n_classes": 2 if prob.ndim == 1 else int(prob.shape[1]),
            "n_not_finite": int((~np.isfinite(prob)).reshape(len(y), -1).any(1).sum()),
        }
    if prob.ndim == 1:
        p_pos = prob
        pred_pos = p_pos >= threshold
        accuracy = _mean(pred_pos == is_pos)
        accuracy_05 = _mean((p_pos >= 0.5) == is_pos)
        auc_labels = is_pos.astype(np.int64)
    else:
        if not 0 <= positive < prob.shape[1]:
            raise ValueError(
                f"positive must be a class index in [0, {prob.shape[1] - 1}], "
                f"but got positive={positive}."
            )
        p_pos = prob[:, positive]
        accuracy = accuracy_05 = _mean(np.argmax(prob, axis=1) == y)
        auc_labels = y
    sens, spec = rates(is_pos, p_pos, threshold)
    if prob.ndim == 1:
        balanced = _nanmean([sens, spec])
    else:
        pred = np.argmax(prob, axis=1)
        balanced = _nanmean([_mean(pred[y == c] == c) for c in np.unique(y)])
    ci = bootstrap_auc_ci(auc_labels, prob, groups=groups, n_boot=n_boot, seed=seed)
    from sklearn.metrics import average_precision_score

    # undefined with one class, as the AUC: all positive, average precision is 1.0 anyway
    two_sided = bool(is_pos.any() and not is_pos.all())
    pr_auc = float(average_precision_score(is_pos, p_pos)) if two_sided else math.nan
    per_class = {}
    if prob.ndim == 2:
        names = list(class_names) if class_names is not None else []
        pred = np.argmax(prob, axis=1)
        for c in range(prob.shape[1]):
            here = y == c
            two = bool(here.any() and not here.all())
            per_class[names[c] if c < len(names) else str(c)] = {
                "auc": auc(here.astype(np.int64), prob[:, c]) if two else math.nan,
                "recall": _mean(pred[here] == c),
                "n": int(here.sum()),
                "predicted": int((pred == c).sum()),
            }
    return {
        **({"per_class": per_class} if per_class else {}),
        "auc": auc(auc_labels, prob),
        "auc_ci95": [ci[0], ci[1]],
        "auc_ci95_by": ci_by,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "sensitivity": sens,
        "specificity": spec,
        "pr_auc": pr_auc,
        "threshold": float(threshold),
        "accuracy_at_0_5": accuracy_05,
        **calibration(is_pos, p_pos),
        "n": len(y),
        **_counts(is_pos, groups),
        "n_classes": 2 if prob.ndim == 1 else int(prob.shape[1]),
    }


def _counts(is_pos: np.ndarray, groups: np.ndarray | None) -> dict[str, int]:
    """The images (and, with ``groups``, the patients) each estimate rests on: positive,
    and the others (a patient with both counts on both sides)."""
    out = {"n_positive": int(is_pos.sum()), "n_negative": int((~is_pos).sum())}
    if groups is not None:
        g = np.asarray(groups).astype(str)
        out["n_positive_patients"] = len(set(g[is_pos]))
        out["n_negative_patients"] = len(set(g[~is_pos]))
    return out


def few_positives_text(m: Mapping[str, Any]) -> str | None:
    """A warning when the AUC's interval rests on fewer than ``FEW_FOR_CI`` positive (or
    other) images, or patients where it resamples patients: a bootstrap resamples only
    those it has, so its interval is far too narrow (``bench/few_positives_ci.py``: with
    2 positives beside 100 negatives, the "95%" interval held the true AUC in 60% of
    the draws). Screening data with rare malignant cases meet this first."""
    auc_value = m.get("auc")
    if auc_value is None or not np.isfinite(auc_value):
        return None  # undefined (one class, a diverged model): said elsewhere
    per = m.get("per_class")
    if per:  # the macro AUC: each class against the rest, the fewest class first
        name, few = min(per.items(), key=lambda kv: kv[1].get("n", 0))
        n = few.get("n", 0)
        if not n or n >= FEW_FOR_CI:
            return None
        return (
            f"the macro AUC and its 95% interval rest on {n} {name!r} "
            f"image{'s' * (n != 1)}: a bootstrap resamples only those it has, so with "
            f"fewer than {FEW_FOR_CI} of a class the interval is far too narrow "
            "(bench/few_positives_ci.py); read that class's AUC as an anecdote."
        )
    by_patient = m.get("auc_ci95_by") == "patient" and "n_positive_patients" in m
    unit = "patient" if by_patient else "image"
    pos = m.get("n_positive_patients" if by_patient else "n_positive")
    neg = m.get("n_negative_patients" if by_patient else "n_negative")
    if pos is None or neg is None or min(pos, neg) >= FEW_FOR_CI or min(pos, neg) == 0:
        return None
    positive = m.get("positive_class")
    which = f"{positive!r}" if positive is not None else "positive"
    rate, side = (
        ("sensitivity", m.get("n_positive", pos))
        if pos <= neg
        else ("specificity", m.get("n_negative", neg))
    )
    return (
        f"the AUC and its 95% interval rest on {pos} {which} {unit}{'s' * (pos != 1)} and "
        f"{neg} other{'s' * (neg != 1)}: a bootstrap resamples only those it has, so with "
        f"fewer than {FEW_FOR_CI} on a side the interval is far too narrow (beside 100 "
        "negatives, it held the true AUC in 60% of simulated draws with 2 positives, 78% "
        "with 5, 89% with 10: bench/few_positives_ci.py), and one image moves the "
        f"{rate} by 1/{side}; read them as anecdotes, not estimates."
    )


def rates(is_pos: np.ndarray, p_pos: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity when ``p_pos >= threshold`` flags an image (nan for a
    class that is absent)."""
    flagged = np.asarray(p_pos) >= threshold
    is_pos = np.asarray(is_pos, dtype=bool)
    return _mean(flagged[is_pos]), _mean(~flagged[~is_pos])


# Probabilities are clipped to [PROB_EPS, 1 - PROB_EPS] (logits within about +-16) for
# the calibration fit: a float32 sigmoid saturates at exactly 0 or 1 beyond that.
PROB_EPS = 1e-7


def calibration(is_pos: np.ndarray, p_pos: np.ndarray) -> dict[str, float]:
    """Do the probabilities mean what they say? Brier score and logistic recalibration.

    The two numbers TRIPOD and Van Calster et al. (BMC Medicine 2019) ask for: the
    calibration intercept (calibration-in-the-large: ``a`` in
    ``logit P(y) = a + logit(p)``; 0 is ideal, > 0 means risks are underestimated) and
    the calibration slope (``b`` in ``logit P(y) = a + b logit(p)``; 1 is ideal, < 1
    means too extreme, the usual sign of overfitting). AUC cannot see either: it is
    unchanged by any monotone distortion. The slope is ``nan`` when its
    maximum-likelihood value does not exist: the classes' scores do not overlap (a tie
    at the boundary included) or all scores are equal. Both are ``nan`` with one class
    or a non-finite probability.
    """
    is_pos = np.asarray(is_pos, dtype=bool)
    p = np.asarray(p_pos, dtype=np.float64)
    out = {
        "brier": _mean((p - is_pos) ** 2),
        "calibration_intercept": math.nan,
        "calibration_slope": math.nan,
    }
    if p.size == 0 or is_pos.all() or not is_pos.any() or not np.isfinite(p).all():
        return out
    from scipy.optimize import brentq
    from scipy.special import expit

    from raydx.fold_calibration import logit

    lp = logit(p)
    n_pos = float(is_pos.sum())
    # The intercept with the slope fixed at 1 solves sum(expit(a + lp)) = n_pos; the
    # left side rises monotonically from 0 to n, so the root is unique and bracketed.
    out["calibration_intercept"] = float(
        brentq(lambda a: float(expit(a + lp).sum()) - n_pos, -40.0, 40.0, xtol=1e-10)
    )
    # A logistic fit of one score with an intercept has a finite optimum iff each
    # class's scores reach strictly into the other's range (no separation, complete or
    # at a tie), judged on the clipped logits that the fit sees.
    pos, neg = lp[is_pos], lp[~is_pos]
    if pos.min() < neg.max() and neg.min() < pos.max():
        out["calibration_slope"] = _logistic_fit(lp, is_pos)[1]
    return out


def _logistic_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` maximising the likelihood of ``logit P(y) = a + b x``, by Newton's method
    with step halving (the loss is convex; the caller makes sure the optimum exists).
    ``(nan, nan)`` if it does not converge."""
    from scipy.special import expit, log_expit

    design = np.column_stack([np.ones_like(x), x])
    yf = y.astype(np.float64)

    def loss(w: np.ndarray) -> float:
        z = design @ w
        return -float(np.sum(yf * log_expit(z) + (1 - yf) * log_expit(-z)))

    w = np.array([0.0, 1.0])
    current = loss(w)
    for _ in range(100):
        mu = expit(design @ w)
        grad = design.T @ (mu - yf)
        hess = (design * (mu * (1 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        scale = 1.0
        while scale > 1e-8 and loss(w - scale * step) > current + 1e-12:
            scale /= 2
        w = w - scale * step
        current = loss(w)
        if np.abs(scale * step).max() < 1e-10:
            return float(w[0]), float(w[1])
    return math.nan, math.nan


def net_benefit(is_pos: np.ndarray, p_pos: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Decision-curve net benefit (Vickers and Elkin 2006) at each threshold probability.

    ``TP/n - FP/n * t/(1-t)``: true positives found per image, minus false positives
    weighted by the odds at which a clinician would just accept a biopsy. Treat-all is
    ``net_benefit(y, ones, t)``; treat-none is 0. A model is worth using at ``t`` only
    where its curve lies above both. It reads probabilities as risks, so it is as
    trustworthy as the model's calibration.
    """
    is_pos = np.asarray(is_pos, dtype=bool)
    p = np.asarray(p_pos, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64)
    bad = ~((t > 0) & (t < 1))
    if bad.any():
        raise ValueError(
            f"thresholds must lie in (0, 1), but got thresholds={t[bad][:5].tolist()}."
        )
    n = len(p)
    if n == 0:
        return np.full(t.shape, math.nan)
    flagged = p[None, :] >= t[:, None]
    tp = (flagged & is_pos[None, :]).sum(axis=1)
    fp = (flagged & ~is_pos[None, :]).sum(axis=1)
    return tp / n - fp / n * t / (1 - t)


def patient_metrics(
    y: np.ndarray,
    prob: np.ndarray,
    groups: np.ndarray,
    *,
    positive: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Patient-level AUC: one patient, one vote.

    A patient's score is the mean probability of the positive class over their images,
    and a patient is positive if any of their images is (a patient with one malignant
    image has cancer). Image-level AUC lets a patient with twenty images weigh twenty
    times one with a single image; clinicians diagnose patients.
    """
    y, prob = _check(y, prob)
    groups = np.asarray(groups)
    if len(groups) != len(y):
        raise ValueError(
            f"groups and y must have the same length, but got {len(groups)} and {len(y)}."
        )
    p_pos = prob if prob.ndim == 1 else prob[:, positive]
    inverse = _patient_index(groups, len(y))  # a missing id is refused, not one patient
    counts = np.bincount(inverse)
    score = np.bincount(inverse, weights=p_pos) / counts
    label = (np.bincount(inverse, weights=(y == positive).astype(float)) > 0).astype(np.int64)
    ci = bootstrap_auc_ci(label, score, n_boot=n_boot, seed=seed)
    return {
        "patient_auc": auc(label, score),
        "patient_auc_ci95": [ci[0], ci[1]],
        "n_patients": len(counts),
        "patient_aggregation": "mean probability of the positive class over a patient's "
        "images; a patient is positive if any of their images is",
    }


def patient_auc_text(
    m: Mapping[str, Any], strong: Callable[[str], str] = str, against: str | None = None
) -> str:
    """The patient-level AUC in one wording for the closing lines, report, card and predict.

    ``strong`` marks the AUC up (``<b>`` in HTML, ``**`` in Markdown). ``against``: the
    positive class of a multi-class task, whose patient AUC (that class against the rest)
    is not the image AUC's macro average.
    """
    lo, hi = m["patient_auc_ci95"]
    versus = f"'{against}' against the rest: " if against else ""
    if m["patient_auc"] is None or math.isnan(m["patient_auc"]):
        return f"{versus}AUC undefined: the {m['n_patients']} patients are of one class"
    return (
        f"{versus}AUC {strong(_three(m['patient_auc']))} (95% CI {_three(lo)}-{_three(hi)}, "
        f"{m['n_patients']} patients)"
    )


def ci_by_text(m: Mapping[str, Any]) -> str:
    """``" by patient bootstrap"`` where the AUC's interval resampled patients (the
    images had patient ids), else ``""``: the same figure would be narrower, and wrong,
    drawn image by image."""
    return " by patient bootstrap" if m.get("auc_ci95_by") == "patient" else ""


def slope_meaning(slope: float | None) -> str:
    """How to read a calibration slope, for reports: the side it lies on (an audit read
    "below 1, too extreme" beside a slope of 26); a negative one is not merely "too
    extreme" but a ranking upside down (higher probability, fewer positives)."""
    if slope is not None and slope < 0:
        return "1 is ideal; below 0, higher probabilities go with fewer positives"
    if slope is not None and slope > 1:
        return "1 is ideal; above 1, too timid (too near the middle)"
    return "1 is ideal; below 1, too extreme"


def below_chance_text(auc: float | None, *, anomaly: bool = False) -> str | None:
    """A warning for a winner whose cross-validated AUC is below 0.5 (chance), when the
    best a search found ranks the classes the wrong way round more often than not."""
    if auc is None or not auc < 0.5:
        return None
    why = (
        " (an anomaly-mode autoencoder flags images that reconstruct worse than the "
        "non-positive training images, and here the positive ones do not)"
        if anomaly
        else ""
    )
    return (
        f"the cross-validated AUC {auc:.3f} is below 0.5: this model ranks the classes "
        f"worse than chance{why}. Do not use it as it is."
    )


SCALE_GAP = 0.05  # fold AUCs' mean above the pooled out-of-fold AUC by this much


def fold_scale_text(best: Mapping[str, Any]) -> str | None:
    """A warning when the winner's fold models rank well each on its own fold but score
    on different scales: their pooled out-of-fold AUC (every CV image by the model that
    did not train on it, one scale for all) falls well below the mean of their fold AUCs.
    One threshold then fits none of them, and the saved ensemble, which averages them,
    may put nearly every image in one class at the threshold chosen on that pool (a
    search of 10 epochs on 160 colour photos: fold AUCs 0.99, 0.97 and 1.00, pooled
    0.85; test AUC 1.000 at specificity 0.000). BreastMNIST's winner: 0.903 and 0.901."""
    oof = best.get("oof") or {}
    pooled, mean = oof.get("pooled_auc"), best.get("cv_auc_mean")
    if pooled is None or mean is None or not mean - pooled >= SCALE_GAP:
        return None
    return (
        f"the fold models score on different scales: each ranks its own fold well (CV AUC "
        f"{mean:.3f}), but pooled out of fold, on one scale, they reach {pooled:.3f}. One "
        f"threshold ({best.get('threshold', math.nan):.4g}) fits none of them well, and "
        "the saved ensemble averages them: check its sensitivity and specificity before "
        "using its decisions, and prefer a configuration whose folds agree (more epochs, "
        "a lower learning rate, other folds: raydx cv --fold-seed)."
    )


def refit_scale_text(best: Mapping[str, Any]) -> str | None:
    """A warning when a ``--final refit`` model gives every one of its own training
    images one decision at the threshold chosen on the fold models' out-of-fold
    predictions (``final._refit_check``): it scores on another scale than they did."""
    check = best.get("refit_check")
    if not check or 0 < check["called_positive_training"] < 1:
        return None
    if not 0 < check["called_positive_oof"] < 1:  # the fold models' decisions were one too
        return None
    lo, hi = check["prob_range_training"]
    which = "each" if check["called_positive_training"] == 1 else "none"
    return (
        f"the refit model calls {which} of {check['n']} of its own training images positive "
        f"at the threshold {best.get('threshold', math.nan):.4g}, which was chosen on the "
        f"fold models' out-of-fold predictions (they called {check['called_positive_oof']:.0%} "
        f"of the images so); its probabilities there lie in {lo:.3f}-{hi:.3f}, another "
        "scale, so the threshold does not fit it and its decisions are not the search's. "
        "Use --final ensemble (the default), whose threshold is chosen on "
        "its own members' predictions."
    )


def one_class_text(m: Mapping[str, Any], images: str = "labelled image") -> str | None:
    """A warning when, at the threshold, every labelled image of one class gets the
    wrong decision (sensitivity or specificity 0). With the other class all right, every
    image gets one decision: an AUC can be 1.000 while it does."""
    sens, spec = m.get("sensitivity"), m.get("specificity")
    if sens is None or spec is None or math.isnan(sens) or math.isnan(spec):
        return None
    if sens > 0 and spec > 0:
        return None
    pos = str(m.get("positive_class", "the positive class"))
    rates = f"(sensitivity {sens:.3f}, specificity {spec:.3f})"
    at = f"at the threshold {m.get('threshold', math.nan):.4g}"
    if multi_class_positive(m) is not None:  # the predicted class is the most probable
        at += (
            f", by the {pos!r}-against-the-rest rule (not the predicted classes, the most "
            "probable),"
        )
    if (sens, spec) in ((1.0, 0.0), (0.0, 1.0)):
        which = (
            f"every {images} is called {pos!r}" if spec == 0 else f"no {images} is called {pos!r}"
        )
        return (
            f"{at} {which} {rates}: the ranking (AUC) may be good while every decision is "
            "the same; choose another operating point (--operating-point), and see whether "
            "the fold models score on different scales."
        )
    if sens == 0 and spec == 0:
        which = (
            f"every {images} gets the wrong decision: no {pos!r} one is called {pos!r}, "
            "every other one is"
        )
    elif sens == 0:
        which = f"no {pos!r} {images} is called {pos!r}, though some others are"
    else:
        which = (
            f"every {images} that is not {pos!r} is called {pos!r}, though not every {pos!r} one is"
        )
    return (
        f"{at} {which} {rates}: a whole class gets the wrong decision; choose another "
        "operating point (--operating-point), and see whether the fold models score on "
        "different scales."
    )


def no_width_text(m: Mapping[str, Any]) -> str | None:
    """A warning for a bootstrap AUC interval of no width (1.000-1.000 on 8 patients):
    every resample separates the classes perfectly, which on a small set is the
    percentile bootstrap's limit, not certainty."""
    said: list[str] = []
    multi = multi_class_positive(m) is not None
    for key, unit in (("auc", "images"), ("patient_auc", "patients")):
        lo, hi = m.get(f"{key}_ci95") or (math.nan, math.nan)
        if lo is not None and hi is not None and not math.isnan(lo) and lo == hi:
            n = m.get("n" if key == "auc" else "n_patients")
            # with more classes, the image AUC is the macro one; the patient one, the
            # positive class's against the rest
            what = (
                (
                    "macro AUC"
                    if key == "auc"
                    else f"{m.get('positive_class')!r}-against-the-rest AUC"
                )
                if multi
                else "AUC"
            )
            said.append(f"the {what} over {n} {unit} ({lo:.3f}-{hi:.3f})")
    if not said:
        return None
    return (
        f"the 95% interval of {' and '.join(said)} has no width: every bootstrap resample "
        "separates the classes perfectly, which on so few is the bootstrap's limit, not "
        "certainty; a larger test set is what narrows it honestly."
    )


def scored_warnings(m: Mapping[str, Any], images: str = "labelled image") -> list[str]:
    """What a set's scores hide: one decision for every image, a class never predicted,
    an interval of no width. Where a multi-class task's predicted classes collapse, that
    warning replaces the positive-class threshold's, which decides no prediction there."""
    collapsed = collapsed_text(m, images)
    one_class = None if collapsed else one_class_text(m, images)
    return [w for w in (one_class, collapsed, no_width_text(m), few_positives_text(m)) if w]


def collapsed_text(m: Mapping[str, Any], images: str = "labelled image") -> str | None:
    """A multi-class warning when the predicted class (the most probable) is never one
    that the labels hold, or is one class for every image: the macro AUC can be good
    while the decisions are (an audit: every test image predicted one class of four,
    accuracy below chance, macro AUC 0.86)."""
    per = m.get("per_class")
    if not per:
        return None
    held = {c: v for c, v in per.items() if v.get("n")}
    never = [c for c, v in held.items() if not v.get("predicted")]
    total = sum(v.get("predicted", 0) for v in per.values())
    only = [c for c, v in per.items() if total and v.get("predicted") == total]
    if not never:
        return None
    said = (
        f"every {images} is predicted {only[0]!r}"
        if only
        else f"no {images} is predicted " + " or ".join(repr(c) for c in never)
    )
    return (
        f"{said} (the most probable class), though the labels hold "
        + ", ".join(f"{held[c]['n']} {c!r}" for c in never)
        + ": the macro AUC ranks each class against the rest and can be good while the "
        "decisions are not (each class's AUC and recall: per_class in the metrics JSON)."
    )


def winner_warnings(
    best: Mapping[str, Any], test: Mapping[str, Any] | None, *, anomaly: bool
) -> list[str]:
    """Every warning about a run's winner (the console's and the report's; the model card
    places the same ones by its sections): below chance, fold models on different
    scales, and its test scores'."""
    found = [
        below_chance_text(best.get("cv_auc_mean"), anomaly=anomaly),
        fold_scale_text(best),
        refit_scale_text(best),
    ]
    return [w for w in found if w] + (scored_warnings(test, "test image") if test else [])


def multi_class_positive(m: Mapping[str, Any]) -> str | None:
    """The positive class's name in scores of a multi-class task (None when binary, or
    for scores saved before ``n_classes`` was)."""
    return m.get("positive_class") if m.get("n_classes", 2) > 2 else None


def _three(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


def _weighted_auc(score: np.ndarray, is_pos: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """AUC of every row of ``counts`` (item multiplicities), ties counted as 1/2.

    Mann-Whitney with weights: sorting the items once, per tie group of scores the
    positive weight times (negative weight strictly below + half the negative weight
    in the group), over (total positive x total negative weight).
    """
    order = np.argsort(score, kind="stable")
    s = score[order]
    c = counts[:, order]
    p = np.where(is_pos[order], c, 0.0)
    q = c - p
    ends = np.flatnonzero(np.r_[s[1:] != s[:-1], True])  # last index of each tie group
    pg = np.diff(np.cumsum(p, axis=1)[:, ends], axis=1, prepend=0.0)
    qg = np.diff(np.cumsum(q, axis=1)[:, ends], axis=1, prepend=0.0)
    below = np.cumsum(qg, axis=1) - qg
    num = (pg * (below + 0.5 * qg)).sum(axis=1)
    den = pg.sum(axis=1) * qg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def _check(y: Any, prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    prob = np.asarray(prob, dtype=np.float64)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, but got shape={y.shape}.")
    if prob.ndim not in (1, 2):
        raise ValueError(f"prob must be 1-D or (N, C), but got shape={prob.shape}.")
    if len(prob) != len(y):
        raise ValueError(f"y and prob must have the same length, but got {len(y)} and {len(prob)}.")
    return y, prob


def finite_scores(prob: np.ndarray) -> None:
    """Thresholds are chosen and applied with ``p >= t``, which a NaN never meets, while
    sorting puts it above every score: choosing one on such scores would not hold on them."""
    bad = ~np.isfinite(prob)
    if bad.any():
        raise ValueError(
            f"prob must be finite to choose a threshold on, but got {prob[bad][0]} "
            f"({int(bad.sum())} not finite)."
        )


def _binary(y: np.ndarray, name: str) -> np.ndarray:
    """Labels of a binary task as a bool mask; anything but 0/1 is a caller bug."""
    if not np.isin(y, (0, 1)).all():
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5].tolist()
        raise ValueError(f"{name} must hold 0/1 labels for a 1-D prob, but got values {bad}.")
    return y.astype(bool)


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if x.size else math.nan


def _nanmean(xs: list[float]) -> float:
    finite = [x for x in xs if not math.isnan(x)]
    return float(np.mean(finite)) if finite else math.nan
