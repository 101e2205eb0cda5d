"""Search helpers that need no Ray cluster: resources, scheduler, options, subsets, output."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from raydx.config import RunOptions
from raydx.data.table import ImageTable
from raydx.errors import RaydxError
from raydx.prepare import limit_rows
from raydx.run import resolve_options
from raydx.run_folder import (
    LOCK,
    absolute_data,
    check_output_location,
    check_saved_data,
    claim_output,
)
from raydx.search import (
    OBJECTIVE,
    TRIAL_CPU,
    TRIAL_MEMORY,
    epoch_makespan,
    folds_of_worker,
    make_scheduler,
    plan_resources,
    refit_resources,
    worker_memory,
    workers_that_fit,
)
from raydx.space import parse_space
from raydx.stopper import RunToEnd

# ---------------------------------------------------------------- plan_resources


def test_two_cpus_three_folds_three_workers() -> None:
    res = plan_resources(RunOptions(folds=3, trials=1), {"CPU": 2.0})
    assert res.workers == 3  # 2 workers would split 2/1 and leave a core idle half the time
    assert res.cpus_per_worker * 3 + TRIAL_CPU <= 2.0
    assert res.cpus_per_worker * 3 > 1.98  # and the cores are used, not left idle
    assert res.threads == 1
    assert res.max_concurrent_trials == 1
    assert res.gpus_per_worker == 0.0


def test_a_refit_gets_what_the_search_held() -> None:
    """After the search its cores are free: the one refit model trains on all of them
    (a thread per core, at most 8); on GPUs with one fold worker's share."""
    for cpus, threads in ((2.0, 2), (16.0, 8)):
        res = plan_resources(RunOptions(folds=5, trials=20), {"CPU": cpus})
        got = refit_resources(res)
        assert got["threads"] == threads and got["gpus"] == 0.0
        assert got["cpus"] <= min(cpus, threads)
    res = plan_resources(RunOptions(folds=5, trials=20), {"CPU": 2.0})
    assert refit_resources(res)["cpus"] > 1.9  # both cores, as a Ray resource request
    res = plan_resources(RunOptions(folds=5, gpus_per_worker=0.2), {"CPU": 8.0, "GPU": 1.0})
    assert refit_resources(res) == {"cpus": res.cpus_per_worker, "gpus": 0.2, "threads": 1}


