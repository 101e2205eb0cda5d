"""Calibration of runs' probabilities, as saved and as the networks gave them.

    .venv/bin/python bench/calibration.py runs/s14/sampler_f1 runs/recheck7_f1

Reads each run's ``predictions.parquet`` (out-of-fold rows, and test rows when the
test split was scored). The saved probabilities are mapped: by an intercept per fold
model (``member_calibration`` in ``best.yaml``, the default; see
``raydx.fold_calibration``), or, in ``--final refit`` runs and older ones, by one shift
to the pool's class mix (``class_mix``, see ``raydx.prior``). Undoing the mapping gives
them back as the networks produced them (per fold: the out-of-fold rows alone, as the
test rows are the members' average), so the two lines show what the mapping did.
Binary runs only.

For the out-of-fold rows it then prints, for each standard operating point, the
sensitivity and specificity at the threshold chosen on those same rows, and cross-fitted
(``raydx.cross_fit``: threshold and scalings fitted on the other folds' rows, applied to
each fold's in turn, as ``best.yaml``'s ``oof.cross_fitted``), with the cross-fitted
calibration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raydx.cross_fit import cross_fitted_scores
from raydx.fold_calibration import from_config, unapply_per_fold
from raydx.metrics import calibration, rates
from raydx.operating_point import STANDARD, OperatingPoint
from raydx.prior import shift


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args()
    for out in args.runs:
        best = yaml.safe_load((out / "best.yaml").read_text())
        mix = best.get("class_mix")
        per_fold = (best.get("member_calibration") or {}).get("method")
        config = out / "model" / "config.json"
        # from config.json: how they apply depends on its format_version
        scalings = from_config(json.loads(config.read_text())) if per_fold else None
        balance = best["params"].get("class_balance", "none")
        print(f"{out}: class_balance {balance}, class_mix {mix}, member_calibration {per_fold}")
        pred = pd.read_parquet(out / "predictions.parquet")
        for split in ("cv", "test"):
            rows = pred[pred["split"] == split]
            if rows.empty:
                continue
            y, p = rows["is_positive"].to_numpy(bool), rows["prob"].to_numpy(float)
            versions = {"saved": p}
            if mix:
                versions = {"as trained": shift(p, mix["mapped_to"], mix["trained"]), **versions}
            elif scalings and split == "cv":
                raw = unapply_per_fold(p, rows["fold"].to_numpy(), scalings)
                versions = {"as trained": raw, **versions}
            for name, q in versions.items():
                c = calibration(y, q)
                print(
                    f"  {split:4s} n={len(y)} {name:10s} mean prob {q.mean():.3f} (positive "
                    f"share {y.mean():.3f}), Brier {c['brier']:.3f}, intercept "
                    f"{c['calibration_intercept']:.3f}, slope {c['calibration_slope']:.3f}"
                )
            if split == "cv":
                crossing(best["params"], y, p, rows["fold"].to_numpy(), per_fold)


def crossing(params: dict, y: Any, saved: Any, fold: Any, per_fold: str | None) -> None:
    for rule in STANDARD:
        point = OperatingPoint.parse(rule)
        sens, spec = rates(y, saved, point.threshold(y.astype(int), saved))
        c = cross_fitted_scores(params, y, saved, fold, point, per_fold=per_fold)
        print(
            f"  cv   {rule:16s} fitted on these rows: sensitivity {sens:.3f}, specificity "
            f"{spec:.3f}; cross-fitted: {c['sensitivity']:.3f}, {c['specificity']:.3f}"
        )
    print(
        f"  cv   cross-fitted: Brier {c['brier']:.3f}, intercept "
        f"{c['calibration_intercept']:.3f}, slope {c['calibration_slope']:.3f}"
    )


if __name__ == "__main__":
    main()
