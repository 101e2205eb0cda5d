"""k folds of one configuration, trained at the same time by a trial's Ray Train workers.

Each worker trains the folds ``folds_of_worker(rank)`` (one per worker when there are
as many workers as folds), an epoch of each in turn. After every epoch the workers
exchange their validation metrics (a gloo all-gather of a few floats), so that rank 0 can report the
cross-fold mean and spread to Tune: schedulers and Optuna judge the CV mean, never one
fold. Whenever that mean reaches a new best, every worker saves its fold model and
out-of-fold probabilities into one Ray checkpoint (at the next report), which is all
the final evaluation needs from a trial.

Epochs shorter than ``report_interval_s`` are reported together (see ``EARLIER_EPOCHS``).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from raydx.config import TrialConfig

CKPT_META = "cv.json"
FAILURE_FILE = "failure.json"
# Beside a trial's checkpoints in its Train run's folder: the trial has run out of GPU
# memory once (``_verdict``).
OOM_FILE = "out_of_memory.json"
# Ray Train V2 hands the driver one report per controller poll (0.1 s under raydx, see
# raydx.ray_env), and each report is a barrier of all the workers and a queue hand-off.
# On an H200, 5 workers training BreastMNIST folds spent 0.052 s on an epoch and 0.107 s
# between reports: reporting each epoch halved the speed. A report therefore waits
# until ``report_interval_s`` (RunOptions, 0.5 s) after the previous one (or an ASHA
# milestone, or the last epoch) and carries the epochs in between, as JSON under
# EARLIER_EPOCHS; raydx.results writes each of them as its own epoch, and Optuna and
# ASHA count epochs, not reports.
EARLIER_EPOCHS = "earlier_epochs"


def fold_file(fold: int) -> str:
    return f"fold_{fold}.safetensors"


def oof_file(fold: int) -> str:
    return f"oof_{fold}.npz"


def state_file(fold: int) -> str:
    return f"state_{fold}.pt"


def is_complete(checkpoint: Path, k: int) -> bool:
    """Whether every worker's part of a trial checkpoint is there: rank 0's record and
    each fold's state and out-of-fold files (a part is missing if a worker was cut off)."""
    return (checkpoint / CKPT_META).is_file() and all(
        (checkpoint / state_file(f)).is_file() and (checkpoint / oof_file(f)).is_file()
        for f in range(k)
    )


def fold_metrics(gathered: list[dict[str, Any]], epoch: int) -> dict[str, Any]:
    """Cross-fold summary of one epoch (``gathered[i]`` is fold ``i``'s)."""
    out: dict[str, Any] = {"epoch": epoch}
    extra_keys = sorted({key for g in gathered for key in g.get("extra", {})})
    for key in ("val_auc", "val_loss", "val_acc", "train_loss", *extra_keys):
        vals = np.array(
            [g[key] if key in g else g.get("extra", {}).get(key, np.nan) for g in gathered],
            dtype=np.float64,
        )
        name = key.removeprefix("val_")
        # The objective needs every fold: a mean over the folds that scored would rank a
        # configuration on k - 1 of them (every fold validates on every class, so an
        # undefined fold AUC means non-finite scores: a diverged network).
        scored = np.isfinite(vals).all() if key == "val_auc" else np.isfinite(vals).any()
        out[f"cv_{name}_mean"] = float(np.nanmean(vals)) if scored else float("nan")
        out[f"cv_{name}_std"] = float(np.nanstd(vals)) if scored else float("nan")
    for i, g in enumerate(gathered):
        for key in ("val_auc", "val_loss", "val_acc"):
            out[f"fold_{i}_{key}"] = float(g[key])
        for key, value in g.get("extra", {}).items():
            out[f"fold_{i}_{key}"] = float(value)
    out["epoch_time_s"] = float(max(g["time_s"] for g in gathered))
    return out


class RestoreError(RuntimeError):
    """A checkpoint that could not be read back: the worker's to retry (Ray Train restarts
    the worker group from the checkpoint before it), not the configuration's failure."""


