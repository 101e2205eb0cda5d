"""k folds of one configuration, trained at the same time as k Ray Train workers.

Worker ``r`` trains fold ``r``. After every epoch the workers exchange their
validation metrics (a gloo all-gather of a few floats), so that rank 0 can report the
cross-fold mean and spread to Tune: schedulers and Optuna judge the CV mean, never one
fold. Whenever that mean reaches a new best, every worker saves its fold model and
out-of-fold probabilities into one Ray checkpoint, which is all the final evaluation
needs from a trial.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from raydx.config import TrialConfig

CKPT_META = "cv.json"


def fold_file(fold: int) -> str:
    return f"fold_{fold}.safetensors"


def oof_file(fold: int) -> str:
    return f"oof_{fold}.npz"


def fold_metrics(gathered: list[dict[str, float]], epoch: int) -> dict[str, Any]:
    """Cross-fold summary of one epoch (``gathered[i]`` is fold ``i``'s)."""
    out: dict[str, Any] = {"epoch": epoch}
    for key in ("val_auc", "val_loss", "val_acc", "train_loss"):
        vals = np.array([g[key] for g in gathered], dtype=np.float64)
        name = key.removeprefix("val_")
        out[f"cv_{name}_mean"] = (
            float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        )
        out[f"cv_{name}_std"] = float(np.nanstd(vals)) if np.isfinite(vals).any() else float("nan")
    for i, g in enumerate(gathered):
        for key in ("val_auc", "val_loss", "val_acc"):
            out[f"fold_{i}_{key}"] = float(g[key])
    out["epoch_time_s"] = float(max(g["time_s"] for g in gathered))
    return out


def fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: one fold per rank."""
    import time

    import ray
    import ray.train
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from raydx.train import FoldTrainer

    # Ray Train logs every report and checkpoint at INFO; k workers x epochs of that
    # would bury the search's own progress.
    # (Some of Ray Train's loggers are named by file path, hence the root logger too.)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    fold, k = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(int(config["threads"]))
    cfg = TrialConfig.from_params(config["params"])
    pool = ray.get(config["data_ref"])
    folds = pool["fold"]
    tr, va = folds != fold, folds == fold
    device = "cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu"
    trainer = FoldTrainer(
        cfg,
        x_train=torch.from_numpy(pool["x"][tr].copy()),
        y_train=pool["y"][tr],
        x_val=torch.from_numpy(pool["x"][va].copy()),
        y_val=pool["y"][va],
        n_classes=int(config["n_classes"]),
        positive=int(config["positive"]),
        epochs=int(config["epochs"]),
        seed=int(config["seed"]),
        fold=fold,
        device=device,
    )
    val_rows = pool["row"][va]
    best, best_epoch = -np.inf, 0
    for epoch in range(1, int(config["epochs"]) + 1):
        t0 = time.perf_counter()
        r = trainer.run_epoch(epoch)
        mine = {
            "val_auc": r.val_auc,
            "val_loss": r.val_loss,
            "val_acc": r.val_acc,
            "train_loss": r.train_loss,
            "time_s": time.perf_counter() - t0,
        }
        gathered: list[Any] = [None] * k
        dist.all_gather_object(gathered, mine)
        metrics = fold_metrics(gathered, epoch)
        mean = metrics["cv_auc_mean"]
        improved = bool(np.isfinite(mean) and mean > best)
        if improved:
            best = mean
            best_epoch = epoch
        metrics["objective"] = float(best) if np.isfinite(best) else float("nan")
        metrics["best_epoch"] = best_epoch
        if not improved:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as d:
            state = {
                n: t.detach().cpu().contiguous() for n, t in trainer.model.state_dict().items()
            }
            save_file(state, os.path.join(d, fold_file(fold)))
            np.savez(os.path.join(d, oof_file(fold)), row=val_rows, prob=r.val_prob)
            if fold == 0:
                meta = {"epoch": epoch, "cv_auc_mean": mean, "folds": k, "metrics": metrics}
                Path(d, CKPT_META).write_text(json.dumps(meta))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def trial_fn(config: dict[str, Any], *, spec: dict[str, Any]) -> None:
    """The Tune trial: launches the fold workers as one Train run named by the trial id.

    ``spec["data_ref"]`` is the object-store reference of the CV pool; it travels
    nested in ``spec`` so that Ray passes the reference, not a copy of the data.
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    use_gpu = spec["gpus_per_fold"] > 0
    resources = {"CPU": spec["cpus_per_fold"]}
    if use_gpu:
        resources["GPU"] = spec["gpus_per_fold"]
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={
            "params": config,
            "data_ref": spec["data_ref"],
            "threads": spec["threads"],
            "n_classes": spec["n_classes"],
            "positive": spec["positive"],
            "epochs": spec["epochs"],
            "seed": spec["seed"],
            "use_gpu": use_gpu,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec["folds"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        # No gradients are shared between folds; the process group only carries the
        # per-epoch metric exchange, which gloo does on CPU and GPU workers alike.
        torch_config=TorchConfig(backend="gloo"),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=spec["storage_path"],
            callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )
    trainer.fit()
