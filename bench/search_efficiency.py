"""Search efficiency: Optuna TPE with early stopping against random search, best CV AUC
per epoch spent.

    .venv/bin/python bench/search_efficiency.py                       # 3 seeds, ~50 min here
    .venv/bin/python bench/search_efficiency.py --schedulers asha     # TPE + ASHA only, ~30 min
    .venv/bin/python bench/search_efficiency.py --seeds 0 --trials 3 --epochs 3   # a check

All searches run the same space (``search_spaces/cnn.yaml``) on the same folds, without
the file's enqueued points (``--keep-enqueued`` keeps them): a hand-tuned first trial
would make every curve start at its score and compare nothing about the samplers.
Random search (Optuna's ``RandomSampler`` over the same
define-by-run space) runs ``--trials`` trials to the full ``--epochs`` without a
scheduler; its budget is ``trials x epochs`` epochs. TPE gets twice the trials with each
of ``--schedulers`` (``asha``; ``paired``, the paired fold test of ``raydx.stopper``;
``asha+paired``, both) and is cut at that budget. An epoch is one epoch of all folds of
a trial. Trials run one at a time, so the order in which they finish is the order the
budget is spent in.

The target (issue #6): TPE + ASHA reaches random search's final best CV AUC with at
most half of random search's epochs, averaged over the seeds; a fold-aware stopper is
worth having if it gets there with fewer epochs than ASHA.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "breastmnist.npz"


def finishing_order(out: Path) -> list[str]:
    """Trial ids in the order the trials ended (one at a time: the order of the budget)."""
    order: list[str] = []
    for line in (out / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["e"] in ("complete", "error") and e["trial_id"] not in order:
            order.append(e["trial_id"])
    return order


def curve(out: Path) -> list[tuple[int, float]]:
    """(cumulative epochs, best CV AUC so far) after each trial, in finishing order."""
    trials = pd.read_parquet(out / "trials.parquet").set_index("trial_id")
    spent, best, points = 0, float("-inf"), []
    for tid in finishing_order(out):
        row = trials.loc[tid]
        spent += int(row.epochs_run)
        if pd.notna(row.cv_auc_mean):
            best = max(best, float(row.cv_auc_mean))
        points.append((spent, best))
    return points


def best_within(points: list[tuple[int, float]], budget: int) -> float:
    return max((b for e, b in points if e <= budget), default=float("nan"))


def epochs_to_reach(points: list[tuple[int, float]], target: float) -> float:
    return next((e for e, b in points if b >= target - 1e-12), float("inf"))


def run(space: str, data: str, seed: int, scheduler: str, args: argparse.Namespace) -> Path:
    """One search: ``scheduler`` 'none' is random search, any other TPE with it."""
    import dataclasses

    from raydx.run import tune
    from raydx.space import load_space

    loaded = load_space(space)
    if not args.keep_enqueued:
        loaded = dataclasses.replace(loaded, enqueue=())
    tag = "random" if scheduler == "none" else scheduler.replace("+", "_")
    out = Path(tempfile.mkdtemp(prefix=f"raydx-eff-{tag}-{seed}-")) / "run"
    # one trial at a time, so that the budget is spent in the order trials finish
    kw: dict[str, Any] = dict(
        data=data, folds=args.folds, epochs=args.epochs, seed=seed, max_concurrent_trials=1
    )
    if args.limit:
        kw["limit"] = args.limit
    if scheduler == "none":
        kw.update(trials=args.trials, sampler="random", scheduler="none")
    else:
        kw.update(trials=2 * args.trials, sampler="tpe", scheduler=scheduler)
        kw["grace_period"] = args.grace_period
    tune(loaded, output=out, log=lambda *a: None, **kw)
    return out


def stopped(out: Path) -> int:
    trials = pd.read_parquet(out / "trials.parquet")
    return int((trials["stopped_by"] == "scheduler").sum())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "cnn.yaml"))
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=8, help="random search's trials")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--grace-period", type=int, default=3)
    ap.add_argument(
        "--schedulers",
        nargs="+",
        default=["asha", "paired", "asha+paired"],
        choices=["asha", "paired", "asha+paired"],
        help="TPE's early stopping, one search each",
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--keep-enqueued", action="store_true")
    args = ap.parse_args(argv)

    from raydx.ray_env import init_ray

    init_ray(None, include_dashboard=True, log_to_driver=False)
    budget = args.trials * args.epochs
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        rnd = curve(run(args.space, args.data, seed, "none", args))
        rnd_s = time.perf_counter() - t0
        target = rnd[-1][1]
        shown = ", ".join(f"{e}:{b:.3f}" for e, b in rnd)
        print(f"seed {seed} {'random':11} (epochs:best CV AUC) {shown}", flush=True)
        for sched in args.schedulers:
            t1 = time.perf_counter()
            out = run(args.space, args.data, seed, sched, args)
            pts = curve(out)
            need = epochs_to_reach(pts, target)
            rows.append(
                {
                    "seed": seed,
                    "tpe_with": sched,
                    "random_best": target,
                    "random_epochs": rnd[-1][0],
                    "random_s": rnd_s,
                    "best_at_budget": best_within(pts, budget),
                    "epochs_to_random_best": need,
                    "fraction_of_budget": need / budget,
                    "trials_in_budget": sum(e <= budget for e, _ in pts),
                    "stopped": stopped(out),
                    "tpe_s": time.perf_counter() - t1,
                }
            )
            shown = ", ".join(f"{e}:{b:.3f}" for e, b in pts if e <= budget)
            print(f"seed {seed} tpe+{sched:7} (epochs:best CV AUC) {shown}", flush=True)
    table = pd.DataFrame(rows)
    print()
    print(f"budget: {args.trials} trials x {args.epochs} epochs = {budget} epochs per search")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    for sched, t in table.groupby("tpe_with", sort=False):
        fractions = t["fraction_of_budget"]
        finite = fractions.map(lambda f: f != float("inf")).all()
        mean = f"{fractions.mean():.2f}" if finite else "inf"
        print(
            f"TPE + {sched}: reached random search's final best with {mean} of its epochs "
            f"on average (target <= 0.50); best CV AUC within the budget "
            f"{t['best_at_budget'].mean():.3f} (random {t['random_best'].mean():.3f})"
        )


if __name__ == "__main__":
    main()
