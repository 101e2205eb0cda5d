"""Nothing of a search may stay reserved in the cluster after it ends.

A Tune trial that a scheduler stops can leave the placement group of its Ray Train
workers reserved for minutes (ray-project/ray#54305). raydx removes, when a search
ends (normally, by error or by Ctrl-C), every placement group that this driver's job
created during it.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

LIVE = ("CREATED", "PENDING", "RESCHEDULING")


def job_placement_groups() -> set[str]:
    """Hex ids of this job's placement groups that still hold (or wait for) resources."""
    import ray

    job = ray.get_runtime_context().get_job_id()
    return {
        pg_id
        for pg_id, info in ray.util.placement_group_table().items()
        if info["state"] in LIVE and pg_id.endswith(job)  # a PG id ends with its job id
    }


def remove_placement_groups_since(before: set[str]) -> list[str]:
    """Remove this job's live placement groups that were not there before the search."""
    return [pg_id for pg_id in sorted(job_placement_groups() - before) if _remove(pg_id)]


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
