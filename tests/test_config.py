"""Every range check of the run options and the trial settings names the parameter,
quotes the value and says what is allowed (Optuna/scikit-learn style)."""

from __future__ import annotations

import re

import pytest

from raydx.config import AugmentConfig, RunOptions, TrialConfig
from raydx.errors import RaydxError


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trials": 0}, "trials must be >= 1, but got trials=0."),
        ({"seed": -1}, "seed must be in [0, 2**32 - 1], but got seed=-1."),
        (
            {"fold_seed": 2**32},
            "fold_seed must be in [0, 2**32 - 1], but got fold_seed=4294967296.",
        ),
        (
            {"gpus_per_worker": float("nan")},
            "gpus_per_worker must be >= 0, but got gpus_per_worker=nan.",
        ),
        ({"epochs": 0}, "epochs must be >= 1, but got epochs=0."),
        ({"grace_period": 0}, "grace_period must be >= 1, but got grace_period=0."),
        ({"test_fraction": 1.0}, "test_fraction must be in (0, 1), but got test_fraction=1.0."),
        ({"cpus_per_worker": 0.0}, "cpus_per_worker must be > 0, but got cpus_per_worker=0.0."),
        ({"gpus_per_worker": -1.0}, "gpus_per_worker must be >= 0, but got gpus_per_worker=-1.0."),
        (
            {"folds": 3, "workers_per_trial": 4},
            "workers_per_trial must be in [1, folds=3], but got workers_per_trial=4.",
        ),
        (
            {"max_concurrent_trials": 0},
            "max_concurrent_trials must be >= 1, but got max_concurrent_trials=0.",
        ),
        ({"image_size": 4}, "image_size must be between 8 and "),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1, but got checkpoint_every=0."),
        (
            {"report_interval_s": -1.0},
            "report_interval_s must be >= 0, but got report_interval_s=-1.0.",
        ),
        ({"max_failures": -1}, "max_failures must be >= 0, but got max_failures=-1."),
        ({"limit": 3}, "limit must be >= 4, but got limit=3."),
    ],
)
def test_run_options_out_of_range_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(RaydxError) as err:
        RunOptions(**changes)
    if message.endswith("."):
        assert str(err.value) == message
    else:
        assert str(err.value).startswith(message) and "image_size=4." in str(err.value)


AT_LIMITS = {
    "folds": 2,
    "trials": 1,
    "epochs": 1,
    "grace_period": 1,
    "cpus_per_worker": 0.1,
    "gpus_per_worker": 0.0,
    "workers_per_trial": 2,
    "max_concurrent_trials": 1,
    "image_size": 8,
    "checkpoint_every": 1,
    "report_interval_s": 0.0,
    "max_failures": 0,
    "limit": 4,
    "seed": 2**32 - 1,
    "fold_seed": 0,
}  # every option at its limit


def test_run_options_at_their_limits_are_taken() -> None:
    opts = RunOptions(**AT_LIMITS)
    assert (opts.folds, opts.workers_per_trial, opts.limit) == (2, 2, 4)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": 0.0}, "lr must be > 0, but got lr=0.0."),
        ({"lr": -1e-3}, "lr must be > 0, but got lr=-0.001."),
        (
            {"label_smoothing": 0.5},
            "label_smoothing must be in [0, 0.5), but got label_smoothing=0.5.",
        ),
        (
            {"label_smoothing": -0.1},
            "label_smoothing must be in [0, 0.5), but got label_smoothing=-0.1.",
        ),
        ({"momentum": 1.0}, "momentum must be in [0, 1), but got momentum=1.0."),
    ],
)
def test_trial_settings_out_of_range_are_refused(params: dict, message: str) -> None:
    with pytest.raises(RaydxError, match=f"^{re.escape(message)}$"):
        TrialConfig.from_params({"model": "cnn_tiny", **params})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scale": 1.0}, "scale must be in [0, 1), but got scale=1.0."),
        ({"scale": -0.1}, "scale must be in [0, 1), but got scale=-0.1."),
        ({"hflip": 1.5}, "hflip must be a probability in [0, 1], but got hflip=1.5."),
        (
            {"cutout": 2.0},
            "cutout must be a fraction of the side in [0, 1], but got cutout=2.0.",
        ),
    ],
)
def test_augmentation_out_of_range_is_refused(changes: dict, message: str) -> None:
    with pytest.raises(RaydxError, match=f"^{re.escape(message)}$"):
        AugmentConfig(**changes)
    assert AugmentConfig(scale=0.0).scale == 0.0  # the lower end is allowed
