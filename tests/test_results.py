"""Results contract: error reasons, atomic writes, and the trial/fold tables on disk."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from raydx.config import TrialConfig
from raydx.cv import EARLIER_EPOCHS, batched, fold_metrics
from raydx.results import ResultsWriter, atomic_write, error_reason, write_json, write_yaml

DIVERGED = (
    "training loss became nan at epoch 3 (fold 1); the configuration diverged (try a lower lr)."
)

# What Tune writes to a trial's error file when one fold worker raises: Ray Train's
# wrappers around the worker's own traceback (the innermost cause comes first).
RAY_TRACEBACK = f"""\
Failure # 1 (occurred at 2025-03-02_10-11-12)
ray::_Inner.train() (pid=4242, ip=10.0.0.3, actor_id=a1b2c3, repr=trial_fn)
  File "/venv/lib/python3.11/site-packages/ray/tune/trainable/trainable.py", line 330, in train
    raise skipped from exception_cause(skipped)
  File "/venv/lib/python3.11/site-packages/ray/train/_internal/utils.py", line 57, in check
    ray.get(object_ref)
ray.exceptions.RayTaskError(WorkerGroupError): ray::_Inner.train() (pid=4242, ip=10.0.0.3)
ray.train.WorkerGroupError: Training failed due to worker errors:
[Rank 1 Error Snippet]:
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/train/v2/_internal/execution/worker.py", line 88
    train_fn()
  File "/work/main/raydx/cv.py", line 95, in fold_worker
    r = trainer.run_epoch(epoch)
  File "/work/main/raydx/train.py", line 190, in train_epoch
    raise DivergedError(
raydx.train.DivergedError: {DIVERGED}

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/train/v2/api/data_parallel_trainer.py", line 120
    raise TrainingFailedError(
ray.train.TrainingFailedError: Training failed due to worker errors:
  WorkerGroupError: Training failed due to worker errors: see the rank 1 snippet above.
"""


# ---------------------------------------------------------------- error_reason


def test_error_reason_finds_the_workers_diverged_error() -> None:
    assert error_reason(RAY_TRACEBACK) == f"DivergedError: {DIVERGED}"


def test_error_reason_skips_wrappers_but_keeps_them_as_a_last_resort() -> None:
    only_wrappers = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "ray.train.TrainingFailedError: the Ray Train run failed\n"
    )
    assert error_reason(only_wrappers) == "TrainingFailedError: the Ray Train run failed"
    plain = "Traceback (most recent call last):\n  ...\nValueError: bad shape (3, 4)\n"
    assert error_reason(plain) == "ValueError: bad shape (3, 4)"


def test_error_reason_falls_back_to_the_last_line() -> None:
    text = "Failure # 1\nthe worker node died unexpectedly\nnode 10.0.0.3 was lost\n\n"
    assert error_reason(text) == "node 10.0.0.3 was lost"


@pytest.mark.parametrize("text", [None, ""])
def test_error_reason_without_text(text: str | None) -> None:
    assert error_reason(text) == "unknown error"


def test_error_reason_whitespace_only() -> None:
    assert error_reason("\n  \n") == "unknown error"


def test_error_reason_is_one_bounded_line() -> None:
    reason = error_reason("RuntimeError: " + "x" * 2000 + "\n")
    assert reason.startswith("RuntimeError: x")
    assert len(reason) <= 500 and "\n" not in reason


# ---------------------------------------------------------------- atomic writes


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_write_creates_parents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write(target, lambda p: p.write_text("v1"))
    assert target.read_text() == "v1"
    atomic_write(target, lambda p: p.write_text("v2"))
    assert target.read_text() == "v2"
    assert _siblings(target) == ["out.txt"]


def test_atomic_write_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old content")

    def half_then_crash(p: Path) -> None:
        p.write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old content"
    assert _siblings(target) == ["out.txt"]


def test_atomic_write_failure_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "new.json"

    def crash(p: Path) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_write_json_and_yaml_round_trip(tmp_path: Path) -> None:
    import json

    import yaml

    write_json({"auc": 0.9, "path": Path("x")}, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text()) == {"auc": 0.9, "path": "x"}
    write_yaml({"trial_id": "t1", "params": {"lr": 0.001}}, tmp_path / "b.yaml")
    assert yaml.safe_load((tmp_path / "b.yaml").read_text()) == {
        "trial_id": "t1",
        "params": {"lr": 0.001},
    }


# ---------------------------------------------------------------- ResultsWriter

FOLDS = 3
EPOCHS = 4


class FakeTrial:
    def __init__(self, trial_id: str, config: dict[str, Any], error_file: str | None = None):
        self.trial_id = trial_id
        self.config = config
        self.error_file = error_file


def _report(
    epoch: int, fold_aucs: list[float], *, best: float, best_epoch: int, ckpt: str | None = None
) -> dict[str, Any]:
    """One epoch's result as Tune hands it to callbacks (cv.py's report plus Tune keys)."""
    gathered = [
        {
            "val_auc": a,
            "val_loss": 1.0 - a / 2,
            "val_acc": a - 0.1,
            "train_loss": 0.5,
            "time_s": 1.0 + i,
        }
        for i, a in enumerate(fold_aucs)
    ]
    r = fold_metrics(gathered, epoch)
    r |= {"objective": best, "best_epoch": best_epoch, "training_iteration": epoch}
    r |= {"time_total_s": 10.0 * epoch, "trial_id": "ignored"}
    if ckpt:
        r["checkpoint_path"] = ckpt
    return r


def test_the_cv_mean_needs_every_fold() -> None:
    """A fold without a score (a diverged network) makes the objective undefined, rather
    than a mean of the other folds that would rank the trial on k - 1 of them."""
    r = _report(1, [0.9, 0.92, math.nan, 0.88], best=0.0, best_epoch=1)
    assert math.isnan(r["cv_auc_mean"]) and math.isnan(r["cv_auc_std"])
    assert r["cv_loss_mean"] == pytest.approx(np.nanmean([0.55, 0.54, 0.56]))
    assert math.isnan(r["fold_2_val_auc"]) and r["fold_0_val_auc"] == 0.9
    assert _report(1, [0.9, 0.8], best=0.0, best_epoch=1)["cv_auc_mean"] == pytest.approx(0.85)


def _run_trial(writer: ResultsWriter, trial: FakeTrial, epochs: list[list[float]]) -> list[dict]:
    """Feed per-epoch fold AUCs the way fold_worker reports them (checkpoint on a new best)."""
    writer.on_trial_start(0, [], trial)
    best, best_epoch, reports = -math.inf, 0, []
    for epoch, aucs in enumerate(epochs, start=1):
        mean = float(np.mean(aucs))
        ckpt = None
        if mean > best:
            best, best_epoch = mean, epoch
            ckpt = f"/ckpt/{trial.trial_id}/checkpoint_{epoch:06d}"
        r = _report(epoch, aucs, best=best, best_epoch=best_epoch, ckpt=ckpt)
        writer.on_trial_result(0, [], trial, r)
        reports.append(r)
    return reports


@pytest.fixture
def writer(tmp_path: Path) -> ResultsWriter:
    return ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["model", "lr"])


def _trials(tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "trials.parquet").set_index("trial_id")


def _folds(tmp_path: Path) -> pd.DataFrame:
    return pd.read_parquet(tmp_path / "folds.parquet")


def test_complete_trial_row(writer: ResultsWriter, tmp_path: Path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01, "family": "cnn", "batch_size": 32})
    # Means per epoch: 0.70, 0.85, 0.80, 0.85 -> best epoch 2 (earliest of the tie).
    epochs = [[0.6, 0.7, 0.8], [0.8, 0.9, 0.85], [0.9, 0.7, 0.8], [0.85, 0.85, 0.85]]
    _run_trial(writer, t, epochs)
    assert not (tmp_path / "trials.parquet").exists()  # nothing final yet
    writer.on_trial_complete(0, [], t)

    row = _trials(tmp_path).loc["t1"]
    assert row["status"] == "TERMINATED"
    assert not row["stopped_early"]
    assert row["best_epoch"] == 2
    assert row["cv_auc_mean"] == pytest.approx(0.85)
    assert row["cv_auc_std"] == pytest.approx(np.std([0.8, 0.9, 0.85]))
    assert [row[f"fold_{i}_auc"] for i in range(FOLDS)] == pytest.approx([0.8, 0.9, 0.85])
    assert row["model"] == "cnn_tiny" and row["lr"] == pytest.approx(0.01)
    assert row["family"] == "cnn"
    assert "batch_size" not in row.index  # only searched parameters become columns
    assert row["checkpoint_path"] == "/ckpt/t1/checkpoint_000002"
    assert row["time_total_s"] == pytest.approx(40.0)
    assert pd.isna(row["error"]) and pd.isna(row["stopped_by"])


def _worker_epoch(epoch: int, aucs: list[float], best: float, best_epoch: int) -> dict:
    """An epoch's metrics as fold_worker keeps them (no Tune keys)."""
    r = _report(epoch, aucs, best=best, best_epoch=best_epoch)
    return {
        k: v for k, v in r.items() if k not in ("training_iteration", "time_total_s", "trial_id")
    }


def test_epochs_reported_together_each_get_their_rows(writer: ResultsWriter, tmp_path) -> None:
    """Short epochs go to Tune in one report (raydx.cv.batched); the tables do not change."""
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    e = [
        _worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1),
        _worker_epoch(2, [0.9, 0.8, 0.7], 0.8, 2),
        _worker_epoch(3, [0.7, 0.7, 0.7], 0.8, 2),
    ]
    writer.on_trial_start(0, [], t)
    r = batched(e) | {"training_iteration": 1, "time_total_s": 3.0}
    r["checkpoint_path"] = "/ckpt/t1/checkpoint_000000"  # saved at the report: best = epoch 2
    assert set(r) - {EARLIER_EPOCHS} == set(e[2]) | {
        "training_iteration",
        "time_total_s",
        "checkpoint_path",
    }
    writer.on_trial_result(0, [], t, r)
    writer.on_trial_complete(0, [], t)
    row = _trials(tmp_path).loc["t1"]
    assert row["best_epoch"] == 2 and row["cv_auc_mean"] == pytest.approx(0.8)
    assert row["epochs_run"] == 3
    assert row["checkpoint_path"] == "/ckpt/t1/checkpoint_000000"
    folds = _folds(tmp_path)
    assert sorted(folds["epoch"].unique()) == [1, 2, 3]
    assert folds.set_index(["epoch", "fold"]).loc[(2, 0), "val_auc"] == pytest.approx(0.9)


