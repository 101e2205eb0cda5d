"""Orphaned placement groups: which are, and when the reaper looks (without Ray; the
reaper against a live Ray is in tests/test_fault_tolerance.py)."""

from __future__ import annotations


def test_orphans_are_live_groups_of_dead_creator_actors() -> None:
    from raydx.cleanup import orphans

    groups = [
        ("a", "CREATED", False, "dead1"),  # the race: creator gone, group kept
        ("b", "PENDING", False, "dead1"),
        ("c", "CREATED", False, "alive"),
        ("d", "CREATED", True, "dead1"),  # detached: outlives its creator on purpose
        ("e", "REMOVED", False, "dead1"),
        ("f", "CREATED", False, None),  # made by a driver or a task
    ]
    assert orphans(groups, {"dead1"}) == ["a", "b"]


def test_the_reaper_runs_as_tune_steps_end(monkeypatch) -> None:
    """Tune calls it (the hook's name is right) at most every ``every_s`` seconds."""
    from ray.tune.callback import CallbackList

    from raydx import cleanup

    calls: list[int] = []
    monkeypatch.setattr(
        cleanup, "remove_orphaned_placement_groups", lambda: calls.append(1) or ["pg1"]
    )
    reaper = cleanup.OrphanReaper(every_s=3600)
    hooks = CallbackList([reaper])
    for i in range(3):
        hooks.on_step_begin(iteration=i, trials=[])
        hooks.on_step_end(iteration=i, trials=[])
    assert calls == [1]
    assert reaper.removed == ["pg1"]
