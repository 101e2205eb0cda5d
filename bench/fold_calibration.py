"""Per-fold Platt scaling of a binary winner's fold models against one pooled shift.

    .venv/bin/python bench/fold_calibration.py runs/quality11/seed0 runs/quality11/seed1

For each run folder (its ``model`` and ``predictions.parquet``), side by side:

- ``pooled shift``: the probabilities as raydx saved them before ``raydx.fold_calibration``
  (one intercept fitted on the pooled out-of-fold probabilities, ``raydx.prior``);
- ``platt per fold``: each fold model scaled on its own held-out fold first, the
  ensemble the mean of the scaled members (``raydx.fold_calibration``).

Both from the same winner and weights, so the search's CV AUC (the mean of the fold
AUCs) is the same; printed: the pooled out-of-fold AUC, the threshold (Youden's J on the
out-of-fold rows), the cross-fitted sensitivity and specificity, and on the test split
the AUC, accuracy at 0.5 (as MedMNIST reports it), sensitivity and specificity at the
threshold, Brier score and calibration intercept and slope. The test images are read
as the run read them (``raydx.prepare.load_pool`` with the run's options). A run saved
with per-fold scaling is read back to the fold models' own probabilities first.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from quality import wilson

from raydx.artifact import load_model
from raydx.cross_fit import cross_fitted_scores
from raydx.fold_calibration import (
    METHODS,
    apply_per_fold,
    ensemble,
    fit_per_fold,
    from_config,
    unapply_per_fold,
)
from raydx.metrics import auc, diagnosis_metrics
from raydx.operating_point import OperatingPoint
from raydx.prepare import load_pool, pool_options
from raydx.prior import fitted_class_mix, shift
from raydx.train import predict


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for out in args.runs:
        model = load_model(out / "model")
        best = yaml.safe_load((out / "best.yaml").read_text())
        params = best["params"]
        oof = model.oof
        assert oof is not None
        y, fold = oof["is_positive"].to_numpy(bool), oof["fold"].to_numpy()
        pred = pd.read_parquet(out / "predictions.parquet")
        test = pred[pred["split"] == "test"]
        y_test = test["is_positive"].to_numpy(bool)
        pool = load_pool(**pool_options(out))
        where = {s: i for i, s in enumerate(pool.table.sample_ids.astype(str))}
        x = torch.from_numpy(pool.images[[where[s] for s in test["sample_id"]]])
        members = [predict(m, x) for m in model.members]
        saved_scaling = from_config(model.config)
        if saved_scaling is not None:  # saved per fold: back to the members as trained
            raw_oof = unapply_per_fold(oof["prob"].to_numpy(float), fold, saved_scaling)
        else:
            mix = model.config.get("class_mix")
            p = oof["prob"].to_numpy(float)
            raw_oof = p if not mix else shift(p, mix["mapped_to"], mix["trained"])
        mix = fitted_class_mix(params, y, raw_oof)
        shifted = raw_oof if mix is None else shift(raw_oof, mix["trained"], mix["mapped_to"])
        mean = np.mean(members, axis=0)
        versions = {
            "pooled shift": (
                shifted,
                mean if mix is None else shift(mean, mix["trained"], mix["mapped_to"]),
            ),
        }
        for name in METHODS:
            scalings = fit_per_fold(y, raw_oof, fold, name)
            versions[name] = (
                apply_per_fold(raw_oof, fold, scalings),
                ensemble(members, [scalings[k] for k in sorted(scalings)]),
            )
        for name, (p_oof, p_test) in versions.items():
            t = OperatingPoint().threshold(y.astype(int), p_oof)
            crossed = cross_fitted_scores(
                params,
                y,
                p_oof,
                fold,
                OperatingPoint(),
                per_fold=None if name == "pooled shift" else name,
            )
            m = diagnosis_metrics(
                test["label"].to_numpy(), p_test, positive=model.positive_class, threshold=t
            )
            rows.append(
                {
                    "run": str(out),
                    "method": name,
                    "CV AUC": best["cv_auc_mean"],
                    "pooled OOF AUC": auc(y.astype(int), p_oof),
                    "threshold": t,
                    "x-fit sens": crossed["sensitivity"],
                    "x-fit spec": crossed["specificity"],
                    "test AUC": m["auc"],
                    "AUC 95% CI": "[{:.3f}, {:.3f}]".format(*m["auc_ci95"]),
                    "test ACC@0.5": m["accuracy_at_0_5"],
                    "ACC 95% CI": "[{:.3f}, {:.3f}]".format(
                        *wilson(round(m["accuracy_at_0_5"] * len(y_test)), len(y_test))
                    ),
                    "test sens": m["sensitivity"],
                    "test spec": m["specificity"],
                    "test Brier": m["brier"],
                    "test intercept": m["calibration_intercept"],
                    "test slope": m["calibration_slope"],
                }
            )
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print()
        means = table.drop(columns=["run", "AUC 95% CI", "ACC 95% CI"])
        print(means.groupby("method", sort=False).mean().round(3).to_string())


if __name__ == "__main__":
    main()
