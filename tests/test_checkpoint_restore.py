"""What a restarted trial reads from its Train run: the failure it ended with, and its
fold checkpoints (without Ray; real kills are in tests/test_fault_tolerance.py)."""

from __future__ import annotations

import json

import pytest


def test_failed_before_reads_the_failure_a_trial_s_train_run_ended_with(tmp_path) -> None:
    from raydx.cv import FAILURE_FILE, failed_before

    run = tmp_path / "train" / "abc123"
    (run / "checkpoint_2026-12-06_00-00-01.000001").mkdir(parents=True)
    assert failed_before(str(tmp_path / "train"), "abc123") is None
    assert failed_before(str(tmp_path / "train"), "never-ran") is None
    last = run / "checkpoint_2026-12-06_00-00-02.000002"
    last.mkdir()
    (last / FAILURE_FILE).write_text(json.dumps({"reason": "DivergedError: loss nan at epoch 1"}))
    assert failed_before(str(tmp_path / "train"), "abc123") == "DivergedError: loss nan at epoch 1"


def test_a_checkpoint_is_read_onto_the_cpu_and_its_failure_is_not_the_configurations(
    tmp_path, monkeypatch
) -> None:
    """A GPU worker's state names its device (cuda:1): read as saved, a restarted worker
    without that device could not load it, and reported as a failed configuration the
    trial would end for good, its epochs lost."""
    import torch
    from ray.exceptions import ObjectLostError, RayTaskError

    from raydx.cv import CKPT_META, RestoreError, _FoldState, _not_the_configuration, state_file
    from raydx.train import DivergedError, TrialFailure

    (tmp_path / CKPT_META).write_text(json.dumps({"epoch": 3, "best_epoch": 2, "best": 0.8}))
    torch.save({"w": torch.ones(2)}, tmp_path / state_file(0))
    seen: dict = {}
    load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return load(*args, **kwargs)

    class Trainer:
        def load_state_dict(self, state: dict) -> None:
            seen["state"] = state

    monkeypatch.setattr(torch, "load", spy)
    st = _FoldState()
    st.restore(tmp_path, {0: Trainer()})
    assert seen["map_location"] == "cpu" and torch.equal(seen["state"]["w"], torch.ones(2))
    assert st.epoch == 3 and st.best_epoch == 2
    assert _not_the_configuration(RestoreError("checkpoint x: EOFError"))
    assert _not_the_configuration(ObjectLostError("ff" * 28, "", ""))  # the pool lost
    assert not _not_the_configuration(RayTaskError("f", "traceback", ValueError("x")))
    assert not _not_the_configuration(DivergedError("loss nan at epoch 1"))
    assert not _not_the_configuration(ValueError("depth must be in [1, 6]"))

    class Other:  # a checkpoint of another model: read whole, but it does not fit
        def load_state_dict(self, state: dict) -> None:
            raise RuntimeError("Error(s) in loading state_dict: size mismatch for w")

    with pytest.raises(TrialFailure, match="fold 0's checkpoint does not fit this config"):
        _FoldState().restore(tmp_path, {0: Other()})
