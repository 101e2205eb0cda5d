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
