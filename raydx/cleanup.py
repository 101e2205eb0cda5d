"""Nothing of a search may stay reserved in the cluster: not after it, not during it.

A Tune trial that a scheduler stops can leave the placement group of its Ray Train
workers reserved (ray-project/ray#54305). Seen here: ASHA stopped a trial while its
Train controller was starting a new worker group; the controller died a moment after
it created the group's placement group, Ray never removed that group, and the next
trial waited for its CPUs for more than ten minutes (its controller retrying forever).
So raydx removes, while a search runs, every placement group whose creator actor is
dead (``OrphanReaper``, a Tune callback), and when a search ends (normally, by error
or by Ctrl-C), every placement group that this driver's job created during it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from ray.tune import Callback

logger = logging.getLogger(__name__)

LIVE = ("CREATED", "PENDING", "RESCHEDULING")


def job_placement_groups(live_only: bool = True) -> set[str]:
    """Hex ids of this job's placement groups that still hold (or wait for) resources;
    ``live_only=False``: removed ones too."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    return {
        pg_id
        for pg_id, info in ray.util.placement_group_table().items()
        if (info["state"] in LIVE or not live_only) and pg_id.endswith(job)  # id ends with job
    }


def remove_placement_groups_since(before: set[str]) -> list[str]:
    """Remove this job's live placement groups that were not there before the search."""
    return [pg_id for pg_id in sorted(job_placement_groups() - before) if _remove(pg_id)]


def free_search_placement_groups(
    before: set[str], known: set[str], settle_s: float = 10.0
) -> list[str]:
    """``remove_placement_groups_since(before)``, once the actors that created the
    search's groups (those not in ``known``, all of the job's before it) are dead (or
    ``settle_s`` has passed), and 0.5 s after: a Train controller that Tune killed with
    its trial, while it was retrying its worker group's start, creates one more group as
    it dies (seen on the trials that the time budget stopped for their silence,
    raydx.budget), which reaches the GCS after its death. Removing a group under a
    controller still alive made it print a false "worker group startup timed out"
    traceback to the console. Runs in a ``finally``: a failing private Ray call must not
    hide the search's own end, so it falls back to one removal."""
    import ray

    try:
        job = ray.get_runtime_context().get_job_id()
        dead: set[str] = set()
        stop = time.monotonic() + settle_s
        while True:
            creators = {
                c
                for pg, _, _, c in _placement_groups()
                if c is not None and pg.endswith(job) and pg not in known
            }
            for actor_id in creators - dead:
                info = ray._private.state.actors(actor_id=actor_id)
                if not info or info.get("State") == "DEAD":
                    dead.add(actor_id)
            if creators <= dead or time.monotonic() >= stop:
                break
            time.sleep(0.25)
        time.sleep(0.5)  # seen: 2 groups arrived after one removal at a creator's death
    except Exception as e:  # private Ray API
        logger.debug("waiting for the search's placement-group creators: %s", e)
    return sorted(set(remove_placement_groups_since(before)))


def _remove(pg_id: str) -> bool:
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup

    try:
        ray.util.remove_placement_group(PlacementGroup(PlacementGroupID.from_hex(pg_id)))
        return True
    except Exception as e:  # already gone: nothing to free
        logger.debug("placement group %s: %s", pg_id, e)
        return False


def orphans(groups: Iterable[tuple[str, str, bool, str | None]], dead: set[str]) -> list[str]:
    """Live, non-detached placement groups whose creator actor is dead.

    ``groups``: (id, state, detached, creator actor id or None for a driver or task).
    Ray removes such a group itself when its creator dies, unless the two race.
    """
    return [
        pg
        for pg, state, detached, creator in groups
        if state in LIVE and not detached and creator is not None and creator in dead
    ]


def _placement_groups() -> list[tuple[str, str, bool, str | None]]:
    """From the GCS: Ray's public tables do not say who created a placement group."""
    from ray._private import state
    from ray.core.generated import gcs_pb2

    table_data: Any = gcs_pb2.PlacementGroupTableData  # type: ignore[attr-defined]  # generated

    nil = "ff" * 16
    out = []
    for raw in state.state._connect_and_get_accessor().get_placement_group_table():
        d = table_data.FromString(raw)
        creator = d.creator_actor_id.hex()
        out.append(
            (
                d.placement_group_id.hex(),
                table_data.PlacementGroupState.Name(d.state),
                bool(d.is_detached),
                None if not creator or creator == nil else creator,
            )
        )
    return out


def remove_orphaned_placement_groups() -> list[str]:
    """Remove the placement groups whose creator actor is dead; return their ids."""
    import ray

    groups = _placement_groups()
    creators = {c for _, state, _, c in groups if c is not None and state in LIVE}
    dead = set()
    for actor_id in creators:
        info = ray._private.state.actors(actor_id=actor_id)
        if info and info.get("State") == "DEAD":
            dead.add(actor_id)
    return [pg for pg in orphans(groups, dead) if _remove(pg)]


class OrphanReaper(Callback):
    """Tune callback: frees the CPUs of orphaned placement groups while the search runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last = -float("inf")  # monotonic time starts near 0 at boot
        self.removed: list[str] = []

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            found = remove_orphaned_placement_groups()
        except Exception as e:  # private Ray API: never let it stop a search
            logger.debug("placement group reaper: %s", e)
            return
        if found:
            logger.warning("removed %d placement group(s) left by dead actors", len(found))
            self.removed.extend(found)
