"""The data options shared by the benches that re-train a configuration without Ray.

A run's ``best.yaml`` brings its run: the benches then load the run's own data, test
split, folds, positive class and epochs (``raydx.prepare.pool_options``), so a winner of a
synthetic search is never re-trained on BreastMNIST by mistake. A space file or a plain
mapping of parameters gets BreastMNIST's ``.npz`` and 5 folds. Flags override either.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BREASTMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"


def add_pool_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--data", default=None, help="any --data raydx takes (default: the run's)")
    ap.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="the run's --seed: generates synthetic data, draws a test split where none is given",
    )
    ap.add_argument("--folds", type=int, default=None, help="default: the run's, else 5")
    ap.add_argument("--epochs", type=int, default=None, help="default: the run's, else 40")
    ap.add_argument("--positive-class", default=None, help="as raydx's --positive-class")


def pool_kwargs(config: str, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """``raydx.prepare.load_pool``'s arguments but ``fold_seed``, and the fold seed the run
    drew its folds from (its ``--fold-seed``, else its ``--seed``).

    Sets ``args.folds`` and ``args.epochs`` to what they resolve to."""
    from raydx.prepare import pool_options

    run = Path(config).resolve().parent
    if (run / "run.json").is_file():
        kw = pool_options(run)
        epochs = int(json.loads((run / "run.json").read_text())["options"]["epochs"])
        print(f"the data of the run in {run}: {kw['data']}", file=sys.stderr)
    else:
        kw = {"data": str(BREASTMNIST), "folds": 5, "seed": 0, "fold_seed": None}
        epochs = 40
    for key, flag in (("data", "data"), ("seed", "data_seed"), ("folds", "folds")):
        if getattr(args, flag) is not None:
            kw[key] = getattr(args, flag)
    if args.positive_class is not None:
        kw["positive_class"] = args.positive_class
    args.folds = kw["folds"]
    args.epochs = args.epochs if args.epochs is not None else epochs
    fold_seed = kw.pop("fold_seed")
    return kw, kw["seed"] if fold_seed is None else fold_seed
