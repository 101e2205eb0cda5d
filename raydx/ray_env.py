"""Starting or joining Ray with the settings raydx's fold workers rely on."""

from __future__ import annotations

import os
from typing import Any

# Ray Train V2 hands a worker's next report over only when the controller polls
# (every 2 s by default), so epochs shorter than that would wait on it.
RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
}


# Tune warns whenever one step of its driver loop takes over 0.5 s ("may be a performance
# bottleneck ... consider reporting results less frequently"). raydx reports once an
# epoch; on a 2-core machine whose cores train two trials, handing on one result (to
# Optuna's storage, to raydx's tables) takes 0.5-2 s about once a minute
# (runs/quality11's log: 95 such lines in 90 minutes of searching), and the advice does
# not apply. That time is measured as fixed cost instead (bench/search_overhead.py).
# A value set in the environment wins.
TUNE_WARN_THRESHOLD_S = "5"

_started: list[Any] = []  # the context of the Ray this process started, if any


def init_ray(address: str | None = None, **kwargs: Any) -> Any:
    """``ray.init`` for raydx; returns the context (``None`` if someone else started Ray)."""
    import ray

    env = dict(RAY_ENV)
    if address is None:
        # A Ray that raydx starts here has one node, which no autoscaler drains: Ray
        # Train's preemption watcher (one more process per trial, about 1 s of CPU to
        # start) would watch for nothing.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    for k, v in env.items():
        os.environ.setdefault(k, v)
    quiet_slow_step_warnings()
    if ray.is_initialized():
        return _started[-1] if _started else None
    _started.clear()
    ctx = ray.init(
        address=address,
        # a value set in the environment wins (to tune it without editing raydx)
        runtime_env={"env_vars": {k: os.environ[k] for k in env}},
        log_to_driver=kwargs.pop("log_to_driver", True),
        **kwargs,
    )
    _started.append(ctx)
    return ctx


def quiet_slow_step_warnings() -> float:
    """Raise Tune's slow-step warning threshold to ``TUNE_WARN_THRESHOLD_S``; returns it.

    Tune reads the variable once, when ``ray.tune`` is first imported (raydx's own
    modules import it), so the threshold is set on the class as well.
    """
    from ray.tune.utils.util import warn_if_slow

    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", TUNE_WARN_THRESHOLD_S)
    warn_if_slow.DEFAULT_THRESHOLD = float(os.environ["TUNE_WARN_THRESHOLD_S"])
    return warn_if_slow.DEFAULT_THRESHOLD
