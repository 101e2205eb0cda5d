"""What raydx's console leaves out of Ray Tune's."""

from __future__ import annotations

import logging
import types

import pytest

import raydx.console as console


def _step_warns(seconds: float, caplog: pytest.LogCaptureFixture, monkeypatch) -> bool:
    """Whether Tune's ``warn_if_slow`` warns about a driver step that took ``seconds``."""
    import ray.tune.utils.util as tune_util

    clock = iter([1000.0, 1000.0 + seconds, 1000.0 + seconds])
    monkeypatch.setattr(tune_util, "time", types.SimpleNamespace(time=lambda: next(clock)))
    monkeypatch.setattr(tune_util, "START_OF_TIME", 0.0)  # past Tune's first minute
    caplog.clear()
    with (
        caplog.at_level(logging.WARNING, logger=tune_util.logger.name),
        tune_util.warn_if_slow("search_alg.on_trial_result"),
    ):
        pass
    return any("performance bottleneck" in r.getMessage() for r in caplog.records)


@pytest.fixture
def restore_threshold(monkeypatch):
    from ray.tune.utils.util import warn_if_slow

    monkeypatch.setattr(warn_if_slow, "DEFAULT_THRESHOLD", warn_if_slow.DEFAULT_THRESHOLD)
    monkeypatch.delenv("TUNE_WARN_THRESHOLD_S", raising=False)


def test_a_busy_driver_step_no_longer_warns_but_a_stuck_one_does(
    restore_threshold, caplog, monkeypatch
):
    from ray.tune.utils.util import warn_if_slow

    monkeypatch.setattr(warn_if_slow, "DEFAULT_THRESHOLD", 0.5)  # Tune's own default
    assert _step_warns(1.5, caplog, monkeypatch)
    assert console.quiet_slow_step_warnings() == 5.0
    assert not _step_warns(1.5, caplog, monkeypatch)
    assert _step_warns(6.0, caplog, monkeypatch)


def test_a_threshold_the_user_set_wins(restore_threshold, caplog, monkeypatch):
    monkeypatch.setenv("TUNE_WARN_THRESHOLD_S", "1")
    assert console.quiet_slow_step_warnings() == 1.0
    assert _step_warns(1.5, caplog, monkeypatch)


def _tune_error_shown(exc: BaseException, caplog: pytest.LogCaptureFixture) -> bool:
    """Whether Tune's "Trial task failed" error, with ``exc`` as its traceback, reaches
    the console once raydx's filter is on."""
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    console.quiet_tune_console()
    console.quiet_tune_console()  # once per process, however often called
    assert sum(isinstance(f, console._ConfigurationFailures) for f in controller.filters) == 1
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=controller.name):
        try:
            raise exc
        except BaseException:
            controller.error("Trial task failed for trial trial_fn_abc", exc_info=True)
    return any("Trial task failed" in r.getMessage() for r in caplog.records)


def test_a_failed_configuration_leaves_tune_s_traceback_out(restore_threshold, caplog):
    from ray.exceptions import RayTaskError

    from raydx.train import DivergedError, TrialFailure

    assert not _tune_error_shown(TrialFailure("fold 0: DivergedError: nan"), caplog)
    # as it reaches the driver: Ray's RayTaskError made an instance of the cause's class
    wrapped = RayTaskError("trial_fn", "Traceback ...", DivergedError("nan")).as_instanceof_cause()
    assert isinstance(wrapped, RayTaskError)
    assert not _tune_error_shown(wrapped, caplog)
    # a lost process or node, or any other error, keeps its traceback
    lost = RayTaskError("trial_fn", "Traceback ...", ConnectionError("socket closed"))
    assert _tune_error_shown(lost.as_instanceof_cause(), caplog)
    assert _tune_error_shown(ValueError("bad"), caplog)


RAYLET_STARTUP = (
    "WARNING: 8 PYTHON worker processes have been started on node: 7dfc with address: "
    "192.0.2.2, which is 4x the maximum expected startup concurrency (2). This could be a "
    "result of using a large number of actors, tasks blocked in ray.get() calls, or tasks "
    "with fractional CPU requests (e.g., num_cpus=0.1) allowing high concurrency."
)


def test_the_raylets_startup_concurrency_warning_is_left_out(monkeypatch) -> None:
    """raydx's fractional-CPU fold workers are deliberate: the raylet's warning about
    them goes, its other lines and every worker's lines stay. The raylet sends it as an
    error message (printed by ``print_to_stdstream``) and, with ``--verbose``, in its log
    lines (the dispatcher's ``ray_print_logs`` handler)."""
    import ray._private.ray_logging as ray_logging
    import ray._private.worker as ray_worker

    printed: list[dict] = []
    monkeypatch.setattr(ray_worker, "print_to_stdstream", lambda data, **kw: printed.append(data))
    dispatcher = ray_logging.WorkerStandardStreamDispatcher()
    logged: list[dict] = []
    other: list[dict] = []
    dispatcher.add_handler("ray_print_logs", logged.append)
    dispatcher.add_handler("someone_else", other.append)
    monkeypatch.setattr(ray_logging, "global_worker_stdstream_dispatcher", dispatcher)
    assert console.quiet_raylet_startup_warnings()
    assert console.quiet_raylet_startup_warnings()  # wraps once
    for emit in (ray_worker.print_to_stdstream, dispatcher.emit):
        emit({"pid": "raylet", "lines": [RAYLET_STARTUP], "is_err": False})
        emit({"pid": "raylet", "lines": [RAYLET_STARTUP, "node died"], "is_err": True})
        emit({"pid": 123, "lines": [RAYLET_STARTUP], "is_err": False})
    for seen in (printed, logged):
        assert [d["lines"] for d in seen] == [["node died"], [RAYLET_STARTUP]]
    assert len(other) == 3  # a handler of someone else's sees everything
    assert [name for name, _ in dispatcher.handlers] == ["ray_print_logs", "someone_else"]


def test_a_ray_without_the_printers_is_left_as_it_is(monkeypatch) -> None:
    import ray._private.ray_logging as ray_logging
    import ray._private.worker as ray_worker

    printer = ray_worker.print_to_stdstream
    monkeypatch.setattr(ray_logging, "global_worker_stdstream_dispatcher", object())
    assert not console.quiet_raylet_startup_warnings()
    assert ray_worker.print_to_stdstream is printer
