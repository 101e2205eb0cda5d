"""Tune retries a trial whose process or node was lost, not a configuration that failed.

Tune's ``FailureConfig(max_failures=...)`` restarts every trial that raised, and it
cannot tell a lost node from a configuration that diverged: both reach it as an
exception. raydx's fold workers report a failed configuration before the trial raises
(``raydx.cv._report_failure``: a report with a ``failed`` reason), so this callback
takes that trial's retries away when the report arrives. Its one failure then ends it,
as it would without ``--max-failures``: no restart, no second "errored" line. Should the
raise reach Tune before the report, ``raydx.cv.failed_before`` still raises it again at
once on the restart instead of training the configuration again.

A GPU out of memory is retried as a lost process is, the first time in a trial (another
trial on a shared GPU may have caused it), and the configuration's failure the second
time: see ``raydx.cv.OutOfGpuMemory``.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback


class NoRetryOfFailedConfigurations(Callback):
    """Sets a trial's ``max_failures`` to 0 once it reports that its configuration failed."""

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("failed"):
            # Trial.should_recover: num_failures <= max_failures, num_failures now >= 1
            trial.max_failures = 0
