"""How often the test AUC's 95% interval holds the population AUC, with several images a patient.

    .venv/bin/python bench/patient_ci_coverage.py [REPEATS]   # default 300; ~5 s

Simulated test splits of 40 patients with 10 images each (mammography views, slide
tiles): a patient's images share one latent score (``0.8 * label + N(0, 1)``) plus a
little noise of their own (``N(0, 0.1)``), so they are nearly copies. The population
image-level AUC comes from 20,000 such patients. For each split, the interval of
``raydx.metrics.bootstrap_auc_ci`` is drawn image by image (what raydx did before
December 2026) and patient by patient (``groups=``: what it does where the data have
patient ids); printed: the share of splits whose interval holds the population AUC
(nominal 0.95) and the mean width. A last row gives each patient one image, where the
two ways should agree.
"""

from __future__ import annotations

import sys

import numpy as np

from raydx.metrics import auc, bootstrap_auc_ci


def draw(
    rng: np.random.Generator, patients: int, per: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    label = rng.integers(0, 2, patients)
    latent = rng.normal(0.0, 1.0, patients) + 0.8 * label
    y = np.repeat(label, per)
    score = np.repeat(latent, per) + rng.normal(0.0, 0.1, patients * per)
    return y, score, np.repeat(np.arange(patients), per)


def coverage(per: int, repeats: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(1)
    y, s, _ = draw(rng, 20_000, per)
    truth = auc(y, s)
    out: dict[str, list[tuple[bool, float]]] = {"image": [], "patient": []}
    for r in range(repeats):
        y, s, g = draw(rng, 40, per)
        for how, groups in (("image", None), ("patient", g)):
            lo, hi = bootstrap_auc_ci(y, s, groups=groups, n_boot=300, seed=r)
            out[how].append((lo <= truth <= hi, hi - lo))
    return {
        k: (float(np.mean([h for h, _ in v])), float(np.mean([w for _, w in v])))
        for k, v in out.items()
    }


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    print(f"{repeats} simulated test splits of 40 patients; nominal coverage 0.95")
    print(f"{'images a patient':>16}  {'resampled':>9}  {'coverage':>8}  {'mean width':>10}")
    for per in (10, 1):
        for how, (cov, width) in coverage(per, repeats).items():
            print(f"{per:>16}  {how:>9}  {cov:>8.3f}  {width:>10.3f}")


if __name__ == "__main__":
    main()
