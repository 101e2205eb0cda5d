"""raydx's fixed costs in a whole search: how much of the machine trains, how much waits.

    .venv/bin/python bench/search_overhead.py                   # 20 trials of cnn.yaml
    .venv/bin/python bench/search_overhead.py --trials 4 --epochs 4 --folds 3   # quick
    python3 bench/search_overhead.py --gpus-per-worker 0.1 --trials 8   # on a GPU

Runs ``raydx tune`` (BreastMNIST, ``search_spaces/cnn.yaml`` with its own scheduler and
defaults unless overridden) and times every epoch of every trial from the arrival of its
report in ``events.jsonl`` (polled every 20 ms) and the epoch's own compute time
(``epoch_time_s``). A core counts as busy while a worker thread runs an epoch on it:
busy(t) = min(cores, sum of the torch threads of the workers that are inside an epoch at
t). Everything else is fixed cost: Ray start, search set-up, worker starts that no other
trial's training overlaps, report and checkpoint gaps between epochs, and the winner's
test scoring and report at the end.

Idle threads of a worker that waits for a slower worker at the epoch's all-gather count
as busy here (load imbalance is not a fixed cost); the summary prints how uneven the
folds were dealt.

With ``--gpus-per-worker`` the folds train on the GPU, and cores are not what is
scarce: it prints instead the share of the wall time in which some trial was inside an
epoch and the GPU's utilisation over the whole command (``nvidia-smi``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from overhead import DATA, REPO, EventClock, GpuSampler


def busy_fraction(
    intervals: list[tuple[float, float, int]], t0: float, t1: float, cores: int
) -> float:
    """Share of ``cores x (t1 - t0)`` covered by ``(start, end, threads)`` intervals."""
    edges = sorted(
        {t0, t1, *(max(t0, a) for a, _, _ in intervals), *(min(t1, b) for _, b, _ in intervals)}
    )
    busy = 0.0
    for a, b in itertools.pairwise(edges):
        if b <= a:
            continue
        mid = (a + b) / 2
        threads = sum(n for s, e, n in intervals if s <= mid < e)
        busy += min(cores, threads) * (b - a)
    return busy / (cores * (t1 - t0))


def epoch_intervals(
    seen: list[tuple[float, dict]], threads: int
) -> tuple[list[tuple[float, float, int]], dict[str, tuple[float, float]]]:
    """(start, end, threads) of every epoch trained, from ``EventClock.seen``, and each
    trial's first report (arrival, compute). A restored worker re-sends old epochs:
    each (trial, epoch) counts once, at its first arrival. Short epochs arrive several
    to a report (raydx.cv.batched): they ran back to back, up to its arrival."""
    keys: set[tuple[str, int]] = set()
    batches: dict[tuple[str, float], list[float]] = {}  # (trial, arrival) -> computes
    for t, e in seen:
        if e["e"] != "result" or (e["trial_id"], int(e["result"]["epoch"])) in keys:
            continue
        keys.add((e["trial_id"], int(e["result"]["epoch"])))
        batches.setdefault((e["trial_id"], t), []).append(float(e["result"]["epoch_time_s"]))
    intervals = []
    first: dict[str, tuple[float, float]] = {}
    for (tid, t), computes in batches.items():
        end = t
        for compute in reversed(computes):
            intervals.append((end - compute, end, threads))
            end -= compute
        first.setdefault(tid, (t, t - end))
    return intervals, first


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--space", default=str(REPO / "search_spaces" / "cnn.yaml"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--grace-period", type=int, default=None)
    ap.add_argument("--workers-per-trial", type=int, default=None)
    ap.add_argument("--cpus-per-worker", type=float, default=None)
    ap.add_argument("--max-concurrent-trials", type=int, default=None)
    ap.add_argument("--gpus-per-worker", type=float, default=None)
    args = ap.parse_args(argv)
    gpu = GpuSampler() if args.gpus_per_worker else None

    import ray

    from raydx.config import RunOptions
    from raydx.ray_env import init_ray
    from raydx.run import resolve_options, tune
    from raydx.search import plan_resources
    from raydx.space import load_space

    t0 = time.perf_counter()
    init_ray(None, include_dashboard=True, log_to_driver=False)
    t_ray = time.perf_counter()
    space = load_space(args.space)
    overrides = {
        k: v
        for k, v in {
            "trials": args.trials,
            "folds": args.folds,
            "epochs": args.epochs,
            "seed": args.seed,
            "grace_period": args.grace_period,
            "workers_per_trial": args.workers_per_trial,
            "cpus_per_worker": args.cpus_per_worker,
            "max_concurrent_trials": args.max_concurrent_trials,
            "gpus_per_worker": args.gpus_per_worker,
        }.items()
        if v is not None
    }
    opts: RunOptions = resolve_options(space, {"data": args.data, **overrides})
    cores = int(ray.cluster_resources()["CPU"])
    res = plan_resources(opts, ray.cluster_resources())
    out = Path(tempfile.mkdtemp(prefix="raydx-search-overhead-")) / "run"
    clock = EventClock(out / "events.jsonl")
    lines: list[str] = []
    try:
        result = tune(space, data=args.data, output=out, log=lines.append, **overrides)
    finally:
        clock.stop()
    t_end = time.perf_counter()

    starts = {e["trial_id"]: t for t, e in clock.seen if e["e"] == "start"}
    reports = [(t, e["trial_id"], e["result"]) for t, e in clock.seen if e["e"] == "result"]
    threads = res.workers * res.threads
    intervals, first = epoch_intervals(clock.seen, threads)
    busy = busy_fraction(intervals, t0, t_end, cores)
    starts_s = [first[tid][0] - first[tid][1] - starts[tid] for tid in first if tid in starts]
    wall = t_end - t0
    folds = opts.folds
    per_worker = [len(range(r, folds, res.workers)) for r in range(res.workers)]

    print(
        f"\n{args.trials} trials of {Path(args.space).name}, {folds} folds, up to "
        f"{opts.epochs} epochs, scheduler {opts.scheduler}; {Path(args.data).name}, {cores} cores"
    )
    print(
        f"{res.workers} worker(s) per trial x {res.threads} thread(s), {res.cpus_per_worker:g} "
        f"CPU each, folds per worker {per_worker}, "
        f"up to {res.max_concurrent_trials} trial(s) at once"
    )
    print(f"{'wall time of the command':<44}{wall:8.1f} s")
    print(f"{'  Ray start':<44}{t_ray - t0:8.1f} s")
    print(
        f"{'  set-up (data, Optuna, Tune) to 1st trial':<44}{min(starts.values()) - t_ray:8.1f} s"
    )
    last = max(t for t, _, _ in reports)
    print(f"{'  after the last epoch (winner, test, report)':<44}{t_end - last:8.1f} s")
    print(f"{'trials / epochs trained (all folds)':<44}{len(first):8d} / {len(intervals)}")
    print(
        f"{'worker start per trial, median (max)':<44}{statistics.median(starts_s):8.1f} s "
        f"({max(starts_s):.1f})"
    )
    print(f"{'epoch compute, median':<44}{np.median([b - a for a, b, _ in intervals]):8.2f} s")
    if gpu is not None:
        gpu.stop()
        some = busy_fraction([(a, b, 1) for a, b, _ in intervals], t0, t_end, 1)
        g = gpu.between(t0, t_end)
        print(f"{'some trial training (GPU has work)':<44}{some:8.1%}")
        print(f"{'GPU utilisation (nvidia-smi), mean':<44}{g['util_mean']:8.1f} %")
        print(f"{'GPU memory used, most':<44}{g['mem_max_mib']:8.0f} MiB")
    else:
        print(f"{'cores busy training':<44}{busy:8.1%}")
        print(f"{'fixed costs (the rest)':<44}{1 - busy:8.1%}   (target < 20%)")
    print(f"best CV AUC {result.best['cv_auc_mean']:.3f}; run folder: {out}")


if __name__ == "__main__":
    main()
