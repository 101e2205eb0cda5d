"""A fold-aware stopper: a paired test of a trial's folds against the best finished trial's.

Every trial is cross-validated on the same folds, so two trials' fold AUCs pair up, and
the spread of their k differences says how much of a gap between two CV means is noise.
ASHA looks at the CV mean only: at each rung it stops the lower two thirds, however
close they are. The paired rule stops a trial as soon as its folds are, together,
behind those of the best trial that ran every epoch, at the same epoch, by more than
their spread allows (a one-sided paired t-test at ``alpha``, as Optuna's
``WilcoxonPruner`` compares a trial with the best one on the same instances; with 3-5
folds a rank test cannot reach p < 0.1). Ray's ``OptunaSearch`` turns Optuna's own
pruners off, hence a Tune scheduler.

What is compared is the objective (the running maximum of the CV mean): each trial's
fold AUCs at the epoch where its CV mean peaked so far, so the mean of the k
differences is exactly the gap between the two objectives at that epoch.

As ASHA's rungs, the rule's memory lives in the driver, and Tune keeps no scheduler's
state across a restore (it never calls a scheduler's ``save``): a search resumed with
``--resume`` would start both empty, and stop trials by another rule than the one it
began with (an audit: after a resume, ASHA stopped at epoch 10 a trial that had run all
30 epochs uninterrupted). Both are rebuilt from the run's record (``RemembersTrials``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from raydx.budget import StopsSilentTrials
from raydx.cv import unbatched
from raydx.errors import count

PAIRED_ALPHA = 0.1  # Optuna's WilcoxonPruner's default p_threshold


def paired_upper_bound(diff: np.ndarray, alpha: float = PAIRED_ALPHA) -> float:
    """One-sided ``1 - alpha`` upper confidence bound of the mean paired difference
    (below 0 exactly when a one-sided paired t-test rejects "not worse" at ``alpha``);
    +inf with fewer than 2 finite differences, where nothing can be said."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.inf
    from scipy.stats import t

    se = float(d.std(ddof=1)) / math.sqrt(d.size)
    return float(d.mean()) + float(t.ppf(1.0 - alpha, d.size - 1)) * se


def fold_aucs(result: dict[str, Any]) -> np.ndarray:
    """``fold_i_val_auc`` of one epoch's result (raydx.cv.fold_metrics), in fold order."""
    vals, i = [], 0
    while f"fold_{i}_val_auc" in result:
        vals.append(float(result[f"fold_{i}_val_auc"]))
        i += 1
    return np.array(vals, dtype=np.float64)


class PairedFoldRule:
    """The bookkeeping and the decision, apart from Tune's scheduler interface.

    ``max_t``: the epochs of a full trial; only trials that ran them all are references
    (a trial stopped early was never shown to be the best at the epochs it missed).
    ``grace_period``: epochs every trial gets before it can be stopped.
    """

    def __init__(self, max_t: int, grace_period: int, alpha: float = PAIRED_ALPHA) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), but got alpha={alpha}.")
        self.max_t = max_t
        self.grace_period = grace_period
        self.alpha = alpha
        # trial id -> epoch -> (CV mean AUC, fold AUCs)
        self.history: dict[str, dict[int, tuple[float, np.ndarray]]] = {}
        self.finished: set[str] = set()

    def record(self, trial_id: str, result: dict[str, Any]) -> int | None:
        """Store the epochs of one report (a replayed epoch after a restart overwrites
        its first run); returns the report's last epoch, or None without one."""
        last = None
        for r in unbatched(result):
            if "epoch" not in r:
                continue
            last = int(r["epoch"])
            folds = fold_aucs(r)
            # as the search's objective (raydx.cv.fold_metrics): defined only when every
            # fold scored, so a trial Optuna cannot rank is never the reference either
            # (a failed configuration's report has no fold scores at all)
            scored = folds.size > 0 and np.isfinite(folds).all()
            mean = float(np.mean(folds)) if scored else -math.inf
            self.history.setdefault(trial_id, {})[last] = (mean, folds)
        return last

    def complete(self, trial_id: str) -> None:
        h = self.history.get(trial_id, {})
        if h and max(h) >= self.max_t:
            self.finished.add(trial_id)

    def peak(self, trial_id: str, epoch: int) -> tuple[float, np.ndarray] | None:
        """(objective, fold AUCs) at the trial's best CV mean up to ``epoch`` (the
        earliest of equal ones), or None if it has no epoch up to there."""
        h = self.history.get(trial_id, {})
        seen = [e for e in sorted(h) if e <= epoch]
        if not seen:
            return None
        best = max(seen, key=lambda e: (h[e][0], -e))
        return h[best]

    def reference(self) -> str | None:
        """The finished trial with the best final objective (as Optuna's best trial)."""
        scored = []
        for t in sorted(self.finished):
            p = self.peak(t, self.max_t)
            if p is not None and np.isfinite(p[0]):
                scored.append((p[0], t))
        return max(scored)[1] if scored else None

    def should_stop(self, trial_id: str, epoch: int) -> bool:
        if epoch < self.grace_period or epoch >= self.max_t:
            return False
        ref = self.reference()
        if ref is None or ref == trial_id:
            return False
        mine, theirs = self.peak(trial_id, epoch), self.peak(ref, epoch)
        if mine is None or theirs is None or mine[1].shape != theirs[1].shape:
            return False
        return paired_upper_bound(mine[1] - theirs[1], self.alpha) < 0.0


