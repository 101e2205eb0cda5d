from types import SimpleNamespace

from raydx.retry import NoRetryOfFailedConfigurations


def _trial(max_failures: int = 2) -> SimpleNamespace:
    return SimpleNamespace(trial_id="t1", max_failures=max_failures)


def test_a_report_that_the_configuration_failed_takes_the_trials_restarts_away():
    trial = _trial()
    NoRetryOfFailedConfigurations().on_trial_result(0, [trial], trial, {"failed": "NaN loss"})
    assert trial.max_failures == 0


def test_ordinary_reports_leave_the_restarts_for_lost_processes_and_nodes():
    trial = _trial()
    cb = NoRetryOfFailedConfigurations()
    for result in ({"epoch": 1, "objective": 0.7}, {"epoch": 2, "failed": ""}):
        cb.on_trial_result(0, [trial], trial, result)
    assert trial.max_failures == 2