def test_epochs_sent_with_a_failure_keep_their_rows(writer: ResultsWriter, tmp_path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    writer.on_trial_start(0, [], t)
    e = [_worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1), _worker_epoch(2, [0.7, 0.7, 0.7], 0.7, 2)]
    failure = {"epoch": 2, "objective": 0.7, "best_epoch": 2, "failed": "ValueError: x"}
    failure[EARLIER_EPOCHS] = batched([*e, {}])[EARLIER_EPOCHS]
    writer.on_trial_result(0, [], t, failure)
    writer.on_trial_error(0, [], t)
    assert sorted(_folds(tmp_path)["epoch"].unique()) == [1, 2]


def test_best_epoch_is_argmax_of_mean_not_of_one_fold(writer: ResultsWriter, tmp_path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    # Fold 0 peaks at epoch 1, the mean peaks at epoch 3.
    epochs = [[0.99, 0.5, 0.5], [0.6, 0.6, 0.6], [0.7, 0.8, 0.9], [0.6, 0.7, 0.8]]
    _run_trial(writer, t, epochs)
    writer.on_trial_complete(0, [], t)
    row = _trials(tmp_path).loc["t1"]
    assert row["best_epoch"] == 3
    assert [row[f"fold_{i}_auc"] for i in range(FOLDS)] == pytest.approx([0.7, 0.8, 0.9])


def test_stopped_early_and_error_trials(writer: ResultsWriter, tmp_path: Path) -> None:
    err = tmp_path / "error.txt"
    err.write_text(RAY_TRACEBACK)
    done = FakeTrial("t_done", {"model": "cnn_tiny", "lr": 0.01})
    early = FakeTrial("t_early", {"model": "cnn", "lr": 0.001})
    bad = FakeTrial("t_bad", {"model": "cnn", "lr": 5.0}, error_file=str(err))

    _run_trial(writer, done, [[0.6] * 3, [0.7] * 3, [0.75] * 3, [0.8] * 3])
    writer.on_trial_complete(0, [], done)
    _run_trial(writer, early, [[0.55] * 3, [0.5] * 3])  # ASHA stopped it after 2 epochs
    writer.on_trial_complete(0, [], early)
    _run_trial(writer, bad, [[0.5, 0.5, float("nan")], [0.52, 0.58, 0.5]])
    writer.on_trial_error(0, [], bad)

    df = _trials(tmp_path)
    assert list(df.index) == ["t_done", "t_early", "t_bad"]  # order of first appearance
    assert df.loc["t_done", "status"] == "TERMINATED"
    assert not df.loc["t_done", "stopped_early"]
    assert df.loc["t_early", "status"] == "TERMINATED"
    assert df.loc["t_early", "stopped_early"]  # fewer epochs than --epochs
    assert df.loc["t_early", "stopped_by"] == "scheduler"
    assert pd.isna(df.loc["t_done", "stopped_by"])
    assert df.loc["t_early", "best_epoch"] == 1
    assert df.loc["t_bad", "status"] == "ERROR"
    assert not df.loc["t_bad", "stopped_early"]  # failed, not stopped
    assert pd.isna(df.loc["t_bad", "stopped_by"])
    assert df.loc["t_bad", "error"] == f"DivergedError: {DIVERGED}"
    assert df.loc["t_bad", "best_epoch"] == 2  # its last good epoch still counts
    assert df.loc["t_early", "cv_auc_mean"] == pytest.approx(0.55)
    # A fold without an AUC (every fold validates on every class, so its scores were
    # not finite) leaves the epoch without a CV mean rather than a mean of the others.
    curves = writer.epoch_rows().set_index(["trial_id", "epoch"])
    assert math.isnan(curves.loc[("t_bad", 1), "cv_auc_mean"])
    assert curves.loc[("t_bad", 2), "cv_auc_mean"] == pytest.approx(0.5333333)
    assert df.loc["t_bad", "model"] == "cnn" and df.loc["t_bad", "lr"] == pytest.approx(5.0)


def test_error_without_error_file(writer: ResultsWriter, tmp_path: Path) -> None:
    t = FakeTrial("t1", {"model": "cnn", "lr": 0.1}, error_file=str(tmp_path / "missing.txt"))
    writer.on_trial_start(0, [], t)
    writer.on_trial_error(0, [], t)  # failed before its first epoch
    row = _trials(tmp_path).loc["t1"]
    assert row["status"] == "ERROR"
    assert row["error"] == "unknown error"
    assert pd.isna(row["best_epoch"]) and math.isnan(row["cv_auc_mean"])
    assert all(math.isnan(row[f"fold_{i}_auc"]) for i in range(FOLDS))
    assert len(_folds(tmp_path)) == 0
    assert list(_folds(tmp_path).columns) == [
        "trial_id",
        "fold",
        "epoch",
        "val_auc",
        "val_acc",
        "val_loss",
    ]


def test_folds_table_one_row_per_trial_fold_epoch(writer: ResultsWriter, tmp_path) -> None:
    a = FakeTrial("a", {"model": "cnn_tiny", "lr": 0.01})
    b = FakeTrial("b", {"model": "cnn_tiny", "lr": 0.02})
    _run_trial(writer, a, [[0.6, 0.7, 0.8], [0.7, 0.8, 0.9]])
    writer.on_trial_complete(0, [], a)
    _run_trial(writer, b, [[0.5, 0.55, 0.6], [0.6, 0.6, 0.6], [0.65, 0.7, 0.75]])
    writer.on_trial_complete(0, [], b)

    f = _folds(tmp_path)
    assert len(f) == (2 + 3) * FOLDS
    assert not f.duplicated(["trial_id", "fold", "epoch"]).any()
    r = f.set_index(["trial_id", "fold", "epoch"])
    assert r.loc[("a", 2, 2), "val_auc"] == pytest.approx(0.9)
    assert r.loc[("b", 0, 3), "val_auc"] == pytest.approx(0.65)
    assert r.loc[("b", 0, 3), "val_loss"] == pytest.approx(1.0 - 0.65 / 2)
    assert r.loc[("b", 0, 3), "val_acc"] == pytest.approx(0.65 - 0.1)
    assert sorted(f["fold"].unique()) == [0, 1, 2]


def test_replayed_epoch_replaces_its_fold_rows(writer: ResultsWriter, tmp_path: Path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    writer.on_trial_start(0, [], t)
    writer.on_trial_result(0, [], t, _report(1, [0.6, 0.6, 0.6], best=0.6, best_epoch=1))
    writer.on_trial_result(0, [], t, _report(2, [0.7, 0.7, 0.7], best=0.7, best_epoch=2))
    writer.on_trial_result(0, [], t, _report(2, [0.65, 0.66, 0.67], best=0.7, best_epoch=2))
    writer.on_trial_complete(0, [], t)
    f = _folds(tmp_path)
    assert len(f) == 2 * FOLDS
    at2 = f[f["epoch"] == 2].sort_values("fold")
    assert at2["val_auc"].tolist() == pytest.approx([0.65, 0.66, 0.67])


def test_replayed_epoch_replaces_it_in_the_trial_row_too(writer, tmp_path: Path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    writer.on_trial_start(0, [], t)
    writer.on_trial_result(0, [], t, _report(1, [0.6, 0.6, 0.6], best=0.6, best_epoch=1))
    writer.on_trial_result(0, [], t, _report(2, [0.9, 0.9, 0.9], best=0.9, best_epoch=2))
    # The trial restarts and epoch 2 is reported again, lower this time.
    writer.on_trial_result(0, [], t, _report(2, [0.5, 0.5, 0.5], best=0.6, best_epoch=1))
    writer.on_trial_complete(0, [], t)
    row = _trials(tmp_path).loc["t1"]
    f = _folds(tmp_path).set_index(["fold", "epoch"])
    for i in range(FOLDS):
        assert row[f"fold_{i}_auc"] == pytest.approx(f.loc[(i, row["best_epoch"]), "val_auc"])
    assert row["best_epoch"] == 1


def test_reports_without_epoch_are_ignored(writer: ResultsWriter, tmp_path: Path) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    _run_trial(writer, t, [[0.6, 0.7, 0.8]])
    writer.on_trial_result(0, [], t, {"done": True, "time_total_s": 99.0})
    writer.on_trial_complete(0, [], t)
    assert len(_folds(tmp_path)) == FOLDS
    assert _trials(tmp_path).loc["t1", "best_epoch"] == 1


def test_files_are_rewritten_on_every_complete_and_error(writer, tmp_path: Path) -> None:
    a = FakeTrial("a", {"model": "cnn_tiny", "lr": 0.01})
    b = FakeTrial("b", {"model": "cnn_tiny", "lr": 0.02}, error_file=None)
    writer.on_trial_start(0, [], a)
    writer.on_trial_start(0, [], b)
    _run_trial(writer, a, [[0.6, 0.7, 0.8]])
    _run_trial(writer, b, [[0.5, 0.5, 0.5]])
    writer.on_trial_complete(0, [], a)

    first = _trials(tmp_path)
    assert first.loc["a", "status"] == "TERMINATED"
    assert first.loc["b", "status"] == "RUNNING"  # partial results readable mid-search
    assert len(_folds(tmp_path)) == 2 * FOLDS

    writer.on_trial_result(0, [], b, _report(2, [0.55, 0.5, 0.5], best=0.52, best_epoch=2))
    writer.on_trial_error(0, [], b)
    second = _trials(tmp_path)
    assert second.loc["b", "status"] == "ERROR"
    assert second.loc["b", "error"] == "unknown error"
    assert len(_folds(tmp_path)) == 3 * FOLDS
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.jsonl",
        "folds.parquet",
        "trials.parquet",
    ]
    # a new writer (a resumed driver) rebuilds the same tables from the event log
    again = ResultsWriter(
        tmp_path, folds=FOLDS, epochs=writer.epochs, param_names=writer.param_names
    )
    again.setup()
    pd.testing.assert_frame_equal(again.trial_rows(), writer.trial_rows())
    pd.testing.assert_frame_equal(again.fold_rows(), writer.fold_rows())


def test_epoch_rows_and_configs(writer: ResultsWriter) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    _run_trial(writer, t, [[0.6, 0.7, 0.8], [0.7, 0.8, 0.9]])
    e = writer.epoch_rows()
    assert e["epoch"].tolist() == [1, 2]
    assert e["cv_auc_mean"].tolist() == pytest.approx([0.7, 0.8])
    assert writer.configs() == {"t1": {"model": "cnn_tiny", "lr": 0.01}}
    # configs are copies: the table cannot be changed through them
    writer.configs()["t1"]["lr"] = 1.0
    assert writer.configs()["t1"]["lr"] == 0.01


def test_a_trial_stopped_at_the_time_budget_says_so_after_a_replay(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    from raydx import budget

    asha, late = FakeTrial("asha", {"lr": 0.01}), FakeTrial("late", {"lr": 0.02})
    budget.arm(0.0)  # already expired: the stopper marks every trial it sees
    try:
        _run_trial(writer, asha, [[0.6] * 3])
        writer.on_trial_complete(0, [], asha)  # ended by ASHA before the deadline
        _run_trial(writer, late, [[0.7] * 3])
        assert budget.BudgetStopper()("late", {"epoch": 1})
        writer.on_trial_complete(0, [], late)
    finally:
        budget.arm(None)
    assert _trials(tmp_path)["stopped_by"].to_dict() == {
        "asha": "scheduler",
        "late": "time budget",
    }
    # a resumed search re-arms the clock; the reason must come from events.jsonl
    writer.replay()
    writer.flush()
    assert _trials(tmp_path).loc["late", "stopped_by"] == "time budget"


def test_an_event_after_a_line_cut_by_a_crash_is_not_lost(writer, tmp_path: Path) -> None:
    """A full disk or a power cut can leave half a line; the next event must not join it
    (replay skips the cut line, and would skip that event with it, on every resume)."""
    a = FakeTrial("a", {"model": "cnn_tiny", "lr": 0.01})
    _run_trial(writer, a, [[0.6, 0.7, 0.8]])
    with writer.log_path.open("a") as f:
        f.write('{"e": "result", "trial_id": "a", "res')  # cut here
    writer.on_trial_complete(0, [], a)
    writer.replay()
    assert writer.trials["a"]["status"] == "TERMINATED"
    assert writer.log_path.read_text().endswith("\n")


def test_mark_unfinished_after_an_interrupted_search(writer, tmp_path: Path) -> None:
    a = FakeTrial("a", {"model": "cnn_tiny", "lr": 0.01})
    b = FakeTrial("b", {"model": "cnn_tiny", "lr": 0.02})
    _run_trial(writer, a, [[0.6, 0.7, 0.8]] * EPOCHS)
    writer.on_trial_complete(0, [], a)
    _run_trial(writer, b, [[0.5, 0.5, 0.5]])  # still running at Ctrl-C
    assert writer.mark_unfinished() == ["b"]
    df = _trials(tmp_path)
    assert df.loc["a", "status"] == "TERMINATED"
    assert df.loc["b", "status"] == "INTERRUPTED"
    assert not df.loc["b", "stopped_early"]  # not stopped by the scheduler
    assert len(_folds(tmp_path)) == (EPOCHS + 1) * FOLDS


def test_a_finished_trial_resumed_from_an_older_snapshot_keeps_its_record(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    """Tune's snapshot lags the record: a trial that the time budget (or ASHA) stopped
    just before the driver died is running there, and a resume restarts it. Its record
    (epochs, who stopped it, CV AUC) stands whatever the restarted trial sends."""
    from raydx import budget

    late = FakeTrial("late", {"model": "cnn_tiny", "lr": 0.01})
    budget.arm(0.0)
    try:
        _run_trial(writer, late, [[0.6, 0.7, 0.8]])
        assert budget.BudgetStopper()("late", {"epoch": 1})
        writer.on_trial_complete(0, [], late)
    finally:
        budget.arm(None)
    before = writer.log_path.read_text()
    resumed = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["model", "lr"])
    resumed.setup()  # Tune's restored copy replays events.jsonl
    assert resumed.finished() == ["late"] and resumed.ended("late")
    resumed.on_trial_start(0, [], late)
    resumed.on_trial_result(0, [], late, _report(2, [0.9] * FOLDS, best=0.9, best_epoch=2))
    resumed.on_trial_complete(0, [], late)  # not at the deadline this time
    resumed.on_trial_error(0, [], late)
    assert writer.log_path.read_text() == before
    resumed.replay()
    resumed.flush()
    row = _trials(tmp_path).loc["late"]
    assert (row["status"], row["epochs_run"], row["stopped_by"]) == ("TERMINATED", 1, "time budget")
    assert row["cv_auc_mean"] == pytest.approx(0.7)


def test_a_trial_the_snapshot_never_held_is_abandoned_and_replaced(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    """A driver killed within Tune's snapshot period of a trial's start leaves its start
    event (and maybe an epoch) but nothing Tune can resume: abandoned on --resume, the
    search no longer waits for it, and another trial takes its place."""
    done = FakeTrial("done", {"model": "cnn_tiny", "lr": 0.01})
    _run_trial(writer, done, [[0.6, 0.7, 0.8]] * EPOCHS)
    writer.on_trial_complete(0, [], done)
    writer.on_trial_start(0, [], FakeTrial("bare", {"model": "cnn_tiny", "lr": 0.02}))
    _run_trial(writer, FakeTrial("begun", {"model": "cnn_tiny", "lr": 0.03}), [[0.9] * FOLDS])
    _run_trial(writer, FakeTrial("held", {"model": "cnn_tiny", "lr": 0.04}), [[0.5] * FOLDS])
    writer.replay()
    assert writer.unfinished() == ["bare", "begun", "held"] and writer.counted() == 4

    assert writer.abandon({"done", "held"}) == ["bare", "begun"]
    assert writer.abandon({"done", "held"}) == []  # said once
    for w in (writer, ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=[])):
        w.replay()  # the record is events.jsonl
        assert w.order == ["done", "begun", "held"]  # "bare" never began
        assert w.unfinished() == ["held"] and w.counted() == 2
        assert not w.ended("held") and w.ended("begun") and "begun" not in w.finished()
    assert writer.mark_unfinished() == ["held"]  # the search ends on "held" alone
    df = _trials(tmp_path)
    assert df["status"].to_dict() == {
        "done": "TERMINATED",
        "begun": "INTERRUPTED",
        "held": "INTERRUPTED",
    }
    assert df.loc["begun", "epochs_run"] == 1 and pd.isna(df.loc["begun", "stopped_by"])
    from raydx.final import pick_winner

    assert pick_winner(df.reset_index())["trial_id"] == "done"  # 0.7 beats "begun"'s 0.9


def test_checkpoint_paths_follow_a_moved_run_folder(tmp_path) -> None:
    """events.jsonl keeps the absolute paths Ray reported; a moved folder resumes there."""
    from raydx.results import _rebased

    old = tmp_path / "old" / "ray" / "train" / "abc" / "checkpoint_1"
    new_root = tmp_path / "moved"
    (new_root / "ray" / "train" / "abc" / "checkpoint_1").mkdir(parents=True)
    assert _rebased(str(old), new_root) == str(new_root / "ray/train/abc/checkpoint_1")
    old.mkdir(parents=True)  # both exist (a copy): the folder being written wins
    assert _rebased(str(old), new_root) == str(new_root / "ray/train/abc/checkpoint_1")
    assert _rebased(str(old), tmp_path / "elsewhere") == str(old)  # nothing there: keep
    assert _rebased(None, new_root) is None


def test_best_epoch_keeps_one_dtype_while_a_trial_has_no_epoch(writer, tmp_path: Path) -> None:
    """trials.parquet is rewritten as trials end: a reader (or a resumed run comparing
    against it) sees integer epochs whether or not some trial has reported yet."""
    a = FakeTrial("a", {"model": "cnn_tiny", "lr": 0.01})
    b = FakeTrial("b", {"model": "cnn_tiny", "lr": 0.02})
    _run_trial(writer, a, [[0.6, 0.7, 0.8]])
    writer.on_trial_complete(0, [], a)
    writer.on_trial_start(0, [], b)  # running, nothing reported
    rows = writer.trial_rows().set_index("trial_id")
    assert str(rows["best_epoch"].dtype) == "Int64"
    assert rows.loc["a", "best_epoch"] == 1 and pd.isna(rows.loc["b", "best_epoch"])
    assert str(_trials(tmp_path)["best_epoch"].dtype) == "Int64"  # the file, read back


def test_parameters_keep_their_type_and_read_missing_where_they_do_not_apply(tmp_path) -> None:
    """A ``when:`` parameter is absent from some trials' configs: its column stays whole
    numbers (not 128.0), yes/no or text, every gap reads ``pd.isna``, and a categorical
    whose choices mix types (which Parquet cannot hold in one column) is written as text."""
    names = ["head", "dense_units", "residual", "dropout", "mixup", "unused"]
    w = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=names)
    configs = {
        "dense": {"head": "dense", "dense_units": 128, "residual": False, "dropout": 0.25},
        "gap": {"head": "gap", "residual": True, "dropout": 0.0, "mixup": 0.2},
        "other_family": {"mixup": "none"},
    }
    for tid, cfg in configs.items():
        t = FakeTrial(tid, cfg)
        _run_trial(w, t, [[0.6, 0.7, 0.8]])
        w.on_trial_complete(0, [], t)
    df = _trials(tmp_path)  # the file, read back
    dtypes = {c: str(df[c].dtype) for c in names[:-1]}
    assert dtypes == {
        "head": "str",
        "dense_units": "Int64",
        "residual": "boolean",
        "dropout": "float64",
        "mixup": "str",
    }
    assert df.loc["dense", "dense_units"] == 128 and pd.isna(df.loc["gap", "dense_units"])
    assert df["residual"].tolist()[:2] == [False, True]
    assert df.loc["gap", "mixup"] == "0.2" and df.loc["other_family", "mixup"] == "none"
    missing = [
        ("other_family", "head"),
        ("other_family", "residual"),
        ("other_family", "dropout"),
        ("dense", "mixup"),
        ("dense", "unused"),
    ]
    assert all(pd.isna(df.loc[t, c]) for t, c in missing)
    assert df["error"].isna().all()
    assert str(df["unused"].dtype) == "object"  # no trial and no space tells its type


def test_a_parameter_no_trial_takes_has_its_spaces_type(tmp_path) -> None:
    """An audit: ``dense_units`` of two ``head: gap`` trials, and ``lr`` conditioned out
    of every trial, were written as Parquet ``null`` columns, not the documented types."""
    from raydx.space import parse_space

    dense = {"head": "dense"}
    with pytest.warns(UserWarning, match=r"params dense_units, lr, depth, residual: never"):
        space = parse_space(
            {
                "run": {"family": "cnn"},
                "params": {
                    "model": "cnn",
                    "head": "gap",
                    "dense_units": {"type": "categorical", "choices": [64, 128], "when": dense},
                    "lr": {"type": "float", "low": 1, "high": 2, "when": {"model": "cnn_seed"}},
                    "depth": {"type": "int", "low": 2, "high": 3, "when": dense},
                    "residual": {"type": "categorical", "choices": [False, True], "when": dense},
                },
            }
        )  # fmt: skip
    names = space.param_names()
    w = ResultsWriter(
        tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=names, param_values=space.param_values()
    )
    t = FakeTrial("gap", {"model": "cnn", "head": "gap"})
    _run_trial(w, t, [[0.6, 0.7, 0.8]])
    w.on_trial_complete(0, [], t)
    df = _trials(tmp_path)
    assert {c: str(df[c].dtype) for c in names} == {
        "model": "str",
        "head": "str",
        "dense_units": "Int64",
        "lr": "float64",  # a float range, though its ends were written as whole numbers
        "depth": "Int64",
        "residual": "boolean",
    }
    assert df[["dense_units", "lr", "depth", "residual"]].isna().all().all()


def test_write_yaml_takes_numpy_scalars_as_plain_numbers(tmp_path):
    import yaml

    obj = {"auc": np.float64(0.9), "n": np.int64(3), "ci": [np.float32(0.5), 0.75], "t": (1, 2)}
    write_yaml(obj, tmp_path / "x.yaml")
    assert yaml.safe_load((tmp_path / "x.yaml").read_text()) == {
        "auc": 0.9,
        "n": 3,
        "ci": [0.5, 0.75],
        "t": [1, 2],
    }


def test_json_files_are_strict_json(tmp_path) -> None:
    """A score that is undefined (nan) is null: JavaScript and jq reject a bare NaN."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    write_json(
        {"slope": float("nan"), "ci": [np.float32(0.25), np.inf], "n": np.int64(3)},
        tmp_path / "m.json",
    )
    got = json.loads((tmp_path / "m.json").read_text(), parse_constant=refuse)
    assert got == {"slope": None, "ci": [0.25, None], "n": 3}


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_an_ordinary_file_gets(tmp_path, umask: int) -> None:
    """mkstemp makes 0600 files: a shared run folder's report and card were unreadable to
    colleagues who could read the weights."""
    import os

    from raydx.results import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.txt", lambda p: p.write_text("x"))
        (tmp_path / "b.txt").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "b.txt").stat().st_mode


def test_tunes_own_restore_hint_is_hidden_and_its_other_warnings_kept(caplog) -> None:
    """An interrupted search printed Ray Tune's "Tuner.restore(...)" before raydx's
    "raydx tune --resume RUN"; a new user could follow the wrong one."""
    import logging

    from raydx.run import hide_tune_restore_hint

    hide_tune_restore_hint()
    hide_tune_restore_hint()  # once is enough, twice changes nothing
    log = logging.getLogger("ray.tune.tune")
    assert len(log.filters) == 1
    with caplog.at_level(logging.WARNING, logger="ray.tune.tune"):
        log.warning(
            "Experiment has been interrupted, but the most recent state was saved.\n"
            "Resume experiment with: Tuner.restore(path='x', trainable=...)"
        )
        log.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def _checkpoint(d: Path, record: list[dict], *, folds: int = FOLDS, meta: bool = True) -> Path:
    """A trial checkpoint as fold_worker saves it: a state and out-of-fold file per fold,
    and rank 0's record of every epoch so far."""
    from raydx.cv import CKPT_META, oof_file, state_file

    d.mkdir(parents=True)
    for f in range(folds):
        (d / state_file(f)).write_bytes(b"state")
        (d / oof_file(f)).write_bytes(b"oof")
    if meta:
        best = max(record, key=lambda r: r["cv_auc_mean"])
        info = {"epoch": record[-1]["epoch"], "best_epoch": best["epoch"], "history": record}
        (d / CKPT_META).write_text(json.dumps(info))
    return d


def test_epochs_of_a_checkpoint_whose_report_never_came_are_recovered(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    """Stopped between Ray Train's checkpoint and Tune's taking its report (seen once in
    CI, at a time-budget stop): the checkpoint Tune knew had been deleted."""
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    e = [
        _worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1),
        _worker_epoch(2, [0.9, 0.8, 0.7], 0.8, 2),
        _worker_epoch(3, [0.7, 0.7, 0.7], 0.8, 2),
    ]
    train = tmp_path / "ray" / "train"
    writer.on_trial_start(0, [], t)
    gone = str(train / "t1" / "checkpoint_2026-01-01_00-00-01.000000")
    writer.on_trial_result(0, [], t, e[0] | {"checkpoint_path": gone, "time_total_s": 5.0})
    writer.on_trial_complete(0, [], t)
    # a newer checkpoint, complete; and a newest one cut short (no record: rank 0 had
    # not written its part)
    newer = _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-02.000000", e)
    _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-03.000000", e, meta=False)

    assert writer.recover_unreported(train) == ["t1"]
    writer.flush()
    row = _trials(tmp_path).loc["t1"]
    assert row["epochs_run"] == 3 and row["best_epoch"] == 2
    assert row["cv_auc_mean"] == pytest.approx(0.8)
    assert row["checkpoint_path"] == str(newer)
    assert row["time_total_s"] == pytest.approx(5.0)  # the last time Tune measured
    assert sorted(_folds(tmp_path)["epoch"].unique()) == [1, 2, 3]
    # in the event log, so a resumed or re-read run sees the same; and only once
    assert writer.recover_unreported(train) == []
    again = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["model", "lr"])
    again.replay()
    assert again.trial_rows().set_index("trial_id").loc["t1", "epochs_run"] == 3


def test_running_and_failed_trials_are_left_to_resume_and_their_errors(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    train = tmp_path / "ray" / "train"
    e = [_worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1), _worker_epoch(2, [0.7] * 3, 0.7, 2)]
    running, failed = FakeTrial("r1", {"model": "cnn_tiny"}), FakeTrial("f1", {"model": "x"})
    for t in (running, failed):
        writer.on_trial_start(0, [], t)
        writer.on_trial_result(0, [], t, e[0])
        _checkpoint(train / t.trial_id / "checkpoint_2026-01-01_00-00-02.000000", e)
    writer._event({"e": "error", "trial_id": "f1", "error": "boom"})
    assert writer.recover_unreported(train) == []


def _trial_with_a_newer_checkpoint(
    writer: ResultsWriter, tmp_path: Path
) -> tuple[FakeTrial, list[dict], Path, Path, Path]:
    """A trial whose record names its epoch-1 checkpoint, beside a complete one of
    epoch 2 whose report the record lacks."""
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    e = [_worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1), _worker_epoch(2, [0.9] * 3, 0.9, 2)]
    train = tmp_path / "ray" / "train"
    known = _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-01.000000", e[:1])
    newer = _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-02.000000", e)
    writer.on_trial_start(0, [], t)
    writer.on_trial_result(0, [], t, e[0] | {"checkpoint_path": str(known)})
    return t, e, train, known, newer


