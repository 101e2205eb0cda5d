"""Which nodes of the cluster see the run folder and the image files? Asked before use.

Fold workers write their parts of each checkpoint from whichever node they run on, and
the driver reads them back to score the winner. A folder that exists on every machine
but is not shared (a local disk, each node's own /tmp) can pass Ray Train's checks: the
search then runs to its end, and the driver fails on checkpoint files that stayed on
other nodes. Image files that only the driver's machine holds would be "unreadable" to
the Ray Data tasks of other nodes, and ``--skip-bad-images`` would drop them. (Both
measured on two nodes with private folders: tests/test_two_machines.py.) Nodes that
join after that check are checked by the trials that reach them (``mark_run_folder``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raydx.errors import DataError, RaydxError

MARKER = ".raydx-shared-check-"
ANSWER_TIMEOUT_S = 120.0  # a node that starts no process in this time is not checked


def _nearest_existing(path: Path) -> Path:
    """The run folder itself, or the deepest folder above it that exists (it is made later)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _sees(marker: str, token: str) -> bool:
    """On one node: does it read the driver's marker, and can the driver read its answer?"""
    if not _reads(marker, token):
        return False
    try:
        Path(f"{marker}.{uuid.uuid4().hex}").write_text(token)
    except OSError:
        return False
    return True


def _sizes(paths: list[str]) -> list[int] | None:
    """On one node: the sizes of the files at ``paths``, None if one is missing."""
    try:
        return [os.path.getsize(p) for p in paths]
    except OSError:
        return None


def _alive_nodes(*, with_cpus: bool = False) -> list[dict[str, Any]]:
    import ray

    if not ray.is_initialized():  # nothing started Ray: this process decodes alone
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if with_cpus:
        nodes = [n for n in nodes if n.get("Resources", {}).get("CPU", 0) > 0]
    return nodes


def _ask(nodes: list[dict[str, Any]], fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(*args)`` once on each node, in order; ``...`` for a node that did not answer
    (in ``ANSWER_TIMEOUT_S``, or at all): such a node is not held against the folder."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0, max_retries=0)(fn)
    refs = [
        task.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(*args)
        for n in nodes
    ]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=ANSWER_TIMEOUT_S)
    got = {}
    for ref in ready:
        try:
            got[ref] = ray.get(ref)
        except Exception:  # the node could not run it (its worker died): no answer
            continue
    return [got.get(ref, ...) for ref in refs]


def check_shared_output(output: str | Path) -> None:
    """Refuse a run folder that a node of the cluster cannot see (on one node: nothing to do)."""
    nodes = _alive_nodes()
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
        answers = _ask(nodes, _sees, str(marker), token)
        blind = [n["NodeManagerAddress"] for n, a in zip(nodes, answers, strict=True) if a is False]
        # nodes that read the marker, less the answers they wrote that this driver sees
        unseen = answers.count(True) - len(list(where.glob(f"{marker.name}.*")))
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


RUN_MARKER = ".raydx-shared"  # in the run folder's ray/ folder, rewritten at each start


def mark_run_folder(out: Path) -> dict[str, str]:
    """A file that each trial's process reads before its Train run writes anything.

    ``check_shared_output`` asks the nodes alive before the search; a node that joins
    later (an autoscaler's, started for a trial waiting on resources) is checked by the
    trial's process on it, with this file (``unseen_run_folder``). Fold workers on such
    a node fail Ray Train's own check at their first checkpoint, whose reason
    ``blind_to_run_folder`` words the same way.
    """
    token = uuid.uuid4().hex
    path = out / "ray" / RUN_MARKER
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token)
    return {"path": str(path), "token": token, "folder": str(out)}


def ray_train_storage_failure(error: BaseException) -> bool:
    """Is ``error`` Ray Train's check that a worker's node sees the run's storage? (A
    worker fails it at its first checkpoint; Train V2's StorageContext words it so.)"""
    return "access to the configured storage path" in str(error)


def _reads(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def _blind(ips: list[str], folder: str) -> str:
    who = f"node {ips[0]} does" if len(ips) == 1 else f"nodes {', '.join(ips)} do"
    return (
        f"{who} not see the run folder {folder} (a file that the driver wrote there is "
        "missing, or another run's), so checkpoints written from there would be lost: the "
        "folder is not on storage that every node shares. Nodes that join after the search "
        "starts (an autoscaler's) are checked as trials reach them; mount the shared "
        "storage on every node at the same path."
    )


def unseen_run_folder(marker: dict[str, str] | None) -> str | None:
    """On a trial's node: why this node cannot use the run folder, or None if it can."""
    if not marker or _reads(marker["path"], marker["token"]):
        return None
    import ray

    return _blind([ray.util.get_node_ip_address()], marker["folder"])


def blind_to_run_folder(marker: dict[str, str] | None) -> str | None:
    """Which nodes of the cluster cannot use the run folder, in a reason; None if all can."""
    if not marker:
        return None
    nodes = _alive_nodes()
    answers = _ask(nodes, _reads, marker["path"], marker["token"])
    ips = [n["NodeManagerAddress"] for n, a in zip(nodes, answers, strict=True) if a is False]
    return _blind(ips, marker["folder"]) if ips else None


def decode_placement(data: str, samples: list[str]) -> tuple[dict[str, Any], str | None]:
    """Where Ray Data may decode the image files of ``data``: Ray remote arguments, and a
    note for the console when that is not everywhere.

    ``samples`` are a few of its files (or the file itself). Nodes with CPUs that do
    not find them as this driver does (same sizes) get no decoding task: all of it then
    runs on the driver's node, which holds the files. Decoding is a minute's work where
    a search is hours', so the files need not be copied to every node.
    """
    samples = [p for p in samples if os.path.isfile(p)]
    nodes = _alive_nodes(with_cpus=True)
    if len(nodes) < 2 or not samples:
        return {}, None
    sizes = _sizes(samples)
    answers = _ask(nodes, _sizes, samples)
    missing = [
        n["NodeManagerAddress"]
        for n, a in zip(nodes, answers, strict=True)
        if a is not ... and a != sizes
    ]
    if not missing:
        return {}, None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    mine = next((n for n in nodes if n["NodeID"] == here), None)
    which = f"node(s) {', '.join(missing)} ({len(missing)} of {len(nodes)} with CPUs)"
    if mine is None:
        raise DataError(
            f"--data '{data}' is not on every node of the cluster: {which} do not find its "
            f"files as this driver does, and this driver's node has no CPUs to decode them "
            "on. Put the data on storage that every node mounts at the same path (NFS, a "
            "mounted bucket), or run the driver on a node with CPUs."
        )
    cpus = mine["Resources"]["CPU"]
    note = (
        f"the image files are not on every node ({which} do not find them): decoded on "
        f"this driver's node only, with its {cpus:g} CPU(s)"
    )
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(here, soft=False)}, note
