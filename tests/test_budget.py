"""The search's time budget: no trial starts that cannot finish, running ones stop at the
deadline with their epochs kept, and the search ends as a finished one."""

from __future__ import annotations

import time
import types

import optuna
import pandas as pd
import pytest

from raydx import budget
from raydx.config import RunOptions
from raydx.errors import RaydxError
from raydx.space import load_space


@pytest.fixture(autouse=True)
def _disarm():
    yield
    budget.arm(None)


def test_without_a_budget_every_trial_starts_and_none_is_stopped():
    budget.arm(None)
    assert budget.remaining() == float("inf")
    assert all(budget.may_start(f"t{i}") for i in range(100))
    assert not budget.BudgetStopper()("t0", {"epoch": 1})
    assert not budget.ended_search()


def test_a_trial_starts_only_if_a_typical_trial_fits_in_what_is_left():
    budget.arm(10.0)
    assert budget.may_start("a")  # nothing finished yet: nothing to go by
    budget._CLOCK.started["a"] -= 4.0  # "a" took 4 s
    budget.trial_ended("a")
    assert budget.typical_trial_s() == pytest.approx(4.0, abs=0.1)
    assert budget.may_start("b")  # ~10 s left > 4 s
    budget.arm(3.0)
    budget._CLOCK.durations.append(4.0)
    assert not budget.may_start("c")  # 3 s left < 4 s
    assert budget.ended_search()


def test_the_stopper_stops_trials_only_after_the_deadline():
    budget.arm(60.0)
    stopper = budget.BudgetStopper()
    assert not stopper("a", {"epoch": 3})
    budget.arm(60.0, start=time.perf_counter() - 61.0)
    assert budget.expired()
    assert stopper("a", {"epoch": 4})
    assert budget.stopped_trials() == {"a"} and budget.ended_search()
    assert not stopper.stop_all()  # Tune's stop_all would skip the searcher and callbacks


def test_a_failed_configuration_ends_as_error_after_the_deadline_too():
    """Stopping on the report that says a configuration failed (raydx.cv._failed) would
    close the trial as TERMINATED, its failure dropped and its earlier epochs ranked."""
    from raydx.search import make_scheduler

    budget.arm(60.0, start=time.perf_counter() - 61.0)
    try:
        failed = {"epoch": 3, "objective": 0.8, "best_epoch": 2, "failed": "DivergedError: x"}
        assert not budget.BudgetStopper()("a", failed)
        assert budget.stopped_trials() == set()
        for name in ("none", "asha", "paired", "asha+paired"):
            s = make_scheduler(RunOptions(scheduler=name, epochs=6, grace_period=2))
            # the scheduler's own rule is not asked: this trial is unknown to it
            assert s.on_trial_result(None, _Trial("a"), failed) == "CONTINUE", name
        # the paired rule, made to stop every trial, stops a report but not a failure
        paired = make_scheduler(RunOptions(scheduler="paired", epochs=6, grace_period=2))
        paired.rule.should_stop = lambda trial_id, epoch: True
        assert paired.on_trial_result(None, _Trial("a"), failed) == "CONTINUE"
        assert paired.on_trial_result(None, _Trial("a"), {"epoch": 3, "objective": 0.8}) == "STOP"
    finally:
        budget.arm(None)


class _Clockwork:
    """Stands in for the ``time`` module that raydx.budget reads its clock from."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now


class _Trial:
    def __init__(self, trial_id: str, status: str = "RUNNING") -> None:
        self.trial_id, self.status = trial_id, status
        self.temporary_state = types.SimpleNamespace(ray_actor=f"actor of {trial_id}")

    def is_finished(self) -> bool:
        return self.status in ("TERMINATED", "ERROR")


class _Controller:
    """The part of Tune's controller that a scheduler is allowed to use here."""

    def __init__(self, trials: list[_Trial]) -> None:
        self.trials, self.stopped = trials, []

    def get_live_trials(self) -> set[_Trial]:
        return {t for t in self.trials if t.status != "TERMINATED"}

    def get_trials(self) -> list[_Trial]:
        return self.trials

    def stop_trial(self, trial: _Trial) -> None:
        self.stopped.append(trial.trial_id)
        trial.status = "TERMINATED"
        trial.temporary_state.ray_actor = None  # as Tune's _schedule_trial_stop does