def test_gpu_workers_hold_a_share_of_a_gpu_node_s_cpus_not_of_the_cluster_s() -> None:
    # cluster/ray-cluster.yaml: a head of 8 CPUs without a GPU, one g5.xlarge (4 CPUs,
    # 1 GPU). 1 CPU per worker, from the cluster's 12, would need 5 CPUs on the GPU node.
    head, gpu = {"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}
    opts = RunOptions(folds=5, trials=20, gpus_per_worker=0.2)
    res = plan_resources(opts, {"CPU": 12.0, "GPU": 1.0}, [head, gpu])
    assert res.workers == 5 and res.max_concurrent_trials == 1
    assert res.cpus_per_worker * 5 <= 4.0 - TRIAL_CPU  # all five fit on the GPU node
    assert res.cpus_per_worker == 0.798
    # the smallest GPU node decides; one with CPUs to spare gives a whole core a worker
    two = [head, gpu, {"CPU": 16.0, "GPU": 1.0}]
    assert plan_resources(opts, {"CPU": 28.0, "GPU": 2.0}, two).cpus_per_worker == 0.798
    big = plan_resources(opts, {"CPU": 24.0, "GPU": 1.0}, [head, {"CPU": 16.0, "GPU": 1.0}])
    assert big.cpus_per_worker == 1.0
    # a node of 4 GPUs and 16 CPUs: 4 CPUs a GPU, for its 5 workers
    quad = plan_resources(opts, {"CPU": 16.0, "GPU": 4.0}, [{"CPU": 16.0, "GPU": 4.0}])
    assert quad.cpus_per_worker == 0.798 and quad.max_concurrent_trials == 4  # was 3 of 4
    # four at once, as the README's command for an autoscaling cluster: three wait for nodes
    grow = RunOptions(folds=5, trials=20, gpus_per_worker=0.2, max_concurrent_trials=4)
    res = plan_resources(grow, {"CPU": 12.0, "GPU": 1.0}, [head, gpu])
    assert res.max_concurrent_trials == 4 and res.cpus_per_worker == 0.798
    # without the nodes' shapes, as before
    assert plan_resources(opts, {"CPU": 12.0, "GPU": 1.0}).cpus_per_worker == 1.0


def test_sixteen_cpus_five_folds() -> None:
    res = plan_resources(RunOptions(folds=5, trials=1), {"CPU": 16.0})
    assert res.workers == 5  # at most one worker per fold
    assert res.cpus_per_worker == 1.0
    assert res.threads == 1
    assert res.max_concurrent_trials == 3  # 3 x (5 + trial share) <= 16 < 4 x 5


def test_a_search_on_cpus_runs_one_trial_more_than_the_cores_hold() -> None:
    """Two trials of 3 workers at 0.33 CPU share 2 cores: one starts while one trains."""
    res = plan_resources(RunOptions(folds=5, trials=20), {"CPU": 2.0})
    assert (res.workers, res.max_concurrent_trials) == (3, 2)
    assert res.cpus_per_worker * 3 * 2 + 2 * TRIAL_CPU <= 2.0
    assert res.threads == 1
    res = plan_resources(RunOptions(folds=5, trials=20), {"CPU": 16.0})
    assert (res.workers, res.max_concurrent_trials) == (5, 4)  # 3 trials fill 15 cores
    # nothing to overlap with: one trial gets the cores' whole share
    res = plan_resources(RunOptions(folds=5, trials=1), {"CPU": 2.0})
    assert (res.workers, res.max_concurrent_trials) == (3, 1)
    assert res.cpus_per_worker * 3 > 1.98
    # asked for, one at a time
    res = plan_resources(RunOptions(folds=5, trials=20, max_concurrent_trials=1), {"CPU": 2.0})
    assert res.max_concurrent_trials == 1
    assert res.cpus_per_worker * 3 > 1.98


def test_the_nodes_memory_caps_how_many_trials_run_at_once() -> None:
    """16 cores plan 4 trials of 5 fold workers; a node whose memory (Ray's ``memory``
    resource) holds fewer would have them killed by Ray's memory monitor."""
    opts = RunOptions(folds=5, trials=20)
    cores = {"CPU": 16.0}
    trial = 5 * worker_memory(28) + TRIAL_MEMORY
    roomy = plan_resources(opts, cores, [{**cores, "memory": 64e9}])
    assert (roomy.max_concurrent_trials, roomy.memory_holds) == (4, None)
    small = plan_resources(opts, cores, [{**cores, "memory": 2 * trial + 1e6}])
    assert (small.workers, small.max_concurrent_trials, small.memory_holds) == (5, 2, 2)
    assert small.cpus_per_worker == 1.0  # the two trials' workers get whole cores
    # larger images take more: the same node holds one trial of 96 px
    big = plan_resources(opts, cores, [{**cores, "memory": 14e9}], image_size=96)
    assert plan_resources(opts, cores, [{**cores, "memory": 14e9}]).max_concurrent_trials == 2
    assert (big.max_concurrent_trials, big.memory_holds, big.image_size) == (1, 1, 96)
    # one trial however little memory, and said (0: not even one)
    tiny = plan_resources(opts, cores, [{**cores, "memory": 1e9}])
    assert (tiny.max_concurrent_trials, tiny.memory_holds) == (1, 0)
    one = plan_resources(RunOptions(folds=5, trials=1), cores, [{**cores, "memory": 1e9}])
    assert (one.max_concurrent_trials, one.memory_holds) == (1, 0)
    # an audit: on 2 cores the cut from 2 trials to 1 was never said (the CPU share was
    # recomputed for 1 trial, and the cores alone then "held" 1 as well)
    two_cores = {"CPU": 2.0}
    res = plan_resources(opts, two_cores, [{**two_cores, "memory": 5e9}])
    assert (res.workers, res.max_concurrent_trials, res.memory_holds) == (3, 1, 1)
    assert plan_resources(opts, two_cores, [{**two_cores, "memory": 17.5e9}]).memory_holds is None
    # several nodes: workers anywhere, each trial's own processes counted once
    two = [{"CPU": 8.0, "memory": 7 * worker_memory(28)}] * 2
    assert plan_resources(opts, cores, two).max_concurrent_trials == 2
    # the user's --max-concurrent-trials is theirs; nodes that do not say: as before
    asked = RunOptions(folds=5, trials=20, max_concurrent_trials=3)
    assert plan_resources(asked, cores, [{**cores, "memory": 1e9}]).max_concurrent_trials == 3
    assert plan_resources(opts, cores, [cores]).max_concurrent_trials == 4
    gpu = RunOptions(folds=5, trials=20, gpus_per_worker=0.2)
    node = {"CPU": 16.0, "GPU": 4.0}
    assert plan_resources(gpu, node, [node]).max_concurrent_trials == 4
    # on GPUs activations are in the GPU's memory, not measured for the host: GPUs decide
    low = plan_resources(gpu, node, [{**node, "memory": 2 * trial + 1e6}])
    assert (low.max_concurrent_trials, low.memory_holds) == (4, None)
    # a head without CPUs runs no fold worker: its memory is not counted (a review)
    head = {"CPU": 0.0, "memory": 100e9}
    worker = {**cores, "memory": 2 * trial + 1e6}
    assert plan_resources(opts, cores, [head, worker]).max_concurrent_trials == 2
    # --cpus-per-worker 2 on 16 cores holds 3 trials of 2 workers: memory for 3 did not
    # cut it (it was said to, a review); memory for 2 did
    sized = RunOptions(folds=5, trials=20, cpus_per_worker=2.0, workers_per_trial=2)
    a_trial = 2 * worker_memory(28) + TRIAL_MEMORY
    res = plan_resources(sized, cores, [{**cores, "memory": 3 * a_trial + 1e6}])
    assert (res.max_concurrent_trials, res.memory_holds) == (3, None)
    res = plan_resources(sized, cores, [{**cores, "memory": 2 * a_trial + 1e6}])
    assert (res.max_concurrent_trials, res.memory_holds) == (2, 2)


def test_the_memory_estimate_covers_what_was_measured() -> None:
    """Peak PSS of a fold worker (search_spaces/cnn.yaml, measured): 0.77, 1.51 and
    2.21 GB at 28, 64 and 96 px."""
    for side, measured in ((28, 0.77e9), (64, 1.51e9), (96, 2.21e9)):
        assert measured <= worker_memory(side) <= 1.3 * measured


def test_gpus_set_how_many_trials_run() -> None:
    res = plan_resources(
        RunOptions(folds=5, trials=20, gpus_per_worker=0.2), {"CPU": 16.0, "GPU": 1.0}
    )
    assert (res.workers, res.max_concurrent_trials) == (5, 1)
    assert res.cpus_per_worker == 1.0


@pytest.mark.parametrize(
    ("folds", "cpus", "workers"),
    [(5, 2, 3), (4, 2, 2), (10, 2, 2), (2, 2, 2), (5, 16, 5), (5, 4, 5), (10, 4, 5), (6, 4, 6)],
)
def test_fewest_workers_that_keep_the_cores_busy(folds: int, cpus: int, workers: int) -> None:
    res = plan_resources(RunOptions(folds=folds, trials=1), {"CPU": float(cpus)})
    assert res.workers == workers
    ideal = max(folds / cpus, 1.0)  # every core busy until the epoch ends
    assert epoch_makespan(folds, workers, cpus) == pytest.approx(ideal)
    if workers > 1:
        assert epoch_makespan(folds, workers - 1, cpus) > ideal + 1e-9


def test_epoch_makespan() -> None:
    assert epoch_makespan(5, 2, 2) == pytest.approx(3.0)  # 3/2: the slower worker decides
    assert epoch_makespan(5, 3, 2) == pytest.approx(2.5)  # 2/2/1 time-shared: no idle core
    assert epoch_makespan(5, 5, 2) == pytest.approx(2.5)
    assert epoch_makespan(5, 1, 16) == pytest.approx(5.0)
    assert epoch_makespan(5, 5, 16) == pytest.approx(1.0)


def test_one_cpu() -> None:
    res = plan_resources(RunOptions(folds=5, trials=1), {"CPU": 1.0})
    assert (res.workers, res.threads, res.max_concurrent_trials) == (1, 1, 1)
    assert res.cpus_per_worker + TRIAL_CPU <= 1.0


def test_explicit_cpus_per_worker_and_concurrency() -> None:
    res = plan_resources(RunOptions(folds=3, cpus_per_worker=2.0), {"CPU": 16.0})
    assert res.cpus_per_worker == 2.0
    assert res.workers == 3
    assert res.threads == 2  # whole CPUs become torch threads
    assert res.max_concurrent_trials == 2
    res = plan_resources(RunOptions(folds=3, max_concurrent_trials=1), {"CPU": 16.0})
    assert res.max_concurrent_trials == 1  # an explicit cap wins
    res = plan_resources(RunOptions(folds=5, cpus_per_worker=1.0), {"CPU": 2.0})
    assert res.workers == 1  # as many workers as fit


def test_explicit_workers_per_trial() -> None:
    res = plan_resources(RunOptions(folds=5, workers_per_trial=1, trials=1), {"CPU": 2.0})
    assert res.workers == 1
    assert res.cpus_per_worker == 1.0
    assert res.max_concurrent_trials == 1  # 1 CPU + the trial's share does not fit twice
    res = plan_resources(
        RunOptions(folds=5, workers_per_trial=1, cpus_per_worker=0.99), {"CPU": 2.0}
    )
    assert res.max_concurrent_trials == 2  # two one-worker trials side by side


def test_folds_of_worker_deal_every_fold_once() -> None:
    for k in range(2, 11):
        for w in range(1, k + 1):
            dealt = [folds_of_worker(r, w, k) for r in range(w)]
            assert sorted(f for part in dealt for f in part) == list(range(k))
            sizes = [len(part) for part in dealt]
            assert max(sizes) - min(sizes) <= 1
            assert dealt[0][0] == 0  # rank 0 holds fold 0 (it writes the trial's meta)


@pytest.mark.parametrize("workers", [0, 6])
def test_workers_per_trial_out_of_range(workers: int) -> None:
    with pytest.raises(
        RaydxError,
        match=rf"must be in \[1, folds=5\], but got workers_per_trial={workers}\.",
    ):
        RunOptions(folds=5, workers_per_trial=workers)


def test_explicit_cpus_per_worker_too_large() -> None:
    with pytest.raises(RaydxError) as info:
        plan_resources(RunOptions(folds=3, workers_per_trial=3, cpus_per_worker=1.0), {"CPU": 2.0})
    msg = str(info.value)
    assert "cpus_per_worker=1.0" in msg
    assert "workers=3" in msg
    assert "needs 3 CPUs" in msg
    assert "has 2" in msg


def test_a_trial_larger_than_a_joined_cluster_is_refused_with_what_to_keep_up() -> None:
    # Not left to wait for nodes: on a cluster without an autoscaler the search hung
    # past its time budget (a trial that never reports is never stopped).
    sized = RunOptions(folds=3, workers_per_trial=3, cpus_per_worker=1.0)
    with pytest.raises(RaydxError, match=r"has 2; lower .*keep one that holds a trial up"):
        plan_resources(sized, {"CPU": 2.0}, joined=True)
    gpu = RunOptions(folds=5, gpus_per_worker=0.2)
    with pytest.raises(RaydxError, match=r"has 0 \(raydx plans for the nodes present"):
        plan_resources(gpu, {"CPU": 8.0}, [{"CPU": 8.0}], joined=True)


def test_workers_that_no_node_can_place_are_refused() -> None:
    # the cluster's totals hold them, its nodes do not (a worker runs on one node)
    two = [{"CPU": 1.0}, {"CPU": 1.0}]
    with pytest.raises(RaydxError, match=r"the cluster's nodes hold 0 such workers"):
        plan_resources(
            RunOptions(folds=3, workers_per_trial=1, cpus_per_worker=1.5), {"CPU": 2.0}, two
        )
    head, gpu = {"CPU": 8.0}, {"CPU": 4.0, "GPU": 1.0}
    whole = RunOptions(folds=5, gpus_per_worker=0.2, cpus_per_worker=1.0)
    with pytest.raises(RaydxError, match=r"1 CPU and 0.2 GPU runs on one node, and the clu"):
        plan_resources(whole, {"CPU": 12.0, "GPU": 1.0}, [head, gpu])
    assert workers_that_fit([head, gpu], 0.798, 0.2) == 5  # none on the head, without a GPU
    assert workers_that_fit(two, 0.5, 0.0) == 4
    assert workers_that_fit(None, 9.0, 0.0) == float("inf")  # no shapes given: not checked
    # the plans raydx makes by itself fit (the two-machine test's: 3 workers of 0.5)
    sized = RunOptions(folds=3, workers_per_trial=3, cpus_per_worker=0.5)
    assert plan_resources(sized, {"CPU": 2.0}, two).workers == 3
    assert plan_resources(RunOptions(folds=5, trials=20), {"CPU": 2.0}, two).workers == 3


def test_gpus_shared_by_fractions() -> None:
    res = plan_resources(RunOptions(folds=5, gpus_per_worker=0.2), {"CPU": 16.0, "GPU": 1.0})
    assert res.gpus_per_worker == 0.2
    assert res.max_concurrent_trials == 1  # the GPU, not the CPUs, limits concurrency
    res = plan_resources(RunOptions(folds=5, gpus_per_worker=0.1), {"CPU": 16.0, "GPU": 1.0})
    assert res.max_concurrent_trials == 2


@pytest.mark.parametrize(("gpus", "cluster_gpus"), [(0.5, 1.0), (0.2, 0.0)])
def test_gpus_per_worker_too_large(gpus: float, cluster_gpus: float) -> None:
    with pytest.raises(RaydxError) as info:
        plan_resources(RunOptions(folds=5, gpus_per_worker=gpus), {"CPU": 16, "GPU": cluster_gpus})
    msg = str(info.value)
    assert f"gpus_per_worker={gpus}" in msg
    assert "workers=5" in msg
    assert f"has {cluster_gpus:g}" in msg


# ---------------------------------------------------------------- make_scheduler


@pytest.mark.parametrize(
    "opts",
    [
        RunOptions(scheduler="none", epochs=20, grace_period=5),
        RunOptions(scheduler="asha", epochs=5, grace_period=5),
        RunOptions(scheduler="asha", epochs=3, grace_period=5),
    ],
)
def test_no_scheduler(opts: RunOptions) -> None:
    assert make_scheduler(opts).__class__ is RunToEnd


def test_asha_scheduler() -> None:
    from ray.tune.schedulers import ASHAScheduler

    s = make_scheduler(RunOptions(scheduler="asha", epochs=20, grace_period=4))
    assert isinstance(s, ASHAScheduler)
    assert s._max_t == 20
    assert s._metric == OBJECTIVE and s._mode == "max"
    assert s._time_attr == "epoch"  # a replayed epoch must not count twice
    milestones = [m for m, _ in s._brackets[0]._rungs]
    assert min(milestones) == 4  # grace period: no trial is stopped earlier


# ---------------------------------------------------------------- resolve_options


@pytest.fixture
def space():
    return parse_space(
        {
            "run": {"folds": 3, "epochs": 7, "trials": 2, "scheduler": "none"},
            "params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        }
    )


def test_space_defaults_apply(space) -> None:
    opts = resolve_options(space, {})
    assert (opts.folds, opts.epochs, opts.trials, opts.scheduler) == (3, 7, 2, "none")
    assert opts.data == "synthetic" and opts.seed == 0  # RunOptions defaults underneath


def test_explicit_overrides_win_and_none_does_not(space) -> None:
    opts = resolve_options(
        space, {"folds": 4, "epochs": None, "trials": None, "seed": 9, "data": None}
    )
    assert opts.folds == 4  # override
    assert opts.epochs == 7 and opts.trials == 2  # None: the space file's value stays
    assert opts.seed == 9
    assert opts.data == "synthetic"


def test_overrides_are_checked(space) -> None:
    with pytest.raises(
        RaydxError, match=re.escape("Unknown run option 'fold'. Did you mean 'folds'")
    ):
        resolve_options(space, {"fold": 3})
    with pytest.raises(RaydxError, match=re.escape("folds must be >= 2, but got folds=1.")):
        resolve_options(space, {"folds": 1})
    with pytest.raises(RaydxError, match="Did you mean 'asha'"):
        resolve_options(space, {"scheduler": "ashaa"})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"folds": "3"}, "folds must be an int, but got folds='3'."),
        ({"folds": 2.5}, "folds must be an int, but got folds=2.5."),
        ({"epochs": 1.5}, "epochs must be an int, but got epochs=1.5."),
        ({"limit": 5.5}, "limit must be an int or None, but got limit=5.5."),
        ({"folds": True}, "folds must be an int, but got folds=True."),
        ({"score_test": "no"}, "score_test must be True or False, but got score_test='no'."),
        ({"time_budget_min": "30"}, "time_budget_min must be a number or None, but got "),
    ],
)
def test_option_types_are_checked_by_name(given: dict, message: str) -> None:
    """A script's "3" or 2.5 is named, not a TypeError deep inside (or a 1.5 epoch run)."""
    with pytest.raises(RaydxError, match=re.escape(message)):
        RunOptions(**given)


