"""raydx on BreastMNIST's official test split, beside the published MedMNIST v2 table.

    .venv/bin/python bench/quality.py                     # 3 searches (seeds 0 1 2), ~30 min each
    .venv/bin/python bench/quality.py --seeds 0 --reference
    .venv/bin/python bench/quality.py --seeds 0 --trials 2 --epochs 2   # a quick check

Each seed runs ``raydx tune`` with the shipped space file at its default budget: the
search and its cross-validation see only the official train+val images (624); the
winner's fold models (mean probability) are scored once on the official test split
(156 images). The search is developed against the CV AUC; the test numbers are for the
table only. ``--reference`` also runs a hand-tuned plain PyTorch script (BN ResNet-style
CNN, augmentation, one-cycle, 40 epochs, five fold models, flip test-time augmentation)
on the same folds, for the row the issue quotes.

Intervals: CV, mean +- std over folds; test AUC, raydx's bootstrap 95% interval; test
accuracy (threshold 0.5, as MedMNIST reports it), a Wilson 95% interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "breastmnist.npz"

# MedMNIST v2 (Yang et al., Scientific Data 2023), BreastMNIST test split: AUC, ACC
PUBLISHED: list[tuple[str, float, float | None]] = [
    ("ResNet-18 (28)", 0.901, 0.863),
    ("ResNet-50 (28)", 0.857, 0.812),
    ("auto-sklearn", 0.836, 0.803),
    ("AutoKeras", 0.871, 0.831),
    ("Google AutoML Vision", 0.919, None),
]

REFERENCE = {  # the hand-tuned point; cnn.yaml enqueues it first
    "family": "cnn",
    "model": "cnn",
    "depth": 3,
    "width": 32,
    "kernel_size": 3,
    "convs_per_stage": 2,
    "residual": True,
    "norm": "batch",
    "head": "gap",
    "dropout": 0.2,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 1.0e-4,
    "lr_schedule": "onecycle",
    "batch_size": 64,
    "class_balance": "none",
    "hflip": 0.5,
    "rotate": 15.0,
    "scale": 0.2,
    "translate": 0.1,
}


def wilson(k: int, n: int) -> tuple[float, float]:
    """95% interval of k/n (as ``raydx predict`` computes it for its class-mix note)."""
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(method="wilson")
    return float(ci.low), float(ci.high)


def search(seed: int, space: str, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    import re

    from overhead import EventClock
    from search_overhead import busy_fraction, epoch_intervals

    from raydx.run import tune

    t0 = time.perf_counter()
    clock = EventClock(out / "events.jsonl")
    lines: list[str] = []
    try:
        res = tune(space, data=str(DATA), seed=seed, output=out, log=lines.append, **overrides)
    finally:
        clock.stop()
    t_end = time.perf_counter()
    wall = t_end - t0
    # How much of the 2 cores trained (bench/search_overhead.py's measure): each epoch
    # of a trial keeps its workers' threads busy for its compute time.
    layout = next(m for x in lines if (m := re.search(r"(\d+) worker\(s\) per trial", x)))
    threads = int(layout.group(1))
    intervals, _ = epoch_intervals(clock.seen, threads)
    cores = len(os.sched_getaffinity(0))
    test = json.loads((out / "test_metrics.json").read_text())
    pred = pd.read_parquet(out / "predictions.parquet")
    pred = pred[pred["split"] == "test"]
    right = int(((pred["prob"] >= 0.5) == pred["is_positive"]).sum())
    return {
        "name": f"raydx, seed {seed}",
        "cv": float(res.best["cv_auc_mean"]),
        "cv_std": float(res.best["cv_auc_std"]),
        "auc": float(test["auc"]),
        "auc_ci": tuple(test["auc_ci95"]),
        "acc": right / len(pred),
        "acc_ci": wilson(right, len(pred)),
        "wall": wall,
        "busy": busy_fraction(intervals, t0, t_end, cores),
        "trials": len(res.trials),
        "winner": yaml.safe_load((out / "best.yaml").read_text())["params"],
    }


def reference(seed: int, epochs: int = 40, folds: int = 5) -> dict[str, Any]:
    """The hand-tuned plain script: fixed epochs, no selection, the fold models (the
    space's folds, five in cnn.yaml) + flip TTA."""
    from raydx.config import TrialConfig
    from raydx.data.folds import make_splits
    from raydx.data.npz import load_npz
    from raydx.data.pipeline import Preprocessing, normalise_batch
    from raydx.metrics import auc, bootstrap_auc_ci
    from raydx.train import FoldTrainer, predict

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    table = load_npz(str(DATA))
    test_mask = table.official_split == "test"
    splits = make_splits(
        table.labels, folds=folds, seed=seed, test_mask=test_mask, class_names=table.class_names
    )
    x = torch.from_numpy(normalise_batch(table.images, Preprocessing(table.image_size, 1)))
    cfg = TrialConfig.from_params(REFERENCE)
    positive = 0  # malignant
    fold_aucs, test_probs = [], []
    xt = x[test_mask]
    for fold in range(folds):
        tr, va = splits.train_val_indices(fold)
        t = FoldTrainer(
            cfg,
            x_train=x[tr],
            y_train=table.labels[tr],
            x_val=x[va],
            y_val=table.labels[va],
            n_classes=2,
            positive=positive,
            epochs=epochs,
            seed=seed,
            fold=fold,
        )
        for e in range(1, epochs):
            t.train_epoch(e)
        fold_aucs.append(t.run_epoch(epochs).val_auc)  # the last epoch: no selection
        test_probs.append((predict(t.model, xt) + predict(t.model, torch.flip(xt, [3]))) / 2)
    p = np.mean(test_probs, axis=0)
    y = (table.labels[test_mask] == positive).astype(int)
    right = int(((p >= 0.5) == y).sum())
    return {
        "name": "hand-tuned plain script",
        "cv": float(np.mean(fold_aucs)),
        "cv_std": float(np.std(fold_aucs)),
        "auc": auc(y, p),
        "auc_ci": tuple(bootstrap_auc_ci(y, p, seed=seed)),
        "acc": right / len(y),
        "acc_ci": wilson(right, len(y)),
        "wall": time.perf_counter() - t0,
        "trials": 1,
    }


def _row(r: dict[str, Any]) -> str:
    cv = f"{r['cv']:.3f} ± {r['cv_std']:.3f}"
    auc = f"{r['auc']:.3f} [{r['auc_ci'][0]:.3f}, {r['auc_ci'][1]:.3f}]"
    acc = f"{r['acc']:.3f} [{r['acc_ci'][0]:.3f}, {r['acc_ci'][1]:.3f}]"
    return f"| {r['name']} | {cv} | {auc} | {acc} | {r['wall'] / 60:.1f} min |"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "cnn.yaml"))
    ap.add_argument("--reference", action="store_true", help="also run the hand-tuned script")
    ap.add_argument("--output", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    overrides = {k: v for k, v in {"trials": args.trials, "epochs": args.epochs}.items() if v}
    root = args.output or Path(tempfile.mkdtemp(prefix="raydx-quality-"))

    from raydx.config import RunOptions
    from raydx.space import load_space

    folds = dict(load_space(args.space).run).get("folds", RunOptions.folds)
    rows = []
    if args.reference:
        rows.append(reference(args.seeds[0], folds=folds))
        print(_row(rows[-1]), flush=True)
    ours = []
    for seed in args.seeds:
        ours.append(search(seed, args.space, root / f"seed{seed}", overrides))
        print(
            _row(ours[-1]),
            f"{ours[-1]['trials']} trials; cores busy training {ours[-1]['busy']:.1%} "
            "of the search's wall time",
            flush=True,
        )

    print(f"\nBreastMNIST official test split (156 images); {Path(args.space).name}")
    print(f"runs in {root}")
    print(
        f"| method | CV AUC (train+val, {folds} folds) | test AUC [95% CI] | test ACC [95% CI] "
        "| time |"
    )
    print("|---|---|---|---|---|")
    for name, a, c in PUBLISHED:
        print(f"| {name} (published) | | {a:.3f} | {'' if c is None else f'{c:.3f}'} | |")
    for r in rows + ours:
        print(_row(r))
    if len(ours) > 1:
        m = {k: statistics.mean(r[k] for r in ours) for k in ("cv", "auc", "acc", "wall")}
        print(
            f"| raydx, mean of {len(ours)} seeds | {m['cv']:.3f} | {m['auc']:.3f} | "
            f"{m['acc']:.3f} | {m['wall'] / 60:.1f} min |"
        )
    for r in ours:
        print(f"winner of {r['name']}: {json.dumps(r['winner'])}")


if __name__ == "__main__":
    main()
