"""The paired fold stopper (raydx.stopper): the test, the bookkeeping, the Tune schedulers."""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import ttest_rel

from raydx.config import RunOptions
from raydx.cv import EARLIER_EPOCHS
from raydx.errors import RaydxError
from raydx.results import EVENTS, RESUMING
from raydx.search import OBJECTIVE, make_scheduler, milestone_epochs
from raydx.stopper import (
    PairedASHA,
    PairedFoldRule,
    PairedFoldStopper,
    RunToEnd,
    fold_aucs,
    paired_upper_bound,
)


@dataclass(frozen=True)
class FakeTrial:
    trial_id: str


def epoch_result(epoch: int, folds: list[float], best: float | None = None) -> dict[str, Any]:
    """One epoch's report as raydx.cv sends it (the keys the stopper reads)."""
    r: dict[str, Any] = {"epoch": epoch, "cv_auc_mean": float(np.mean(folds))}
    r[OBJECTIVE] = float(np.mean(folds)) if best is None else best
    for i, v in enumerate(folds):
        r[f"fold_{i}_val_auc"] = v
    return r


# ---------------------------------------------------------------- the test


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [3, 5, 10])
def test_upper_bound_is_a_one_sided_paired_t_test(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.6, 0.9, k)
    b = a + rng.normal(0.03, 0.03, k)
    for alpha in (0.05, 0.1, 0.2):
        p = ttest_rel(a, b, alternative="less").pvalue
        assert (paired_upper_bound(a - b, alpha) < 0) == (p < alpha)


def test_upper_bound_needs_two_finite_differences() -> None:
    assert paired_upper_bound(np.array([-0.3])) == np.inf
    assert paired_upper_bound(np.array([-0.3, np.nan, np.nan])) == np.inf
    # a fold without an AUC (one class in its validation rows) is left out, not fatal
    assert paired_upper_bound(np.array([-0.30, -0.31, np.nan, -0.29])) < 0


def test_identical_folds_are_never_significantly_worse() -> None:
    assert paired_upper_bound(np.zeros(5)) == 0.0  # not < 0: no stop


def test_alpha_is_checked() -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), but got alpha=1.5"):
        PairedFoldRule(max_t=10, grace_period=2, alpha=1.5)


def test_fold_aucs_in_fold_order() -> None:
    r = epoch_result(3, [0.7, 0.8, 0.9])
    assert fold_aucs(r).tolist() == [0.7, 0.8, 0.9]
    assert fold_aucs({"epoch": 1}).size == 0


# ---------------------------------------------------------------- the rule


BEST = [0.90, 0.80, 0.85]  # fold 1 is the hard one for every trial


def finished(rule: PairedFoldRule, tid: str, folds: list[float]) -> None:
    for e in range(1, rule.max_t + 1):
        rule.record(tid, epoch_result(e, folds))
    rule.complete(tid)


def test_no_reference_no_stop() -> None:
    rule = PairedFoldRule(max_t=10, grace_period=2)
    rule.record("b", epoch_result(5, [0.5, 0.5, 0.5]))
    assert rule.reference() is None
    assert not rule.should_stop("b", 5)


def test_a_trial_stopped_early_is_no_reference() -> None:
    rule = PairedFoldRule(max_t=10, grace_period=2)
    for e in range(1, 6):
        rule.record("short", epoch_result(e, BEST))
    rule.complete("short")  # ended at epoch 5 of 10
    assert rule.reference() is None


def test_consistently_behind_stops_after_the_grace_period() -> None:
    rule = PairedFoldRule(max_t=10, grace_period=3)
    finished(rule, "a", BEST)
    behind = [v - 0.05 for v in BEST]  # 0.05 behind on every fold
    for e in (1, 2):
        rule.record("b", epoch_result(e, behind))
        assert not rule.should_stop("b", e)  # the grace period
    rule.record("b", epoch_result(3, behind))
    assert rule.should_stop("b", 3)
    assert not rule.should_stop("a", 3)  # the reference is not compared with itself


