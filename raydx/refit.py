"""``final: refit``, as scikit-learn's ``refit=True``: the winning configuration trained
once more on the whole CV pool, for the epochs cross-validation chose, as one model.

The recipe is the fold models' own: the same schedule length (a one-cycle learning
rate is laid out over the run's ``epochs`` and stopped at the best epoch, exactly
where the folds were scored), the same family pretraining, the same augmentation
streams keyed by a fold index of its own. Nothing of the test split is seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raydx.config import TrialConfig
from raydx.errors import RaydxError


def refit_state(
    params: dict[str, Any],
    *,
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    positive: int,
    epochs: int,
    stop_epoch: int,
    seed: int,
    folds: int,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """Train on all of ``x`` (normalised, N C H W) for ``stop_epoch`` of ``epochs``
    epochs; the diagnosis model's weights. ``folds`` only keys the random streams, so
    the refit draws differ from every fold model's."""
    from raydx.families import get_family

    if not 1 <= stop_epoch <= epochs:
        raise RaydxError(
            f"stop_epoch must be in [1, epochs={epochs}], but got stop_epoch={stop_epoch}."
        )
    cfg = TrialConfig.from_params(params)
    trainer = get_family(cfg.family).trainer(
        cfg,
        x_train=torch.from_numpy(np.ascontiguousarray(x)),
        y_train=np.asarray(y),
        x_val=None,
        y_val=None,
        n_classes=n_classes,
        positive=positive,
        epochs=epochs,
        seed=seed,
        fold=folds,  # the fold models are 0..folds-1
        device=device,
    )
    with trainer.own_rng():
        trainer.pretrain()
        for epoch in range(1, stop_epoch + 1):
            trainer.train_epoch(epoch)
    return {k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()}


def refit_on_ray(*, cpus: float, gpus: float, threads: int, **kwargs: Any) -> dict[str, Any]:
    """:func:`refit_state` as a Ray task (resources: ``raydx.search.refit_resources``),
    so that on a cluster it runs where the trials ran (a GPU node, say), not on the
    driver."""
    import ray

    def task(**kw: Any) -> dict[str, torch.Tensor]:
        torch.set_num_threads(threads)
        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
        return refit_state(**kw, device=device)

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=1)(task)
    return ray.get(remote.remote(**kwargs))