def test_numpy_numbers_and_paths_become_plain_types(tmp_path: Path) -> None:
    """A loop over np.arange or a pathlib data path works, and run.json stays JSON."""
    opts = RunOptions(
        folds=np.int64(3), test_fraction=np.float32(0.25), output=str(tmp_path), data=tmp_path
    )
    assert type(opts.folds) is int and opts.folds == 3
    assert type(opts.test_fraction) is float and opts.test_fraction == 0.25
    assert opts.output == tmp_path and isinstance(opts.output, Path)
    assert opts.data == str(tmp_path)


# ---------------------------------------------------------------- limit_rows


def _table(n: int = 400, seed: int = 0) -> ImageTable:
    rng = np.random.default_rng(seed)
    split = np.array(["train"] * 240 + ["val"] * 60 + ["test"] * 100, dtype=object)[:n]
    labels = (rng.random(n) < 0.25).astype(np.int64)  # ~25% positive in every split
    return ImageTable(
        images=rng.integers(0, 255, size=(n, 8, 8, 1), dtype=np.uint8),
        labels=labels,
        sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        class_names=("benign", "malignant"),
        name="toy",
        official_split=split,
        groups=np.array([f"p{i // 2}" for i in range(n)], dtype=object),
    )


def _strata(t: ImageTable) -> dict[tuple[str, int], int]:
    keys, counts = np.unique(
        np.char.add(t.official_split.astype(str), t.labels.astype(str)), return_counts=True
    )
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


def test_limit_rows_is_stratified_by_split_and_label() -> None:
    table = _table()
    sub = limit_rows(table, 100, seed=0)
    assert len(sub) == 100
    full, part = _strata(table), _strata(sub)
    assert set(part) == set(full)
    for key, n in full.items():
        assert abs(part[key] - n * 100 / len(table)) <= 1, key
    assert (sub.official_split == "test").sum() == 25  # the test split keeps its share
    # Rows stay whole and in source order.
    idx = np.array([int(s[1:]) for s in sub.sample_ids])
    assert (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(sub.labels, table.labels[idx])
    np.testing.assert_array_equal(sub.images, table.images[idx])
    np.testing.assert_array_equal(sub.groups, table.groups[idx])


def test_limit_rows_is_deterministic() -> None:
    table = _table()
    a = limit_rows(table, 100, seed=3).sample_ids
    b = limit_rows(table, 100, seed=3).sample_ids
    c = limit_rows(table, 100, seed=4).sample_ids
    np.testing.assert_array_equal(a, b)
    assert set(a) != set(c)


def test_limit_rows_without_official_split() -> None:
    t = _table()
    t = ImageTable(t.images, t.labels, t.sample_ids, t.class_names, t.name)
    sub = limit_rows(t, 80, seed=0)
    assert len(sub) == 80
    assert abs(sub.labels.mean() - t.labels.mean()) < 0.02


def _singleton_stratum() -> ImageTable:
    t = _table()
    labels = t.labels.copy()
    test = np.flatnonzero(t.official_split == "test")
    labels[test] = 0
    labels[test[0]] = 1  # one positive image in the test split
    return ImageTable(t.images, labels, t.sample_ids, t.class_names, t.name, t.official_split)


def test_limit_rows_never_leaks_sklearn_errors() -> None:
    with pytest.raises(RaydxError, match=r"^limit=4 is smaller than the 6 \(split, label\) groups"):
        limit_rows(_table(), 4, seed=0)
    sub = limit_rows(_singleton_stratum(), 100, seed=0)  # a stratum of one row is kept
    assert len(sub) == 100
    assert (sub.official_split == "test").any()


@pytest.mark.parametrize("limit", [None, 400, 1000])
def test_no_limit_keeps_the_table(limit: int | None) -> None:
    table = _table()
    assert limit_rows(table, limit, seed=0) is table


# ---------------------------------------------------------------- claim_output


def test_claim_output_creates_folder_and_lock(tmp_path: Path) -> None:
    out = claim_output(tmp_path / "runs" / "a")
    assert out == (tmp_path / "runs" / "a").resolve()
    assert out.is_dir()
    lock = json.loads((out / LOCK).read_text())
    assert "pid" in lock
    with pytest.raises(RaydxError) as e:
        claim_output(out)  # a second run into the same folder, while the first runs
    # an audit: it said to --resume the live run, which then said to delete its lock
    said = str(e.value)
    assert said.startswith(f"run '{out}' is being written by process {os.getpid()} on host")
    assert said.endswith("; choose another --output.")
    assert "--resume" not in said and "delete" not in said
    from raydx.run_folder import lock_text

    assert lock_text(out).endswith(
        "not resuming it while that search runs: let it finish, or stop it first."
    )


def test_runs_started_in_the_same_second_get_their_own_default_folders(
    tmp_path: Path, monkeypatch
) -> None:
    import raydx.run_folder as rf

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rf, "default_output", lambda: Path("runs") / "20261207-122518")
    first, second, third = (claim_output(None) for _ in range(3))
    assert [p.name for p in (first, second, third)] == [
        "20261207-122518",
        "20261207-122518-2",
        "20261207-122518-3",
    ]
    assert all((p / LOCK).exists() for p in (first, second, third))


def test_claim_output_accepts_empty_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty") == (tmp_path / "empty").resolve()


def test_data_paths_are_saved_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, space
) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "m.csv").write_text("path,label\n")
    monkeypatch.chdir(tmp_path)
    assert absolute_data("images") == str(tmp_path / "images")
    assert absolute_data("./m.csv") == str(tmp_path / "m.csv")
    for named in ("synthetic", "synthetic:200", "medmnist:breastmnist", "missing.npz"):
        assert absolute_data(named) == named  # the loader's own error names a missing path
    assert resolve_options(space, {"data": "images"}).data == str(tmp_path / "images")


