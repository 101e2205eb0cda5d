"""What raydx's console leaves out of Ray's and Ray Tune's: warnings whose advice does not
apply, and tracebacks of failures that raydx says in one line."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

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


# The raylet warns when more worker processes start than the node has CPUs ("... which
# is 4x the maximum expected startup concurrency (2). This could be a result of ...
# tasks with fractional CPU requests"): raydx asks for fractions of a CPU on purpose
# (one fold worker per fold, k of them sharing the trial's cores), so on a 2-core
# machine every search printed it, with workarounds that do not apply.
STARTUP_CONCURRENCY = "maximum expected startup concurrency"


def _without_startup_warnings(printer: Callable[..., Any]) -> Callable[..., Any]:
    """``printer`` (Ray's ``print_to_stdstream(data, ...)`` of raylet and worker lines)
    without the raylet's startup-concurrency lines; a batch left empty is not printed."""
    if getattr(printer, "raydx_quiet", False):
        return printer

    def printed(data: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        lines = data.get("lines")
        if data.get("pid") == "raylet" and isinstance(lines, list):
            kept = [line for line in lines if STARTUP_CONCURRENCY not in str(line)]
            if not kept:
                return None
            data = {**data, "lines": kept}
        return printer(data, *args, **kwargs)

    printed.raydx_quiet = True  # type: ignore[attr-defined]
    return printed


def quiet_raylet_startup_warnings() -> bool:
    """Leave the raylet's startup-concurrency warning out of the driver's console; whether
    Ray's printers were found. The raylet sends it as an error message, which the driver
    prints with ``ray._private.worker.print_to_stdstream`` (looked up when printed), and
    with ``log_to_driver`` its log lines reach a handler bound to that function at
    ``ray.init``: both are wrapped. Ray's own, private API: where it differs (another Ray
    release), the lines are printed as Ray prints them."""
    try:
        import ray._private.worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as d

        printer, lock = ray_worker.print_to_stdstream, d._lock  # both there, or neither set
        with lock:
            d.handlers = [
                (name, _without_startup_warnings(h) if name == "ray_print_logs" else h)
                for name, h in d.handlers
            ]
        ray_worker.print_to_stdstream = _without_startup_warnings(printer)
        return True
    except Exception:  # a console nicety must never stop a run
        return False
