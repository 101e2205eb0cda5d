"""raydx on a CUDA GPU, end to end: fold workers share one GPU and a seed gives one run.

Run where there is a GPU: ``pytest -m gpu`` (``bench/gpu_check.sh`` on a lent machine).
The per-family trainer checks run on CUDA too, through the ``device`` fixture.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from raydx.run import tune
from raydx.space import parse_space

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

POINT = {
    "model": "cnn",
    "depth": 3,
    "width": 16,
    "head": "gap",
    "dropout": 0.2,
    "lr": 3e-3,
    "lr_schedule": "onecycle",
    "batch_size": 32,
    "hflip": 0.5,
    "rotate": 10.0,
}


def _run(out, log: list[str], gpus_per_worker: float = 0.3):
    space = parse_space({"run": {"scheduler": "none"}, "params": POINT})
    return tune(
        space,
        data="synthetic",
        trials=1,
        folds=3,
        epochs=3,
        seed=0,
        gpus_per_worker=gpus_per_worker,
        output=out,
        log=log.append,
    )


def test_fold_workers_share_the_gpu_and_one_seed_gives_one_run(ray_session, tmp_path):
    logs: list[list[str]] = [[], []]
    runs = [_run(tmp_path / f"run{i}", logs[i]) for i in (0, 1)]
    plan = next(line for line in logs[0] if "worker(s) per trial" in line)
    assert "3 worker(s) per trial" in plan and "0.3 GPU each" in plan
    folds = [pd.read_parquet(r.output / "folds.parquet") for r in runs]
    assert len(folds[0]) == 3 * 3  # folds x epochs
    assert folds[0]["val_auc"].between(0.0, 1.0).all()
    # cuDNN's deterministic algorithms (raydx.train.make_deterministic): the same seed
    # gives the same fold curves and the same test probabilities on a GPU too.
    cols = ["fold", "epoch", "val_auc", "val_loss"]
    a, b = (f[cols].sort_values(["fold", "epoch"], ignore_index=True) for f in folds)
    pd.testing.assert_frame_equal(a, b)
    preds = [pd.read_parquet(r.output / "predictions.parquet") for r in runs]
    pd.testing.assert_frame_equal(preds[0], preds[1])
    # The fold workers trained on the GPU, not only held a share of it: a trainer's
    # checkpoint carries a CUDA RNG state only when its device was CUDA.
    states = sorted(runs[0].output.glob("ray/train/*/checkpoint_*/state_*.pt"))
    assert len(states) == 3
    assert all(torch.load(f, weights_only=False)["cuda_rng"] is not None for f in states)
