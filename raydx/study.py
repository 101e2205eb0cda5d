"""The Optuna study's storage: a SQLite file in the run folder that follows the folder."""

from __future__ import annotations

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