def test_a_saved_relative_data_path_missing_from_here_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "start" / "folder").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    run_json = tmp_path / "run" / "run.json"
    monkeypatch.chdir(tmp_path / "start")
    check_saved_data("folder", run_json)  # from the folder the run started in: fine
    for fine in ("synthetic", "medmnist:breastmnist", str(tmp_path / "start"), None):
        check_saved_data(fine, run_json)
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(RaydxError) as info:
        check_saved_data("folder", run_json, ", or pass --data")
    msg = str(info.value)
    assert f"the run's data 'folder' (from {run_json})" in msg
    assert str(tmp_path / "elsewhere") in msg and msg.endswith("or pass --data.")


def test_a_saved_data_path_moved_away_is_asked_back_not_passed_again(tmp_path: Path) -> None:
    """The loader's own error would say to pass an existing file, which --resume takes no
    flag for."""
    run_json, gone = tmp_path / "run" / "run.json", str(tmp_path / "moved.npz")
    with pytest.raises(RaydxError) as info:
        check_saved_data(gone, run_json)
    assert str(info.value) == (
        f"the run's data '{gone}' (from {run_json}) no longer exists; put it back at that "
        "path (--resume takes no --data: a resumed search sees the same images)."
    )
    with pytest.raises(RaydxError, match=r"put it back at that path, or pass --data\.$"):
        check_saved_data(gone, run_json, ", or pass --data")  # raydx cv --config best.yaml


@pytest.mark.parametrize("name", ["cnn.yaml", "autoencoder.yaml", "gan.yaml", "all.yaml"])
def test_an_edited_space_copy_is_refused_on_resume(tmp_path: Path, name: str) -> None:
    """run.json holds the parameters as searched and the sha256 of space.yaml as written;
    the file unedited, or written another way with the same parameters, is accepted, and
    any edit to a parameter is named, by ``resume`` before it prepares anything."""
    import yaml

    from raydx.files_out import write_yaml
    from raydx.run import resume
    from raydx.run_folder import LOCK, check_space_unchanged, provenance
    from raydx.space import load_space

    space = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / name)
    space = space.with_default("family", "cnn")
    table = ImageTable(
        images=np.zeros((4, 2, 2, 1), np.uint8),
        labels=np.array([0, 1, 0, 1]),
        sample_ids=np.array(["a", "b", "c", "d"], dtype=object),
        class_names=("benign", "malignant"),
        name="t",
    )
    saved = json.loads(json.dumps(provenance(RunOptions(data="synthetic"), space, table, 1)))
    copy = tmp_path / "space.yaml"
    write_yaml(space.to_dict(), copy)
    check_space_unchanged(load_space(copy, strict=False), saved["space"], copy)
    copy.write_text(
        "# the user's note\n" + yaml.safe_dump(space.to_dict(), sort_keys=False, width=60)
    )
    check_space_unchanged(load_space(copy, strict=False), saved["space"], copy)
    check_space_unchanged(space, {"params": ["lr"]}, copy)  # an older run.json: not checked
    edited = space.to_dict()
    edited["params"]["lr"]["high"] = 0.5
    dropped = [k for k in edited["params"] if k != "lr"][-1]  # the last: nothing hangs on it
    edited["params"].pop(dropped)
    edited.pop("enqueue", None)  # its points name the parameter (not compared: Optuna has them)
    write_yaml(edited, copy)
    (tmp_path / "run.json").write_text(json.dumps({"options": {}, "space": saved["space"]}))
    with pytest.raises(RaydxError) as info:
        resume(tmp_path, log=lambda *a: None)
    assert f"'{copy}' was edited since the run started (parameters " in str(info.value)
    assert f"{dropped!r}" in str(info.value) and "'lr'" in str(info.value)
    assert "goes on with the space it began with" in str(info.value)
    assert not (tmp_path / LOCK).exists()


def _job_copy(root: Path) -> Path:
    """A folder laid out as Ray's copy of a job's ``--working-dir``."""
    copy = root / "session_x" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab12"
    copy.mkdir(parents=True)
    return copy


@pytest.mark.parametrize("output", [None, "runs/breast", "."])
def test_output_in_a_jobs_working_dir_copy_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str | None
) -> None:
    monkeypatch.chdir(_job_copy(tmp_path))
    with pytest.raises(RaydxError) as info:
        check_output_location(output)
    msg = str(info.value)
    assert "working directory" in msg and "--output /shared/runs/NAME" in msg
    assert str(tmp_path / "session_x" / "runtime_resources") in msg
    assert (f"--output '{output}'" if output else "the default --output, runs/<time>, puts") in msg


def test_absolute_output_from_a_jobs_working_dir_copy_is_fine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = _job_copy(tmp_path)
    monkeypatch.chdir(copy)
    check_output_location(tmp_path / "shared" / "runs" / "a")  # no error
    with pytest.raises(RaydxError, match="puts the run in Ray's temporary copy"):
        check_output_location(copy / "runs")  # absolute, but still inside the copy
    monkeypatch.chdir(tmp_path)
    check_output_location("runs/a")  # relative outside a job: fine


@pytest.mark.parametrize("marker", ["trials.parquet", LOCK])
def test_claim_output_refuses_a_folder_with_a_run(tmp_path: Path, marker: str) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / marker).write_text("x")
    with pytest.raises(RaydxError) as info:
        claim_output(tmp_path / "old")
    assert "already holds a raydx run" in str(info.value)
    assert str((tmp_path / "old").resolve()) in str(info.value)
    assert (tmp_path / "old" / marker).read_text() == "x"  # untouched


@pytest.mark.parametrize("record", ['{"options": null}', "[]", "{cut"])
def test_claim_output_refuses_a_folder_whose_run_record_is_unreadable(
    tmp_path: Path, record: str
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(record)
    with pytest.raises(RaydxError, match=r"already holds a raydx run; choose another --output"):
        claim_output(tmp_path / "old")


def test_claim_output_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(RaydxError, match="is not a directory"):
        claim_output(tmp_path / "f")


def test_claim_output_default_is_a_timestamped_runs_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = claim_output(None)
    assert out.parent == (tmp_path / "runs").resolve()
    assert re.fullmatch(r"\d{8}-\d{6}", out.name)
    assert (out / LOCK).exists()


def test_resume_refuses_a_run_that_a_live_process_is_writing(tmp_path: Path) -> None:
    import json
    import os
    import platform

    from raydx.run import resume
    from raydx.run_folder import LOCK

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"options": {}}))
    (run / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))
    with pytest.raises(RaydxError, match=f"being written by process {os.getpid()}"):
        resume(run, log=lambda *a: None)


def test_a_lock_left_by_a_driver_elsewhere_names_it_and_the_way_out(tmp_path: Path) -> None:
    """A driver in a container (pid 1, host the container's id) killed by docker stop
    leaves its lock; a new container cannot tell whether that driver lives."""
    import json

    from raydx.run import resume
    from raydx.run_folder import LOCK

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"options": {}}))
    (run / LOCK).write_text(json.dumps({"pid": 1, "host": "3f2a9c", "started": 1.8e9}))
    with pytest.raises(RaydxError) as info:
        resume(run, log=lambda *a: None)
    msg = str(info.value)
    assert "being written by process 1 on host '3f2a9c' since 2027-01-" in msg
    assert f"delete '{run / LOCK}' and resume again" in msg


def test_a_lock_whose_pid_another_process_now_has_is_stale(tmp_path: Path) -> None:
    import json
    import os
    import platform

    from raydx.run_folder import LOCK, _process_start, lock_holder, take_lock

    take_lock(tmp_path)
    assert lock_holder(tmp_path) == os.getpid()
    info = json.loads((tmp_path / LOCK).read_text())
    assert info["process_start"] == _process_start(os.getpid()) is not None
    # the same pid, started at another time: a reused pid, not the driver that locked
    info["process_start"] -= 1
    (tmp_path / LOCK).write_text(json.dumps(info))
    assert lock_holder(tmp_path) is None
    # a lock written before process_start was recorded still counts as held
    (tmp_path / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))
    assert lock_holder(tmp_path) == os.getpid()


def test_resume_of_a_folder_without_a_run_says_so(tmp_path: Path) -> None:
    from raydx.run import resume

    with pytest.raises(RaydxError, match="holds no raydx run"):
        resume(tmp_path, log=lambda *a: None)
    with pytest.raises(RaydxError, match=r"/nope' does not exist \(give a run folder\)\.$"):
        resume(tmp_path / "nope", log=lambda *a: None)
    (tmp_path / "file").write_text("")
    with pytest.raises(RaydxError, match=r"/file' is a file; give its run folder \('"):
        resume(tmp_path / "file", log=lambda *a: None)
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(RaydxError, match=r"run.json', the run's record .* is not valid JSON"):
        resume(tmp_path, log=lambda *a: None)
    assert not (tmp_path / LOCK).exists()


@pytest.mark.parametrize(("name", "cls"), [("tpe", "TPESampler"), ("random", "RandomSampler")])
def test_sampler_choice(tmp_path: Path, name: str, cls: str) -> None:
    from raydx.search import make_searcher

    space = parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(space, seed=0, trials=4, storage_url=url, sampler=name)
    assert type(searcher._sampler).__name__ == cls


