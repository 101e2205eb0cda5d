"""Probabilities of a network trained on one class mix, mapped to the data's own mix.

``class_balance`` (a weighted loss or a balanced sampler) trains a network as if every
class were equally common, and the GAN family's ``augment`` mode tops the minority
class up with generated images. Either way the network's probabilities answer "which
class, if the classes came in the training mix?", which overstates a rare cancer.
Bayes' rule with the two priors undoes that exactly (Saerens, Latinne and
Decaestecker 2002): ``p(y|x)`` is proportional to ``p_train(y|x) * prior_y / train_y``.
A binary ranking is unchanged (so is its AUC, and the partition at the correspondingly
moved threshold); the calibration is what this fixes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def training_mix(params: Mapping[str, Any], counts: np.ndarray) -> np.ndarray:
    """The class mix a trial's networks trained on, given the pool's ``counts`` per class
    (the positive class second for a binary task, as the GAN's conditioning labels)."""
    counts = np.asarray(counts, dtype=np.float64)
    if params.get("family") == "autoencoder" and params.get("ae_mode") == "anomaly":
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


def class_mix(
    params: Mapping[str, Any], counts: np.ndarray, *, binary: bool
) -> dict[str, list[float]] | None:
    """``{"trained": mix, "mapped_to": the pool's}`` when a trial's probabilities need the
    mapping; None when they do not.

    Binary tasks only: their threshold is chosen on the mapped out-of-fold scores, so a
    rule reaches the same rates as on the unmapped ones (Youden's J breaks ties between
    equally good thresholds towards a probability of 0.5, which now means the data's
    odds). A multi-class model's decision is its most probable class, which the mapping
    would move away from the balanced decision that class balancing was asked for.
    """
    counts = np.asarray(counts, dtype=np.float64)
    trained, pool = training_mix(params, counts), counts / counts.sum()
    if not binary or np.allclose(trained, pool, atol=1e-3):
        return None
    return {"trained": trained.tolist(), "mapped_to": pool.tolist()}


def shift(prob: ArrayLike, train: ArrayLike, prior: ArrayLike) -> np.ndarray:
    """Probabilities under class mix ``train`` -> under ``prior`` (both sum to 1).

    ``prob`` is (N, K) class probabilities, or (N,) probabilities of the second class
    of a binary task (so ``train`` and ``prior`` list the negative class first).
    """
    p = np.asarray(prob, dtype=np.float64)
    w = np.asarray(prior, dtype=np.float64) / np.asarray(train, dtype=np.float64)
    if p.ndim == 1:
        num = p * w[1]
        return num / (num + (1.0 - p) * w[0])
    scaled = p * w
    return scaled / scaled.sum(axis=1, keepdims=True)