def test_a_trial_whose_known_checkpoint_is_there_keeps_its_record(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    """Stopped by the scheduler after epoch 1, it trained and checkpointed epoch 2 before
    it ended; Ray Train kept the checkpoint Tune knows (it keeps two): the record stays
    what the scheduler judged."""
    t, _, train, known, later = _trial_with_a_newer_checkpoint(writer, tmp_path)
    writer.on_trial_complete(0, [], t)
    assert writer.recover_unreported(train) == []
    # the search is over: the spare goes, the one the record names stays
    assert writer.prune_checkpoints(train) == 1
    assert known.is_dir() and not later.exists()
    assert _trials(tmp_path).loc["t1", "epochs_run"] == 1


def test_a_resumed_trials_resent_epoch_gets_the_checkpoint_it_came_from(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    """An audit: a Ctrl-C just after Ray Train's epoch-2 checkpoint, before its report;
    on --resume the Train run sent epoch 2 again from that checkpoint's record, without
    it. The record named the epoch-1 checkpoint, the end of the search deleted the newer
    one, and the winner ("checkpoint ... is not its best epoch") could never be scored."""
    t, e, train, known, newer = _trial_with_a_newer_checkpoint(writer, tmp_path)
    writer.on_trial_result(0, [], t, e[1])  # sent again after the restore: no checkpoint
    writer.on_trial_complete(0, [], t)
    # a record cut short (a review: it crashed the end of the search) is not one to take
    from raydx.cv import CKPT_META

    cut = _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-03.000000", e)
    (cut / CKPT_META).write_text('{"epoch": 2, "hist')
    assert writer.recover_unreported(train) == ["t1"]
    writer.flush()
    row = _trials(tmp_path).loc["t1"]
    assert (row["epochs_run"], row["best_epoch"]) == (2, 2)
    assert row["checkpoint_path"] == str(newer)
    assert writer.prune_checkpoints(train) == 2
    assert newer.is_dir() and not known.exists() and not cut.exists()
    assert list(writer.epoch_rows()["epoch"]) == [1, 2]  # the replayed epoch once
    assert writer.recover_unreported(train) == []  # and only once


def test_an_unfinished_trials_checkpoints_are_all_kept(
    writer: ResultsWriter, tmp_path: Path
) -> None:
    t = FakeTrial("t1", {"model": "cnn_tiny", "lr": 0.01})
    e = [_worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1), _worker_epoch(2, [0.7] * 3, 0.7, 2)]
    train = tmp_path / "ray" / "train"
    known = _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-01.000000", e[:1])
    _checkpoint(train / "t1" / "checkpoint_2026-01-01_00-00-02.000000", e)
    writer.on_trial_start(0, [], t)
    writer.on_trial_result(0, [], t, e[0] | {"checkpoint_path": str(known)})
    assert writer.prune_checkpoints(train) == 0
    assert len(list((train / "t1").glob("checkpoint_*"))) == 2


def test_an_abandoned_trials_checkpoints_all_go(writer: ResultsWriter, tmp_path: Path) -> None:
    """Begun before Tune's snapshot held it, it can never be continued (--resume abandons
    it): none of its checkpoints is of use; a running trial beside it keeps both."""
    e = [_worker_epoch(1, [0.6, 0.6, 0.6], 0.6, 1), _worker_epoch(2, [0.7] * 3, 0.7, 2)]
    train = tmp_path / "ray" / "train"
    for tid in ("lost", "held"):
        writer.on_trial_start(0, [], FakeTrial(tid, {"model": "cnn_tiny", "lr": 0.01}))
        known = _checkpoint(train / tid / "checkpoint_2026-01-01_00-00-01.000000", e[:1])
        _checkpoint(train / tid / "checkpoint_2026-01-01_00-00-02.000000", e)
        writer.on_trial_result(0, [], FakeTrial(tid, {}), e[0] | {"checkpoint_path": str(known)})
    assert writer.abandon({"held"}) == ["lost"]
    assert writer.prune_checkpoints(train) == 2
    assert list((train / "lost").glob("checkpoint_*")) == []
    assert len(list((train / "held").glob("checkpoint_*"))) == 2


# ---------------------------------------------------------------- resuming on the same data


def _table(labels: list[int]) -> Any:
    from raydx.data.table import ImageTable

    n = len(labels)
    return ImageTable(
        images=np.arange(n * 4, dtype=np.uint8).reshape(n, 2, 2, 1),
        labels=np.array(labels, dtype=np.int64),
        sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        class_names=("benign", "malignant"),
        name="t",
    )


def test_a_resumed_run_checks_the_fingerprint_of_its_own_version() -> None:
    from raydx.data.table import FINGERPRINT_VERSION
    from raydx.errors import RaydxError
    from raydx.run import check_fingerprint

    table = _table([0, 1, 0])
    saved = {"fingerprint": table.fingerprint(), "fingerprint_version": FINGERPRINT_VERSION}
    lines: list[str] = []
    check_fingerprint(saved, table, "d.csv", lines.append)
    assert lines == []
    with pytest.raises(RaydxError, match=r"^the images or labels of 'd\.csv' changed since"):
        check_fingerprint(saved, _table([0, 1, 1]), "d.csv", lines.append)
    check_fingerprint({}, table, "d.csv", lines.append)  # no fingerprint saved: nothing
    assert lines == []
    # an older raydx took BUSI's masks for images: not "changed", the reader did
    older = _table([0, 1, 1])
    older.info["notes"] = [
        "2 segmentation masks passed over (named as the image beside them plus _mask, _seg "
        "or _gt: 'b/x_mask.png'): a mask is the answer drawn, not an image to diagnose"
    ]
    with pytest.raises(RaydxError) as e:
        check_fingerprint(saved, older, "busi", lines.append)
    assert str(e.value) == (
        "the images of 'busi' are not the run's: this raydx passes over what an older one "
        "took for images (2 segmentation masks passed over), so the run cannot be resumed "
        "on them; start a new run."
    )


def test_run_json_records_the_fingerprint_version() -> None:
    from raydx.config import RunOptions
    from raydx.data.table import FINGERPRINT_VERSION
    from raydx.run_folder import provenance
    from raydx.space import parse_space

    table = _table([0, 1, 0])
    space = parse_space({"params": {"family": "cnn", "lr": 0.001}})
    data = provenance(RunOptions(), space, table, 1)["data"]
    assert data["fingerprint"] == table.fingerprint()
    assert data["fingerprint_version"] == FINGERPRINT_VERSION == 2


@pytest.mark.parametrize("version", [None, 1])
def test_a_fingerprint_of_an_older_raydx_is_a_warning_not_a_change(version: int | None) -> None:
    """Today's readers hash some images (grey stored as RGB, palette, 1-bit, ...) and read
    labels `1.0` otherwise: a run started before could not be resumed at all."""
    from raydx.run import check_fingerprint

    saved: dict[str, Any] = {"fingerprint": "0" * 64}  # what an older raydx computed
    if version is not None:
        saved["fingerprint_version"] = version
    lines: list[str] = []
    same = {**saved, "fingerprint": _table([0, 1, 0]).fingerprint()}
    check_fingerprint(same, _table([0, 1, 0]), "d.csv", lines.append)
    assert lines == []  # most images hash as they did: then nothing to say
    check_fingerprint(saved, _table([0, 1, 0]), "d.csv", lines.append)
    assert lines == [
        "raydx: warning: the images of 'd.csv' cannot be checked against the run's: its "
        "fingerprint was made by an older raydx, which read some images (or labels) into "
        "other values. Going on without that check (the folds are still compared)."
    ]


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        ("ray.exceptions.ActorDiedError: The actor died unexpectedly", "lost its process or node"),
        (
            "raydx.cv.OutOfGpuMemory: out of memory on the GPU, the first time in this trial",
            "ran out of GPU memory, the first time",
        ),
        (  # an audit: Ray's memory monitor, read as a lost process
            "ray.train.ControllerError: ... ray.exceptions.OutOfMemoryError: Task was killed "
            "due to the node running low on memory.",
            "had processes killed by Ray's memory monitor (the node ran low on memory: fewer "
            "trials at once, or a smaller --image-size, would help)",
        ),
    ],
)
def test_a_restarted_trial_is_said_with_why(tmp_path: Path, raised: str, said: str) -> None:
    lines: list[str] = []
    w = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["lr"], log=lines.append)
    err = tmp_path / "error.txt"
    err.write_text(f"Failure # 1 (occurred at 2026-12-06)\nTraceback ...\n{raised}\n")
    t = FakeTrial("t1", {"lr": 0.1}, error_file=str(err))
    t.num_failures, t.max_failures = 1, 2  # type: ignore[attr-defined]
    w.on_trial_start(0, [], t)
    w.on_trial_recover(0, [], t)  # before any checkpoint: its worker never started, say
    assert lines[-1].endswith("); started again (restart 1 of 2)"), lines
    w.on_trial_result(0, [], t, _worker_epoch(1, [0.6] * 3, 0.6, 1) | {"checkpoint_path": "c"})
    t.num_failures = 2  # type: ignore[attr-defined]
    w.on_trial_recover(0, [], t)
    restarts = [line for line in lines if "restarted from its last checkpoint" in line]
    assert len(restarts) == 1 and f"(t1) {said} (" in restarts[0], lines
    assert "(restart 2 of 2)" in restarts[0]