def test_unknown_sampler_refused_with_a_suggestion() -> None:
    with pytest.raises(RaydxError, match=r"Unknown sampler 'randm'\. Did you mean 'random'\?"):
        RunOptions(sampler="randm")


def test_a_resumed_searcher_drops_repeats_for_a_trial_the_study_closed(tmp_path: Path) -> None:
    """A driver killed after the study closed a trial but before Tune's snapshot saw it:
    the resumed trial re-sends its reports and ends again; the study's record stands."""
    import optuna

    from raydx.search import make_searcher

    space = parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(space, seed=0, trials=4, storage_url=url)
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_result("a", {OBJECTIVE: 0.7, "epoch": 1, "training_iteration": 1})
    searcher.save(str(tmp_path / "snapshot.pkl"))  # Tune's snapshot: both running
    # the kill:
    searcher.on_trial_complete("a", {OBJECTIVE: 0.8, "epoch": 2, "training_iteration": 2})

    resumed = make_searcher(space, seed=0, trials=4, storage_url=url)
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    resumed.on_trial_result("a", {OBJECTIVE: 0.7, "epoch": 3, "training_iteration": 3})  # replayed
    resumed.on_trial_complete("a", {OBJECTIVE: 0.8, "epoch": 4, "training_iteration": 4})
    resumed.on_trial_result("b", {OBJECTIVE: 0.6, "epoch": 1, "training_iteration": 1})
    resumed.on_trial_complete("b", {OBJECTIVE: 0.65, "epoch": 2, "training_iteration": 2})

    study = optuna.load_study(study_name="raydx", storage=url)
    values = {t.number: (t.state, t.value) for t in study.trials}
    assert values == {
        0: (optuna.trial.TrialState.COMPLETE, 0.8),
        1: (optuna.trial.TrialState.COMPLETE, 0.65),
    }
    assert study.trials[0].intermediate_values == {1: 0.7}
    assert [t.user_attrs["trial_id"] for t in study.trials] == ["a", "b"]  # trials.parquet's


def test_a_resumed_trial_replaying_its_epochs_reports_each_step_once(tmp_path: Path) -> None:
    """A trial resumed from its checkpoint sends its past epochs again: the study keeps
    the first value of each step, takes the new ones, and Optuna has nothing to warn of."""
    import warnings

    import optuna

    from raydx.search import make_searcher

    space = parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(space, seed=0, trials=4, storage_url=url)
    searcher.suggest("a")
    for step, value in [(1, 0.6), (2, 0.7)]:
        searcher.on_trial_result("a", {OBJECTIVE: value, "epoch": step, "training_iteration": step})
    searcher.save(str(tmp_path / "snapshot.pkl"))

    resumed = make_searcher(space, seed=0, trials=4, storage_url=url)
    resumed.restore(str(tmp_path / "snapshot.pkl"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "this step is already reported"
        for step, value in [(1, 0.6), (2, 0.7), (3, 0.75)]:  # two replayed, one new
            result = {OBJECTIVE: value, "epoch": step, "training_iteration": step}
            resumed.on_trial_result("a", result)
    resumed.on_trial_complete("a", {OBJECTIVE: 0.75, "epoch": 3, "training_iteration": 3})

    study = optuna.load_study(study_name="raydx", storage=url)
    assert study.trials[0].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.75}
    assert study.trials[0].value == 0.75


def test_optuna_steps_are_epochs_when_one_report_carries_several(tmp_path: Path) -> None:
    """Short epochs are reported together (raydx.cv.batched): Tune counts 2 reports, the
    study records the epochs they end at, and a failure's report adds no step."""
    import optuna

    from raydx.search import make_searcher

    space = parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(space, seed=0, trials=4, storage_url=url)
    searcher.suggest("a")
    searcher.on_trial_result("a", {OBJECTIVE: 0.6, "epoch": 4, "training_iteration": 1})
    searcher.on_trial_result("a", {OBJECTIVE: 0.7, "epoch": 9, "training_iteration": 2})
    failed = {OBJECTIVE: 0.7, "epoch": 9, "failed": "ValueError: x", "training_iteration": 3}
    searcher.on_trial_result("a", failed)
    searcher.on_trial_complete("a", {OBJECTIVE: 0.7, "epoch": 9, "training_iteration": 3})
    study = optuna.load_study(study_name="raydx", storage=url)
    assert study.trials[0].intermediate_values == {4: 0.6, 9: 0.7}


def test_the_plan_line_says_when_no_trial_can_be_stopped_early() -> None:
    """cnn.yaml's grace period of 10 with --epochs 10 turns ASHA off: say so."""
    from raydx.config import RunOptions
    from raydx.run import scheduler_text

    off = RunOptions(scheduler="asha", epochs=10, grace_period=10)
    assert make_scheduler(off).__class__ is RunToEnd
    assert scheduler_text(off) == (
        "; no trial is stopped early: epochs=10 is not above grace_period=10, so the asha "
        "scheduler is off"
    )
    on = RunOptions(scheduler="asha", epochs=40, grace_period=10)
    assert make_scheduler(on).__class__ is not RunToEnd
    assert scheduler_text(on) == "; the asha scheduler may stop a trial after epoch 10"
    none = RunOptions(scheduler="none", epochs=40, grace_period=10)
    assert scheduler_text(none) == "; every trial runs all its epochs (scheduler none)"


@pytest.mark.ray
def test_a_refused_plan_claims_no_run_folder(tmp_path, ray_session) -> None:
    """Refused before the output is claimed, so the same --output takes the fixed flags
    (it was left holding run.json: 'already holds a raydx run')."""
    from raydx.run import tune

    space = parse_space({"run": {"scheduler": "none"}, "params": {"model": "cnn_tiny"}})
    out = tmp_path / "run"
    with pytest.raises(RaydxError, match=r"needs 3 CPUs, but the Ray cluster has 2"):
        tune(space, data="synthetic:60", folds=3, output=out, workers_per_trial=3,
             cpus_per_worker=1.0)  # fmt: skip
    assert not out.exists()


def test_the_plan_line_says_which_trials_wait_for_nodes() -> None:
    """--max-concurrent-trials above what the nodes present hold lets an autoscaler add
    nodes for the rest (or they start as running trials end)."""
    from raydx.run import _waiting_text

    opts = RunOptions(folds=2, workers_per_trial=1, cpus_per_worker=1.0)
    assert _waiting_text(plan_resources(opts, {"CPU": 2.0})) == ""
    many = RunOptions(folds=2, workers_per_trial=1, cpus_per_worker=1.0, max_concurrent_trials=3)
    res = plan_resources(many, {"CPU": 2.0})
    assert (res.max_concurrent_trials, res.fit_now) == (3, 1)  # 1 CPU + the trial's own bit
    assert _waiting_text(res) == (
        " (the nodes present hold 1 at once: the others wait for nodes that an autoscaler "
        "adds, or for a running trial to end)"
    )


def test_of_two_resumes_at_once_one_gets_the_run_before_its_minutes_of_preparing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both used to pass the lock check and prepare the data (minutes), and only then
    take the lock: both resumed the run. The lock is now taken before."""
    import threading
    import time

    import raydx.run
    from raydx.run_folder import lock_holder

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"options": {"data": "synthetic"}}))
    preparing: list[str] = []

    def slow_prepare(opts, space):
        preparing.append(threading.current_thread().name)
        assert lock_holder(run) is not None
        time.sleep(1.0)
        raise RaydxError("stop here")

    monkeypatch.setattr(raydx.run, "prepare", slow_prepare)
    monkeypatch.setattr(raydx.run, "load_space", lambda *a, **kw: None)
    errors: dict[str, str] = {}

    def resume(name: str) -> None:
        try:
            raydx.run.resume(run, log=lambda *a: None)
        except RaydxError as e:
            errors[name] = str(e)

    threads = [threading.Thread(target=resume, args=(n,), name=n) for n in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join()
    assert preparing == ["a"]
    assert errors["a"] == "stop here" and "being written by process" in errors["b"]
    assert not (run / LOCK).exists()  # the first gave it back; the second never had it
    assert [p.name for p in run.iterdir()] == ["run.json"]  # no lock left aside


def test_a_stale_lock_is_replaced_and_a_claimed_folder_not_claimed_twice(tmp_path) -> None:
    from raydx.run_folder import lock_holder, take_lock

    (tmp_path / LOCK).write_text(
        json.dumps({"pid": 2**22 + 1, "host": __import__("platform").node()})
    )
    take_lock(tmp_path)  # a killed driver's lock
    import os

    assert lock_holder(tmp_path) == os.getpid()
    with pytest.raises(RaydxError, match="being written by process"):
        take_lock(tmp_path)
    out = tmp_path / "new"
    claim_output(out)
    (out / "run.json").unlink(missing_ok=True)
    with pytest.raises(RaydxError, match=r"being written by process .* choose another --output"):
        claim_output(out)  # a second tune at the same --output
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / LOCK).write_text("{}")
    with pytest.raises(RaydxError, match="being written by process"):  # stale or not
        take_lock(stale, replace_stale=False)
    assert (stale / LOCK).read_text() == "{}"  # left as it was


def test_a_lock_is_taken_where_the_file_system_has_no_hard_links_or_flock(
    tmp_path, monkeypatch
) -> None:
    """A run folder on a mounted bucket (no hard links) or an NFS without flock on
    folders: the lock is an exclusive create, and a second driver is still refused."""
    import fcntl
    import os

    from raydx.run_folder import lock_holder, take_lock

    def no_link(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    def no_flock(*args, **kwargs):
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(fcntl, "flock", no_flock)
    take_lock(tmp_path)
    assert lock_holder(tmp_path) == os.getpid()
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    with pytest.raises(RaydxError, match="being written by process"):
        take_lock(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK]  # no side files left


def _study(out: Path):
    import optuna

    from raydx.search import STUDY_NAME, study_url

    return optuna.create_study(
        study_name=STUDY_NAME, storage=study_url(out), direction="maximize", load_if_exists=True
    )


def test_study_trials_that_no_resumed_trial_continues_are_failed(tmp_path: Path) -> None:
    """Trials handed out before a kill stayed RUNNING in study.db for good, where TPE's
    constant liar keeps counting them; the enqueued point among them is queued again."""
    from optuna.trial import TrialState

    from raydx.study import close_stale_trials, study_size

    assert close_stale_trials(tmp_path, resumed=set()) == []  # no study yet
    assert study_size(tmp_path) == 0
    study = _study(tmp_path)
    study.enqueue_trial({"lr": 1e-3})
    study.enqueue_trial({"lr": 2e-3})
    asked = {}
    for tid in ("queued", "queued_ran", "done", "resumed", "lost", None):
        t = study.ask()
        t.suggest_float("lr", 1e-4, 1e-2, log=True)
        if tid is not None:  # None: killed between ask and the trial id
            t.set_user_attr("trial_id", tid)
        asked[tid] = t.number
    study.tell(asked["done"], 0.7)

    closed = close_stale_trials(tmp_path, resumed={"resumed"})

    assert closed == [asked[k] for k in ("queued", "queued_ran", "lost", None)]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[asked["resumed"]] == TrialState.RUNNING
    assert states[asked["done"]] == TrialState.COMPLETE
    assert all(states[n] == TrialState.FAIL for n in closed)
    # both enqueued points go back: one never ran, the other's epochs were cut short
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"lr": 1e-3}, {"lr": 2e-3}]
    assert close_stale_trials(tmp_path, resumed={"resumed"}) == []
    assert study_size(tmp_path) == 8


def test_an_older_studys_running_trials_are_left_while_trials_are_resumed(
    tmp_path: Path,
) -> None:
    """Runs started before December 2026 record no Tune trial id in the study: which of
    its running trials the restored experiment continues cannot be told, so none is
    failed (failing them would drop their results from TPE and run an enqueued one
    twice)."""
    from optuna.trial import TrialState

    from raydx.study import close_stale_trials

    study = _study(tmp_path)
    study.enqueue_trial({"lr": 1e-3})
    for _ in range(2):
        study.ask().suggest_float("lr", 1e-4, 1e-2, log=True)
    assert close_stale_trials(tmp_path, resumed={"a1b2c3d4"}) == []
    assert all(t.state == TrialState.RUNNING for t in study.get_trials())
    assert close_stale_trials(tmp_path, resumed=set()) == [0, 1]  # nothing resumed: stale


def test_a_top_up_searcher_does_not_draw_the_first_configurations_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A top-up's sampler, seeded as the first experiment's, repeated its first draws."""
    import optuna

    import raydx.search
    from raydx.run import _new_tuner

    space = parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2}}})
    opts = RunOptions(seed=3, sampler="random", trials=4)
    seeds: list[int] = []

    def searcher(space, *, seed, **kw):
        seeds.append(seed)
        raise KeyboardInterrupt  # enough: the seed is what is checked

    monkeypatch.setattr(raydx.search, "make_searcher", searcher)
    for name in ("tune", "tune-2"):
        with pytest.raises(KeyboardInterrupt):
            _new_tuner(None, space, opts, None, tmp_path, None, name, 1)
        study = _study(tmp_path)  # the first experiment evaluates two trials
        for _ in range(2):
            study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)}), 0.5)
    assert seeds == [3, 5]  # the study's trials move the seed on; a new run keeps its own

    def first(seed: int) -> float:
        return optuna.samplers.RandomSampler(seed=seed).sample_independent(
            optuna.create_study(),
            optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING),
            "lr",
            optuna.distributions.FloatDistribution(1e-4, 1e-2),
        )

    assert first(seeds[1]) != first(seeds[0])


