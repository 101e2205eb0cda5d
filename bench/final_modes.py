"""Which final model generalises better, the fold ensemble or a refit? Nested CV, no test.

    .venv/bin/python bench/final_modes.py RUN/best.yaml [--outer 0 1 2 3 4] [--threads 2]

``raydx tune`` saves either the winner's k fold models, averaged (``--final ensemble``,
the default), or one model refit on the whole CV pool for the epochs CV chose
(``--final refit``). Comparing the two on the test split would be choosing the method on
the test split, so this compares them on the CV pool alone: each outer fold in turn is
held out; the other k-1 folds cross-validate the configuration (inner folds, plain fold
loops with raydx's ``FoldTrainer``) and pick the best epoch of the inner mean, exactly as
raydx does; then both final models are built from those k-1 folds (the inner models at
that epoch, averaged; ``raydx.refit.refit_state`` on all k-1 folds) and scored on the
held-out fold. Prints one JSON line per outer fold and a summary line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"


def outer_fold(
    params: dict[str, Any], x: torch.Tensor, y: np.ndarray, fold: np.ndarray, o: int, args: Any
) -> dict[str, Any]:
    from raydx.config import TrialConfig
    from raydx.metrics import auc
    from raydx.refit import refit_state
    from raydx.train import FoldTrainer, build_model, predict

    positive = 0  # malignant, as raydx resolves it for BreastMNIST
    cfg = TrialConfig.from_params(params)
    held = fold == o
    x_out, y_out = x[held], (y[held] == positive).astype(int)
    inner = [i for i in range(args.folds) if i != o]
    t0 = time.perf_counter()
    val_auc: list[list[float]] = []  # [inner fold][epoch]
    out_prob: list[list[np.ndarray]] = []  # [inner fold][epoch] on the held-out fold
    for i in inner:
        tr = (fold >= 0) & (fold != o) & (fold != i)
        va = fold == i
        trainer = FoldTrainer(
            cfg,
            x_train=x[tr],
            y_train=y[tr],
            x_val=x[va],
            y_val=y[va],
            n_classes=2,
            positive=positive,
            epochs=args.epochs,
            seed=args.seed,
            fold=i,
        )
        aucs, probs = [], []
        with trainer.own_rng():
            trainer.pretrain()
            for epoch in range(1, args.epochs + 1):
                aucs.append(trainer.run_epoch(epoch).val_auc)
                probs.append(predict(trainer.model, x_out))
        val_auc.append(aucs)
        out_prob.append(probs)
    mean = np.mean(val_auc, axis=0)
    best = int(mean.argmax()) + 1
    ensemble = np.mean([p[best - 1] for p in out_prob], axis=0)
    pool = (fold >= 0) & (fold != o)
    state = refit_state(
        params,
        x=x[pool].numpy(),
        y=y[pool],
        n_classes=2,
        positive=positive,
        epochs=args.epochs,
        stop_epoch=best,
        seed=args.seed,
        folds=args.folds,
    )
    model = build_model(cfg, in_channels=int(x.shape[1]), n_classes=2, image_size=int(x.shape[2]))
    model.load_state_dict(state)
    return {
        "outer_fold": o,
        "inner_cv_auc": round(float(mean.max()), 4),
        "best_epoch": best,
        "ensemble_auc": round(auc(y_out, ensemble), 4),
        "refit_auc": round(auc(y_out, predict(model, x_out)), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> None:
    from raydx.data.folds import make_splits
    from raydx.data.npz import load_npz
    from raydx.data.pipeline import Preprocessing, normalise_batch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a run's best.yaml, or a space file (its enqueued point)")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--outer", type=int, nargs="+", default=None, help="outer folds to run")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = yaml.safe_load(Path(args.config).read_text())
    params = dict(doc["enqueue"][0] if "enqueue" in doc else doc.get("params", doc))
    table = load_npz(args.data)
    splits = make_splits(
        table.labels,
        folds=args.folds,
        seed=args.split_seed,
        test_mask=table.official_split == "test",
        class_names=table.class_names,
    )
    x = torch.from_numpy(
        normalise_batch(table.images, Preprocessing(table.image_size, table.channels))
    )
    rows = []
    for o in args.outer if args.outer is not None else range(args.folds):
        rows.append(outer_fold(params, x, table.labels, splits.fold, o, args))
        print(json.dumps(rows[-1]), flush=True)
    ens = [r["ensemble_auc"] for r in rows]
    ref = [r["refit_auc"] for r in rows]
    print(
        json.dumps(
            {
                "summary": f"{len(rows)} outer folds",
                "ensemble_auc_mean": round(float(np.mean(ens)), 4),
                "refit_auc_mean": round(float(np.mean(ref)), 4),
                "refit_minus_ensemble": [round(b - a, 4) for a, b in zip(ens, ref, strict=True)],
            }
        )
    )


if __name__ == "__main__":
    main()
