"""What raydx's console leaves out of Ray Tune's: warnings whose advice does not apply,
and tracebacks of failures that raydx says in one line."""

from __future__ import annotations

import logging
import os

# Tune warns whenever one step of its driver loop takes over 0.5 s ("may be a performance
# bottleneck ... consider reporting results less frequently"). raydx reports once an
# epoch; on a 2-core machine whose cores train two trials, handing on one result (to
# Optuna's storage, to raydx's tables) takes 0.5-2 s about once a minute
# (bench/quality.py's logs: 71 such lines in runs/quality11's 85 minutes of searching),
# and the advice does not apply. That time is measured as fixed cost instead
# (bench/search_overhead.py). A value set in the environment wins.
TUNE_WARN_THRESHOLD_S = "5"


def quiet_slow_step_warnings() -> float:
    """Raise Tune's slow-step warning threshold to ``TUNE_WARN_THRESHOLD_S``; returns it.

    Tune reads the variable once, when ``ray.tune`` is first imported (raydx's own
    modules import it), so the threshold is set on the class as well.
    """
    from ray.tune.utils.util import warn_if_slow

    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", TUNE_WARN_THRESHOLD_S)
    warn_if_slow.DEFAULT_THRESHOLD = float(os.environ["TUNE_WARN_THRESHOLD_S"])
    return warn_if_slow.DEFAULT_THRESHOLD


class _ConfigurationFailures(logging.Filter):
    """Drops Tune's traceback of a trial that ended by ``raydx.train.TrialFailure``.

    That is a configuration that failed (a diverged loss, a model too deep for the
    images): raydx says why in one line as the trial ends, and the traceback stays in
    the trial's error file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from raydx.train import TrialFailure

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, TrialFailure)  # Ray's RayTaskError(TrialFailure) is one


def quiet_tune_console() -> None:
    """Both of the above, once per process."""
    quiet_slow_step_warnings()
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _ConfigurationFailures) for f in controller.filters):
        controller.addFilter(_ConfigurationFailures())
