"""Which final model generalises better, the fold ensemble or a refit? Nested CV, no test.

    .venv/bin/python bench/final_modes.py RUN/best.yaml [--outer 0 1 2 3 4] [--threads 2]
    .venv/bin/python bench/final_modes.py PARAMS.yaml --data synthetic --folds 5 --epochs 10

A run's best.yaml brings the run's data, folds, seed and epochs (``bench/pool_args.py``).

``raydx tune`` saves either the winner's k fold models, averaged (``--final ensemble``,
the default), or one model refit on the whole CV pool for the epochs CV chose
(``--final refit``). Comparing the two on the test split would be choosing the method on
the test split, so this compares them on the CV pool alone: each outer fold in turn is
held out; the other k-1 folds cross-validate the configuration (inner folds, plain fold
loops with raydx's ``FoldTrainer``) and pick the best epoch of the inner mean, exactly as
raydx does; then both final models are built from those k-1 folds (the inner models at
that epoch, averaged; ``raydx.refit.refit_state`` on all k-1 folds) and scored on the
held-out fold. Prints one JSON line per outer fold and a summary line.

It also measures how the calibration shift transfers (``raydx.prior.fitted_class_mix``):
one intercept fitted on single fold models' out-of-fold probabilities and applied to
their average, which ``--final refit`` does (and every run did before the default became
an intercept per fold model: ``raydx.fold_calibration``, compared in
``bench/fold_calibration.py``). Here that intercept is fitted on the inner folds' out-of-fold
probabilities at the chosen epoch and applied to the inner ensemble on the held-out
fold, whose calibration intercept, log loss and Brier score are printed as trained
(``raw``), shifted (``fitted``), shifted by ``--shrink`` times the intercept
(``shrunk``) and, for class-balanced recipes, mapped by Bayes' rule from the recipe's mix
(``bayes``). ``--no-refit`` skips the refit model.
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
from pool_args import add_pool_args, pool_kwargs


def outer_fold(
    params: dict[str, Any],
    x: torch.Tensor,
    y: np.ndarray,
    fold: np.ndarray,
    o: int,
    positive: int,
    args: Any,
) -> dict[str, Any]:
    from raydx.config import TrialConfig
    from raydx.metrics import auc
    from raydx.refit import refit_state
    from raydx.train import FoldTrainer, build_model, predict

    cfg = TrialConfig.from_params(params)
    held = fold == o
    x_out, y_out = x[held], (y[held] == positive).astype(int)
    inner = [i for i in range(args.folds) if i != o]
    t0 = time.perf_counter()
    val_auc: list[list[float]] = []  # [inner fold][epoch]
    val_prob: list[list[np.ndarray]] = []  # [inner fold][epoch] on the inner fold
    val_pos: list[np.ndarray] = []  # [inner fold] is_positive of the inner fold's images
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
        aucs, vals, probs = [], [], []
        with trainer.own_rng():
            trainer.pretrain()
            for epoch in range(1, args.epochs + 1):
                res = trainer.run_epoch(epoch)
                aucs.append(res.val_auc)
                vals.append(res.val_prob)
                probs.append(predict(trainer.model, x_out))
        val_auc.append(aucs)
        val_prob.append(vals)
        val_pos.append(y[va] == positive)
        out_prob.append(probs)
    mean = np.mean(val_auc, axis=0)
    best = int(mean.argmax()) + 1
    members = [p[best - 1] for p in out_prob]
    ensemble = np.mean(members, axis=0)
    row = {
        "outer_fold": o,
        "inner_cv_auc": round(float(mean.max()), 4),
        "best_epoch": best,
        "ensemble_auc": round(auc(y_out, ensemble), 4),
        **transfer(
            params,
            np.concatenate(val_pos),
            np.concatenate([v[best - 1] for v in val_prob]),
            y_out.astype(bool),
            members,
            args.shrink,
        ),
    }
    if args.no_refit:
        return row | {"seconds": round(time.perf_counter() - t0, 1)}
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
    return row | {
        "refit_auc": round(auc(y_out, predict(model, x_out)), 4),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def transfer(
    params: dict[str, Any],
    inner_pos: np.ndarray,
    inner_oof: np.ndarray,
    out_pos: np.ndarray,
    members: list[np.ndarray],
    shrink: float = 0.8,
) -> dict[str, Any]:
    """The held-out fold's calibration of the inner ensemble: as trained, shifted by the
    intercept fitted on the inner out-of-fold probabilities, and (class-balanced recipes)
    by Bayes' rule from the recipe's mix; plus the members' own mean intercept after the
    shift, to separate what averaging does from what the held-out fold does. ``logit_*``:
    the members averaged on the logit scale instead (a shift of every member is then the
    same shift of their average)."""
    from scipy.special import expit, logit

    from raydx.metrics import auc, calibration
    from raydx.prior import fitted_class_mix, shift

    mix = fitted_class_mix(params, inner_pos, inner_oof)
    assert mix is not None
    ensemble = np.mean(members, axis=0)
    by_logit = expit(np.mean([logit(np.clip(m, 1e-7, 1 - 1e-7)) for m in members], axis=0))
    ways = {
        "raw": ensemble,
        "fitted": shift(ensemble, mix["trained"], mix["mapped_to"]),
        "logit_raw": by_logit,
        "logit_fitted": shift(by_logit, mix["trained"], mix["mapped_to"]),
        # the shift shrunk by a factor, for the average pulls its logits in (README)
        "shrunk": expit(logit(np.clip(ensemble, 1e-7, 1 - 1e-7)) + shrink * mix["shift"]),
    }
    if abs(mix["nominal"][1] - mix["mapped_to"][1]) > 1e-3:
        ways["bayes"] = shift(ensemble, mix["nominal"], mix["mapped_to"])
    out: dict[str, Any] = {
        "shift": round(mix["shift"], 4),
        "logit_mean_auc": round(auc(out_pos.astype(int), by_logit), 4),
    }
    for name, p in ways.items():
        c = calibration(out_pos, p)
        out[f"{name}_intercept"] = round(c["calibration_intercept"], 4)
        out[f"{name}_log_loss"] = round(log_loss(out_pos, p), 4)
        out[f"{name}_brier"] = round(c["brier"], 4)
    shifted = [shift(m, mix["trained"], mix["mapped_to"]) for m in members]
    for name, ms in (("raw", members), ("fitted", shifted)):
        cals = [calibration(out_pos, m) for m in ms]
        out[f"members_{name}_intercept"] = round(
            float(np.mean([c["calibration_intercept"] for c in cals])), 4
        )
        out[f"members_{name}_log_loss"] = round(
            float(np.mean([log_loss(out_pos, m) for m in ms])), 4
        )
        out[f"members_{name}_brier"] = round(float(np.mean([c["brier"] for c in cals])), 4)
    return out


def log_loss(is_pos: np.ndarray, p: np.ndarray) -> float:
    """Clipped at 1e-7 as raydx's calibration clips: some networks reach 0 and 1 in float32."""
    from sklearn.metrics import log_loss as sk_log_loss

    return float(sk_log_loss(is_pos, np.clip(p, 1e-7, 1 - 1e-7), labels=[False, True]))


