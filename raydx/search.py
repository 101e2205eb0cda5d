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
# Memory at its peak (proportional set size, so that shared pages count once) of a fold
# worker: torch and Ray Train, then the model and a batch's activations, which grow with
# the image's area; and of a trial's own two processes (the Tune function and its Train
# controller, both of which import torch). Measured with search_spaces/cnn.yaml, batch 64
# at most: 0.77, 1.51 and 2.21 GB a worker at 28, 64 and 96 px; 3.5-8 GB a trial of 3
# workers (bench/ has no script for it: /proc/PID/smaps_rollup sampled each second). Ray's
# memory monitor kills workers past 95% of a node's memory, so the default plan runs no
# more trials at once than the nodes' memory holds.
WORKER_MEMORY_BASE = 0.8e9
WORKER_MEMORY_PER_PIXEL = 1.8e5  # bytes per pixel of one image (side x side)
TRIAL_MEMORY = 1.2e9


def worker_memory(image_size: int) -> float:
    """About the most a fold worker takes at this image size (see above; measured up to
    96 px, so larger sizes are an extrapolation)."""
    return WORKER_MEMORY_BASE + WORKER_MEMORY_PER_PIXEL * image_size * image_size


def memory_text(image_size: int) -> str:
    """The estimate in words, as the console gives it."""
    return f"about {worker_memory(image_size) / 1e9:.1f} GB a fold worker at {image_size} px"


@dataclass(frozen=True)
class Resources:
    workers: int  # Ray Train workers per trial; the folds are dealt out round-robin
    cpus_per_worker: float
    gpus_per_worker: float
    threads: int
    max_concurrent_trials: int
    fit_now: int | None = None  # trials the nodes present hold at once (None: not planned)
    # trials the nodes' memory holds, where it set the plan (0: not even one)
    memory_holds: int | None = None
    image_size: int = 28  # what the memory estimate was made for


