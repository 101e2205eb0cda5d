"""Ray Tune's ``OptunaSearch``, made safe to resume while trials finish side by side."""

from __future__ import annotations

from typing import Any

from ray.tune.result import TRAINING_ITERATION
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from raydx import budget

# Set by ``raydx.run`` while it restores a search: how many new trials the restored
# search may still start (None: as many as Tune's own count allows).
_new_trials_left: int | None = None


def limit_new_trials(n: int | None) -> None:
    """Cap the new trials of a restored search (``None`` lifts the cap).

    Tune's snapshot (every few seconds) counts the trials it created; the record counts
    those that ran. A trial created and ended within the seconds before the driver died
    is in the record only: restored, Tune would start one trial more than ``--trials``.
    """
    global _new_trials_left
    _new_trials_left = n


class ResumableOptunaSearch(OptunaSearch):
    """The study (written at once) outranks Tune's snapshot (written every few seconds).

    A driver killed between the two leaves a trial that the study has closed and the
    snapshot still runs. Resumed, that trial re-sends its reports and ends again, and
    Optuna refuses both for a finished trial (``UpdateFinishedTrialError``), which
    stopped the search. The study's record stands; the repeats are dropped quietly.
    """

    def suggest(self, trial_id: str) -> dict[Any, Any] | None:
        global _new_trials_left
        # Out of time (raydx.budget), or a restored search's trials all started: no new
        # trial; the search ends as a finished one.
        if not budget.may_start(trial_id) or _new_trials_left == 0:
            # Ray's own searchers return this string too; their annotation leaves it out.
            return Searcher.FINISHED  # type: ignore[return-value]
        config = super().suggest(trial_id)
        if config is not None and config != Searcher.FINISHED and _new_trials_left:
            _new_trials_left -= 1
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None:  # joins the study to trials.parquet, whose key it is
            ot_trial.set_user_attr("trial_id", trial_id)
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "failed" in result or "epoch" not in result:  # a failure's report has no new epoch
            return
        stored = self._stored(trial_id)
        if stored is not None:
            if self._closed(trial_id, stored):
                return
            # A trial resumed from its checkpoint sends its past epochs again
            # (raydx.cv); the study has them already, and Optuna would warn once each.
            if result.get("epoch") in stored.intermediate_values:
                return
        # Optuna's step is the epoch: one report may carry several (raydx.cv.batched).
        super().on_trial_result(trial_id, {**result, TRAINING_ITERATION: result["epoch"]})

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        budget.trial_ended(trial_id)
        stored = self._stored(trial_id)
        if stored is not None and self._closed(trial_id, stored):
            return
        super().on_trial_complete(trial_id, result, error)

    def _stored(self, trial_id: str) -> Any:
        """The study's own record of an open trial (``FrozenTrial``), as its storage has
        it; None where OptunaSearch itself decides (no such trial, or one it closed)."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials or self._ot_study is None:
            return None
        return self._ot_study._storage.get_trial(ot_trial._trial_id)

    def _closed(self, trial_id: str, stored: Any) -> bool:
        """Whether the study closed the trial (OptunaSearch is told, and drops repeats)."""
        if not stored.state.is_finished():
            return False
        self._completed_trials.add(trial_id)
        return True