def test_a_trial_the_record_has_finished_ends_at_once_when_tune_resumes_it(monkeypatch) -> None:
    """Resumed from a snapshot older than its end, such a trial returned to training
    (ASHA's restored rungs are empty): it now returns before any fold worker starts."""
    import ray.tune

    from raydx.cv import trial_fn

    class Context:
        def get_trial_id(self) -> str:
            return "stopped"

    monkeypatch.setattr(ray.tune, "get_context", lambda: Context())
    assert trial_fn({"lr": 0.01}, spec={"finished": ["stopped"]}) is None  # no other key read
    with pytest.raises(KeyError):  # any other trial goes on to its fold workers
        trial_fn({"lr": 0.01}, spec={"finished": ["other"]})


def test_run_json_records_the_checkouts_commit_and_its_uncommitted_changes(tmp_path) -> None:
    """An audit: run.json named a commit while five source files differed from it; and a
    raydx installed into a virtualenv inside another repository would have recorded that
    repository's commit."""
    import subprocess

    from raydx.run_folder import git_state

    def git(*args: str, cwd=tmp_path) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=cwd, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    pkg = tmp_path / "raydx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text("x = 1\n")
    git("add", ".")
    git("commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    assert git_state(pkg) == {"git_commit": head, "git_changed": []}
    (pkg / "run.py").write_text("x = 2\n")
    (pkg / "new.py").write_text("")  # untracked: not code the commit names
    assert git_state(pkg) == {"git_commit": head, "git_changed": ["raydx/run.py"]}
    git("mv", "raydx/run.py", "raydx/new name.py")  # a rename, a space: both paths, as is
    changed = ["raydx/new name.py", "raydx/run.py"]
    assert git_state(pkg) == {"git_commit": head, "git_changed": changed}
    git("add", "raydx/new name.py")
    (pkg / "new name.py").write_text("x = 3\n")  # staged and changed again: listed once
    assert git_state(pkg) == {"git_commit": head, "git_changed": changed}
    # installed into site-packages of a virtualenv inside a project's repository
    site = tmp_path / ".venv" / "lib" / "site-packages" / "raydx"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    assert git_state(site) == {"git_commit": None}
    assert git_state(tmp_path / "raydx_elsewhere") == {"git_commit": None}  # no such folder


def test_the_first_epoch_reported_says_how_long_a_whole_trial_takes(tmp_path, monkeypatch) -> None:
    """An audit: 96-px tiles took minutes an epoch, and nothing said so before the
    first trial ended, nor that a 3-minute budget could not hold one trial."""
    from raydx import budget

    class Clock:
        now = 1000.0

        def perf_counter(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(budget, "time", clock)
    said: list[str] = []
    w = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=[], log=said.append)
    budget.arm(None)
    _run_trial(w, FakeTrial("a", {}), [[0.6, 0.7, 0.8]] * 2)
    _run_trial(w, FakeTrial("b", {}), [[0.6, 0.7, 0.8]])
    epoch_s = float(FOLDS)  # _report: fold i's epoch took 1 + i s; the slowest counts
    assert [x for x in said if "an epoch of trial" in x] == [
        f"raydx: an epoch of trial 1 took {epoch_s:.1f} s ({FOLDS} folds): a trial that "
        f"runs all {EPOCHS} epochs takes about {epoch_s * EPOCHS:.0f} s at this pace"
    ]  # once a search

    def first_line(budget_s: float, spent_s: float, epoch_s: float) -> str:
        said.clear()
        budget.arm(budget_s, start=clock.now - spent_s)
        out = tmp_path / f"b{budget_s}-{spent_s}"
        out.mkdir()
        w = ResultsWriter(out, folds=FOLDS, epochs=EPOCHS, param_names=[], log=said.append)
        w.on_trial_start(0, [], FakeTrial("c", {}))
        w.on_trial_result(0, [], FakeTrial("c", {}), {**_report(1, [0.7] * FOLDS, best=0.7,
                          best_epoch=1), "epoch_time_s": epoch_s})  # fmt: skip
        return said[-1]

    # 3 epochs to go at 100 s: the 200 s left do not hold them
    assert first_line(600.0, 400.0, 100.0).endswith(
        "takes about 6.7 min at this pace; the time budget has 3.3 min left, so trials stop "
        "before their last epoch (a smaller --image-size, fewer folds or epochs shorten them)"
    )
    assert first_line(600.0, 200.0, 100.0).endswith("at this pace")  # 400 s left: they fit
    # the audit: a first epoch of 257 s past a 3-minute budget
    assert first_line(180.0, 300.0, 257.2).endswith(
        "; the time budget is spent, so trials stop at their next report (a smaller "
        "--image-size, fewer folds or epochs shorten them)"
    )
    budget.arm(None)


def test_config_json_training_block_leaves_out_what_the_configuration_does_not_read() -> None:
    from raydx.final import training_settings

    cnn = training_settings(TrialConfig.from_params({"optimizer": "adamw", "lr": 0.01}))
    assert cnn["optimizer"] == "adamw" and cnn["lr"] == 0.01 and "momentum" not in cnn
    assert "augment" in cnn and "model_params" not in cnn
    assert training_settings(TrialConfig.from_params({"optimizer": "sgd"}))["momentum"] == 0.9
    ae = {"family": "autoencoder", "lr": 0.01, "batch_size": 32}
    assert training_settings(TrialConfig.from_params(ae))["lr"] == 0.01  # classifier mode
    # anomaly mode learns with ae_lr (a family parameter) and trains no classifier
    anomaly = TrialConfig.from_params({**ae, "ae_mode": "anomaly"})
    assert training_settings(anomaly) == {"batch_size": 32}


def test_predictions_name_each_class_probability_as_predict_does() -> None:
    """predictions.parquet said ``prob_0``, ``prob_1``, ... where ``raydx predict``'s table
    says ``prob_<class name>``: the same model's two tables did not join by column."""
    from raydx.data.folds import Splits
    from raydx.data.table import ImageTable
    from raydx.final import _predictions

    names = ("benign", "malignant", "normal")
    table = ImageTable(
        np.zeros((4, 2, 2, 1), np.uint8),
        np.array([0, 1, 2, 1]),
        np.array(["a", "b", "c", "d"], dtype=object),
        names,
        "t",
    )
    splits = Splits(np.array(["cv", "cv", "cv", "test"], dtype=object), np.array([0, 1, 0, -1]), 2)
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3]])
    df = _predictions(table, splits, 1, np.arange(3), prob[:3], np.array([3]), prob[3:])
    assert [c for c in df.columns if c.startswith("prob")] == [
        "prob",
        "prob_benign",
        "prob_malignant",
        "prob_normal",
    ]
    np.testing.assert_allclose(df["prob"], df["prob_malignant"])
    assert df.set_index("sample_id").loc["d", "prob_benign"] == 0.3


