import shutil
from types import SimpleNamespace

import pytest

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


# A GPU out of memory (raydx.cv): retried the first time in a trial, since on a GPU that
# several trials share the others may have caused it; the configuration's failure the
# second time. Classified without a GPU: PyTorch's error is made on any build.


def _oom() -> Exception:
    import torch

    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")


def test_gpu_allocation_failures_in_any_form_and_nothing_else_are_out_of_memory() -> None:
    from raydx.cv import RestoreError, is_out_of_memory
    from raydx.train import DivergedError

    assert is_out_of_memory(_oom())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory\nCUDA kernel errors ..."))
    assert is_out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_out_of_memory(RuntimeError("Error(s) in loading state_dict: size mismatch"))
    assert not is_out_of_memory(DivergedError("loss nan at epoch 1"))
    assert not is_out_of_memory(RestoreError("checkpoint x: EOFError"))


def test_a_first_out_of_memory_is_retried_and_a_second_is_the_configurations_failure(
    tmp_path,
) -> None:
    from raydx.cv import _fault, _verdict

    marker = str(tmp_path / "abc123" / "out_of_memory.json")
    first = _fault(_oom(), marker, "fold 1: ")
    assert _verdict([None, first]) == (
        "retry",
        "fold 1: OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
    )
    (tmp_path / "abc123").mkdir()
    (tmp_path / "abc123" / "out_of_memory.json").write_text("{}")
    again = _fault(_oom(), marker, "fold 1: ")
    outcome, reason = _verdict([None, again])  # type: ignore[misc]
    assert outcome == "failed"
    assert "out of memory" in reason and "batch_size" in reason and "trials per GPU" in reason
    assert "fold 1: OutOfMemoryError" in reason
    # with nowhere to remember the first time, each time is the second
    assert _verdict([_fault(_oom(), None)])[0] == "failed"  # type: ignore[index]
    assert _verdict([None, None]) is None


def test_another_failure_in_any_fold_decides_before_an_out_of_memory(tmp_path) -> None:
    from raydx.cv import _fault, _verdict
    from raydx.train import DivergedError

    marker = str(tmp_path / "out_of_memory.json")
    faults = [_fault(_oom(), marker), _fault(DivergedError("loss nan at epoch 2"), marker)]
    assert _verdict(faults) == ("failed", "DivergedError: loss nan at epoch 2")


def test_out_of_memory_while_loading_a_checkpoint_is_not_a_checkpoint_that_does_not_fit(
    tmp_path,
) -> None:
    import json

    import torch

    from raydx.cv import CKPT_META, _FoldState, state_file

    (tmp_path / CKPT_META).write_text(json.dumps({"epoch": 1, "best_epoch": 1, "best": 0.8}))
    torch.save({"w": torch.ones(2)}, tmp_path / state_file(0))

    class OnAFullGpu:
        def load_state_dict(self, state: dict) -> None:
            raise _oom()

    with pytest.raises(torch.cuda.OutOfMemoryError):
        _FoldState().restore(tmp_path, {0: OnAFullGpu()})


# fold_worker itself, as one Ray Train worker of one: its Ray Train and gloo calls are
# stood in for, so that what it raises (Ray Train restarts the worker group) and what
# it reports (the configuration failed: the trial ends) are its own, in a second.