def main(argv: list[str] | None = None) -> None:
    from raydx.prepare import load_pool

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a run's best.yaml, or a space file (its enqueued point)")
    add_pool_args(ap)
    ap.add_argument("--split-seed", type=int, default=None, help="fold seed (default: the run's)")
    ap.add_argument("--seed", type=int, default=None, help="training seed (default: the run's)")
    ap.add_argument("--outer", type=int, nargs="+", default=None, help="outer folds to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-refit", action="store_true", help="skip the refit model")
    ap.add_argument(
        "--shrink", type=float, default=0.8, help="also score the shift times this (shrunk_*)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = yaml.safe_load(Path(args.config).read_text())
    params = dict(doc["enqueue"][0] if "enqueue" in doc else doc.get("params", doc))
    kw, run_fold_seed = pool_kwargs(args.config, args)
    args.split_seed = run_fold_seed if args.split_seed is None else args.split_seed
    args.seed = kw["seed"] if args.seed is None else args.seed
    pool = load_pool(**kw, fold_seed=args.split_seed)
    if pool.table.n_classes != 2:
        ap.error(f"the calibration shift is binary, but --data has {pool.table.n_classes} classes.")
    x = torch.from_numpy(pool.images)
    rows = []
    for o in args.outer if args.outer is not None else range(args.folds):
        rows.append(
            outer_fold(params, x, pool.table.labels, pool.splits.fold, o, pool.positive, args)
        )
        print(json.dumps(rows[-1]), flush=True)
    ens = [r["ensemble_auc"] for r in rows]
    summary: dict[str, Any] = {
        "summary": f"{len(rows)} outer folds",
        "ensemble_auc_mean": round(float(np.mean(ens)), 4),
    }
    if not args.no_refit:
        ref = [r["refit_auc"] for r in rows]
        summary["refit_auc_mean"] = round(float(np.mean(ref)), 4)
        summary["refit_minus_ensemble"] = [round(b - a, 4) for a, b in zip(ens, ref, strict=True)]
    ends = ("_intercept", "_log_loss", "_brier")
    keys = [k for k in rows[0] if k.endswith(ends) or k in ("shift", "logit_mean_auc")]
    summary |= {f"{k}_mean": round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    for k in [k for k in keys if k.endswith("_intercept")]:
        summary[f"abs_{k}_mean"] = round(float(np.mean([abs(r[k]) for r in rows])), 4)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
