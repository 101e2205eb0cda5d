"""A wall-clock budget for a search, as Optuna's ``timeout``: "N trials or T minutes".

When the budget runs out the search ends as a finished search, not an interrupted
one: trials still running are stopped at their next epoch report (they keep the epochs
they finished and are ranked on them, as ASHA-stopped trials are), no new trial starts,
and the winner is scored on the test split. A trial that stays silent after the deadline
(it waits for resources that never come free: a node lost with the only GPUs, resources
that other work holds) is stopped once it has gone without a report for twice the
longest wait for a report that the search has seen, and at least ``MIN_GRACE_S``, while
its own Train worker group's placement group waits for resources: Ray Train V2 retries
a worker group's start without end, and a search must not outlive its budget for it.
Where its group does not wait, a silent trial is training a long epoch (an audit:
96-px tiles whose first epochs outlasted a three-minute budget, and every trial was
killed at the deadline, leaving no winner): it is stopped at its next report, as the
others are.

A trial is not started at all when less time is left than the trials finished so far
took (the median): it would take CPU from the trials that can still finish and be
stopped half-trained.

The clock lives in the driver process, armed by each ``raydx tune`` call: Tune pickles
its searcher and stoppers into the experiment folder, and a deadline pickled there
would be stale when a killed search is resumed. A resumed search gets the budget again,
counted from the moment it resumes (as a new ``study.optimize(timeout=...)`` call would).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.stopper import Stopper

logger = logging.getLogger(__name__)

MIN_GRACE_S = 120.0  # a trial started just before the deadline still gets its first report


@dataclass
class _Clock:
    deadline: float | None = None  # time.perf_counter() value; None: no budget
    started: dict[str, float] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # trials stopped at the deadline
    refused: bool = False  # a trial was not started for want of time
    armed: float = 0.0  # perf_counter() when arm() ran: a restored trial's last news
    heard: dict[str, float] = field(default_factory=dict)  # trial -> start or last report
    longest_wait: float = 0.0  # the longest a trial went without a report before one came
    silenced: dict[str, float] = field(default_factory=dict)  # stopped silent: seconds
    log: Any = None  # the console's, for the line at the deadline
    announced: bool = False
    demand: tuple[float, bool] = (-1e9, True)  # (when asked, whether a group waited)
    waiting: tuple[float, frozenset[str], set[str] | None] = (-1e9, frozenset(), None)


_CLOCK = _Clock()


def arm(seconds: float | None, start: float | None = None, log: Any = None) -> None:
    """Start this invocation's budget (``None``: none); ``start``: a perf_counter value;
    ``log``: where the line at the deadline goes."""
    global _CLOCK
    now = time.perf_counter()
    begin = now if start is None else start
    # A restored trial's silence counts from now, not from the command's start, which
    # preparing the data and restoring Tune's experiment may lie well before.
    _CLOCK = _Clock(deadline=None if seconds is None else begin + seconds, armed=now, log=log)


def remaining() -> float:
    """Seconds left (``inf`` without a budget)."""
    if _CLOCK.deadline is None:
        return float("inf")
    return _CLOCK.deadline - time.perf_counter()


def expired() -> bool:
    return remaining() <= 0


def ended_search() -> bool:
    """Whether the budget, rather than the trial count, ended the search."""
    return _CLOCK.refused or bool(_CLOCK.stopped)


def stopped_trials() -> set[str]:
    return set(_CLOCK.stopped)


def silenced_trials() -> dict[str, float]:
    """Trials stopped for their silence after the deadline: how long each had been silent."""
    return dict(_CLOCK.silenced)


def typical_trial_s() -> float:
    """Median wall time of the trials finished in this invocation (0 before the first)."""
    return statistics.median(_CLOCK.durations) if _CLOCK.durations else 0.0


def may_start(trial_id: str) -> bool:
    """Whether a new trial fits in what is left; records its start if so."""
    if remaining() <= typical_trial_s():
        _CLOCK.refused = True
        return False
    _CLOCK.started[trial_id] = _CLOCK.heard[trial_id] = time.perf_counter()
    return True


def heard_from(trial_id: str) -> None:
    """A report came: how long the trial waited for it counts towards the grace."""
    now = time.perf_counter()
    _CLOCK.longest_wait = max(_CLOCK.longest_wait, now - _CLOCK.heard.get(trial_id, _CLOCK.armed))
    _CLOCK.heard[trial_id] = now


def grace_s() -> float:
    """How long after its last report (or its start) a trial may stay silent past the
    deadline: twice the longest wait for a report seen so far (worker starts, and the
    time a trial queued for resources before them, included), and at least
    ``MIN_GRACE_S``."""
    return max(MIN_GRACE_S, 2.0 * _CLOCK.longest_wait)


def silent(trial_ids: list[str], waiting: set[str] | None = None) -> dict[str, float]:
    """Of these live trials, those to stop now for their silence, with its length: of
    those, the ones in ``waiting`` (``waiting_trials``: whose worker group waits for
    resources; the others are training); where that is unknown (None), all of them while
    any placement group of the search waits."""
    if not expired():
        return {}
    now, grace = time.perf_counter(), grace_s()
    quiet = {t: now - _CLOCK.heard.get(t, _CLOCK.armed) for t in trial_ids}
    quiet = {t: s for t, s in quiet.items() if s > grace}
    if not quiet:
        return {}
    if waiting is None:
        return quiet if demand_waits() else {}
    return {t: s for t, s in quiet.items() if t in waiting}


def waiting_trials(actors: dict[str, Any]) -> set[str] | None:
    """Of these trials (trial id -> its Tune actor), those whose Train worker group waits
    for resources: a waiting placement group's creator is a trial's Train controller, an
    actor that trial's actor owns (a review: with one group waiting, every silent trial
    was stopped, training ones too). None where Ray's tables cannot tell; asked at most
    every ``DEMAND_CHECK_S``."""
    now = time.perf_counter()
    ids = {t: getattr(a, "_actor_id", None) for t, a in actors.items()}
    key = frozenset(f"{t}:{a}" for t, a in ids.items())
    asked, known, found = _CLOCK.waiting
    if now - asked < DEMAND_CHECK_S and key == known:
        return found
    try:
        import ray
        from ray._private import state
        from ray.core.generated import gcs_pb2

        from raydx.cleanup import _placement_groups

        job = ray.get_runtime_context().get_job_id()
        creators = {
            c
            for pg, st, _, c in _placement_groups()
            if c and pg.endswith(job) and st in ("PENDING", "RESCHEDULING")
        }
        accessor = state.state._connect_and_get_accessor()

        def record(actor_id: Any) -> Any:
            raw = accessor.get_actor_info(actor_id)
            table: Any = gcs_pb2.ActorTableData  # type: ignore[attr-defined]  # generated
            return None if raw is None else table.FromString(raw)

        owners = set()
        for c in creators:
            controller = record(ray.ActorID(bytes.fromhex(c)))
            if controller is not None:
                owners.add(controller.owner_address.worker_id)
        found = set()
        for t, actor_id in ids.items():
            trial = None if actor_id is None or not owners else record(actor_id)
            if trial is not None and trial.address.worker_id in owners:
                found.add(t)
    except Exception as e:  # private Ray tables: their failure keeps the job-wide rule
        logger.debug("asking which trials wait for resources: %s", e)
        found = None
    _CLOCK.waiting = (now, key, found)
    return found


DEMAND_CHECK_S = 5.0  # Tune asks the scheduler many times a second


def demand_waits() -> bool:
    """Whether a placement group of this job waits for resources (a Train worker group
    whose start Ray Train retries), asked of the GCS at most every ``DEMAND_CHECK_S``.
    True where it cannot be told, as before this check."""
    now = time.perf_counter()
    asked, waits = _CLOCK.demand
    if now - asked < DEMAND_CHECK_S:
        return waits
    try:
        import ray

        from raydx.cleanup import _placement_groups

        job = ray.get_runtime_context().get_job_id()
        waits = any(
            pg.endswith(job) and state in ("PENDING", "RESCHEDULING")
            for pg, state, _, _ in _placement_groups()
        )
    except Exception as e:  # a private Ray table: its failure keeps the old rule
        logger.debug("asking for waiting placement groups: %s", e)
        waits = True
    _CLOCK.demand = (now, waits)
    return waits


def announce(live: int) -> None:
    """The console's line at the deadline: the run goes on until its trials' next reports
    (an audit: 66 and 91 s past a 3-minute deadline, then a minute of scoring, with
    nothing said)."""
    if _CLOCK.announced or _CLOCK.log is None:
        return
    _CLOCK.announced = True
    wait = (
        f"the longest wait for a report so far was {_CLOCK.longest_wait:.0f} s"
        if _CLOCK.longest_wait
        else "no trial has reported yet"
    )
    _CLOCK.log(
        "raydx: the time budget is spent: no new trial starts, and "
        + (
            f"{live} running trial(s) stop at their next epoch report ({wait}; one whose "
            "workers wait for resources is stopped after its silence); then the winner is "
            "scored and the report written"
            if live
            else "the winner is scored and the report written"
        )
    )


def trial_ended(trial_id: str) -> None:
    """The searcher's news of a trial's end: its duration sets what a new trial needs."""
    _CLOCK.heard.pop(trial_id, None)
    began = _CLOCK.started.pop(trial_id, None)
    if began is not None:
        _CLOCK.durations.append(time.perf_counter() - began)


def kill(actor: Any) -> None:
    """Kill a silent trial's process; a failure leaves it to Tune's own end."""
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception as e:  # already dead
        logger.debug("killing a silent trial's actor: %s", e)


class BudgetStopper(Stopper):
    """Stops every trial at its first report after the deadline (Tune then closes it
    normally: the searcher, the scheduler and raydx's results writer all see it end)."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        heard_from(trial_id)  # Tune asks at every report
        if result.get("failed"):
            # The report that ends a failed configuration (raydx.cv._failed): stopping
            # the trial here would close it as TERMINATED, its failure dropped and its
            # earlier epochs ranked; it must end as ERROR, after the deadline too.
            return False
        if expired():
            _CLOCK.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        # Tune's stop_all closes running trials without telling the searcher or the
        # callbacks; stopping each at its next report keeps every record whole.
        return False


class StopsSilentTrials:
    """Mixed in before a Tune scheduler: after the deadline, stops the live trials that
    ``silent`` names. A scheduler, since Tune asks its ``choose_trial_to_run`` at every
    step and hands it ``stop_trial`` (HyperBand stops paused trials with it);
    ``stop_trial`` closes a trial as a stopper's decision does, so the searcher, the
    scheduler and raydx's results writer all see it end. (A stopper is asked only at
    reports, and Tune's ``stop_all`` skips them all.)

    A stopped RUNNING trial's process is killed at once (``kill``), and its Train
    controller with it (Ray kills an actor's owned actors with it): Tune's stop request
    queues behind the trial's blocked ``train`` call, so the controller would go on
    retrying its worker group's start until the experiment ends, and Tune's end would
    wait until 10 s after the stop request before killing it. Tune's records stay
    whole: the stop request fails with the actor's death, which Tune's actor manager
    takes as the actor's stop.
    A stopped PENDING trial stays among Tune's staged trials, harmless without actor
    reuse (raydx.run: ``reuse_actors=False``)."""

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        if result.get("failed"):  # as in BudgetStopper: a failed configuration ends as
            return TrialScheduler.CONTINUE  # ERROR, whatever the scheduler's own rule says
        return super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc,no-any-return]

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        if not expired():
            return super().choose_trial_to_run(tune_controller)  # type: ignore[misc,no-any-return]
        live = {t.trial_id: t for t in tune_controller.get_live_trials() if not t.is_finished()}
        announce(sum(t.status == "RUNNING" for t in live.values()))
        quiet = silent(list(live), set(live))  # Ray is asked only about these
        if not quiet:
            return super().choose_trial_to_run(tune_controller)  # type: ignore[misc,no-any-return]
        actors = {t: live[t].temporary_state.ray_actor for t in quiet}
        waiting = waiting_trials({t: a for t, a in actors.items() if a is not None})
        if waiting is not None:  # one with no actor yet waits on Tune's own group
            waiting = waiting | {t for t, a in actors.items() if a is None}  # not the cache
        for trial_id, quiet_s in silent(list(quiet), waiting).items():
            _CLOCK.stopped.add(trial_id)
            _CLOCK.silenced[trial_id] = quiet_s
            actor = live[trial_id].temporary_state.ray_actor  # None once stop_trial ran
            tune_controller.stop_trial(live[trial_id])
            if actor is not None:
                kill(actor)
        return super().choose_trial_to_run(tune_controller)  # type: ignore[misc,no-any-return]