def test_after_the_deadline_a_trial_silent_past_the_grace_is_stopped(monkeypatch):
    """Twice the longest wait for a report that came, at least MIN_GRACE_S: a trial that
    reports on time is left to the stopper, one that has gone silent is stopped."""
    from raydx.stopper import RunToEnd

    clock = _Clockwork()
    monkeypatch.setattr(budget, "time", clock)
    killed: list[str] = []
    monkeypatch.setattr(budget, "kill", killed.append)
    monkeypatch.setattr(budget, "waiting_trials", lambda actors: None)  # unknown: job-wide
    monkeypatch.setattr(budget, "demand_waits", lambda: True)  # a worker group waits
    said: list[str] = []
    budget.arm(600.0, log=said.append)  # deadline at 1600
    trials = [_Trial("a"), _Trial("b"), _Trial("c"), _Trial("failed", "ERROR")]
    tc = _Controller(trials)
    scheduler, stopper = RunToEnd(), budget.BudgetStopper()
    for t in "abc":
        assert budget.may_start(t)
    clock.now = 1050.0
    stopper("b", {"epoch": 1})  # b reports once, then never again
    clock.now = 1090.0
    stopper("a", {"epoch": 1})  # a waited 90 s for its first report (worker starts)
    assert budget.grace_s() == 180.0
    for now in range(1110, 1600, 30):  # a reports every 30 s, last at 1590
        clock.now = float(now)
        stopper("a", {"epoch": 2})
        assert scheduler.choose_trial_to_run(tc) is None
    clock.now = 1599.0  # c has said nothing for 599 s, but the budget is not spent
    scheduler.choose_trial_to_run(tc)
    assert tc.stopped == []
    clock.now = 1600.5
    scheduler.choose_trial_to_run(tc)
    assert tc.stopped == ["b", "c"] or tc.stopped == ["c", "b"]
    assert said == [  # once, at the deadline
        "raydx: the time budget is spent: no new trial starts, and 3 running trial(s) stop "
        "at their next epoch report (the longest wait for a report so far was 90 s; one "
        "whose workers wait for resources is stopped after its silence); then the winner "
        "is scored and the report written"
    ]
    # Their processes are killed at once: a stop request would queue behind a blocked
    # train call.
    assert sorted(killed) == ["actor of b", "actor of c"]
    assert budget.silenced_trials() == {"b": 550.5, "c": 600.5}
    assert budget.stopped_trials() == {"b", "c"} and budget.ended_search()
    clock.now = 1590.0 + 180.0  # a's last report was at 1590: not yet past the grace
    scheduler.choose_trial_to_run(tc)
    assert "a" not in tc.stopped
    clock.now = 1590.0 + 181.0
    scheduler.choose_trial_to_run(tc)
    assert tc.stopped[-1] == "a" and "failed" not in tc.stopped
    assert killed[-1] == "actor of a" and len(killed) == 3
    budget.arm(600.0)  # a new invocation: the waits seen before do not count
    assert budget.grace_s() == budget.MIN_GRACE_S
    assert len(said) == 1


def test_after_the_deadline_a_silent_trial_trains_on_where_its_worker_group_does_not_wait(
    monkeypatch,
):
    """An audit: 96-px tiles whose first epochs outlasted a 3-minute budget: both trials
    (their 6 fold workers alive) were killed at the deadline as if they waited for
    resources, and the search ended with no winner. A review: with one trial's group
    waiting, every silent trial was stopped, the training ones too. Silence is stopped
    only where the trial's own worker group waits; else the trial stops at its report."""
    from raydx.stopper import RunToEnd

    clock = _Clockwork()
    monkeypatch.setattr(budget, "time", clock)
    killed: list[str] = []
    monkeypatch.setattr(budget, "kill", killed.append)
    waits: set[str] | None = set()
    asked: list[dict] = []

    def waiting(actors: dict) -> set[str] | None:
        asked.append(actors)
        return waits

    monkeypatch.setattr(budget, "waiting_trials", waiting)
    monkeypatch.setattr(budget, "demand_waits", lambda: True)  # some group of the job waits
    budget.arm(180.0)  # deadline at 1180; no trial has reported
    trials = [_Trial("a"), _Trial("b"), _Trial("c")]
    tc = _Controller(trials)
    scheduler, stopper = RunToEnd(), budget.BudgetStopper()
    assert all(budget.may_start(t) for t in "abc")
    clock.now = 1100.0
    scheduler.choose_trial_to_run(tc)  # before the deadline: Ray is not asked
    assert asked == []
    clock.now = 1400.0  # 400 s of silence, past the 120 s grace
    scheduler.choose_trial_to_run(tc)
    assert tc.stopped == [] and killed == []  # no trial's own group waits
    assert asked[-1] == {t: f"actor of {t}" for t in "abc"}  # each trial's actor
    assert stopper("a", {"epoch": 1})  # its first report, past the deadline: stopped there
    assert budget.stopped_trials() == {"a"} and budget.silenced_trials() == {}
    waits = {"c"}  # c's worker group waits for resources; b is training
    clock.now = 1000.0 + 2 * 400.0 + 1.0  # past twice a's wait for its report (the grace)
    scheduler.choose_trial_to_run(tc)
    assert tc.stopped == ["c"] and killed == ["actor of c"]
    waits = None  # Ray's tables cannot tell: every silent trial, while some group waits
    scheduler.choose_trial_to_run(tc)
    assert "b" in tc.stopped