def plan_resources(
    opts: RunOptions,
    cluster: dict[str, float],
    nodes: list[dict[str, float]] | None = None,
    *,
    joined: bool = False,
    image_size: int = 28,
) -> Resources:
    """How many workers a trial gets, what each holds, and how many trials run at once
    (on CPUs no more than the nodes' memory holds, ``trials_by_memory``, for images of
    ``image_size``).

    By default a trial gets the fewest workers (one torch thread each) that finish an
    epoch of all folds as soon as any number could (``epoch_makespan``): every worker
    process costs a start (about 3 s of CPU for torch and Ray Train), but 5 folds on 2
    workers split 3/2 and leave a core idle a third of the time, while 3 workers (2/2/1)
    time-share 2 cores with none idle. With GPUs every fold gets its own worker, and
    the workers share the GPUs in the fractions given, and each holds its share of the
    CPUs of a GPU node (``nodes``: each node's resources), since a worker that needs a
    GPU runs where the GPU is. On CPUs one trial more runs than the cores hold, so
    worker starts hide behind other trials' epochs.
    """
    from raydx.errors import RaydxError

    cpus = float(cluster.get("CPU", 1.0))
    gpus = float(cluster.get("GPU", 0.0))
    k = opts.folds
    usable = cpus - TRIAL_CPU
    if opts.workers_per_trial is not None:
        w = opts.workers_per_trial
    elif opts.gpus_per_worker > 0:
        w = k
    elif opts.cpus_per_worker is not None:
        w = max(1, min(k, int((usable + 1e-9) // opts.cpus_per_worker)))
    else:
        spans = {n: epoch_makespan(k, n, max(1, int(cpus + 1e-9))) for n in range(1, k + 1)}
        w = min(n for n, span in spans.items() if span <= min(spans.values()) + 1e-9)
    # One trial more than the cores hold, so that the next trial's workers start (about
    # 15 s here) while the others train. Not with GPUs: there the GPUs set how many
    # trials run, and a trial waiting for one would hold CPUs for nothing.
    overlap = opts.gpus_per_worker == 0
    slots = max(1, int(cpus + 1e-9) // w) + 1 if overlap else 1
    slots = min(slots, opts.trials, opts.max_concurrent_trials or slots)  # no one to overlap
    # On GPUs a batch's activations are in the GPU's memory, and no host figure was
    # measured there: the GPUs set how many trials run.
    by_memory = (
        trials_by_memory(nodes, w, image_size)
        if opts.max_concurrent_trials is None and overlap
        else None
    )
    cpu_slots = slots
    if by_memory is not None:
        slots = min(slots, max(1, by_memory))
    if opts.cpus_per_worker is not None:
        per_worker = opts.cpus_per_worker
    else:
        share = (cpus - TRIAL_CPU * slots) / (w * slots)
        if opts.gpus_per_worker > 0:
            # The cluster's CPUs include nodes without GPUs (a head), where no worker of
            # this plan can run: 5 workers of 0.2 GPU and 1 CPU each would need 5 CPUs
            # on a node with 1 GPU and 4, and never start.
            per_gpu = [n.get("CPU", 0.0) / n["GPU"] for n in nodes or [] if n.get("GPU", 0.0) > 0]
            if per_gpu:  # the trial's own process takes its bit from the same CPUs
                share = min(share, max(0.0, min(per_gpu) * opts.gpus_per_worker - TRIAL_CPU / w))
        per_worker = min(1.0, math.floor(share * 1000) / 1000)
    # A trial that the nodes present cannot hold would wait for ever where no autoscaler
    # adds nodes, and a search without a time budget with it (raydx.budget stops such a
    # trial only after the deadline).
    present = (
        " (raydx plans for the nodes present when the search starts: on a cluster whose "
        "autoscaler adds nodes, keep one that holds a trial up, as min_workers: 1)"
        if joined
        else ""
    )
    if per_worker * w + TRIAL_CPU > cpus + 1e-9:
        raise RaydxError(
            f"cpus_per_worker={per_worker} x workers={w} needs {per_worker * w:g} CPUs, but "
            f"the Ray cluster has {cpus:g}; lower --cpus-per-worker or --workers-per-trial"
            f"{present}."
        )
    if opts.gpus_per_worker > 0 and opts.gpus_per_worker * w > gpus + 1e-9:
        raise RaydxError(
            f"gpus_per_worker={opts.gpus_per_worker} x workers={w} needs "
            f"{opts.gpus_per_worker * w:g} GPUs, but the Ray cluster has {gpus:g}{present}."
        )
    fit = workers_that_fit(nodes, per_worker, opts.gpus_per_worker)
    if fit < w:
        gpu = f" and {opts.gpus_per_worker:g} GPU" if opts.gpus_per_worker > 0 else ""
        raise RaydxError(
            f"cpus_per_worker={per_worker} x workers={w}: a worker of {per_worker:g} CPU{gpu} "
            f"runs on one node, and the cluster's nodes hold {fit} such workers; lower "
            f"--cpus-per-worker or --workers-per-trial{present}."
        )
    threads = max(1, int(per_worker))
    by_cpu = int((cpus + 1e-9) // (per_worker * w + TRIAL_CPU))
    by_gpu = (
        int((gpus + 1e-9) // (opts.gpus_per_worker * w)) if opts.gpus_per_worker > 0 else by_cpu
    )
    fit_now = max(1, min(by_cpu, by_gpu))
    held_at_most = fit_now if by_memory is None else max(1, by_memory)
    concurrent = opts.max_concurrent_trials or min(fit_now, held_at_most)
    # what the cores alone would have run at once, which memory cut (a trial's share of
    # the cores follows the trials at once, unless --cpus-per-worker fixes it)
    would = cpu_slots if opts.cpus_per_worker is None else min(cpu_slots, by_cpu)
    held = by_memory if by_memory is not None and by_memory < would else None
    return Resources(
        w, per_worker, opts.gpus_per_worker, threads, concurrent, fit_now, held, image_size
    )


def trials_by_memory(
    nodes: list[dict[str, float]] | None, workers: int, image_size: int
) -> int | None:
    """How many trials of ``workers`` fold workers the memory of the nodes that run them
    holds (Ray's ``memory`` resource of each node with CPUs: what it had free at its
    start, less the object store; a head without CPUs runs none), 0 where not even one;
    None where a node does not say. On several nodes each worker is on one node, and a
    trial's own processes take their share of the total."""
    nodes = [n for n in nodes or [] if n.get("CPU", 0.0) > 0]
    if not nodes or any("memory" not in n for n in nodes):
        return None
    per_trial = workers * worker_memory(image_size) + TRIAL_MEMORY
    if len(nodes) == 1:
        return int(nodes[0]["memory"] // per_trial)
    each = sum(math.floor(n["memory"] / worker_memory(image_size) + 1e-9) for n in nodes)
    total = sum(n["memory"] for n in nodes)
    return int(min(each // workers, total // per_trial))


def plan_on_cluster(opts: RunOptions, *, image_size: int) -> Resources:
    """``plan_resources`` for the Ray this process started or joined, as its nodes are now."""
    import os

    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    joined = bool(opts.ray_address or os.environ.get("RAY_ADDRESS"))
    return plan_resources(
        opts, ray.cluster_resources(), nodes, joined=joined, image_size=image_size
    )


def workers_that_fit(nodes: list[dict[str, float]] | None, cpus: float, gpus: float) -> float:
    """How many workers of ``cpus`` and ``gpus`` each the nodes hold (a worker is on one
    node): the cluster's totals can hold a trial whose workers no node can place."""
    if nodes is None:
        return math.inf

    def holds(have: float, need: float) -> float:
        return math.floor(have / need + 1e-9) if need > 0 else math.inf

    return sum(min(holds(n.get("CPU", 0.0), cpus), holds(n.get("GPU", 0.0), gpus)) for n in nodes)


def refit_resources(res: Resources) -> dict[str, Any]:
    """What ``final: refit`` (one model, after the search) gets: on GPUs one fold
    worker's share; on CPUs what the search's trials held, up to 8 threads."""
    if res.gpus_per_worker > 0:
        return {"cpus": res.cpus_per_worker, "gpus": res.gpus_per_worker, "threads": res.threads}
    held = res.workers * res.cpus_per_worker * res.max_concurrent_trials
    threads = max(1, min(8, round(held)))
    return {"cpus": min(held, threads), "gpus": 0.0, "threads": threads}


def epoch_makespan(folds: int, workers: int, cores: int) -> float:
    """Time for ``workers`` one-thread processes to train one epoch of ``folds`` folds (a
    fold-epoch takes 1) on ``cores`` cores that the OS shares evenly among them."""
    left = [float(len(folds_of_worker(r, workers, folds))) for r in range(workers)]
    t = 0.0
    while any(x > 0 for x in left):
        active = [x for x in left if x > 0]
        rate = min(1.0, cores / len(active))
        step = min(active)
        t += step / rate
        left = [x - step if x > 0 else x for x in left]
    return t


def folds_of_worker(rank: int, workers: int, folds: int) -> list[int]:
    """The folds worker ``rank`` trains: round-robin, so loads differ by at most one."""
    return list(range(rank, folds, workers))


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

    from raydx.resumable_search import ResumableOptunaSearch
    from raydx.study import RunStudyStorage

    if sampler == "random":  # the baseline of bench/search_efficiency.py
        chosen: Any = optuna.samplers.RandomSampler(seed=seed)
    else:
        chosen = _tpe(optuna, seed, trials)
    return ResumableOptunaSearch(
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


ASHA_REDUCTION = 3


def _uses_asha(opts: RunOptions) -> bool:
    return opts.scheduler in ("asha", "asha+paired") and opts.epochs > opts.grace_period


def make_scheduler(opts: RunOptions) -> Any:
    """The early-stopping rule: none, ASHA, the paired fold test, or both (raydx.stopper);
    each also stops the trials that stay silent past the time budget (raydx.budget)."""
    from raydx.stopper import Asha, PairedASHA, PairedFoldStopper, RunToEnd

    if opts.scheduler == "none" or opts.epochs <= opts.grace_period:
        return RunToEnd()
    if opts.scheduler == "paired":
        return PairedFoldStopper(max_t=opts.epochs, grace_period=opts.grace_period)
    asha: dict[str, Any] = dict(
        # Epochs, not Tune's report count: an epoch replayed after a restart from a
        # checkpoint is reported again and must not count twice.
        time_attr="epoch",
        metric=OBJECTIVE,
        mode="max",
        max_t=opts.epochs,
        grace_period=opts.grace_period,
        reduction_factor=ASHA_REDUCTION,
    )
    if opts.scheduler == "asha+paired":
        return PairedASHA(**asha)
    return Asha(**asha)


def milestone_epochs(opts: RunOptions) -> list[int]:
    """Epochs at which ASHA compares trials: a trial must report exactly these (its
    workers may otherwise send several epochs at once, see ``raydx.cv``), or it would
    reach a rung with more epochs behind it than the trials it is compared with. (A
    superset of ASHA's rungs: Ray may leave out one at ``max_t``, the last epoch.)"""
    if not _uses_asha(opts):
        return []
    out, t = [], opts.grace_period
    while t <= opts.epochs:
        out.append(t)
        t *= ASHA_REDUCTION
    return out


def study_url(output: Path) -> str:
    return f"sqlite:///{(output / 'study.db').resolve()}"
