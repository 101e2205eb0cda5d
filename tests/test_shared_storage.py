"""The check that the run folder is shared by every node (raydx.shared_storage).

On two machines with private folders it refuses the run (tests/test_two_machines.py);
on two nodes of one machine it passes (tests/test_job_submission.py). Here, its parts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray

from raydx import shared_storage
from raydx.errors import DataError, RaydxError


def test_the_nearest_existing_folder_is_checked_for_a_run_folder_not_made_yet(
    tmp_path: Path,
) -> None:
    assert shared_storage._nearest_existing(tmp_path / "runs" / "a") == tmp_path
    assert shared_storage._nearest_existing(tmp_path) == tmp_path


def test_a_node_sees_the_marker_only_with_its_token(tmp_path: Path) -> None:
    marker = tmp_path / f"{shared_storage.MARKER}x"
    marker.write_text("token")
    assert shared_storage._sees(str(marker), "token")
    assert len(list(tmp_path.glob(f"{marker.name}.*"))) == 1  # its answer
    assert not shared_storage._sees(str(marker), "other")
    assert not shared_storage._sees(str(tmp_path / "absent" / "m"), "token")


def test_one_node_is_not_checked_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "NodeID": "a"}, {"Alive": False}])
    shared_storage.check_shared_output(tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_files_are_decoded_anywhere_on_one_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"x")
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    assert shared_storage.decode_placement(str(tmp_path), [str(f)]) == ({}, None)


def test_a_few_files_first_to_last_are_the_sample() -> None:
    from raydx.data.files import _spread

    assert _spread([]) == []
    assert _spread(["a"]) == ["a"]
    assert _spread(["a", "b", "c", "d", "e"]) == ["a", "c", "e"]


A, B = "aa" * 28, "bb" * 28  # node ids: 28 bytes in hex


def _two_nodes(monkeypatch: pytest.MonkeyPatch, here: str, answers: list[object]) -> None:
    nodes = [
        {"NodeID": A, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 4.0}},
        {"NodeID": B, "NodeManagerAddress": "10.0.0.2", "Resources": {"CPU": 8.0}},
    ]
    monkeypatch.setattr(shared_storage, "_alive_nodes", lambda with_cpus=False: nodes)
    monkeypatch.setattr(shared_storage, "_ask", lambda nodes, fn, *args: answers)

    class Context:
        def get_node_id(self) -> str:
            return here

    monkeypatch.setattr(ray, "get_runtime_context", Context)


def test_files_on_the_drivers_node_alone_are_decoded_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"xyz")
    _two_nodes(monkeypatch, here=A, answers=[[3], None])
    args, note = shared_storage.decode_placement(str(tmp_path), [str(f)])
    assert args["scheduling_strategy"].node_id == A
    assert note is not None and "node(s) 10.0.0.2 (1 of 2 with CPUs)" in note
    assert "with its 4 CPU(s)" in note
    # a node that did not answer in time is not held against the files
    _two_nodes(monkeypatch, here=A, answers=[[3], ...])
    assert shared_storage.decode_placement(str(tmp_path), [str(f)]) == ({}, None)
    # nor a node with the same files
    _two_nodes(monkeypatch, here=A, answers=[[3], [3]])
    assert shared_storage.decode_placement(str(tmp_path), [str(f)]) == ({}, None)


def test_files_that_only_a_driver_without_cpus_has_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"xyz")
    # the driver's node ("head", no CPUs) is not among the nodes that could decode
    _two_nodes(monkeypatch, here="head", answers=[None, None])
    with pytest.raises(DataError, match=r"has no CPUs to decode them on") as e:
        shared_storage.decode_placement(str(tmp_path), [str(f)])
    assert f"--data '{tmp_path}'" in str(e.value) and "10.0.0.1, 10.0.0.2" in str(e.value)


def _raises() -> None:
    raise OSError("no such mount")


@pytest.mark.ray
def test_a_node_that_cannot_answer_is_not_held_against_the_folder(ray_session) -> None:
    nodes = shared_storage._alive_nodes()
    assert shared_storage._ask(nodes, _raises) == [...]
    assert shared_storage._ask(nodes, shared_storage._sizes, ["/nope"]) == [None]


def test_the_run_folder_s_marker_is_new_at_each_start(tmp_path: Path) -> None:
    first = shared_storage.mark_run_folder(tmp_path)
    assert Path(first["path"]) == tmp_path / "ray" / shared_storage.RUN_MARKER
    assert first["folder"] == str(tmp_path)
    assert shared_storage.unseen_run_folder(first) is None  # this node sees it
    second = shared_storage.mark_run_folder(tmp_path)  # a --resume
    assert second["token"] != first["token"]
    assert shared_storage.unseen_run_folder(None) is None  # a spec from before markers


@pytest.mark.ray
def test_a_node_that_does_not_read_the_marker_is_named(tmp_path: Path, ray_session) -> None:
    marker = shared_storage.mark_run_folder(tmp_path)
    # the same path on a node whose folder there is its own: another run's file, or none
    stale = {**marker, "token": "another run's"}
    ip = ray.util.get_node_ip_address()
    reason = f"node {ip} does not see the run folder {tmp_path} "
    assert shared_storage.unseen_run_folder(stale).startswith(reason)
    Path(marker["path"]).unlink()
    assert shared_storage.unseen_run_folder(marker).startswith(reason)
    # asked of every node, from a trial whose fold workers Ray Train refused
    assert shared_storage.blind_to_run_folder(stale).startswith(reason)
    assert shared_storage.blind_to_run_folder(shared_storage.mark_run_folder(tmp_path)) is None
    assert shared_storage._blind(["a", "b"], "/r").startswith("nodes a, b do not see the run")


def test_ray_train_s_own_storage_check_is_recognised(tmp_path: Path) -> None:
    """Its words, from Ray itself: a Ray upgrade that changes them fails here."""
    from ray.train.v2._internal.execution.storage import StorageContext

    storage = StorageContext(str(tmp_path), "trial")  # the controller's: makes the marker
    for marker in (tmp_path / "trial").glob(".validate*"):
        marker.unlink()  # as on a worker's node that does not share the folder
    with pytest.raises(RuntimeError) as err:
        storage._check_validation_file()
    assert shared_storage.ray_train_storage_failure(err.value)
    assert not shared_storage.ray_train_storage_failure(RuntimeError("CUDA out of memory"))


@pytest.mark.slow
@pytest.mark.ray
def test_a_trial_on_a_node_that_does_not_see_the_run_folder_fails_with_the_reason(
    tmp_path: Path, ray_session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole path: the trial's process checks, the search says why (two machines:
    tests/test_two_machines.py, where Ray Train's own check of the fold workers comes
    first and is put in the same words)."""
    from raydx.run import tune
    from raydx.space import parse_space

    real = shared_storage.mark_run_folder
    # as on a node that joined later, whose folder at that path is its own
    monkeypatch.setattr(
        shared_storage, "mark_run_folder", lambda out: {**real(out), "token": "another run's"}
    )
    space = parse_space({"run": {"scheduler": "none"}, "params": {"model": "cnn_tiny"}})
    out = tmp_path / "run"
    lines: list[str] = []
    with pytest.raises(RaydxError, match=r"every trial failed \(1 of 1\)"):
        tune(
            space, data="synthetic:60", trials=1, folds=2, epochs=1, output=out,
            log=lines.append,
        )  # fmt: skip
    reason = f"node {ray.util.get_node_ip_address()} does not see the run folder {out} "
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["ERROR"] and f"TrialFailure: {reason}" in trials["error"][0]
    assert any(line.startswith("raydx: trial 1 (") and reason in line for line in lines)
    assert not (out / "ray" / "train").exists()  # no Train run began
    # once, not again on each of Tune's restarts (--max-failures 2 by default)
    (error_file,) = (out / "ray").glob("*/*/error.txt")
    assert error_file.read_text().count("Failure # ") == 1