def test_whether_a_worker_group_waits_is_asked_of_ray_at_most_every_few_seconds(
    monkeypatch,
):
    import ray

    import raydx.cleanup

    clock = _Clockwork()
    monkeypatch.setattr(budget, "time", clock)
    job = "0a000000"
    monkeypatch.setattr(
        ray, "get_runtime_context", lambda: type("C", (), {"get_job_id": lambda self: job})()
    )
    groups = [("aa" + job, "CREATED", False, None), ("bb" + "01000000", "PENDING", False, None)]
    asked: list[int] = []
    monkeypatch.setattr(raydx.cleanup, "_placement_groups", lambda: asked.append(1) or groups)
    budget.arm(60.0)
    assert budget.demand_waits() is False  # another job's pending group is not this search's
    groups.append(("cc" + job, "PENDING", False, None))
    clock.now += 1.0
    assert budget.demand_waits() is False and len(asked) == 1  # asked again only later
    clock.now += budget.DEMAND_CHECK_S
    assert budget.demand_waits() is True and len(asked) == 2

    def fails() -> list:
        raise RuntimeError("GCS table changed")

    monkeypatch.setattr(raydx.cleanup, "_placement_groups", fails)
    clock.now += budget.DEMAND_CHECK_S
    assert budget.demand_waits() is True  # where it cannot be told: the rule as before


def test_every_scheduler_stops_silent_trials_and_survives_pickling():
    """Tune pickles the scheduler with the Tuner (tuner.pkl) for --resume."""
    import pickle

    from raydx.search import make_scheduler

    for name in ("none", "asha", "paired", "asha+paired"):
        s = make_scheduler(RunOptions(scheduler=name, epochs=6, grace_period=2))
        assert isinstance(s, budget.StopsSilentTrials), name
        assert type(pickle.loads(pickle.dumps(s))) is type(s)


def test_the_summary_tells_a_trial_stopped_before_its_first_report_from_a_failed_one(
    tmp_path,
):
    from raydx.run import summary_table

    trials = pd.DataFrame(
        {
            "trial_id": ["a1", "b2", "c3"],
            "family": ["cnn"] * 3,
            "model": ["cnn"] * 3,
            "status": ["TERMINATED", "TERMINATED", "ERROR"],
            "best_epoch": [7, None, None],
            "cv_auc_mean": [0.9, None, None],
            "cv_auc_std": [0.03, None, None],
        }
    )
    best = {"trial_id": "a1", "cv_auc_mean": 0.9, "cv_auc_std": 0.03, "threshold": 0.5}
    lines = summary_table(trials, best, None, tmp_path, 1.0).splitlines()
    assert [x.split()[-1] for x in lines if x.startswith("  b2 ") or x.startswith("  c3 ")] == [
        "AUC",
        "failed",
    ]


def test_time_budget_is_checked_and_read_from_a_space_file(tmp_path):
    with pytest.raises(RaydxError, match=r"time_budget_min must be > 0, but got time_budget_min=0"):
        RunOptions(time_budget_min=0)
    f = tmp_path / "s.yaml"
    f.write_text("run: {time_budget_min: 28}\nparams: {lr: {type: float, low: 0.001, high: 0.1}}\n")
    assert load_space(f).run_defaults()["time_budget_min"] == 28


