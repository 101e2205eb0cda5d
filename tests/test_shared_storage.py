"""The check that the run folder is shared by every node (raydx.shared_storage).

On two machines with private folders it refuses the run (tests/test_two_machines.py);
on two nodes of one machine it passes (tests/test_job_submission.py). Here, its parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from raydx import shared_storage


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