def test_ctrl_c_that_tune_takes_is_seen_and_a_second_passed_on() -> None:
    """Tune takes the first Ctrl-C itself and fit() returns as after a finished search:
    a resumed search then started its top-up. CtrlC tells the two apart."""
    import os
    import signal
    import time

    from ray.tune.tune import _setup_signal_catching

    from raydx.run import CtrlC

    found = signal.getsignal(signal.SIGINT)  # an earlier test's Ray may have set its own
    usr1 = signal.getsignal(signal.SIGUSR1)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's: KeyboardInterrupt
    before = signal.getsignal(signal.SIGINT)
    try:
        with CtrlC() as quiet:
            stopped = _setup_signal_catching()  # what tuner.fit() does
        assert not quiet.caught and not stopped.is_set()
        assert signal.getsignal(signal.SIGINT) == before

        with CtrlC() as once:
            stopped = _setup_signal_catching()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert stopped.is_set() and once.caught  # Tune's, and seen
        assert signal.getsignal(signal.SIGINT) == before

        twice = CtrlC()
        with pytest.raises(KeyboardInterrupt), twice:
            _setup_signal_catching()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGINT)  # the second stops the driver at once
            time.sleep(0.1)
        assert twice.caught
        assert signal.getsignal(signal.SIGINT) == before

        # SIGTERM (kill, Slurm, Kubernetes) is taken as a Ctrl-C, then its handler restored
        term = signal.getsignal(signal.SIGTERM)
        with CtrlC() as killed:
            stopped = _setup_signal_catching()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert stopped.is_set() and killed.caught
        assert signal.getsignal(signal.SIGINT) == before
        assert signal.getsignal(signal.SIGTERM) == term

        # in a shell's background job SIGINT is ignored: SIGTERM still stops the driver
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        background = CtrlC()
        with pytest.raises(KeyboardInterrupt), background:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
        assert background.caught
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == term
    finally:
        signal.signal(signal.SIGINT, found)
        signal.signal(signal.SIGUSR1, usr1)


def test_resuming_a_finished_run_writes_nothing_even_to_a_read_only_copy(tmp_path) -> None:
    """A finished run says so and changes nothing: no lock is taken where there is
    nothing to write (a read-only mount or copy of the run)."""
    import os
    import stat

    import pandas as pd
    import yaml

    from raydx.run import resume

    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "run.json").write_text(json.dumps({"options": {"score_test": True}}))
    (out / "test_metrics.json").write_text(json.dumps({"auc": 0.9}))
    (out / "best.yaml").write_text(yaml.safe_dump({"trial_id": "a1"}))
    (out / "report.html").write_text("<html></html>")
    (out / "model" / "README.md").write_text("card")
    pd.DataFrame({"trial_id": ["a1"]}).to_parquet(out / "trials.parquet")
    before = sorted(p.name for p in out.iterdir())
    os.chmod(out, stat.S_IRUSR | stat.S_IXUSR)  # read-only (root ignores it: checked below)
    try:
        said: list[str] = []
        done = resume(out, log=said.append)
    finally:
        os.chmod(out, stat.S_IRWXU)
    assert said == [f"raydx: the run in {out} is finished; nothing to resume."]
    assert done.test_metrics == {"auc": 0.9}
    assert sorted(p.name for p in out.iterdir()) == before  # no lock, no side file


def test_after_a_ctrl_c_no_top_up_starts_and_the_search_is_interrupted() -> None:
    """Tune takes the first Ctrl-C and fit() returns as after a finished search: without
    CtrlC's flag the resumed search started its top-up, and ended as finished."""
    from raydx.run import _interrupted, _top_up_due

    assert _top_up_due(2, unfinished=False, budget_ended=False, ctrl_c=False)
    for stop in ({"ctrl_c": True}, {"unfinished": True}, {"budget_ended": True}):
        given = {"unfinished": False, "budget_ended": False, "ctrl_c": False, **stop}
        assert not _top_up_due(2, **given), stop
    assert not _top_up_due(0, unfinished=False, budget_ended=False, ctrl_c=False)

    done = {"unfinished": False, "ctrl_c": False, "missing": 0, "budget_ended": False}
    assert not _interrupted(**done)
    assert _interrupted(**{**done, "ctrl_c": True})
    assert _interrupted(**{**done, "unfinished": True})
    assert _interrupted(**{**done, "missing": 1})
    assert not _interrupted(**{**done, "missing": 1, "budget_ended": True})  # the budget's end


