"""Space file -> Optuna (through Ray Tune's ``OptunaSearch``), scheduler and resources."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydx.config import RunOptions
from raydx.space import SearchSpace

OBJECTIVE = "objective"  # running maximum over epochs of the cross-fold mean AUC
STUDY_NAME = "raydx"
TRIAL_CPU = 0.01  # the Tune trial only drives its Train run; the folds get the cores


@dataclass(frozen=True)
class Resources:
    cpus_per_fold: float
    gpus_per_fold: float
    threads: int
    max_concurrent_trials: int


def plan_resources(opts: RunOptions, cluster: dict[str, float]) -> Resources:
    """Fold workers of one trial share what the cluster has; fractions are fine in Ray."""
    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0))
    k = opts.folds
    if opts.cpus_per_fold is not None:
        per_fold = opts.cpus_per_fold
    else:
        per_fold = min(1.0, math.floor((cpus - TRIAL_CPU) / k * 1000) / 1000)
    if per_fold * k + TRIAL_CPU > cpus + 1e-9:
        from raydx.errors import RaydxError

        raise RaydxError(
            f"cpus_per_fold={per_fold} x folds={k} needs {per_fold * k:g} CPUs, but the Ray "
            f"cluster has {cpus:g}; lower --cpus-per-fold or use fewer folds."
        )
    if opts.gpus_per_fold > 0 and opts.gpus_per_fold * k > gpus + 1e-9:
        from raydx.errors import RaydxError

        raise RaydxError(
            f"gpus_per_fold={opts.gpus_per_fold} x folds={k} needs "
            f"{opts.gpus_per_fold * k:g} GPUs, but the Ray cluster has {gpus:g}."
        )
    threads = max(1, int(per_fold))
    by_cpu = int((cpus + 1e-9) // (per_fold * k + TRIAL_CPU))
    by_gpu = int((gpus + 1e-9) // (opts.gpus_per_fold * k)) if opts.gpus_per_fold > 0 else by_cpu
    concurrent = opts.max_concurrent_trials or max(1, min(by_cpu, by_gpu))
    return Resources(per_fold, opts.gpus_per_fold, threads, concurrent)


def make_searcher(
    space: SearchSpace,
    *,
    seed: int,
    trials: int,
    storage_url: str,
    enqueue: bool = True,
    sampler: str = "tpe",
) -> Any:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from raydx.study import RunStudyStorage

    if sampler == "random":  # the baseline of bench/search_efficiency.py
        chosen: Any = optuna.samplers.RandomSampler(seed=seed)
    else:
        chosen = _tpe(optuna, seed, trials)
    return OptunaSearch(
        space=space.define_by_run,
        metric=OBJECTIVE,
        mode="max",
        points_to_evaluate=(space.enqueue_points() or None) if enqueue else None,
        sampler=chosen,
        storage=RunStudyStorage(storage_url),
        study_name=STUDY_NAME,
    )


def _tpe(optuna: Any, seed: int, trials: int) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=max(3, min(10, trials // 3)),
            multivariate=True,
            group=True,  # conditional parameters (define-by-run) get their own groups
            constant_liar=True,  # concurrent trials do not all sample the same point
        )


def make_scheduler(opts: RunOptions) -> Any:
    if opts.scheduler != "asha" or opts.epochs <= opts.grace_period:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        # Epochs, not Tune's report count: an epoch replayed after a restart from a
        # checkpoint is reported again and must not count twice.
        time_attr="epoch",
        metric=OBJECTIVE,
        mode="max",
        max_t=opts.epochs,
        grace_period=opts.grace_period,
        reduction_factor=3,
    )


def study_url(output: Path) -> str:
    return f"sqlite:///{(output / 'study.db').resolve()}"
