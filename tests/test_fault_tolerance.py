"""Nothing lost: real kills of workers and of the driver, and failing configurations."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from raydx.space import parse_space

pytestmark = [pytest.mark.slow, pytest.mark.ray]

REPO = Path(__file__).resolve().parents[1]


def _events(out: Path) -> list[dict]:
    path = out / "events.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip().endswith("}")]


def _epochs(out: Path, trial_id: str) -> list[int]:
    return [
        e["result"]["epoch"]
        for e in _events(out)
        if e["e"] == "result" and e["trial_id"] == trial_id
    ]


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _seed_space(**run):
    return parse_space(
        {
            "run": {"scheduler": "none", **run},
            "params": {"model": "cnn_seed", "lr": {"type": "float", "low": 1e-4, "high": 3e-3}},
            "enqueue": [{"lr": 1e-3}],
        }
    )


def test_a_diverging_configuration_fails_alone_and_is_not_retried(tmp_path, ray_session):
    from raydx.run import tune

    space = parse_space(
        {
            "run": {"scheduler": "none"},
            "params": {
                "model": "cnn_tiny",
                "optimizer": "sgd",
                "lr": {"type": "categorical", "choices": [1.0e30, 0.01]},
            },
            "enqueue": [{"lr": 1.0e30}, {"lr": 0.01}],
        }
    )
    started = time.monotonic()
    lines: list[str] = []
    res = tune(
        space,
        data="synthetic:200",
        trials=2,
        folds=2,
        epochs=2,
        output=tmp_path / "out",
        log=lines.append,
    )
    trials = res.trials.set_index("trial_id")
    bad = trials[trials["lr"] == 1.0e30].iloc[0]
    good = trials[trials["lr"] == 0.01].iloc[0]
    assert bad.status == "ERROR"
    assert "DivergedError" in bad.error and "epoch 1" in bad.error
    assert good.status == "TERMINATED"
    assert res.best["trial_id"] == good.name
    # ended as a status, not through Ray Train's worker-group restarts, nor trained
    # again when Tune restarted the trial (raydx.cv.failed_before), nor said to be lost
    assert _epochs(res.output, bad.name) == []
    assert not [e for e in _events(res.output) if e["e"] == "recover"]
    assert not [line for line in lines if "lost its process" in line]
    # nor restarted by Tune's FailureConfig (raydx.retry): Tune's error file holds one
    # "Failure # N" section per time the trial raised
    (error_file,) = (res.output / "ray").glob(f"*/*{bad.name}*/error.txt")
    assert error_file.read_text().count("Failure # ") == 1
    assert time.monotonic() - started < 240
    # tune's run.json holds the version of the fingerprint it compares on --resume
    from raydx.data.table import FINGERPRINT_VERSION

    run = json.loads((res.output / "run.json").read_text())
    assert run["data"]["fingerprint_version"] == FINGERPRINT_VERSION


def _our_processes(pattern: str) -> list[int]:
    """Processes matching ``pattern`` that descend from this one: the Ray it started,
    not another Ray on the same machine."""
    pids = [
        int(x)
        for x in subprocess.run(
            ["pgrep", "-f", pattern], capture_output=True, text=True
        ).stdout.split()
    ]

    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return 0

    def ours(pid: int) -> bool:
        while pid > 1:
            if pid == os.getpid():
                return True
            pid = parent(pid)
        return False

    return [pid for pid in pids if ours(pid)]


@pytest.mark.parametrize(
    "process",
    [
        "ray::RayTrainWorker",  # one fold worker: Ray Train restarts the worker group
        "ray::ImplicitFunc",  # the trial itself (as when its node is lost): Tune restarts it
    ],
)
def test_sigkill_resumes_the_trial_from_its_checkpoint(tmp_path, ray_session, process):
    from raydx.run import tune

    out = tmp_path / "out"
    box: dict = {}
    lines: list[str] = []

    def run():
        try:
            box["res"] = tune(
                _seed_space(),
                data="synthetic:600",
                trials=1,
                folds=2,
                epochs=12,
                output=out,
                checkpoint_every=1,
                log=lines.append,
            )
        except BaseException as e:  # surfaced below
            box["err"] = e

    t = threading.Thread(target=run)
    t.start()
    _wait(
        lambda: any(e["e"] == "result" and e["result"]["epoch"] >= 3 for e in _events(out)),
        180,
        "epoch 3",
    )
    pids = _our_processes(process)
    assert pids, f"no {process} process found"
    os.kill(pids[0], signal.SIGKILL)
    t.join(timeout=300)
    assert not t.is_alive()
    assert "err" not in box, box.get("err")
    res = box["res"]
    tid = res.trials.iloc[0]["trial_id"]
    assert res.trials.iloc[0]["status"] == "TERMINATED"
    reports = [e["result"] for e in _events(out) if e["e"] == "result"]
    resumed = [r for r in reports if r["resumed_from"] > 0]
    # the trial went on, from its checkpoint and not from epoch 0 ...
    assert resumed, f"the killed {process} did not make the trial restart"
    first = resumed[0]
    assert first["epoch"] == first["resumed_from"] + 1
    # ... and, checkpointing every epoch, lost at most the epoch in flight
    assert first["resumed_from"] >= 3
    folds = pd.read_parquet(out / "folds.parquet")
    epochs = sorted(folds[folds.trial_id == tid]["epoch"].unique())
    assert epochs == list(range(1, 13))
    assert len(folds[folds.trial_id == tid]) == 2 * 12
    said = [line for line in lines if "lost its process or node" in line]
    if process == "ray::ImplicitFunc":  # Tune's restart, said on the console and kept
        assert len(said) == 1 and "restart 1 of 2" in said[0], lines
        assert [e["e"] for e in _events(out)].count("recover") == 1
    else:  # Ray Train's, inside the trial: Tune never saw it
        assert said == []


def test_sigkill_of_the_driver_then_resume_keeps_finished_trials(tmp_path, ray_session):
    from raydx.run import resume

    EPOCHS = 15  # enough that the killed trial is mid-way on a machine 3x faster than CI

    out = tmp_path / "out"
    space_file = tmp_path / "space.yaml"
    space_file.write_text(
        "run: {scheduler: none}\n"
        "params:\n  model: cnn_seed\n  lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\n"
        "enqueue:\n  - {lr: 0.001}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "raydx.cli",
        "tune",
        "--space",
        str(space_file),
        "--data",
        "synthetic:1200",
        "--trials",
        "3",
        "--folds",
        "2",
        "--epochs",
        str(EPOCHS),
        "--output",
        str(out),
        "--checkpoint-every",
        "1",
        "--max-concurrent-trials",
        "2",  # as on 2 cores anywhere: the third trial starts after one has finished
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    running: list[str] = []
    try:

        def one_done_and_one_running() -> bool:
            # The running trial must be far from its last epoch: a trial whose final
            # checkpoint is already written (its report still on the way) has nothing
            # left to resume. Trials that started with the finished one are too close
            # to their end, so this waits for one started after it.
            ev = _events(out)
            done = {e["trial_id"] for e in ev if e["e"] == "complete"}
            latest: dict[str, int] = {}
            for e in ev:
                if e["e"] == "result" and e["trial_id"] not in done:
                    latest[e["trial_id"]] = max(latest.get(e["trial_id"], 0), e["result"]["epoch"])
            running[:] = [t for t, n in latest.items() if 2 <= n <= EPOCHS // 3]
            return bool(done) and bool(running)

        def snapshot_holds_it() -> bool:
            # Tune writes its experiment snapshot every few seconds; resume knows only
            # the trials it holds. Waiting for it, not for a fixed time, keeps the trial
            # unfinished on a fast machine.
            states = (out / "ray" / "tune").glob("experiment_state-*.json")
            return any(running[0] in f.read_text() for f in states)

        _wait(one_done_and_one_running, 400, "one finished and one running trial")
        _wait(snapshot_holds_it, 30, "Tune's snapshot of the running trial")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
        proc.wait()
    before = pd.read_parquet(out / "trials.parquet")
    finished = before[before.status == "TERMINATED"].set_index("trial_id")
    assert len(finished) >= 1
    ev = _events(out)
    done = {e["trial_id"] for e in ev if e["e"] == "complete"}
    seen: dict[str, int] = {}  # the last epoch each interrupted trial reported
    for e in ev:
        if e["e"] == "result" and e["trial_id"] not in done:
            seen[e["trial_id"]] = max(seen.get(e["trial_id"], 0), e["result"]["epoch"])
    assert any(2 <= n < EPOCHS for n in seen.values()), seen
    # a run folder may be moved before it is resumed: nothing may write to the old path
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    out = moved

    lines: list[str] = []
    res = resume(out, log=lines.append)

    after = res.trials.set_index("trial_id")
    assert len(after) == 3
    assert (after.status == "TERMINATED").all()
    for tid in set(after.index) - set(finished.index):  # the restored writer still says so
        assert any(f"({tid}) done: CV AUC" in line for line in lines), (tid, lines)
    cols = ["cv_auc_mean", "cv_auc_std", "best_epoch", "lr"]
    pd.testing.assert_frame_equal(after.loc[finished.index, cols], finished[cols])
    for tid, n in seen.items():  # went on from its checkpoint, not from epoch 1
        fresh = [
            e["result"]
            for e in _events(out)
            if e["e"] == "result" and e["trial_id"] == tid and e["result"]["resumed_from"] > 0
        ]
        assert fresh, f"trial {tid} did not continue from a checkpoint"
        assert fresh[0]["epoch"] == fresh[0]["resumed_from"] + 1
        # Every reported epoch had its checkpoint (checkpoint_every 1); workers that
        # outlive the driver for a moment may have saved one more.
        assert fresh[0]["resumed_from"] >= n
    folds = pd.read_parquet(out / "folds.parquet")
    assert not folds.duplicated(["trial_id", "fold", "epoch"]).any()
    for tid in after.index:  # no epoch's row lost with the driver
        assert sorted(folds.loc[folds.trial_id == tid, "epoch"].unique()) == list(
            range(1, EPOCHS + 1)
        )
    assert (out / "test_metrics.json").exists()
    # resuming a finished run says so and changes nothing
    stamp = (out / "trials.parquet").stat().st_mtime_ns
    said: list[str] = []
    resume(out, log=said.append)
    assert "nothing to resume" in said[0]
    assert (out / "trials.parquet").stat().st_mtime_ns == stamp
    # a driver killed after the test scoring, before the report and the model card:
    # --resume writes them from the run's files, without scoring the test split again
    scores = (out / "test_metrics.json").stat().st_mtime_ns
    report = (out / "report.html").read_text()
    (out / "report.html").unlink()
    (out / "model" / "README.md").unlink()
    said.clear()
    resume(out, log=said.append)
    assert "wrote what its driver left out: report.html, model/README.md" in said[0]
    assert (out / "report.html").read_text() == report
    assert (out / "model" / "README.md").is_file()
    assert (out / "test_metrics.json").stat().st_mtime_ns == scores


def _live_placement_groups() -> dict:
    import ray

    return {
        pg_id: info
        for pg_id, info in ray.util.placement_group_table().items()
        if info["state"] not in ("REMOVED",)
    }


def test_no_placement_group_outlives_a_search_whose_trials_asha_stopped(tmp_path, ray_session):
    from raydx.run import tune

    before = set(_live_placement_groups())
    space = parse_space(
        {
            "run": {"scheduler": "asha", "grace_period": 1},
            "params": {
                "model": "cnn_tiny",
                "lr": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
            },
        }
    )
    res = tune(
        space,
        data="synthetic:200",
        trials=4,
        folds=2,
        epochs=4,
        output=tmp_path / "out",
        log=lambda *a: None,
    )
    assert res.trials["stopped_early"].any(), "ASHA stopped no trial; the test proves nothing"
    left = {k: v for k, v in _live_placement_groups().items() if k not in before}
    assert not left, left


def _one_finished_trial(out: Path) -> pd.DataFrame:
    """A finished search of one trial (2 folds, 2 epochs) in ``out``; its trials table."""
    from raydx.run import tune

    tune(
        _seed_space(),
        data="synthetic:300",
        trials=1,
        folds=2,
        epochs=2,
        output=out,
        log=lambda *a: None,
    )
    return pd.read_parquet(out / "trials.parquet")


def test_resume_starts_the_trials_that_never_began(tmp_path, ray_session):
    """A driver killed after Optuna handed out a trial but before Tune's snapshot held it
    leaves a search with fewer trials than asked: --resume starts the missing ones."""
    import optuna

    from raydx.run import resume

    out = tmp_path / "out"
    first = _one_finished_trial(out)
    # what such a run looks like on disk: one trial of two done, the test split untouched
    (out / "test_metrics.json").unlink()
    run = json.loads((out / "run.json").read_text())
    run["options"]["trials"] = 2
    # and folds that this raydx draws otherwise (as an older raydx's rules would have
    # drawn them): the run's own are kept
    run["options"]["fold_seed"] = 7
    (out / "run.json").write_text(json.dumps(run))
    splits = pd.read_parquet(out / "splits.parquet")

    said: list[str] = []
    res = resume(out, log=said.append)

    assert len(res.trials) == 2 and (res.trials.status == "TERMINATED").all()
    assert any("starting the 1 trial(s) that had not begun" in s for s in said)
    assert any("the run's own, in splits.parquet, are kept" in s for s in said)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "splits.parquet"), splits)
    kept = res.trials.set_index("trial_id").loc[first.trial_id, ["cv_auc_mean", "lr"]]
    pd.testing.assert_frame_equal(kept, first.set_index("trial_id")[["cv_auc_mean", "lr"]])
    new = res.trials[~res.trials.trial_id.isin(first.trial_id)].iloc[0]
    assert new.lr != pytest.approx(1e-3)  # sampled by TPE, not the enqueued point again
    study = optuna.load_study(study_name="raydx", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2  # the same study: TPE saw the finished trial
    assert (out / "test_metrics.json").exists()


def test_resume_after_a_kill_inside_tunes_snapshot_period(tmp_path, ray_session):
    """Tune's snapshot lags the record (events.jsonl) and the study by up to 2 s. A driver
    killed in that window leaves (1) a trial finished in the record that the snapshot
    runs, which a resume trained on; (2) a trial begun in the record that the snapshot
    never held, on which every resume stopped; (4) its Optuna trial running for good.
    --resume keeps (1) as it ended, replaces (2), and closes (4)."""
    import optuna

    from raydx.run import resume

    out = tmp_path / "out"
    first = _one_finished_trial(out)
    (done,) = first.trial_id
    # what the run looks like killed within the snapshot period of those events
    (state,) = sorted((out / "ray" / "tune").glob("experiment_state-*.json"))[-1:]
    snapshot = json.loads(state.read_text())
    for entry in snapshot["trial_data"]:
        trial = json.loads(entry[0])
        trial["status"] = "RUNNING"
        entry[0] = json.dumps(trial)
    state.write_text(json.dumps(snapshot))
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="raydx", storage=storage)
    value = study.trials[0].value
    lost = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 3e-3)})
    lost.set_user_attr("trial_id", "deadbeef")
    config = {"model": "cnn_seed", "lr": lost.params["lr"], "family": "cnn"}
    with (out / "events.jsonl").open("a") as f:
        f.write(json.dumps({"e": "start", "trial_id": "deadbeef", "config": config}) + "\n")
    (out / "test_metrics.json").unlink()
    run = json.loads((out / "run.json").read_text())
    run["options"]["trials"] = 2
    (out / "run.json").write_text(json.dumps(run))
    before = [e for e in _events(out) if e["trial_id"] == done]
    started = (out / "ray" / "train" / done / ".validate_storage_marker").stat().st_mtime_ns

    said: list[str] = []
    res = resume(out, log=said.append)

    assert [e for e in _events(out) if e["trial_id"] == done] == before  # trained no further
    marker = out / "ray" / "train" / done / ".validate_storage_marker"
    assert marker.stat().st_mtime_ns == started  # its fold workers were not started again
    assert len(res.trials) == 2 and (res.trials.status == "TERMINATED").all()
    assert "deadbeef" not in set(res.trials.trial_id)
    kept = res.trials.set_index("trial_id").loc[[done], ["cv_auc_mean", "epochs_run"]]
    pd.testing.assert_frame_equal(kept, first.set_index("trial_id")[["cv_auc_mean", "epochs_run"]])
    assert any("before Tune's record of the search held them (deadbeef)" in s for s in said)
    assert any("closed 1 trial(s) of the Optuna study" in s for s in said)
    study = optuna.load_study(study_name="raydx", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[0].value == value and study.trials[1].user_attrs["trial_id"] == "deadbeef"
    assert (out / "test_metrics.json").exists()


def test_a_trial_ended_inside_the_snapshot_period_is_not_run_again(tmp_path, ray_session):
    """A trial created and ended within Tune's snapshot period before the kill is in the
    record, not in the snapshot: the restored search must not start a trial more than
    --trials in its place."""
    import pickle

    from raydx.run import resume, tune

    out = tmp_path / "out"
    tune(_seed_space(), data="synthetic:300", trials=2, folds=2, epochs=2, output=out, log=print)
    ran = set(pd.read_parquet(out / "trials.parquet").trial_id)
    # the snapshot as it was before the second trial began: one trial, a counter of one
    tune_dir = out / "ray" / "tune"
    (state,) = sorted(tune_dir.glob("experiment_state-*.json"))[-1:]
    snapshot = json.loads(state.read_text())
    kept = snapshot["trial_data"][:1]
    (first,) = [json.loads(entry[0])["trial_id"] for entry in kept]
    trial = json.loads(kept[0][0])
    trial["status"] = "RUNNING"
    kept[0][0] = json.dumps(trial)
    snapshot["trial_data"] = kept
    state.write_text(json.dumps(snapshot))
    (gen,) = sorted(tune_dir.glob("search_gen_state-*.json"))[-1:]
    generator = pickle.loads(gen.read_bytes())
    generator.update(counter=1, finished=False)
    gen.write_bytes(pickle.dumps(generator))
    (out / "test_metrics.json").unlink()

    res = resume(out, log=print)

    assert set(res.trials.trial_id) == ran and first in ran
    assert (res.trials.status == "TERMINATED").all()
    assert {e["trial_id"] for e in _events(out)} == ran
    assert (out / "test_metrics.json").exists()


def test_the_reaper_keeps_the_groups_of_live_actors(ray_session):
    import ray
    from ray.util.placement_group import placement_group

    from raydx.cleanup import remove_orphaned_placement_groups

    @ray.remote(num_cpus=0)
    class Holder:
        def make(self) -> str:
            pg = placement_group([{"CPU": 0.01}])
            ray.get(pg.ready())
            return pg.id.hex()

    holder = Holder.remote()
    pg_id = ray.get(holder.make.remote())
    assert pg_id not in remove_orphaned_placement_groups()
    assert ray.util.placement_group_table()[pg_id]["state"] == "CREATED"
    ray.kill(holder)
    _wait(
        lambda: (
            pg_id in remove_orphaned_placement_groups()
            or ray.util.placement_group_table()[pg_id]["state"] == "REMOVED"
        ),
        30,
        "the dead actor's placement group to go",
    )


def test_resume_of_a_search_in_which_no_trial_began(tmp_path, ray_session):
    """A driver killed before its first trial leaves a Tune experiment with no trials,
    which Tune cannot restore: --resume runs the whole search, enqueued point first."""
    import optuna

    from raydx.errors import RaydxError
    from raydx.run import resume, tune

    out = tmp_path / "out"
    with pytest.raises(RaydxError):  # what such a run looks like on disk: no trial began
        tune(
            _seed_space(),
            data="synthetic:300",
            trials=2,
            folds=2,
            epochs=2,
            time_budget_min=0.001,
            output=out,
            log=lambda *a: None,
        )
    run = json.loads((out / "run.json").read_text())
    run["options"]["time_budget_min"] = None
    (out / "run.json").write_text(json.dumps(run))
    errors: list[logging.LogRecord] = []
    catch = logging.Handler(logging.ERROR)
    catch.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("ray.tune").addHandler(catch)
    try:
        res = resume(out, log=lambda *a: None)
    finally:
        logging.getLogger("ray.tune").removeHandler(catch)

    assert not errors, [r.getMessage() for r in errors]  # such as "Failed to restore"

    assert len(res.trials) == 2 and (res.trials.status == "TERMINATED").all()
    study = optuna.load_study(study_name="raydx", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params["lr"] == pytest.approx(1e-3)  # the enqueued point
    assert (out / "test_metrics.json").exists()


def test_resume_of_a_run_whose_driver_died_before_the_search_began(
    tmp_path, ray_session, monkeypatch
):
    """Killed while preparing the search (Ctrl-C in the data's normalise step, say): no
    Tune experiment and no study yet. --resume ran into an IndexError; it now runs the
    whole search, enqueued point first."""
    import optuna

    import raydx.run
    from raydx.run import resume, tune

    real = raydx.run._new_tuner

    def killed(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(raydx.run, "_new_tuner", killed)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        tune(_seed_space(), data="synthetic:300", trials=2, folds=2, epochs=2, output=out)
    assert not (out / "ray").exists() or not list((out / "ray").glob("tune*"))
    assert not (out / "study.db").exists()
    monkeypatch.setattr(raydx.run, "_new_tuner", real)
    res = resume(out, log=lambda *a: None)
    assert len(res.trials) == 2 and (res.trials.status == "TERMINATED").all()
    study = optuna.load_study(study_name="raydx", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params["lr"] == pytest.approx(1e-3)  # the enqueued point
    assert (out / "test_metrics.json").exists()