def test_an_interrupted_cross_validation_is_not_called_a_search(tmp_path) -> None:
    """``raydx cv`` runs a one-trial search of fixed values; its interrupt message speaks
    of its folds, and both resume the same way."""
    import pandas as pd

    from raydx.run import _interrupted_text

    trials = pd.DataFrame({"status": ["TERMINATED", "INTERRUPTED"]})
    search = _interrupted_text(trials, 4, tmp_path, fixed=False)
    assert search.startswith("search interrupted after 1 of 4 trials;")
    assert str(tmp_path / "trials.parquet") in search
    cv = _interrupted_text(trials.iloc[1:], 1, tmp_path, fixed=True)
    assert cv.startswith("cross-validation interrupted before its folds finished;")
    assert "search" not in cv.replace("raydx tune --resume", "")
    for text in (search, cv):
        assert text.endswith(
            f"The test split was not touched. Continue with: raydx tune --resume {tmp_path}"
        )
    fixed = parse_space({"params": {"lr": 0.01, "dropout": 0.1}})
    assert (
        fixed.fixed
        and not parse_space({"params": {"lr": {"type": "float", "low": 1e-4, "high": 0.1}}}).fixed
    )


def test_a_resume_or_re_check_scores_the_positive_class_its_run_used() -> None:
    """A later raydx's default rule may choose another class (it learnt that 'NoTumor'
    says absence): a run's saved options get the class the run used, unless one was set."""
    from raydx.run import with_run_positive

    run = {"data": {"positive_class": 0, "positive_class_name": "NoTumor"}}
    assert with_run_positive({"positive_class": None, "folds": 3}, run) == {
        "positive_class": "NoTumor",
        "folds": 3,
    }
    assert with_run_positive({}, run) == {"positive_class": "NoTumor"}
    assert with_run_positive({"positive_class": "Tumor"}, run) == {"positive_class": "Tumor"}
    assert with_run_positive({"positive_class": None}, {"data": {}}) == {"positive_class": None}


def test_a_re_check_of_a_run_keeps_its_positive_class_unless_the_data_changes(
    tmp_path, monkeypatch
) -> None:
    """``raydx cv --config RUN/best.yaml`` passes the class the run used on to tune (the
    default rule may choose another now); with --data naming other data, it does not."""
    import raydx.run

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.yaml").write_text("params: {model: cnn_tiny, lr: 0.01}\n")
    record = {
        "options": {"data": "synthetic", "folds": 3, "positive_class": None},
        "data": {"positive_class": 0, "positive_class_name": "NoTumor"},
    }
    (run / "run.json").write_text(json.dumps(record))
    passed: list[dict] = []
    monkeypatch.setattr(raydx.run, "tune", lambda space, log, **kw: passed.append(kw))
    raydx.run.cross_validate(run / "best.yaml", log=lambda *a: None)
    raydx.run.cross_validate(run / "best.yaml", log=lambda *a: None, data="synthetic:200")
    assert passed[0]["positive_class"] == "NoTumor" and passed[0]["folds"] == 3
    assert "positive_class" not in passed[1]


def test_a_re_check_with_another_seed_says_what_the_seed_draws_anew(tmp_path, monkeypatch) -> None:
    """An audit: ``raydx cv --config RUN/best.yaml --seed 1`` on a --limit 200 run of
    BreastMNIST shared 47 of its 200 images with the run (11 of 40 test images), while
    the warning spoke of the test split alone, which BreastMNIST fixes."""
    import raydx.run

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.yaml").write_text("params: {model: cnn_tiny, lr: 0.01}\n")
    options = {"data": "/d/breastmnist.npz", "folds": 3, "seed": 0, "limit": 200}
    (run / "run.json").write_text(json.dumps({"options": options, "data": {}}))
    monkeypatch.setattr(raydx.run, "tune", lambda space, log, **kw: kw)
    monkeypatch.setattr(raydx.run, "check_saved_data", lambda *a: None)
    said: list[str] = []
    raydx.run.cross_validate(run / "best.yaml", log=said.append, seed=1)
    warning = next(s for s in said if "warning" in s)
    assert warning.startswith(
        "raydx: warning: seed=1 differs from the run's seed=0; it draws anew the --limit "
        "subset of 200 images, so most images, the test split's included, are not those"
    )
    said.clear()
    options.pop("limit")
    (run / "run.json").write_text(json.dumps({"options": options, "data": {}}))
    raydx.run.cross_validate(run / "best.yaml", log=said.append, seed=1)
    assert "unless the data has an official test split, the test split is drawn anew" in (
        next(s for s in said if "warning" in s)
    )
    said.clear()
    raydx.run.cross_validate(run / "best.yaml", log=said.append, seed=0, fold_seed=1)
    assert not [s for s in said if "warning" in s]  # fold_seed draws the folds alone
    said.clear()
    (run / "run.json").write_text(json.dumps({"options": {"seed": 0}, "data": {}}))
    raydx.run.cross_validate(run / "best.yaml", log=said.append, seed=2)
    assert "it draws anew the generated images themselves" in next(s for s in said if "warn" in s)
    # as the loader reads a data spec: a manifest named like the generator is data
    from raydx.run import _other_seed_text

    assert "generated" not in _other_seed_text(1, 0, {"data": "synthetic_ct/manifest.csv"})
    assert "generated" in _other_seed_text(1, 0, {"data": " Synthetic:200"})
    assert "generated" not in _other_seed_text(1, 0, {"data": Path("x.csv")})  # a PathLike


def test_a_search_that_rays_memory_monitor_ended_is_said_in_one_line() -> None:
    """An audit (RAY_memory_usage_threshold=0.25): the monitor killed a trial's own
    process mid-call, Tune raised "Caught unexpected exception", and the user got a
    traceback of Ray's settings with no word of --resume."""
    from ray.exceptions import OutOfMemoryError

    from raydx.run import _killed_for_memory, _memory_killed_text, _memory_text
    from raydx.search import Resources

    cause = OutOfMemoryError(
        "9 worker(s) were killed due to the node running low on memory.\nMemory on ..."
    )
    try:
        try:
            raise cause
        except OutOfMemoryError as inner:
            raise RuntimeError(f"Caught unexpected exception: {inner}") from inner
    except RuntimeError as e:
        raised = e
    assert _killed_for_memory(raised)
    assert not _killed_for_memory(RuntimeError("something else"))
    res = Resources(3, 0.33, 0.0, 1, 2, 2, None, 64)
    said = _memory_killed_text(raised, res)
    assert said.startswith(
        "Ray's memory monitor killed processes of this search (9 worker(s) were killed due "
        "to the node running low on memory). raydx planned 2 trial(s) at once of 3 fold "
        "worker(s), about 1.5 GB a fold worker at 64 px. Resume it where more memory is "
        "free, or start a new run with fewer trials at once (--max-concurrent-trials 1)"
    )
    one = Resources(3, 0.66, 0.0, 1, 1, 1, None, 64)  # one at a time already: not that
    assert "new run with a smaller --image-size or batch_size, or fewer --workers-per-" in (
        _memory_killed_text(RuntimeError(""), one)
    )
    assert "\n" not in said
    assert _memory_text(res) == ""
    held = Resources(3, 0.66, 0.0, 1, 1, 1, 1, 28)
    assert _memory_text(held) == (
        " (the nodes' memory holds 1, at about 0.9 GB a fold worker at 28 px and 1.2 GB "
        "a trial; --max-concurrent-trials overrides it)"
    )
    none = Resources(3, 0.66, 0.0, 1, 1, 1, 0, 96)
    assert _memory_text(none).startswith("; WARNING: the nodes' memory may not hold even one")


def test_images_too_large_for_the_object_store_are_refused_with_numbers_that_differ(
    monkeypatch,
) -> None:
    """An audit: "need 0.2 GiB, more than half of Ray's object store (0.2 GiB)", and a
    flag (--object-store-memory) that raydx does not have."""
    import ray

    from raydx.data.synthetic import make_synthetic
    from raydx.prepare import check_fits

    table = make_synthetic(200, seed=0)  # 200 x 28 x 28 x 1 float32: 627,200 bytes
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"object_store_memory": 1.0e6})
    with pytest.raises(RaydxError) as e:
        check_fits(table, RunOptions(image_size=None))
    assert str(e.value).startswith(
        "the normalised images need 0.000584 GiB, more than half of Ray's object store "
        "(0.000931 GiB); lower --image-size (now 28)"
    )
    assert "`ray start --head --object-store-memory BYTES`" in str(e.value)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"object_store_memory": 2.0e6})
    check_fits(table, RunOptions(image_size=None))


def test_pool_options_need_a_run_folder(tmp_path):
    from raydx.errors import RaydxError
    from raydx.prepare import pool_options

    with pytest.raises(RaydxError, match=r"run_dir must be a raydx run folder with run\.json"):
        pool_options(tmp_path)


def test_tunes_box_at_a_trials_end_shows_a_few_metrics() -> None:
    """Tune printed all 30-40 keys a trial reports at its end: 62 console lines a trial."""
    from ray.tune.progress_reporter import _detect_progress_metrics
    from ray.tune.tune import _get_trainable

    from raydx.run import PROGRESS_METRICS, tune_trainable

    trainable = tune_trainable({})
    assert _detect_progress_metrics(_get_trainable(trainable)) == PROGRESS_METRICS
    assert {"objective", "best_epoch", "epoch"} <= set(PROGRESS_METRICS)
    assert "cv_auc_mean" not in PROGRESS_METRICS  # the last epoch's, not the trial's score