def _not_the_configuration(e: BaseException) -> bool:
    """Failures of the cluster, not of the configuration: a checkpoint file that cannot be
    read back, the pool lost from the object store, a node gone. Reported as the trial's
    failure, they would end it for good (raydx.retry takes its restarts away) and keep it
    out of the study on every --resume. A task's own exception (``RayTaskError``) is the
    code's, and a checkpoint read whole that does not fit the model is a TrialFailure."""
    from ray.exceptions import RayError, RayTaskError

    return isinstance(e, RestoreError) or (
        isinstance(e, RayError) and not isinstance(e, RayTaskError)
    )


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


class OutOfGpuMemory(RuntimeError):
    """A fold ran out of GPU memory, the first time in its trial: retried as a lost worker
    is (``--max-failures``), since on a GPU that several trials share (a fraction of a
    GPU per worker) the others' memory may have caused it. A second time, it is the
    configuration's failure (``_verdict``)."""


# How CUDA's allocation failures read when not raised as torch.cuda.OutOfMemoryError:
# older PyTorch releases, an allocation inside a CUDA kernel launch, cuBLAS and cuDNN.
_OOM_TEXTS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_ALLOC_FAILED",
)


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a GPU allocation failure (PyTorch's, CUDA's, cuBLAS's, cuDNN's)."""
    import torch

    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and any(t in str(e) for t in _OOM_TEXTS)
    )


def out_of_memory_again(error: str, *, retried: bool = True) -> str:
    """The reason a configuration that ran out of GPU memory twice failed with (once,
    where no restart was left to spend: ``retried=False``, ``--max-failures 0``)."""
    when = (
        "a second time, so the configuration does not fit its share of the GPU"
        if retried
        else "with no restart to spend (--max-failures 0), so it was not tried again"
    )
    return (
        f"out of memory on the GPU {when}: try a smaller batch_size or model, or fewer "
        f"trials per GPU (a larger gpus_per_worker). {error}"
    )[:480]


def _fault(e: BaseException, oom_marker: str | None, where: str = "") -> dict[str, Any]:
    """What a rank tells the others of the failure ``e``: its reason and, for a GPU out
    of memory, whether the trial had run out of it before (its ``oom_marker`` file is
    there; with no such file to keep, each time counts as a second time)."""
    fault: dict[str, Any] = {"error": where + _reason(e)}
    if is_out_of_memory(e):
        fault["oom"] = True
        fault["oom_before"] = oom_marker is None or Path(oom_marker).exists()
        fault["retried"] = oom_marker is not None
    return fault


def _verdict(faults: list[dict[str, Any] | None]) -> tuple[str, str] | None:
    """What the ranks' faults (``_fault``; None for a rank without one) make of a trial:
    None, it goes on; ``("failed", reason)``, the configuration failed; ``("retry",
    reason)``, it ran out of GPU memory for the first time. Any other failure decides
    before an out of memory does, and a second out of memory is the configuration's."""
    found = [f for f in faults if f]
    if not found:
        return None
    own = [f for f in found if not f.get("oom")]
    if own:
        return "failed", str(own[0]["error"])
    again = [f for f in found if f["oom_before"]]
    if again:
        first = again[0]
        return "failed", out_of_memory_again(str(first["error"]), retried=bool(first["retried"]))
    return "retry", str(found[0]["error"])


def _remember_out_of_memory(oom_marker: str, reason: str, *, announced: bool = False) -> None:
    from raydx.files_out import atomic_write

    text = json.dumps({"reason": reason, "announced": announced})
    atomic_write(Path(oom_marker), lambda p: p.write_text(text))  # whichever rank writes last


def _unannounced_out_of_memory(oom_marker: str | None) -> str | None:
    """The reason of the trial's first GPU out of memory, if its restart has not been
    reported yet (``fold_worker`` sends it with the next report, once)."""
    if oom_marker is None:
        return None
    try:
        saved = json.loads(Path(oom_marker).read_text())
    except (OSError, ValueError):
        return None
    return None if saved.get("announced") else str(saved.get("reason", ""))


