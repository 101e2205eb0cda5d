"""How far the pooled out-of-fold AUC moves with how the fold models are put on one scale.

    .venv/bin/python bench/pooled_auc_bias.py [REPEATS]   # default 200; ~1 min

Simulated fold models: each fold's logits are ``d * y + noise + offset_fold``, the offset
standing for a fold model's own scale. The pooled AUC (every row ranked against every
other, across folds) is printed for the raw probabilities, after the per-fold intercepts
fitted on each fold's own labels (``raydx.fold_calibration.fit_per_fold``: what the
saved ensemble uses), after one share for every fold (``aligned_to_share``: what raydx
ranks the pooled AUCs on), and with each fold's offset removed exactly (the truth the
others estimate). Folds whose positive shares differ (patient-grouped folds of a small
cohort) are where the per-fold intercepts rank rows by their fold's labels.
"""

from __future__ import annotations

import sys

import numpy as np
from scipy.special import expit

from raydx.fold_calibration import DEFAULT, aligned_to_share, apply_per_fold, fit_per_fold
from raydx.metrics import auc


def simulate(
    n: int, k: int, share_sd: float, d: float, offset_sd: float, repeats: int
) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(repeats):
        fold = np.repeat(np.arange(k), n // k)
        share = np.clip(0.27 + rng.normal(0, share_sd, k), 0.05, 0.6)
        y = rng.random(len(fold)) < share[fold]
        offset = rng.normal(0, offset_sd, k)
        z = d * y + rng.normal(0, 1, len(fold)) + offset[fold] - 1
        raw = expit(z)
        own = apply_per_fold(raw, fold, fit_per_fold(y, raw, fold, DEFAULT))
        one = aligned_to_share(raw, fold, float(y.mean()))
        out.append([auc(y, raw), auc(y, own), auc(y, one), auc(y, z - offset[fold])])
    return np.mean(out, axis=0)


def main(repeats: int) -> None:
    print(
        "images  folds  shares' sd  signal d  offsets' sd | raw    own-fold intercepts  "
        "one share  truth"
    )
    for n, k, share_sd, d, offset_sd in [
        (624, 5, 0.005, 1.8, 0.5),  # BreastMNIST's pool, stratified folds
        (624, 5, 0.05, 1.8, 0.5),
        (150, 5, 0.1, 1.0, 0.5),  # a small patient-grouped cohort
        (150, 5, 0.1, 0.0, 0.0),  # the same, no signal
    ]:
        raw, own, one, truth = simulate(n, k, share_sd, d, offset_sd, repeats)
        print(
            f"{n:6d}  {k:5d}  {share_sd:10.3f}  {d:8.1f}  {offset_sd:11.1f} | {raw:.4f} "
            f"{own:.4f}               {one:.4f}     {truth:.4f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
