"""A wall-clock budget for a search, as Optuna's ``timeout``: "N trials or T minutes".

When the budget runs out the search ends as a finished search, not an interrupted
one: trials still running are stopped at their next epoch report (they keep the epochs
they finished and are ranked on them, as ASHA-stopped trials are), no new trial starts,
and the winner is scored on the test split. A trial is not started at all when less time
is left than the trials finished so far took (the median): it would take CPU from the
trials that can still finish and be stopped half-trained.

The clock lives in the driver process, armed by each ``raydx tune`` call: Tune pickles
its searcher and stoppers into the experiment folder, and a deadline pickled there
would be stale when a killed search is resumed. A resumed search gets the budget again,
counted from the moment it resumes (as a new ``study.optimize(timeout=...)`` call would).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ray.tune.stopper import Stopper


@dataclass
class _Clock:
    deadline: float | None = None  # time.perf_counter() value; None: no budget
    started: dict[str, float] = field(default_factory=dict)
    durations: list[float] = field(default_factory=list)
    stopped: set[str] = field(default_factory=set)  # trials stopped at the deadline
    refused: bool = False  # a trial was not started for want of time


_CLOCK = _Clock()


def arm(seconds: float | None, start: float | None = None) -> None:
    """Start this invocation's budget (``None``: none); ``start``: a perf_counter value."""
    global _CLOCK
    begin = time.perf_counter() if start is None else start
    _CLOCK = _Clock(deadline=None if seconds is None else begin + seconds)


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


def typical_trial_s() -> float:
    """Median wall time of the trials finished in this invocation (0 before the first)."""
    return statistics.median(_CLOCK.durations) if _CLOCK.durations else 0.0


def may_start(trial_id: str) -> bool:
    """Whether a new trial fits in what is left; records its start if so."""
    if remaining() <= typical_trial_s():
        _CLOCK.refused = True
        return False
    _CLOCK.started[trial_id] = time.perf_counter()
    return True


def trial_ended(trial_id: str) -> None:
    began = _CLOCK.started.pop(trial_id, None)
    if began is not None:
        _CLOCK.durations.append(time.perf_counter() - began)


class BudgetStopper(Stopper):
    """Stops every trial at its first report after the deadline (Tune then closes it
    normally: the searcher, the scheduler and raydx's results writer all see it end)."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if expired():
            _CLOCK.stopped.add(trial_id)
            return True
        return False

    def stop_all(self) -> bool:
        # Tune's stop_all closes running trials without telling the searcher or the
        # callbacks; stopping each at its next report keeps every record whole.
        return False
