"""Which shift of the logits makes a search's out-of-fold probabilities honest?

    .venv/bin/python bench/recalibration.py runs/quality9/seed0 runs/quality9/seed1 ...

Every finished trial's checkpoint keeps its best epoch's out-of-fold probabilities, as
the networks gave them. Three versions of each trial's probabilities are compared, all
scored on out-of-fold rows only (the test split is not read):

- ``as trained``: the networks' own probabilities;
- ``Bayes``: mapped from the mix they trained on to the pool's (``raydx.prior``; only
  trials with ``class_balance`` weighted or sampler differ from ``as trained``);
- ``fitted``: shifted by an intercept fitted on the other folds' out-of-fold rows
  (logistic recalibration with the slope fixed at 1: calibration-in-the-large, as
  Steyerberg's first step of model updating), cross-fitted so no row is scored by a
  shift it helped to fit: the one pooled shift of ``--final refit`` (and of runs before
  the default became an intercept per fold model, ``raydx.fold_calibration``, which
  ``bench/fold_calibration.py`` compares).

Printed per ``class_balance`` and for trials that ran every epoch or all finished
trials: the mean log loss, Brier score and calibration intercept over trials. Binary
runs only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.metrics import log_loss

from raydx.cross_fit import cross_fitted_probabilities
from raydx.evaluate import read_oof
from raydx.metrics import calibration
from raydx.prior import shift, training_mix
from raydx.results import _rebased

EPS = 1e-7


def scores(is_pos: np.ndarray, p: np.ndarray) -> dict[str, float]:
    c = calibration(is_pos, p)
    # Clipped at EPS as raydx's calibration clips: some networks reach 0 and 1 in float32.
    loss = log_loss(is_pos, np.clip(p, EPS, 1 - EPS), labels=[False, True])
    return {"log_loss": loss, "brier": c["brier"], "intercept": c["calibration_intercept"]}


def trial_rows(run: Path) -> list[dict[str, object]]:
    info = json.loads((run / "run.json").read_text())
    positive = int(info["data"]["positive_class"])
    splits = pd.read_parquet(run / "splits.parquet")
    trials = pd.read_parquet(run / "trials.parquet")
    folds = sum(c.startswith("fold_") and c.endswith("_auc") for c in trials.columns)
    epochs = int(trials["epochs_run"].max())
    ok = trials[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    out = []
    for _, t in ok.iterrows():
        rows, p = read_oof(Path(_rebased(t["checkpoint_path"], run) or t["checkpoint_path"]), folds)
        if p.ndim != 1:
            raise SystemExit(f"{run} is not a binary run")
        y = splits["label"].to_numpy()[rows] == positive
        fold = splits["fold"].to_numpy()[rows]
        lp = logit(np.clip(p.astype(np.float64), EPS, 1 - EPS))
        counts = np.array([(~y).sum(), y.sum()], dtype=np.float64)
        params = {k: t[k] for k in ("class_balance", "family") if k in t.index}
        bayes = logit(shift(expit(lp), training_mix(params, counts), counts / counts.sum()))
        fitted = logit(cross_fitted_probabilities(params, y, expit(lp), fold))
        row: dict[str, object] = {
            "run": str(run),
            "trial": t["trial_id"],
            "class_balance": t.get("class_balance", "none"),
            "full": int(t["epochs_run"]) == epochs,
            "cv_auc": float(t["cv_auc_mean"]),
        }
        for name, z in (("as trained", lp), ("Bayes", bayes), ("fitted", fitted)):
            for k, v in scores(y, expit(z)).items():
                row[f"{name}|{k}"] = v
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    df = pd.DataFrame([r for run in args.runs for r in trial_rows(run)])
    pd.set_option("display.width", 200)
    for label, part in (("every epoch run", df[df["full"]]), ("all finished", df)):
        print(f"\n{label}: mean over trials (intercept: mean |a|)")
        g = part.groupby("class_balance")
        table = pd.DataFrame({"trials": g.size()})
        for name in ("as trained", "Bayes", "fitted"):
            table[f"{name} log loss"] = g[f"{name}|log_loss"].mean()
            table[f"{name} Brier"] = g[f"{name}|brier"].mean()
            table[f"{name} |a|"] = g[f"{name}|intercept"].apply(lambda s: s.abs().mean())
        print(table.round(3).to_string())
    best = df.sort_values("cv_auc", ascending=False).groupby("run").head(1)
    print("\neach run's best trial:")
    cols = ["run", "class_balance", "cv_auc"] + [
        f"{n}|{k}" for n in ("as trained", "Bayes", "fitted") for k in ("brier", "intercept")
    ]
    print(best[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