def _free_gpu_memory() -> None:
    """Hand the CUDA cache back, for the other trials on a shared GPU to use."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _resume(ckpt: Any, st: _FoldState, trainers: dict[int, Any]) -> None:
    """Read a restarted worker's part of the trial checkpoint ``ckpt`` back.

    A file that cannot be read (missing, cut short) is the cluster's: ``RestoreError``,
    retried. One read whole that does not fit the model is the configuration's
    (``TrialFailure``); an out of GPU memory while loading is left for ``_verdict``.
    """
    from raydx.train import TrialFailure

    with ckpt.as_directory() as d:
        try:
            st.restore(Path(d), trainers)
        except TrialFailure:
            raise  # read whole, but not this model's: retrying cannot mend it
        except Exception as e:  # a file missing or cut short: retried
            if is_out_of_memory(e):
                raise
            raise RestoreError(f"checkpoint {d}: {_reason(e)}") from e


def fold_inputs(pool: dict[str, np.ndarray], images: Any, fold: int) -> dict[str, Any]:
    """A fold's training and validation images and labels for its trainer. The images
    are ``Rows`` of the one pool tensor, never copies of it (``raydx.data.rows``: a
    copy per fold held the pool k times in a trial's workers)."""
    import torch

    from raydx.data.rows import Rows

    tr, va = pool["fold"] != fold, pool["fold"] == fold
    return {
        "x_train": Rows(images, torch.from_numpy(np.flatnonzero(tr))),
        "y_train": pool["y"][tr],
        "x_val": Rows(images, torch.from_numpy(np.flatnonzero(va))),
        "y_val": pool["y"][va],
    }


def fold_worker(config: dict[str, Any]) -> None:
    """Ray Train worker loop: the folds ``folds_of_worker(rank)``, one epoch of each in turn.

    A failure of the configuration (an exception in any fold) is agreed on by all
    ranks and reported as the trial's end, so Ray Train does not restart the worker
    group for it: restarts are for dead processes and nodes, which resume from the
    last checkpoint. A GPU out of memory is restarted too, the first time in a trial
    (``config["oom_marker"]`` remembers it): see ``OutOfGpuMemory``.
    """
    t_enter = time.time()
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    from raydx.data.rows import read_only_tensor
    from raydx.families import get_family
    from raydx.search import folds_of_worker

    # Ray Train logs every report and checkpoint at INFO; k workers x epochs of that
    # would bury the search's own progress. (Some of its loggers are named by file
    # path, hence the root logger too.)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, workers = ctx.get_world_rank(), ctx.get_world_size()
    k = int(config["folds"])
    mine = folds_of_worker(rank, workers, k)
    torch.set_num_threads(int(config["threads"]))
    epochs = int(config["epochs"])
    every = max(1, int(config.get("checkpoint_every", 1)))
    interval = float(config["report_interval_s"])
    report_at = {int(e) for e in config["report_epochs"]} | {epochs}

    def gather(obj: Any) -> list[Any]:
        out: list[Any] = [None] * workers
        dist.all_gather_object(out, obj)
        return out

    oom_marker = config.get("oom_marker")

    def settle(faults: list[Any], pending: list[dict[str, Any]] | None = None) -> bool:
        """Whether the ranks' faults (the same list on every rank) end the trial as a
        failed configuration (reported); raises ``OutOfGpuMemory`` for a retry."""
        verdict = _verdict(faults)
        if verdict is None:
            return False
        if faults[rank] and faults[rank].get("oom"):
            trainers.clear()  # their weights and optimiser states, on the GPU
            _free_gpu_memory()
        outcome, reason = verdict
        if outcome == "retry":
            if faults[rank] and oom_marker is not None:
                _remember_out_of_memory(oom_marker, reason)
            gather(None)  # remembered before any rank raises and Ray Train ends them all
            raise OutOfGpuMemory(
                "out of memory on the GPU, the first time in this trial (retried from its "
                "last checkpoint: on a GPU that several trials share, the others may have "
                f"caused it): {reason}"
            )
        _report_failure(reason, st, rank, pending)
        return True

    st = _FoldState()
    fault = None
    trainers: dict[int, Any] = {}
    val_rows: dict[int, np.ndarray] = {}
    t_imported = t_data = t_enter
    try:
        cfg = TrialConfig.from_params(config["params"])
        t_imported = time.time()
        pool = ray.get(config["data_ref"])
        t_data = time.time()
        use_gpu = bool(config.get("use_gpu"))
        device = ray.train.torch.get_device() if use_gpu else torch.device("cpu")
        ckpt = ray.train.get_checkpoint()
        # The node's one shared copy of the pool (on a GPU, one copy for this worker's
        # folds); each fold reads its rows of it a batch at a time (raydx.data.rows).
        images = read_only_tensor(pool["x"]).to(device)
        for fold in mine:
            trainers[fold] = get_family(cfg.family).trainer(
                cfg,
                **fold_inputs(pool, images, fold),
                n_classes=int(config["n_classes"]),
                positive=int(config["positive"]),
                epochs=epochs,
                seed=int(config["seed"]),
                fold=fold,
                device=device,
            )
            val_rows[fold] = pool["row"][pool["fold"] == fold]
        if ckpt is not None:
            _resume(ckpt, st, trainers)
        else:
            for trainer in trainers.values():
                with trainer.own_rng():
                    trainer.pretrain()
    except Exception as e:
        if _not_the_configuration(e):
            raise
        fault = _fault(e, oom_marker)
    t_built = time.time()
    agreed = gather((fault, t_enter, t_built))
    if settle([f for f, _, _ in agreed]):
        return
    # Restarted after the trial's first GPU out of memory: said with the next report (the
    # driver sees no failure of its own when Ray Train restarts the workers).
    oom_restart = _unannounced_out_of_memory(oom_marker)
    # Where a trial's start-up time goes (the slowest worker of each phase), reported
    # with the first epoch trained: bench/overhead.py prints it.
    launched = float(config.get("launched_at", t_enter))
    startup = {
        "startup_first_worker_s": min(t for _, t, _ in agreed) - launched,
        "startup_launch_s": max(t for _, t, _ in agreed) - launched,
        "startup_import_s": t_imported - t_enter,
        "startup_data_s": t_data - t_imported,
        "startup_model_s": t_built - t_data,
        "startup_sync_s": time.time() - t_built,
    }
    # Reports of the epochs up to the checkpoint may never have reached the driver
    # (it was killed first): send them again from the checkpoint's own record. The
    # driver keeps one row per epoch, so those that did arrive are not doubled.
    if st.history:
        ray.train.report(batched(st.history))

    pending: list[dict[str, Any]] = []  # epochs trained since the last report
    save_due = False  # a new best or a checkpoint_every boundary since the last report
    last_report = time.perf_counter()
    for epoch in range(st.epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        results: dict[int, Any] = {}
        current = mine[0]
        try:
            for current, trainer in trainers.items():
                with trainer.own_rng():
                    results[current] = trainer.run_epoch(epoch)
            spent = time.perf_counter() - t0
            ours: dict[Any, Any] = {
                fold: {
                    "val_auc": r.val_auc,
                    "val_loss": r.val_loss,
                    "val_acc": r.val_acc,
                    "train_loss": r.train_loss,
                    "extra": dict(r.extra),
                    "time_s": spent,  # this worker's epoch, all of its folds
                }
                for fold, r in results.items()
            }
        except Exception as e:
            ours = {"fault": _fault(e, oom_marker, f"fold {current}: ")}
        # Every rank sends the time since its last report, so all decide alike.
        gathered = gather((ours, time.perf_counter() - last_report))
        if settle([g.get("fault") for g, _ in gathered], pending):
            return
        waited = max(w for _, w in gathered)
        by_fold = {f: g for part, _ in gathered for f, g in part.items()}
        metrics = fold_metrics([by_fold[f] for f in range(k)], epoch)
        if startup:
            metrics.update(startup)
            startup = {}
        mean = metrics["cv_auc_mean"]
        st.epoch = epoch
        improved = bool(np.isfinite(mean) and mean > st.best)
        if improved:
            st.best, st.best_epoch = mean, epoch
            for fold, trainer in trainers.items():
                st.best_model[fold] = {
                    n: t.detach().cpu().clone() for n, t in trainer.model.state_dict().items()
                }
                st.best_oof[fold] = np.asarray(results[fold].val_prob)
        # The running best first: Tune's progress table shows a report's first four
        # metrics, and the last epoch's CV AUC alone read as the trial's score.
        metrics = {
            "epoch": epoch,
            "objective": float(st.best) if np.isfinite(st.best) else float("nan"),
            "best_epoch": st.best_epoch,
            **metrics,
            "resumed_from": st.resumed_from,
        }
        st.history.append(metrics)
        pending.append(metrics)
        save_due = save_due or improved or epoch % every == 0 or epoch == epochs
        if epoch in report_at or waited >= interval:
            if oom_restart is not None:
                pending[-1] = {**pending[-1], "oom_restart": oom_restart}
                if rank == 0 and oom_marker is not None:
                    _remember_out_of_memory(oom_marker, oom_restart, announced=True)
                oom_restart = None
            if save_due:
                with tempfile.TemporaryDirectory() as d:
                    st.save(Path(d), k, trainers, val_rows, meta=rank == 0)
                    ray.train.report(
                        batched(pending), checkpoint=ray.train.Checkpoint.from_directory(d)
                    )
            else:
                ray.train.report(batched(pending))
            pending, save_due, last_report = [], False, time.perf_counter()


def _plain(v: Any) -> Any:
    return v.item()  # numpy scalars


def batched(epochs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report for several epochs: the last one's metrics, the others as JSON."""
    out = dict(epochs[-1])
    if len(epochs) > 1:
        out[EARLIER_EPOCHS] = json.dumps(epochs[:-1], default=_plain)
    return out


def unbatched(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The epochs one report carries (``batched``'s inverse): the earlier ones, then its own."""
    return [*json.loads(result.get(EARLIER_EPOCHS) or "[]"), result]


class _FoldState:
    """What a worker must carry across a restart besides its trainers (one per fold)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.resumed_from = 0  # the checkpoint epoch this worker group started from
        self.best = -np.inf
        self.best_epoch = 0
        self.best_model: dict[int, dict[str, Any]] = {}  # fold -> weights at the best epoch
        self.best_oof: dict[int, np.ndarray] = {}  # fold -> its validation probabilities
        self.history: list[dict[str, Any]] = []  # every epoch's report so far

    def save(
        self,
        d: Path,
        k: int,
        trainers: dict[int, Any],
        val_rows: dict[int, np.ndarray],
        *,
        meta: bool,
    ) -> None:
        """This worker's part of the trial checkpoint; Ray Train merges the workers' parts."""
        import torch
        from safetensors.torch import save_file

        for fold, trainer in trainers.items():
            if fold in self.best_model:
                save_file(self.best_model[fold], str(d / fold_file(fold)))
                np.savez(d / oof_file(fold), row=val_rows[fold], prob=self.best_oof[fold])
            torch.save(trainer.state_dict(), d / state_file(fold))
            trainer.write_artifacts(str(d))  # e.g. generated samples, for a person to look at
        if meta:
            info = {
                "epoch": self.epoch,
                "best_epoch": self.best_epoch,
                "best": float(self.best) if np.isfinite(self.best) else None,
                "folds": k,
                "history": self.history,
            }
            (d / CKPT_META).write_text(json.dumps(info))

    def restore(self, d: Path, trainers: dict[int, Any]) -> None:
        import torch
        from safetensors.torch import load_file

        meta = json.loads((d / CKPT_META).read_text())
        self.epoch = self.resumed_from = int(meta["epoch"])
        self.best_epoch = int(meta["best_epoch"])
        self.best = -np.inf if meta["best"] is None else float(meta["best"])
        self.history = list(meta.get("history", []))
        for fold, trainer in trainers.items():
            if (d / fold_file(fold)).exists():
                self.best_model[fold] = load_file(str(d / fold_file(fold)))
                with np.load(d / oof_file(fold)) as z:
                    self.best_oof[fold] = z["prob"]
            # onto the CPU first: saved on a GPU, the tensors name its device (cuda:1),
            # which the restarted worker may not have; load_state_dict moves them on
            state = torch.load(d / state_file(fold), map_location="cpu", weights_only=False)
            try:
                trainer.load_state_dict(state)
            except (RuntimeError, KeyError, ValueError) as e:
                from raydx.train import TrialFailure

                if is_out_of_memory(e):  # onto a GPU that the others filled, maybe
                    raise

                raise TrialFailure(
                    f"fold {fold}'s checkpoint does not fit this configuration's model (was "
                    f"it written by another raydx version?): {_reason(e)}"
                ) from e


def _failed(reason: str, st: _FoldState) -> dict[str, Any]:
    """The report that ends a trial as failed: its ``failed`` key takes Tune's restarts
    away (raydx.retry); its last epoch and running best go with it."""
    return {
        "epoch": st.epoch,
        "objective": float(st.best) if np.isfinite(st.best) else float("nan"),
        "best_epoch": st.best_epoch,
        "failed": reason,
    }


def _report_failure(
    reason: str, st: _FoldState, rank: int, pending: list[dict[str, Any]] | None = None
) -> None:
    """End the Train run with the failure as its last checkpoint (see ``trial_fn``); the
    epochs trained since the last report go with it."""
    import ray.train

    metrics = batched([*(pending or []), _failed(reason, st)])
    with tempfile.TemporaryDirectory() as d:
        if rank == 0:
            Path(d, FAILURE_FILE).write_text(json.dumps({"reason": reason}))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _drain(forward: Any, timeout_s: float = 30.0) -> None:
    """Wait until Tune has taken the last forwarded report.

    ``TuneReportCallback`` hands reports to the trial through a one-slot queue; if the
    trial function returns while the last report still sits there, Tune may end the
    trial without it (seen: a one-epoch trial finishing with no metrics at all).
    """
    queue = forward._training_actor_item_queue
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not queue.empty():
        time.sleep(0.02)
    time.sleep(0.1)  # the taken item still has to reach Tune's result queue


def failed_before(storage_path: str, trial_id: str) -> str | None:
    """Why the trial's configuration failed, if its Train run ended with that failure.

    Tune restarts a trial whose own process or node was lost (``--max-failures``), and
    it restarts a trial that raised in the same way: so a configuration that failed
    (``_report_failure``) is raised again at once on each restart, not trained again.
    """
    markers = sorted(Path(storage_path, trial_id).glob(f"checkpoint_*/{FAILURE_FILE}"))
    return str(json.loads(markers[-1].read_text())["reason"]) if markers else None


def _unbuildable(config: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """Why the configuration's network cannot be made for these data (an anomaly-scoring
    autoencoder for three classes, say), found on the meta device in a moment, where the
    fold workers would find it after their start; None where it can."""
    import warnings

    import torch

    from raydx.train import TrialFailure, build_model, skip_init

    channels, image_size = spec["shape"]
    try:
        # its warnings are the fold workers' to give, once
        with warnings.catch_warnings(), torch.device("meta"), skip_init()():
            warnings.simplefilter("ignore")
            build_model(
                TrialConfig.from_params(config),
                in_channels=int(channels),
                n_classes=int(spec["n_classes"]),
                image_size=int(image_size),
            )
    except TrialFailure as e:
        return str(e)
    except Exception:  # anything else is the fold workers' to meet, as it always was
        return None
    return None


def trial_fn(config: dict[str, Any], *, spec: dict[str, Any]) -> None:
    """The Tune trial: launches the fold workers as one Train run named by the trial id.

    ``spec["data_ref"]`` is the object-store reference of the CV pool; it travels
    nested in ``spec`` so that Ray passes the reference, not a copy of the data.
    """
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from raydx.gloo import GlooOnRayNetwork
    from raydx.shared_storage import (
        blind_to_run_folder,
        ray_train_storage_failure,
        unseen_run_folder,
    )
    from raydx.train import TrialFailure

    def unusable(reason: str) -> TrialFailure:
        """The trial fails once, as a failed configuration does (its report takes Tune's
        restarts away, raydx.retry), before any fold worker starts: on a node without the
        run folder, where each restart could meet the node again and cost a Train run's
        worker starts and retries; for a network these data cannot have."""
        ray.tune.report(_failed(reason, _FoldState()))  # before any epoch
        return TrialFailure(reason)

    trial_id = ray.tune.get_context().get_trial_id()
    if trial_id in spec.get("finished", ()):
        # Ended in the run's record (events.jsonl), running in Tune's snapshot, which lags
        # it (raydx.run, on --resume): it ends as it did, with no new report, and is
        # trained no further than the scheduler or the time budget let it.
        return
    # A node that joined after the driver's check (raydx.shared_storage): the Train
    # run's state and checkpoints, and failed_before's answer, would be this node's own.
    unseen = unseen_run_folder(spec.get("run_marker"))
    if unseen is not None:
        raise unusable(unseen)
    reason = failed_before(spec["storage_path"], trial_id)
    if reason is not None:
        raise TrialFailure(reason)
    unbuildable = _unbuildable(config, spec)
    if unbuildable is not None:
        raise unusable(unbuildable)
    use_gpu = spec["gpus_per_worker"] > 0
    resources = {"CPU": spec["cpus_per_worker"]}
    if use_gpu:
        resources["GPU"] = spec["gpus_per_worker"]
    forward = TuneReportCallback()
    trainer = TorchTrainer(
        fold_worker,
        train_loop_config={
            "params": config,
            "folds": spec["folds"],
            "data_ref": spec["data_ref"],
            "threads": spec["threads"],
            "n_classes": spec["n_classes"],
            "positive": spec["positive"],
            "epochs": spec["epochs"],
            "seed": spec["seed"],
            "use_gpu": use_gpu,
            "checkpoint_every": spec["checkpoint_every"],
            "report_interval_s": spec["report_interval_s"],
            "report_epochs": spec["report_epochs"],
            "launched_at": time.time(),
            # with no restarts to spend (--max-failures 0), a first one is the last
            "oom_marker": str(Path(spec["storage_path"], trial_id, OOM_FILE))
            if spec["max_failures"] > 0
            else None,
        },
        scaling_config=ray.train.ScalingConfig(
            num_workers=spec["workers"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        # No gradients are shared between folds; the process group only carries the
        # per-epoch metric exchange, which gloo does on CPU and GPU workers alike, on
        # the network interface of each worker's Ray address (raydx.gloo).
        torch_config=GlooOnRayNetwork(),
        run_config=ray.train.RunConfig(
            name=trial_id,
            storage_path=spec["storage_path"],
            # mypy sees Train V1's RunConfig (ray.train's static import); V2 is used.
            callbacks=[forward],  # type: ignore[list-item]
            # Two: a trial stopped between a checkpoint and Tune's taking its report
            # keeps the one before, which the report Tune did take names. The search
            # deletes the spare when it ends (ResultsWriter.prune_checkpoints).
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Retries are for dead workers and nodes; a failing configuration ends the
            # run through ``_report_failure`` instead of raising.
            failure_config=ray.train.FailureConfig(max_failures=spec["max_failures"]),
        ),
    )
    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as e:
        # Ray Train's own check that a fold worker's node sees the run's storage (its
        # first line alone, "Training failed due to worker errors:", would be the
        # trial's reason): which nodes do not, in raydx's words.
        if ray_train_storage_failure(e):
            raise unusable(blind_to_run_folder(spec.get("run_marker")) or str(e)) from None
        raise
    _drain(forward)
    if result.checkpoint is not None:
        with result.checkpoint.as_directory() as d:
            failure = Path(d, FAILURE_FILE)
            if failure.exists():
                raise TrialFailure(json.loads(failure.read_text())["reason"])
