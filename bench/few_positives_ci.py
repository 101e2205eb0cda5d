"""How often the test AUC's 95% bootstrap interval holds the true AUC when positives are few.

    .venv/bin/python bench/few_positives_ci.py [REPEATS]   # default 300; about a minute

Simulated test splits of 100 negatives and K positives (screening: malignant images are
rare), scores binormal with a true AUC of 0.85 (negatives N(0, 1), positives
N(1.466, 1)). For each split, the interval of ``raydx.metrics.bootstrap_auc_ci`` (image
by image, 1,000 resamples, as raydx draws it for ``test_metrics.json``); printed per K:
the share of splits whose interval holds 0.85 (nominal 0.95) and the mean width. A
bootstrap resamples only the positives it has: with one or two, the interval spans where
they happen to rank, not where a new positive could.
"""

from __future__ import annotations

import sys

import numpy as np

from raydx.metrics import bootstrap_auc_ci

TRUE_AUC = 0.85
SHIFT = 1.466  # sqrt(2) * Phi^-1(0.85): binormal, equal variances


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    rng = np.random.default_rng(0)
    print(
        f"{'positives':>9}  {'coverage':>8}  {'mean width':>10}   (100 negatives, {repeats} splits)"
    )
    for k in (1, 2, 3, 5, 10, 20, 30):
        held, widths = 0, []
        for r in range(repeats):
            y = np.r_[np.zeros(100, np.int64), np.ones(k, np.int64)]
            score = np.r_[rng.normal(0, 1, 100), rng.normal(SHIFT, 1, k)]
            lo, hi = bootstrap_auc_ci(y, score, seed=r)
            held += lo <= TRUE_AUC <= hi
            widths.append(hi - lo)
        print(f"{k:>9}  {held / repeats:>8.3f}  {np.mean(widths):>10.3f}")


if __name__ == "__main__":
    main()