def test_tunes_snapshot_interval_grows_with_the_trials() -> None:
    """Rewritten whole every 2 s, the snapshot of 500 trials (14 MB) was 7 MB/s of writes."""
    from raydx.run import snapshot_interval_s

    assert snapshot_interval_s(8) == snapshot_interval_s(50) == 2.0
    assert snapshot_interval_s(500) == 20.0
    assert snapshot_interval_s(1000) / snapshot_interval_s(500) == 2.0  # bytes/s held


def test_tunes_snapshot_interval_is_raydxs_unless_the_user_set_one(monkeypatch) -> None:
    import raydx.run
    from raydx.run import set_snapshot_interval

    monkeypatch.setattr(raydx.run, "_SNAPSHOT_SET", [None])
    monkeypatch.delenv("TUNE_GLOBAL_CHECKPOINT_S", raising=False)
    set_snapshot_interval(500)
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "20"
    set_snapshot_interval(8)  # a second search in one process: its own
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "2"
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "auto")  # the user's
    set_snapshot_interval(500)
    assert os.environ["TUNE_GLOBAL_CHECKPOINT_S"] == "auto"


def test_a_re_check_reads_its_config_as_a_space_file_is_read(tmp_path, monkeypatch) -> None:
    """An audit: ``raydx cv --config`` read YAML as PyYAML does (``lr: 1e-4`` a string, a
    key given twice kept silently) and let a broken file or run.json out as a traceback."""
    import raydx.run

    passed: list = []
    monkeypatch.setattr(raydx.run, "tune", lambda space, log, **kw: passed.append(space))
    run = tmp_path / "run"
    run.mkdir()
    best = run / "best.yaml"
    best.write_text("params: {model: cnn_tiny, lr: 1e-4}\n")
    raydx.run.cross_validate(run, log=lambda *a: None)  # a run folder: its best.yaml
    assert {p.name: p.value for p in passed[-1].params}["lr"] == pytest.approx(1e-4)
    cases = {
        "params:\n  lr: 0.1\n  lr: 0.01\n": r"not valid YAML: duplicate key 'lr' \(line 3",
        "params: {lr: [0.1\n": r"is not valid YAML: .*\(line \d+, column \d+\)\.$",
        "": r"must map parameter names to values .* but got an empty file\.$",
        "params: {}\n": r"but got params=\{\}\.$",
        "params: {family: 3, lr: 0.01}\n": r": params\.family: Unknown family 3\.",
    }
    for text, message in cases.items():
        best.write_text(text)
        with pytest.raises(RaydxError, match=message):
            raydx.run.cross_validate(best, log=lambda *a: None)
    best.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RaydxError, match=r"config '.*best\.yaml' is not valid YAML"):
        raydx.run.cross_validate(best, log=lambda *a: None)
    best.write_text("params: {model: cnn_tiny, lr: 0.01}\n")
    for record, message in (
        ("{not json", r"run\.json', the run record beside this config, is not valid JSON"),
        ('{"options": null}', r"run\.json', the run record beside this config, has no 'options'"),
    ):
        (run / "run.json").write_text(record)
        with pytest.raises(RaydxError, match=message):
            raydx.run.cross_validate(best, log=lambda *a: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RaydxError, match=r"is a folder without a best\.yaml"):
        raydx.run.cross_validate(empty, log=lambda *a: None)


@pytest.mark.parametrize("record", ["[1]", '{"options": null}', "{}"])
def test_resume_refuses_a_run_record_of_another_shape(tmp_path, record: str) -> None:
    from raydx.run import resume

    (tmp_path / "run.json").write_text(record)
    with pytest.raises(RaydxError, match=r"that --resume continues from, has no 'options' mapping"):
        resume(tmp_path, log=lambda *a: None)


def test_a_re_check_by_another_raydx_says_its_cv_auc_need_not_come_out_again(
    tmp_path, monkeypatch
) -> None:
    """An audit: a winner of two days before re-checked on its own folds at 0.656 against
    its 0.735 (the one-cycle schedule had changed), and nothing said why."""
    import raydx.run
    import raydx.run_folder
    from raydx import __version__

    monkeypatch.setattr(raydx.run, "tune", lambda space, log, **kw: None)
    now = "a" * 40
    monkeypatch.setattr(
        raydx.run_folder, "git_state", lambda: {"git_commit": now, "git_changed": []}
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.yaml").write_text("params: {model: cnn_tiny, lr: 0.01}\n")
    said: list[str] = []
    for commit, version, warned in (
        (now, __version__, False),  # the same raydx
        (None, "0.0.1", True),  # an installed raydx of another version
        ("b" * 40, __version__, True),  # another commit of a checkout
    ):
        record = {"options": {"data": "synthetic"}, "packages": {"raydx": version}}
        record |= {"git_commit": commit, "git_changed": []}
        (run / "run.json").write_text(json.dumps(record))
        said.clear()
        raydx.run.cross_validate(run / "best.yaml", log=said.append)
        warning = [line for line in said if "need not come out again" in line]
        assert bool(warning) == warned, (commit, version, said)
    (run / "run.json").write_text(json.dumps({"options": {}, "git_commit": "b" * 40}))
    said.clear()  # a user's file beside a run's record is not the run's winner
    (run / "mine.yaml").write_text("params: {model: cnn_tiny, lr: 0.01}\n")
    raydx.run.cross_validate(run / "mine.yaml", log=said.append)
    assert not any("need not come out again" in line for line in said)


@pytest.mark.parametrize(
    ("record", "now", "said"),
    [
        (
            {"git_commit": "a" * 40, "git_changed": []},
            {"git_commit": "a" * 40, "git_changed": []},
            None,
        ),
        (  # the same commit, its source changed on one side
            {"git_commit": "a" * 40, "git_changed": ["raydx/train.py", "README.md"]},
            {"git_commit": "a" * 40, "git_changed": []},
            ("commit aaaaaaaaaa with changes to raydx/train.py", "commit aaaaaaaaaa"),
        ),
        (  # an older record, before git_changed
            {"git_commit": "a" * 40},
            {"git_commit": "a" * 40, "git_changed": ["README.md"]},
            ("commit aaaaaaaaaa (its changes unknown)", "commit aaaaaaaaaa"),
        ),
        (
            {"git_commit": "a" * 40, "git_changed": []},
            {"git_commit": "b" * 40, "git_changed": []},
            ("commit aaaaaaaaaa", "commit bbbbbbbbbb"),
        ),
        # a commit recorded, none now (an installed raydx): the versions decide
        ({"git_commit": "a" * 40, "packages": {"raydx": "VERSION"}}, {"git_commit": None}, None),
        (
            {"git_commit": "a" * 40, "packages": {"raydx": "0.0.1"}},
            {"git_commit": None},
            ("raydx 0.0.1", "raydx VERSION"),
        ),
        ({"git_commit": None, "packages": {"raydx": "VERSION"}}, {"git_commit": "a" * 40}, None),
    ],
)
def test_another_raydx_is_told_by_commit_changes_or_version(
    monkeypatch, record: dict, now: dict, said: tuple | None
) -> None:
    import raydx.run_folder
    from raydx import __version__
    from raydx.run_folder import other_raydx

    def fill(x):
        return json.loads(json.dumps(x).replace("VERSION", __version__))

    monkeypatch.setattr(raydx.run_folder, "git_state", lambda: fill(now))
    expected = tuple(fill(list(said))) if said else None
    assert other_raydx(fill(record)) == expected


def test_an_output_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    from raydx.errors import RaydxError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(RaydxError, match=r"^output '.*afile/run' cannot be made \(Not a dir"):
        claim_output(tmp_path / "afile" / "run")


def test_the_image_folder_itself_is_refused_as_output(tmp_path: Path) -> None:
    """--output DATA put model/, plots/ and ray/ beside the class folders: the next search
    of DATA stopped on 'model' holding no images, and predict scored the plots."""
    from raydx.errors import RaydxError
    from raydx.run_folder import check_output_not_data

    (tmp_path / "data" / "benign").mkdir(parents=True)
    with pytest.raises(RaydxError, match=r"^--output '.*data' is the image folder --data names"):
        check_output_not_data(tmp_path / "data" / ".", str(tmp_path / "data"))
    check_output_not_data(tmp_path / "data" / "runs" / "r1", str(tmp_path / "data"))  # passed over
    _write_png(tmp_path / "data" / "benign" / "a.png")
    with pytest.raises(RaydxError, match=r"lies in 'benign', a folder of images of --data"):
        check_output_not_data(tmp_path / "data" / "benign" / "run", str(tmp_path / "data"))
    check_output_not_data(tmp_path / "synthetic", "synthetic")
    check_output_not_data(None, str(tmp_path / "data"))


def test_tune_refuses_an_output_it_cannot_make_before_the_data(tmp_path: Path) -> None:
    """Checked before Ray starts and the images are read, not when the folder is made."""
    from raydx.errors import RaydxError
    from raydx.run import tune

    (tmp_path / "afile").write_text("x")
    with pytest.raises(RaydxError, match=r"^output '.*afile/run' cannot be written \(not a dir"):
        tune(data=str(tmp_path / "no-such-data"), output=tmp_path / "afile" / "run")


def _write_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
