"""Starting or joining Ray with the settings raydx's fold workers rely on."""

from __future__ import annotations

import os
from typing import Any

from raydx.console import quiet_raylet_startup_warnings, quiet_tune_console

# Ray Train V2 hands a worker's next report over only when the controller polls
# (every 2 s by default), so epochs shorter than that would wait on it.
RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
}


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
    quiet_tune_console()
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
    quiet_raylet_startup_warnings()
    return ctx
