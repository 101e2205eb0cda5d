"""Probabilities of a network trained on one class mix, mapped to the data's own mix.

``class_balance`` (a weighted loss or a balanced sampler) trains a network as if every
class were equally common, and the GAN family's ``augment`` mode tops the minority
class up with generated images. Either way the network's probabilities answer "which
class, if the classes came in the training mix?", which overstates a rare cancer.
Bayes' rule with the two priors undoes that exactly (Saerens, Latinne and
Decaestecker 2002): ``p(y|x)`` is proportional to ``p_train(y|x) * prior_y / train_y``.
A binary ranking is unchanged (so is its AUC, and the partition at the correspondingly
moved threshold); the calibration is what this fixes.

That holds only if the networks learnt the training mix's odds, and early-stopped
networks need not: a binary winner's mapping is therefore fitted on its out-of-fold
probabilities (``fitted_class_mix``), which finds the nominal mix where the theory holds
and the mix the networks behave as if trained on where it does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def anomaly_scores(params: Mapping[str, Any]) -> bool:
    """Whether a configuration's "probabilities" are squashed anomaly scores: an
    anomaly-mode autoencoder's reconstruction error over the typical error of the
    non-positive training images. They learnt no class mix, so no mix can be mapped or
    read off them."""
    return params.get("family") == "autoencoder" and params.get("ae_mode") == "anomaly"


def training_mix(params: Mapping[str, Any], counts: np.ndarray) -> np.ndarray:
    """The class mix a trial's networks trained on, given the pool's ``counts`` per class
    (the positive class second for a binary task, as the GAN's conditioning labels)."""
    counts = np.asarray(counts, dtype=np.float64)
    if anomaly_scores(params):
        return counts / counts.sum()  # a squashed reconstruction error, not a posterior
    if params.get("class_balance", "none") in ("weighted", "sampler"):
        return np.full(len(counts), 1.0 / len(counts))
    if params.get("family") == "gan":
        from raydx.families.gan import parse_params, top_up

        gan = parse_params(params)
        if gan.gan_mode == "augment":
            n = round(gan.synthetic_ratio * counts.sum())
            counts = counts + top_up(counts.astype(np.int64), n)
    return counts / counts.sum()


def why(params: Mapping[str, Any]) -> str:
    """What made a trial's training mix differ from the data's, in words for reports."""
    balance = params.get("class_balance", "none")
    if balance in ("weighted", "sampler"):
        return f"class balancing, `class_balance: {balance}`"
    return "generated images topping up the rarer class (GAN augmentation)"


def fitted_class_mix(
    params: Mapping[str, Any], is_pos: ArrayLike, p_pos: ArrayLike
) -> dict[str, Any] | None:
    """A binary winner's mapping, fitted on its out-of-fold probabilities ``p_pos``.

    Bayes' rule from the mix a recipe nominally trains on (``training_mix``) assumes the
    networks learnt that mix's odds. On BreastMNIST they did not (bench/recalibration.py:
    30 searched trials that ran every epoch, cross-fitted over folds): as trained their
    out-of-fold probabilities missed the pool's odds by a mean of 0.70 on the logit scale
    with a balanced sampler, 0.56 weighted and 0.94 unbalanced, and the nominal mapping
    made the balanced ones worse (log loss 0.395 -> 0.441 sampler, 0.399 -> 0.439
    weighted). One intercept fitted out of fold (calibration-in-the-large, slope kept at
    1; Steyerberg's first step of updating a model) improved every group (0.378, 0.390,
    0.400 against 0.429 unbalanced). It is a shift of the logits, so it is written as
    the mix the networks behave as if trained on (``trained``), mapped to the pool's;
    ``nominal`` is the recipe's, ``shift`` the intercept. None for anomaly scores (a
    squashed reconstruction error, not a probability) and single-class pools.
    """
    from scipy.special import expit, logit

    from raydx.metrics import calibration

    if anomaly_scores(params):
        return None
    y = np.asarray(is_pos, dtype=bool)
    delta = calibration(y, np.asarray(p_pos, dtype=np.float64))["calibration_intercept"]
    if not np.isfinite(delta):
        return None
    pool = float(y.mean())
    behaved = expit(logit(pool) - delta)  # the shift, written as a training mix
    nominal = training_mix(params, np.array([(~y).sum(), y.sum()], dtype=np.float64))
    return {
        "trained": [1.0 - float(behaved), float(behaved)],
        "mapped_to": [1.0 - pool, pool],
        "nominal": [float(v) for v in nominal],
        "shift": float(delta),
    }


def recipe_share(mix: Mapping[str, Any]) -> float | None:
    """The positive share a fitted mix's recipe trained on, when it was not the pool's
    (class balancing, GAN top-up); None when the recipe kept the pool's mix."""
    nominal, pool = mix["nominal"][1], mix["mapped_to"][1]
    return None if abs(nominal - pool) <= 1e-3 else float(nominal)


def shift(prob: ArrayLike, train: ArrayLike, prior: ArrayLike) -> np.ndarray:
    """Probabilities under class mix ``train`` -> under ``prior`` (both sum to 1).

    ``prob`` is (N, K) class probabilities, or (N,) probabilities of the second class
    of a binary task (so ``train`` and ``prior`` list the negative class first). Binary
    probabilities are clipped at ``raydx.metrics.PROB_EPS`` first, as the fitted mix
    (``fitted_class_mix``) saw them: everything beyond comes out as one value. A map
    whose order matters (a prevalence moved at predict time) is ``to_prevalence``.
    """
    p = np.asarray(prob, dtype=np.float64)
    w = np.asarray(prior, dtype=np.float64) / np.asarray(train, dtype=np.float64)
    if p.ndim == 1:
        from raydx.metrics import PROB_EPS

        # A probability saturated at 0 or 1 moves like the clipped one that the fitted
        # shift saw (raydx.metrics.calibration), not at all.
        p = np.clip(p, PROB_EPS, 1 - PROB_EPS)
        num = p * w[1]
        return num / (num + (1.0 - p) * w[0])
    scaled = p * w
    return scaled / scaled.sum(axis=1, keepdims=True)


def to_prevalence(p_pos: ArrayLike, now: float, share: float) -> np.ndarray:
    """Binary probabilities of the positive class for a positive share ``now`` -> for
    ``share``: Bayes' rule, as ``shift``, written as the one logit shift it is.

    Unlike ``shift`` it clips at float64's limits (``raydx.fold_calibration.KEEP_ORDER``),
    not at the fit's 1e-7: it moves a threshold and the probabilities it is compared
    with, which must keep their order, confident ones too, or a threshold beyond 1e-7
    would land on a tie. Monotone in float64 (distinct values merge only where the
    move crowds them nearer 1 than float64 can tell apart); the identity, to the bit,
    when ``share == now``.
    """
    from raydx.fold_calibration import KEEP_ORDER, Platt

    p = np.asarray(p_pos, dtype=np.float64)
    for name, value in (("now", now), ("share", share)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name} must be in (0, 1), but got {name}={value}.")
    if share == now:
        return p.copy()
    log_odds = float(np.log(share) - np.log1p(-share) - np.log(now) + np.log1p(-now))
    return Platt(1.0, log_odds, KEEP_ORDER)(p)