def test_behind_on_average_but_not_on_every_fold_continues() -> None:
    """The same CV-mean gap as above, but the folds disagree: ASHA would stop this trial
    at a rung, the paired test does not."""
    rule = PairedFoldRule(max_t=10, grace_period=1)
    finished(rule, "a", BEST)
    mixed = [BEST[0] + 0.05, BEST[1] - 0.15, BEST[2] - 0.05]
    rule.record("b", epoch_result(4, mixed))
    assert np.mean(mixed) == pytest.approx(np.mean(BEST) - 0.05)
    assert not rule.should_stop("b", 4)


def test_ahead_continues_and_the_last_epoch_is_never_stopped() -> None:
    rule = PairedFoldRule(max_t=10, grace_period=1)
    finished(rule, "a", BEST)
    rule.record("b", epoch_result(4, [v + 0.02 for v in BEST]))
    assert not rule.should_stop("b", 4)
    rule.record("c", epoch_result(10, [v - 0.1 for v in BEST]))
    assert not rule.should_stop("c", 10)  # it has finished; stopping saves nothing


def test_compares_at_the_same_epoch() -> None:
    """Early epochs are compared with the reference's early epochs, not its final ones."""
    rule = PairedFoldRule(max_t=10, grace_period=1)
    for e in range(1, 11):  # the reference learns: +0.02 an epoch
        rule.record("a", epoch_result(e, [v - 0.02 * (10 - e) for v in BEST]))
    rule.complete("a")
    rule.record("b", epoch_result(2, [v - 0.02 * 8 + 0.01 for v in BEST]))
    assert not rule.should_stop("b", 2)  # far below a's final folds, ahead of its epoch 2


def test_the_best_finished_trial_is_the_reference() -> None:
    rule = PairedFoldRule(max_t=4, grace_period=1)
    finished(rule, "weak", [v - 0.2 for v in BEST])
    finished(rule, "strong", BEST)
    finished(rule, "middle", [v - 0.1 for v in BEST])
    assert rule.reference() == "strong"
    rule.record("b", epoch_result(2, [v - 0.05 for v in BEST]))
    assert rule.should_stop("b", 2)  # ahead of 'weak' and 'middle', behind 'strong'


def test_a_trial_with_an_unscored_fold_is_no_reference() -> None:
    # Its CV mean is undefined, as the search's objective (raydx.cv.fold_metrics):
    # Optuna cannot rank it, so it must not be the trial the others are measured against.
    rule = PairedFoldRule(max_t=4, grace_period=1)
    finished(rule, "nan_fold", [0.95, 0.95, math.nan])
    finished(rule, "whole", [0.9, 0.9, 0.9])
    assert rule.reference() == "whole"
    rule.record("b", epoch_result(2, [0.85, 0.85, 0.85]))
    assert rule.should_stop("b", 2)


def test_each_trial_is_judged_at_its_peak_epoch() -> None:
    """The objective is the running maximum of the CV mean: a dip after a good epoch
    is not held against the trial."""
    rule = PairedFoldRule(max_t=10, grace_period=1)
    finished(rule, "a", BEST)
    rule.record("b", epoch_result(3, BEST))
    rule.record("b", epoch_result(4, [v - 0.2 for v in BEST]))
    assert not rule.should_stop("b", 4)
    assert rule.peak("b", 4)[1].tolist() == BEST


def test_batched_epochs_are_all_recorded() -> None:
    """Epochs reported together (raydx.cv.EARLIER_EPOCHS) count as the epochs they are."""
    rule = PairedFoldRule(max_t=10, grace_period=1)
    report = epoch_result(3, [0.5, 0.5, 0.5])
    report[EARLIER_EPOCHS] = json.dumps([epoch_result(1, BEST), epoch_result(2, [0.6] * 3)])
    assert rule.record("b", report) == 3
    assert sorted(rule.history["b"]) == [1, 2, 3]
    assert rule.peak("b", 3)[1].tolist() == BEST


def test_a_replayed_epoch_overwrites_its_first_run() -> None:
    rule = PairedFoldRule(max_t=10, grace_period=1)
    rule.record("b", epoch_result(2, [0.5] * 3))
    rule.record("b", epoch_result(2, [0.7] * 3))  # after a restart from a checkpoint
    assert rule.history["b"][2][0] == pytest.approx(0.7)


# ---------------------------------------------------------------- Tune schedulers