def test_each_done_line_says_the_best_trial_so_far(tmp_path: Path) -> None:
    """Hundreds of trials scroll past; Tune's status table lists the first, not the best.
    Ranked as the winner is: a failed trial's AUC is not, and on a tie the smaller spread
    leads."""
    said: list[str] = []
    w = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["lr"], log=said.append)

    def finish(tid: str, aucs: list[float], *, fail: bool = False) -> None:
        t = FakeTrial(tid, {"model": "cnn_tiny", "lr": 0.01})
        _run_trial(w, t, [aucs])
        if fail:
            w.on_trial_error(0, [], t)
        else:
            w.on_trial_complete(0, [], t)

    finish("a", [0.7] * FOLDS)
    finish("b", [0.7, 0.8, 0.9])  # mean 0.8, std 0.08
    finish("c", [0.75] * FOLDS)
    finish("d", [0.95] * FOLDS, fail=True)  # failed: not ranked
    finish("e", [0.5] * FOLDS)
    finish("f", [0.8] * FOLDS)  # mean 0.8 too, no spread: the winner's rule puts it first
    finish("g", [0.6] * FOLDS)
    done = [line for line in said if " done: " in line]
    assert "best so far" not in done[0]  # a first trial: nothing to compare
    assert "; 1 epoch (stopped by the scheduler)" in done[0]
    assert done[1].endswith("; best so far")  # this one leads
    assert done[2].endswith("; best so far 0.800 (trial 2)")
    assert done[3].endswith("; best so far 0.800 (trial 2)")  # e: d's 0.95 is not counted
    assert done[4].endswith("; best so far")  # f: the tie goes to the smaller spread
    assert done[5].endswith("; best so far 0.800 (trial 6)")
    assert not any(" failed: " in line and "best so far" in line for line in said)