@pytest.mark.slow
@pytest.mark.ray
def test_a_search_out_of_time_ends_finished_and_scores_its_winner(
    tmp_path, ray_session, breastmnist
):
    from raydx.run import tune

    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    res = tune(
        "search_spaces/cnn.yaml",
        data=str(breastmnist),
        limit=200,
        folds=3,
        trials=20,
        epochs=300,  # no trial can finish: the deadline stops them
        scheduler="none",
        time_budget_min=0.6,
        output=tmp_path / "out",
        log=lambda *a: lines.append((time.perf_counter() - t0, " ".join(map(str, a)))),
    )
    trials = res.trials
    assert 1 <= len(trials) < 20
    assert set(trials["status"]) == {"TERMINATED"}
    assert (trials["epochs_run"] >= 1).all() and (trials["epochs_run"] < 300).all()
    assert trials["stopped_early"].all()
    assert set(trials["stopped_by"]) == {"time budget"}  # no scheduler in this search
    # The search ends at the first report after the 36 s deadline; a trial started just
    # before it reports once its workers are up: 15-30 s here, 62 s once in a CI run on
    # a loaded machine (46 s launch, 16 s to build the first optimizer). Without the
    # budget, 300 epochs of 5 s would run on for 25 minutes. The winner's scoring comes
    # after and is not part of the search's budget.
    ended = [t for t, x in lines if "time budget of 0.6 min ended the search" in x]
    assert len(ended) == 1 and ended[0] < 36 + 90, lines
    assert (res.output / "test_metrics.json").is_file()
    assert res.best["trial_id"] in set(trials["trial_id"])
    # the study closed every trial it opened: a resumed or reloaded study sees no runner
    study = optuna.load_study(study_name="raydx", storage=f"sqlite:///{res.output / 'study.db'}")
    states = pd.Series([t.state.name for t in study.trials])
    assert (states == "COMPLETE").all() and len(states) == len(trials)


@pytest.mark.slow
@pytest.mark.ray
def test_a_budget_that_ends_before_any_trial_reports_says_so(tmp_path, ray_session):
    from raydx.run import tune

    with pytest.raises(RaydxError) as info:
        tune(
            "search_spaces/cnn.yaml",
            data="synthetic",
            limit=60,
            folds=2,
            trials=2,
            epochs=2,
            time_budget_min=0.001,  # spent before the first trial could start
            output=tmp_path / "out",
            log=lambda *a: None,
        )
    msg = str(info.value)
    assert "ended the search before any trial reported a CV AUC" in msg
    assert "--time-budget-min" in msg and "test split was not touched" in msg
    assert not (tmp_path / "out" / "test_metrics.json").exists()

    from raydx.run import resume

    with pytest.raises(RaydxError, match="Start a new run with more time"):
        resume(tmp_path / "out", log=lambda *a: None)  # a resume keeps the spent budget
    assert not (tmp_path / "out" / "test_metrics.json").exists()


@pytest.mark.slow
@pytest.mark.ray
def test_trials_whose_workers_never_start_do_not_outlive_the_budget(
    tmp_path, ray_session, monkeypatch
):
    """Ray Train V2 waits without end for a worker group's resources (a lost node, an
    autoscaler that adds none); its trial never reports, so no stopper sees it. Here the
    cluster's free CPU is held, so no trial's fold worker can start."""
    from ray.util.placement_group import placement_group, remove_placement_group

    from raydx.cleanup import job_placement_groups
    from raydx.run import tune

    monkeypatch.setattr(budget, "MIN_GRACE_S", 5.0)
    held = placement_group([{"CPU": 1.0}])  # of 2: the trials' 0.02 leave 0.98 < 1
    ray_session.get(held.ready())
    before = job_placement_groups()
    lines: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    try:
        with pytest.raises(RaydxError) as info:
            tune(
                "search_spaces/cnn.yaml",
                data="synthetic",
                limit=60,
                folds=2,
                trials=2,
                epochs=300,
                scheduler="none",
                workers_per_trial=1,
                cpus_per_worker=1,
                max_concurrent_trials=2,
                time_budget_min=0.5,  # counted from the command's start: data too
                output=tmp_path / "out",
                log=lambda *a: lines.append((time.perf_counter() - t0, " ".join(map(str, a)))),
            )
    finally:
        remove_placement_group(held)
    # No report, so the grace is MIN_GRACE_S, and both trials have been silent for longer
    # at the 30 s deadline. (Without raydx.budget.StopsSilentTrials this search would not
    # end.)
    ended = [t for t, x in lines if "time budget of 0.5 min ended the search" in x]
    assert len(ended) == 1 and ended[0] < 30 + 5 + 30, lines
    # Their processes are killed when they are stopped: the search ends at once, where
    # Tune's end would wait for them (measured: 0.5 s after the stop, and 10.6 s when
    # Tune's end stopped them).
    stops = [t for t, x in lines if "0 epochs (stopped by the time budget" in x]
    assert ended[0] - max(stops) < 8.0, lines
    msg = str(info.value)
    assert "before any trial reported a CV AUC" in msg
    assert "2 had reported nothing for" in msg and "1 worker(s) of 1 CPU" in msg
    assert not (tmp_path / "out" / "test_metrics.json").exists()
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert set(trials["status"]) == {"TERMINATED"} and (trials["epochs_run"] == 0).all()
    assert set(trials["stopped_by"]) == {"time budget"}
    said = [x for _, x in lines if "done: no finite AUC; 0 epochs (stopped by the time" in x]
    assert len(said) == 2 and all("without a report" in x for x in said), lines
    study = optuna.load_study(study_name="raydx", storage=f"sqlite:///{tmp_path / 'out/study.db'}")
    assert all(t.state.is_finished() for t in study.trials) and len(study.trials) == 2
    assert job_placement_groups() <= before  # the trials' worker groups were freed