def _run(sched: Any, tid: str, per_epoch: list[list[float]]) -> list[str]:
    trial = FakeTrial(tid)
    sched.on_trial_add(None, trial)
    actions, best = [], -1.0
    for e, folds in enumerate(per_epoch, start=1):
        best = max(best, float(np.mean(folds)))
        actions.append(sched.on_trial_result(None, trial, epoch_result(e, folds, best)))
        if actions[-1] == "STOP":
            break
    sched.on_trial_complete(None, trial, epoch_result(e, folds, best))
    return actions


def test_paired_stopper_alone() -> None:
    s = make_scheduler(RunOptions(scheduler="paired", epochs=6, grace_period=2))
    assert isinstance(s, PairedFoldStopper)
    assert milestone_epochs(RunOptions(scheduler="paired", epochs=6, grace_period=2)) == []
    assert _run(s, "a", [BEST] * 6) == ["CONTINUE"] * 6
    assert _run(s, "b", [[v - 0.05 for v in BEST]] * 6) == ["CONTINUE", "STOP"]
    # a trial level with the reference runs to the end (ASHA alone might stop it)
    level = [BEST[0] + 0.01, BEST[1] - 0.01, BEST[2]]
    assert _run(s, "c", [level] * 6) == ["CONTINUE"] * 6
    assert s.paired_stops == 1
    assert "Paired fold test: 1 stopped" in s.debug_string()


def test_paired_asha_stops_between_rungs() -> None:
    opts = RunOptions(scheduler="asha+paired", epochs=9, grace_period=1)
    s = make_scheduler(opts)
    assert isinstance(s, PairedASHA)
    assert s._metric == OBJECTIVE and s._time_attr == "epoch"
    assert milestone_epochs(opts) == [1, 3, 9]  # ASHA's rungs are still reported exactly
    start = [v - 0.1 for v in BEST]
    # ASHA stops a trial at its last epoch (max_t): that is how a finished trial ends
    assert _run(s, "a", [start] + [BEST] * 8) == ["CONTINUE"] * 8 + ["STOP"]
    # level with 'a' at rung 1 (ASHA keeps it), 0.05 behind on every fold at epoch 2
    assert _run(s, "b", [start] + [[v - 0.05 for v in BEST]] * 8) == ["CONTINUE", "STOP"]
    assert s.paired_stops == 1


def test_paired_asha_keeps_asha_stops() -> None:
    """Where ASHA stops a trial, the paired test is not asked (nor counted)."""
    s = make_scheduler(RunOptions(scheduler="asha+paired", epochs=9, grace_period=3))
    assert s.rule.grace_period == 3
    for tid in "abc":
        _run(s, tid, [BEST] * 9)
    # below the top third at rung 3, yet level on fold 0: ASHA's stop, not the test's
    worse = [BEST[0] + 0.01, BEST[1] - 0.2, BEST[2] - 0.01]
    assert _run(s, "d", [worse] * 9)[-1] == "STOP"
    assert s.paired_stops == 0


def test_schedulers_survive_pickling() -> None:
    """Tune pickles the scheduler with the Tuner (tuner.pkl) for --resume."""
    for name in ("paired", "asha+paired"):
        s = make_scheduler(RunOptions(scheduler=name, epochs=6, grace_period=2))
        _run(s, "a", [BEST] * 6)
        back = pickle.loads(pickle.dumps(s))
        assert back.rule.reference() == "a"


