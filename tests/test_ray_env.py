"""The Ray and Tune settings raydx applies before a search."""

from __future__ import annotations

import logging
import types

import pytest

import raydx.ray_env as ray_env


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
    assert ray_env.quiet_slow_step_warnings() == 5.0
    assert not _step_warns(1.5, caplog, monkeypatch)
    assert _step_warns(6.0, caplog, monkeypatch)


def test_a_threshold_the_user_set_wins(restore_threshold, caplog, monkeypatch):
    monkeypatch.setenv("TUNE_WARN_THRESHOLD_S", "1")
    assert ray_env.quiet_slow_step_warnings() == 1.0
    assert _step_warns(1.5, caplog, monkeypatch)