def _pool(n: int = 48, size: int = 16) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    return {
        "x": (rng.normal(size=(n, 1, size, size)) + y[:, None, None, None]).astype(np.float32),
        "y": y.astype(np.int64),
        "fold": (np.arange(n) // 2 % 2).astype(np.int64),  # both classes in each fold
        "row": np.arange(n, dtype=np.int64),
    }


@pytest.fixture
def worker(monkeypatch, tmp_path):
    """Runs ``fold_worker`` (2 folds, 1 epoch) from ``checkpoint``; returns its reports,
    each as (metrics, a copy of its checkpoint folder or None)."""
    import logging
    import shutil

    import ray
    import ray.train
    import torch.distributed

    from raydx.cv import fold_worker

    copies = iter(range(1000))
    resume_from: list = [None]
    reports: list = []

    def report(metrics: dict, checkpoint=None) -> None:
        kept = None
        if checkpoint is not None:
            kept = tmp_path / f"report_{next(copies)}"
            shutil.copytree(checkpoint.path, kept)
        reports.append((metrics, kept))

    context = SimpleNamespace(get_world_rank=lambda: 0, get_world_size=lambda: 1)
    monkeypatch.setattr(ray.train, "get_context", lambda: context)
    monkeypatch.setattr(ray.train, "get_checkpoint", lambda: resume_from[0])
    monkeypatch.setattr(ray.train, "report", report)
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    monkeypatch.setattr(
        torch.distributed, "all_gather_object", lambda out, obj: out.__setitem__(0, obj)
    )
    levels = {name: logging.getLogger(name).level for name in ("", "ray.train")}  # it quiets them

    def run(params: dict | None = None, checkpoint=None) -> list:
        resume_from[0] = (
            None if checkpoint is None else ray.train.Checkpoint.from_directory(checkpoint)
        )
        reports.clear()
        fold_worker(
            {
                "params": params or {"model": "cnn_tiny", "lr": 1e-2, "batch_size": 16},
                "folds": 2,
                "data_ref": _pool(),
                "threads": 1,
                "n_classes": 2,
                "positive": 1,
                "epochs": 1,
                "seed": 0,
                "use_gpu": False,
                "checkpoint_every": 1,
                "report_interval_s": 0.0,
                "report_epochs": [],
                "oom_marker": str(tmp_path / "abc123" / "out_of_memory.json"),
            }
        )
        return list(reports)

    yield run
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_fold_worker_restarts_on_a_checkpoint_it_cannot_read_and_fails_one_that_does_not_fit(
    worker, tmp_path
) -> None:
    from raydx.cv import RestoreError, _not_the_configuration, state_file

    ((metrics, ckpt),) = worker()
    assert metrics["epoch"] == 1 and "failed" not in metrics and ckpt is not None, metrics
    # read back whole: trained on from it (the epochs it has are sent again, no new one)
    ((again, _),) = worker(checkpoint=ckpt)
    assert again["epoch"] == 1 and "failed" not in again

    # cut short (a copy that stopped half-way): raised for Ray Train to retry
    cut = tmp_path / "cut"
    shutil.copytree(ckpt, cut)
    data = (cut / state_file(1)).read_bytes()
    (cut / state_file(1)).write_bytes(data[: len(data) // 2])
    with pytest.raises(RestoreError, match="checkpoint") as raised:
        worker(checkpoint=cut)
    assert _not_the_configuration(raised.value)

    # another model's: read whole, it does not fit, and the trial ends as failed
    ((ended, _),) = worker({"model": "cnn_seed", "lr": 1e-2, "batch_size": 16}, checkpoint=ckpt)
    assert "does not fit this configuration's model" in ended["failed"]


def test_fold_worker_restarts_on_the_first_out_of_memory_and_fails_on_the_second(
    worker, tmp_path, monkeypatch
) -> None:
    from raydx.cv import OutOfGpuMemory, _not_the_configuration, failed_before
    from raydx.train import FoldTrainer

    def out_of_memory(self, epoch: int):
        raise _oom()

    monkeypatch.setattr(FoldTrainer, "run_epoch", out_of_memory)
    marker = tmp_path / "abc123" / "out_of_memory.json"
    with pytest.raises(OutOfGpuMemory, match="fold 0: OutOfMemoryError") as raised:
        worker()
    assert not _not_the_configuration(raised.value) and marker.is_file()
    assert failed_before(str(tmp_path), "abc123") is None

    ((ended, _),) = worker()  # the restarted worker group runs out of memory again
    assert "out of memory on the GPU a second time" in ended["failed"]
    assert "batch_size" in ended["failed"]


def test_a_worker_restarted_after_an_out_of_memory_says_so_once(
    worker, tmp_path, monkeypatch
) -> None:
    """Ray Train restarts the workers itself: the driver hears of the out of memory only
    through the next report, which carries it once (the results writer prints it)."""
    from raydx.cv import OutOfGpuMemory
    from raydx.results import ResultsWriter
    from raydx.train import FoldTrainer

    real = FoldTrainer.run_epoch

    def out_of_memory(self, epoch: int):
        raise _oom()

    monkeypatch.setattr(FoldTrainer, "run_epoch", out_of_memory)
    with pytest.raises(OutOfGpuMemory):
        worker()
    monkeypatch.setattr(FoldTrainer, "run_epoch", real)
    reports = [m for m, _ in worker()]  # the restarted group, with memory to spare
    said = [m["oom_restart"] for m in reports if "oom_restart" in m]
    assert len(said) == 1 and "OutOfMemoryError: CUDA out of memory" in said[0]
    assert not any("oom_restart" in m for m, _ in worker())  # a later restart: not again
    lines: list[str] = []
    (tmp_path / "run").mkdir()
    w = ResultsWriter(tmp_path / "run", folds=2, epochs=1, param_names=["lr"], log=lines.append)
    trial = SimpleNamespace(trial_id="t1", config={"lr": 0.01}, error_file=None)
    w.on_trial_start(0, [], trial)
    w.on_trial_result(0, [], trial, {**reports[-1], "training_iteration": 1})
    assert [line for line in lines if "ran out of GPU memory" in line] == [
        "raydx: trial 1 (t1) ran out of GPU memory and its fold workers restarted from its "
        f"last checkpoint ({said[0]}); a second time is the configuration's failure"
    ]


def test_with_no_restarts_to_spend_a_first_out_of_memory_is_the_configurations_failure() -> None:
    from raydx.cv import _fault, _verdict

    # trial_fn passes no marker under --max-failures 0: nothing would retry the trial
    outcome, reason = _verdict([_fault(_oom(), None, "fold 0: ")])
    assert outcome == "failed" and "batch_size" in reason
    assert reason.startswith("out of memory on the GPU with no restart to spend (--max-fail")
    assert "second time" not in reason
