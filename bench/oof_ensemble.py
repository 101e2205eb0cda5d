"""CV AUC of a search's k best configurations averaged, from their out-of-fold predictions.

    .venv/bin/python bench/oof_ensemble.py runs/quality7/seed0            # k = 1..4
    .venv/bin/python bench/oof_ensemble.py RUN --top 1 2 3 5

Every trial of a run is scored on the same folds, and each finished trial's checkpoint
keeps its best epoch's out-of-fold probabilities, so averaging the k best trials costs
no training to score. The number is as optimistic as the winner's own CV AUC (the
members were picked on these folds): a gain needs checking on other split seeds
(``bench/cv_variants.py --split-seed``) before it is believed. Binary runs only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from raydx.cv import oof_file
from raydx.metrics import auc
from raydx.results import _rebased


def load_oof(ckpt: Path, folds: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for f in range(folds):
        with np.load(ckpt / oof_file(f)) as z:
            out[f] = (z["row"], z["prob"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--top", type=int, nargs="+", default=[1, 2, 3, 4])
    args = ap.parse_args(argv)
    run = args.run
    info = json.loads((run / "run.json").read_text())
    positive = int(info["data"]["positive_class"])
    labels = pd.read_parquet(run / "splits.parquet")["label"].to_numpy()
    trials = pd.read_parquet(run / "trials.parquet")
    ok = trials[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    ok = ok.sort_values("cv_auc_mean", ascending=False)
    folds = sum(c.startswith("fold_") and c.endswith("_auc") for c in trials.columns)
    oofs = [load_oof(Path(_rebased(p, run) or p), folds) for p in ok["checkpoint_path"]]
    if oofs and oofs[0][0][1].ndim != 1:
        ap.error(f"{run} is not a binary run; this script averages binary probabilities.")
    print(f"{run}: {len(ok)} finished trials, {folds} folds")
    print(f"{'k':>3}{'CV AUC':>9}  per fold{'':32}members' own CV AUC")
    for k in args.top:
        if k > len(oofs):
            break
        aucs = []
        for f in range(folds):
            rows = oofs[0][f][0]
            if any(not np.array_equal(o[f][0], rows) for o in oofs[:k]):
                raise SystemExit(f"fold {f}: the trials' out-of-fold rows differ")
            prob = np.mean([o[f][1] for o in oofs[:k]], axis=0)
            aucs.append(auc((labels[rows] == positive).astype(int), prob))
        own = ", ".join(f"{v:.3f}" for v in ok["cv_auc_mean"].iloc[:k])
        per = " ".join(f"{a:.3f}" for a in aucs)
        print(f"{k:>3}{np.mean(aucs):9.4f}  {per:<40}{own}")


if __name__ == "__main__":
    main()