class RemembersTrials:
    """What a scheduler knew of a run's trials, rebuilt from the run's record on
    ``--resume``: Tune restores a scheduler as it was pickled when the search began
    (``tuner.pkl``), empty. The record's reports are fed to the scheduler's memory as
    they reached it, one trial at a time (what a rung or the paired rule keeps of a
    trial does not depend on the order of trials), and a finished trial's last report
    once more, as ``on_trial_complete`` hands it on."""

    def remember(
        self, history: Mapping[str, list[dict[str, Any]]], completed: Iterable[str]
    ) -> None:
        """``history``: each trial's per-epoch reports in the order they came (the ones
        Tune's scheduler was told of: not epochs recovered from checkpoints later);
        ``completed``: the trials Tune completed (finished or stopped, not failed)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        from raydx.results import RESUMING, ResultsWriter

        if RESUMING:  # unpickled by Tuner.restore, in raydx.run's resume
            out, log = RESUMING[-1]
            writer = ResultsWriter(out, folds=0, epochs=0, param_names=[])
            writer.replay()
            remember_record(self, writer, log)


def remember_record(scheduler: Any, writer: Any, log: Callable[[str], Any] | None) -> None:
    """Feed a results writer's record (``raydx.results.ResultsWriter``) to a scheduler,
    and say so where there was something to remember."""
    if not isinstance(scheduler, RemembersTrials):
        return
    told = writer.told
    scheduler.remember(told, writer.completed())
    reported = sum(bool(h) for h in told.values())
    if reported and log is not None and type(scheduler).remember is not RemembersTrials.remember:
        log(
            f"raydx: the early-stopping rule goes on from the {count(reported, 'trial')} "
            "of the run's record"
        )


class _Rungs(RemembersTrials):
    """ASHA's rungs, rebuilt (mixed in before ``ASHAScheduler``)."""

    def remember(
        self, history: Mapping[str, list[dict[str, Any]]], completed: Iterable[str]
    ) -> None:
        asha: Any = self  # ASHAScheduler's own fields
        done = set(completed)
        # raydx's one bracket; with more, the record does not say which held a trial
        if len(asha._brackets) == 1:
            bracket, at, metric = asha._brackets[0], asha._time_attr, asha._metric
            for tid, hist in history.items():
                rows = [r for r in hist if at in r and metric in r]
                for r in rows + rows[-1:] * (tid in done):
                    bracket.on_result(_Known(tid), r[at], asha._metric_op * r[metric])
        super().remember(history, done)


class _Known:
    """A trial of the record, as much of one as ASHA's bracket reads."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id


class _Paired(RemembersTrials):
    """The paired rule on top of a Tune scheduler's own decisions (mixed in before it,
    after ``StopsSilentTrials``, which keeps a failed configuration's report from every
    stop rule)."""

    rule: PairedFoldRule
    paired_stops: int

    def remember(
        self, history: Mapping[str, list[dict[str, Any]]], completed: Iterable[str]
    ) -> None:
        for tid, hist in history.items():
            for r in hist:
                self.rule.record(tid, r)
        done = list(completed)
        for tid in done:
            self.rule.complete(tid)
        super().remember(history, done)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch = self.rule.record(trial.trial_id, result)
        action: str = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        if (
            action == TrialScheduler.CONTINUE
            and epoch is not None
            and self.rule.should_stop(trial.trial_id, epoch)
        ):
            self.paired_stops += 1
            return TrialScheduler.STOP
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if result:
            self.rule.record(trial.trial_id, result)
        self.rule.complete(trial.trial_id)
        super().on_trial_complete(tune_controller, trial, result)  # type: ignore[misc]

    def debug_string(self) -> str:
        own: str = super().debug_string()  # type: ignore[misc]
        return f"{own} Paired fold test: {self.paired_stops} stopped."


class RunToEnd(StopsSilentTrials, RemembersTrials, FIFOScheduler):
    """No early stopping: Tune's default scheduler, with the time budget's deadline."""


class Asha(StopsSilentTrials, _Rungs, ASHAScheduler):
    """Ray's ASHA, with the time budget's deadline."""


class PairedFoldStopper(StopsSilentTrials, _Paired, FIFOScheduler):
    """The paired rule alone: a trial runs to the end unless the rule stops it."""

    def __init__(self, *, max_t: int, grace_period: int, alpha: float = PAIRED_ALPHA) -> None:
        super().__init__()
        self.rule = PairedFoldRule(max_t=max_t, grace_period=grace_period, alpha=alpha)
        self.paired_stops = 0


class PairedASHA(StopsSilentTrials, _Paired, _Rungs, ASHAScheduler):
    """ASHA at its rungs, the paired rule between them (from ``grace_period`` on)."""

    def __init__(self, *, alpha: float = PAIRED_ALPHA, **asha: Any) -> None:
        super().__init__(**asha)
        self.rule = PairedFoldRule(
            max_t=asha["max_t"], grace_period=asha["grace_period"], alpha=alpha
        )
        self.paired_stops = 0