@pytest.mark.parametrize("name", ["asha", "paired", "asha+paired"])
def test_a_resumed_scheduler_decides_as_the_uninterrupted_one(tmp_path: Path, name: str) -> None:
    """Tune restores a scheduler as pickled when the search began, empty: it never calls
    its save. Rebuilt from events.jsonl, it stops the next trial exactly where the
    scheduler that saw every trial would (an audit: after a resume, ASHA stopped at
    epoch 10 a trial that ran all 30 epochs uninterrupted)."""
    opts = RunOptions(scheduler=name, epochs=9, grace_period=1)
    live = make_scheduler(opts)
    began = pickle.dumps(make_scheduler(opts))  # tuner.pkl: written before any trial
    events: list[dict[str, Any]] = []
    for tid, shift in (("a", 0.0), ("b", 0.03), ("c", 0.06), ("d", 0.2)):
        trial, best = FakeTrial(tid), -1.0
        live.on_trial_add(None, trial)
        events.append({"e": "start", "trial_id": tid, "config": {}})
        for e in range(1, 10):
            folds = [v - shift for v in BEST]
            best = max(best, float(np.mean(folds)))
            r = epoch_result(e, folds, best)
            events.append({"e": "result", "trial_id": tid, "result": r})
            if live.on_trial_result(None, trial, r) == "STOP":
                break
        live.on_trial_complete(None, trial, r)
        events.append({"e": "complete", "trial_id": tid})
    # an epoch recovered from d's checkpoint after the search: no scheduler saw it
    late = epoch_result(9, BEST, float(np.mean(BEST)))
    events.append({"e": "result", "trial_id": "d", "result": late, "from_checkpoint": True})
    (tmp_path / EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    next_trial = [[v - 0.04 for v in BEST]] * 9

    forgot = pickle.loads(began)  # as Tune restored it before
    said: list[str] = []
    RESUMING[:] = [(tmp_path, said.append)]
    try:
        restored = pickle.loads(began)
    finally:
        RESUMING.clear()
    assert said == ["raydx: the early-stopping rule goes on from the 4 trials of the run's record"]
    expected = _run(live, "e", next_trial)
    assert "STOP" in expected
    assert _run(restored, "e", next_trial) == expected
    assert _run(forgot, "e", next_trial) != expected  # the test bites


def test_a_resumed_search_without_early_stopping_says_nothing_of_it(tmp_path: Path) -> None:
    event = {"e": "result", "trial_id": "a", "result": epoch_result(1, BEST)}
    (tmp_path / EVENTS).write_text(json.dumps(event) + "\n")
    said: list[str] = []
    RESUMING[:] = [(tmp_path, said.append)]
    try:
        back = pickle.loads(pickle.dumps(make_scheduler(RunOptions(scheduler="none"))))
    finally:
        RESUMING.clear()
    assert isinstance(back, RunToEnd) and said == []


@pytest.mark.parametrize("name", ["paired", "asha+paired"])
def test_no_scheduler_when_the_grace_period_covers_every_epoch(name: str) -> None:
    s = make_scheduler(RunOptions(scheduler=name, epochs=5, grace_period=5))
    assert s.__class__ is RunToEnd


def test_unknown_scheduler_names_the_choices() -> None:
    with pytest.raises(RaydxError, match="Did you mean 'paired'"):
        RunOptions(scheduler="pairde")


# ---------------------------------------------------------------- in a search


def _live_placement_groups() -> dict:
    import ray

    return {k: v for k, v in ray.util.placement_group_table().items() if v["state"] != "REMOVED"}


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_stops_a_trial_whose_folds_are_all_behind(tmp_path, ray_session) -> None:
    """End to end: the scheduler sees the workers' per-fold AUCs through Tune, stops the
    second trial at its first epoch, and the results say who stopped it."""
    from raydx.run import tune
    from raydx.space import parse_space

    before = set(_live_placement_groups())
    space = parse_space(
        {
            "run": {"scheduler": "paired", "grace_period": 1},
            "params": {
                "model": "cnn_tiny",
                "lr": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
            },
            # a good learning rate first (it becomes the reference), then one so small
            # that the model learns next to nothing (one so large as 1.0 gave saturated
            # probabilities, ties at 0.5, until they were computed in float64; their
            # ranking then beat the reference on a fold)
            "enqueue": [{"lr": 0.01}, {"lr": 1e-6}],
        }
    )
    res = tune(
        space,
        data="synthetic:300",
        trials=2,
        folds=3,
        epochs=4,
        max_concurrent_trials=1,  # the reference finishes before the second trial starts
        report_interval_s=0,  # every epoch its own report, so epoch 1 can be judged
        output=tmp_path / "out",
        log=lambda *a: None,
    )
    t = res.trials.set_index("lr").sort_index()
    good, bad = t.loc[0.01], t.loc[1e-6]
    assert good.epochs_run == 4 and not good.stopped_early
    assert bad.epochs_run == 1 and bad.stopped_by == "scheduler"
    folds = [f"fold_{i}_auc" for i in range(3)]
    assert bad[folds].to_numpy().mean() < good[folds].to_numpy().mean() - 0.2
    left = {k: v for k, v in _live_placement_groups().items() if k not in before}
    assert not left, left
