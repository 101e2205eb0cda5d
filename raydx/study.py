"""The Optuna study's storage: a SQLite file in the run folder that follows the folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna


class RunStudyStorage(optuna.storages.RDBStorage):
    """``RDBStorage`` whose URL is re-pointed when a pickled search is restored.

    Tune pickles the search algorithm, and with it this storage's URL; a run folder
    that was moved or copied before ``--resume`` would otherwise open the old file.
    """

    def __setstate__(self, state: dict[str, Any]) -> None:
        from raydx.results import RESUMING
        from raydx.search import study_url

        if RESUMING:
            state = {**state, "url": study_url(RESUMING[-1][0])}
        super().__setstate__(state)


def _load(output: Path) -> optuna.Study | None:
    """The run's study, or None where the run has none yet."""
    from raydx.search import STUDY_NAME, study_url

    if not (output / "study.db").is_file():
        return None
    try:
        return optuna.load_study(study_name=STUDY_NAME, storage=study_url(output))
    except KeyError:  # the file holds no study (the driver died while making it)
        return None


def study_size(output: Path) -> int:
    """How many trials the run's study holds, whatever their state (0 without a study)."""
    study = _load(output)
    return 0 if study is None else len(study.get_trials(deepcopy=False))


def close_stale_trials(output: Path, *, resumed: set[str]) -> list[int]:
    """On ``--resume``: fail every trial that the study holds as running and that no
    resumed Tune trial will close; returns their numbers.

    A killed driver leaves the study's trials of that moment running: those Tune's
    snapshot never held, or held as not yet begun. Left so, TPE (``constant_liar``)
    keeps treating them as running, and the study would never close them. ``resumed``
    are the trial ids the restored experiment continues. An enqueued point
    (``space.yaml``'s ``enqueue``) among those closed goes back in the queue, for the
    search to evaluate it whole. A study whose trials record no Tune trial id (runs
    started before December 2026) cannot tell which are resumed: its running trials
    are left as they are while any trial is resumed.
    """
    from optuna.trial import TrialState

    study = _load(output)
    if study is None:
        return []
    trials = study.get_trials(deepcopy=False)
    if resumed and not any("trial_id" in t.user_attrs for t in trials):
        return []
    closed = []
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        tid = t.user_attrs.get("trial_id")
        if tid is not None and tid in resumed:
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        fixed = t.system_attrs.get("fixed_params")
        if fixed:
            study.enqueue_trial(fixed, skip_if_exists=False)
        closed.append(t.number)
    return closed
