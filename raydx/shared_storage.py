"""Is the run folder on storage that every node of the cluster sees? Asked before the search.

Fold workers write their parts of each checkpoint from whichever node they run on, and
the driver reads them back to score the winner. A folder that exists on every machine
but is not shared (a local disk, each node's own /tmp) passes Ray Train's checks: the
search then runs to its end, and the driver fails on checkpoint files that stayed on
other nodes (measured on two nodes with private folders: tests/test_two_machines.py).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from raydx.errors import RaydxError

MARKER = ".raydx-shared-check-"
ANSWER_TIMEOUT_S = 120.0  # a node that starts no process in this time is not checked


def _nearest_existing(path: Path) -> Path:
    """The run folder itself, or the deepest folder above it that exists (it is made later)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _sees(marker: str, token: str) -> bool:
    """On one node: does it read the driver's marker, and can the driver read its answer?"""
    p = Path(marker)
    try:
        if p.read_text() != token:
            return False
        Path(f"{marker}.{uuid.uuid4().hex}").write_text(token)
    except OSError:
        return False
    return True


def check_shared_output(output: str | Path) -> None:
    """Refuse a run folder that a node of the cluster cannot see (on one node: nothing to do)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return
    where = _nearest_existing(Path(output).expanduser().resolve())
    token = uuid.uuid4().hex
    marker = where / f"{MARKER}{token}"
    try:
        marker.write_text(token)
    except OSError:
        return  # not writable here: claiming the folder reports it
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(marker), token)
            for n in nodes
        ]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=ANSWER_TIMEOUT_S)
        answers = {ref: ray.get(ref) for ref in ready}
        blind = [
            n["NodeManagerAddress"]
            for n, ref in zip(nodes, refs, strict=True)
            if answers.get(ref) is False
        ]
        # nodes that read the marker, less the answers they wrote that this driver sees
        seen = len(list(where.glob(f"{marker.name}.*")))
        unseen = sum(bool(a) for a in answers.values()) - seen
    finally:
        for p in [marker, *where.glob(f"{marker.name}.*")]:
            p.unlink(missing_ok=True)
    if blind:
        problem = (
            f"node(s) {', '.join(blind)} ({len(blind)} of {len(nodes)}) did not find a file "
            f"that this driver wrote in {where}"
        )
    elif unseen > 0:
        problem = (
            f"{unseen} of {len(nodes)} nodes wrote a file in {where} that this driver does not find"
        )
    else:
        return
    raise RaydxError(
        f"--output '{output}' is not on storage that every node of the cluster shares: "
        f"{problem}. Fold workers write their checkpoints there from every node; give a "
        "folder on shared storage (NFS, a mounted bucket) that every node mounts at the "
        "same path."
    )