def test_which_trials_wait_is_read_from_rays_tables(monkeypatch) -> None:
    """A waiting placement group's creator is a trial's Train controller, owned by the
    trial's actor (as on a live Ray 2.60: ImplicitFunc -> TrainController -> group);
    another job's group is not the search's; a failing table read is None (unknown)."""
    import os
    import types

    import ray
    from ray._private import state
    from ray.core.generated import gcs_pb2

    import raydx.cleanup

    clock = _Clockwork()
    monkeypatch.setattr(budget, "time", clock)
    job = "0a000000"
    monkeypatch.setattr(
        ray, "get_runtime_context", lambda: types.SimpleNamespace(get_job_id=lambda: job)
    )

    def new_id() -> bytes:
        return os.urandom(12) + bytes.fromhex(job)

    controller, trial_a, trial_b = new_id(), new_id(), new_id()
    worker_a, worker_b = os.urandom(28), os.urandom(28)

    def record(actor: bytes, worker: bytes, owner: bytes) -> bytes:
        d = gcs_pb2.ActorTableData(actor_id=actor)  # type: ignore[attr-defined]
        d.address.worker_id, d.owner_address.worker_id = worker, owner
        return d.SerializeToString()

    table = {
        controller: record(controller, os.urandom(28), worker_a),  # a's Train controller
        trial_a: record(trial_a, worker_a, b"driver"),
        trial_b: record(trial_b, worker_b, b"driver"),
    }
    groups = [
        (os.urandom(14).hex() + job, "CREATED", False, None),  # Tune's, of a running trial
        (os.urandom(14).hex() + job, "PENDING", False, controller.hex()),
        (os.urandom(14).hex() + "0b000000", "PENDING", False, os.urandom(16).hex()),
    ]
    monkeypatch.setattr(raydx.cleanup, "_placement_groups", lambda: groups)
    accessor = types.SimpleNamespace(get_actor_info=lambda a: table.get(a.binary()))
    monkeypatch.setattr(state.state, "_connect_and_get_accessor", lambda: accessor)
    actors = {t: types.SimpleNamespace(_actor_id=ray.ActorID(a)) for t, a in
              (("a", trial_a), ("b", trial_b))}  # fmt: skip
    budget.arm(60.0)
    assert budget.waiting_trials(actors) == {"a"}  # b is training
    groups[1] = (groups[1][0], "CREATED", False, controller.hex())  # a's workers start
    clock.now += 1.0
    assert budget.waiting_trials(actors) == {"a"}  # asked again only later...
    assert budget.waiting_trials({"b": actors["b"]}) == set()  # ...or for other trials
    clock.now += budget.DEMAND_CHECK_S
    assert budget.waiting_trials(actors) == set()

    def fails() -> list:
        raise RuntimeError("GCS table changed")

    monkeypatch.setattr(raydx.cleanup, "_placement_groups", fails)
    clock.now += budget.DEMAND_CHECK_S
    assert budget.waiting_trials(actors) is None  # unknown: the job-wide rule applies


def test_a_trial_not_started_at_the_deadline_is_stopped_for_its_silence(monkeypatch) -> None:
    """A review: a PENDING trial (no actor yet, waiting on Tune's own placement group,
    which no actor created) was never among the waiting ones, and would start after the
    deadline once resources came free."""
    from raydx.stopper import RunToEnd

    clock = _Clockwork()
    monkeypatch.setattr(budget, "time", clock)
    monkeypatch.setattr(budget, "kill", lambda actor: None)
    monkeypatch.setattr(budget, "waiting_trials", lambda actors: set())  # no group of theirs
    budget.arm(60.0)
    pending = _Trial("p", "PENDING")
    pending.temporary_state.ray_actor = None
    tc = _Controller([pending, _Trial("r")])
    assert budget.may_start("p") and budget.may_start("r")
    clock.now = 1000.0 + 60.0 + budget.MIN_GRACE_S + 1.0
    RunToEnd().choose_trial_to_run(tc)
    assert tc.stopped == ["p"]  # r, running and silent, trains on