def test_best_so_far_follows_reports_that_arrive_after_it_was_said(tmp_path: Path) -> None:
    """The leader is remembered per trial for speed (a "done" line at 2,000 trials cost
    35 ms); a report applied after the line must still count, and a pickled
    writer (Tune's experiment snapshot) carries no such memory."""
    said: list[str] = []
    w = ResultsWriter(tmp_path, folds=FOLDS, epochs=EPOCHS, param_names=["lr"], log=said.append)
    for tid, aucs in (("a", [0.7] * FOLDS), ("b", [0.6] * FOLDS)):
        t = FakeTrial(tid, {"model": "cnn_tiny", "lr": 0.01})
        _run_trial(w, t, [aucs])
        w.on_trial_complete(0, [], t)
    assert said[-1].endswith("; best so far 0.700 (trial 1)")
    late = _report(2, [0.9] * FOLDS, best=0.9, best_epoch=2)
    w._apply({"e": "result", "trial_id": "b", "result": late})
    assert w._best_so_far("a").endswith("; best so far 0.900 (trial 2)")
    assert "_best_cache" not in w.__getstate__()
    restored = pickle.loads(pickle.dumps(w))
    assert restored._best_cache == {} and restored.told == w.told
    assert restored._best_so_far("a") == w._best_so_far("a")
    # a writer pickled by a raydx from before "told" and the memory: both start empty
    older = ResultsWriter.__new__(ResultsWriter)
    older.__setstate__({k: v for k, v in w.__getstate__().items() if k != "told"})
    assert older.told == {} and older._best_cache == {}
    assert older._best_so_far("a") == w._best_so_far("a")
