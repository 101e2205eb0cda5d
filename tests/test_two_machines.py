"""raydx on a cluster of two machines, as near to two machines as one can make them.

Each node runs in its own network namespace (its own address on a private network,
10.A.B.1 for the head and 10.A.B.2 for the worker node) and its own mount namespace
(its own home, temp folder and /opt, so that nothing of one node's is on the other),
started by the ``ray start`` commands of ``cluster/ray-cluster.yaml`` (less the
launcher's autoscaling config, with 1 CPU each), with the token copied where its
``file_mounts`` put it. The search is submitted from
this machine, as from a laptop, with the README's command. The nodes share one folder,
as NFS would be shared; another folder exists on both but is each node's own.

Two nodes on one network stack (tests/test_job_submission.py) cannot show what this
shows: gloo binding to the hostname's loopback address (every trial failed with "Gloo
connectFullMesh failed ... Connection refused" until raydx.gloo), and a run folder
that is not shared (the search ran to its end, then the driver failed on checkpoint
files left on the other node, until raydx.shared_storage).

Needs root and ``ip netns`` (iproute2); skipped without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from ray_jobs import submit

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCHER = REPO / "cluster" / "ray-cluster.yaml"

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a Ray cluster of its own


@dataclass
class Machines:
    head_ip: str
    worker_ip: str
    client_env: dict[str, str]  # this machine's, to submit jobs with
    shared: Path  # the same folder on every node (and here)
    private: Path  # a folder that every node has, each its own
    head_ns: str  # the head's network namespace
    worker_ns: str

    def on_head(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on the head, among its own folders (its private one included)."""
        return _on(self.head_ns, *cmd)

    def on_worker(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        return _on(self.worker_ns, *cmd)


def _on(ns: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    pid = _sh("ip", "netns", "pids", ns).stdout.split()[0]
    return _sh("nsenter", "-t", pid, "-m", "--", *cmd)


def _sh(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _node_script(base: Path, command: str, head_ip: str, file_mounts: dict[str, str]) -> str:
    """What a node runs: its own folders, the launcher's file_mounts, then ``command``."""
    lines = [
        "set -eu",
        f"mount -t tmpfs tmpfs {base}/p",  # this node's own disk
        "mount -t tmpfs tmpfs /opt",
        f"mkdir -p {base}/p/home {base}/p/tmp",
    ]
    client_home = base / "c"
    for target, source in file_mounts.items():
        src = Path(source.replace("~", str(client_home), 1))
        lines += [f"mkdir -p {Path(target).parent}", f"cp {src} {target}"]
    lines += [
        f"mount -t tmpfs tmpfs {client_home}",  # the launcher's home is not on this node
        f"export HOME={base}/p/home TMPDIR={base}/p/tmp RAY_HEAD_IP={head_ip}",
        # sized for this 2-core machine; the launcher leaves it to Ray's detection
        f"{command} --num-cpus 1",
    ]
    return "\n".join(lines)


def _start_commands(key: str) -> list[str]:
    launcher = yaml.safe_load(LAUNCHER.read_text())
    # `ray stop` would stop every Ray on this machine; the launcher writes its own
    # autoscaling config, which a cluster without an autoscaler has no use for.
    return [
        re.sub(r"\s--autoscaling-config=\S+", "", c)
        for c in launcher[key]
        if c.strip() != "ray stop"
    ]


@pytest.fixture(scope="module")
def machines() -> Iterator[Machines]:
    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("unshare"):
        pytest.skip("needs root, ip (iproute2) and unshare to make network namespaces")
    if REPO.is_relative_to("/opt") or Path(sys.prefix).is_relative_to("/opt"):
        pytest.skip("the nodes get their own /opt, which would hide this checkout")
    pid = os.getpid()
    tag = f"rx{pid % 100000}"
    net = f"10.{200 + pid % 50}.{(pid // 50) % 250}"
    names = [f"{tag}h", f"{tag}w"]
    bridge = f"{tag}br"
    base = Path(tempfile.mkdtemp(prefix="rx", dir="/tmp"))  # short: Ray's socket paths
    for d in ("p", "s", "c"):
        (base / d).mkdir()
    env = {
        "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(base / "c"),
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    launcher = yaml.safe_load(LAUNCHER.read_text())
    try:
        made = _sh("ip", "netns", "add", names[0])
        if made.returncode != 0:
            pytest.skip(f"cannot make a network namespace: {made.stderr.strip()}")
        _sh("ip", "netns", "add", names[1])
        setup = [
            ["ip", "link", "add", bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{net}.254/24", "dev", bridge],
            ["ip", "link", "set", bridge, "up"],
        ]
        for i, ns in enumerate(names, start=1):
            setup += [
                ["ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns],
                ["ip", "link", "set", ns, "master", bridge, "up"],
                ["ip", "-n", ns, "addr", "add", f"{net}.{i}/24", "dev", "eth0"],
                ["ip", "-n", ns, "link", "set", "eth0", "up"],
                ["ip", "-n", ns, "link", "set", "lo", "up"],
                ["ip", "-n", ns, "route", "add", "default", "via", f"{net}.254"],
            ]
        for cmd in setup:
            done = _sh(*cmd)
            assert done.returncode == 0, f"{cmd}: {done.stderr}"
        # the token, made where `ray up` runs, as the launcher file's comment says
        done = subprocess.run(
            [str(BIN / "ray"), "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (base / "c" / ".ray" / "auth_token").is_file(), done.stdout + done.stderr
        head_ip = f"{net}.1"
        keys = ("head_start_ray_commands", "worker_start_ray_commands")
        for ns, key in zip(names, keys, strict=True):
            for command in _start_commands(key):
                script = _node_script(base, command, head_ip, launcher["file_mounts"])
                cmd = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation"]
                cmd += ["private", "bash", "-c", script]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
                assert done.returncode == 0, f"{ns}: {command}\n{done.stdout}{done.stderr}"
        yield Machines(head_ip, f"{net}.2", env, base / "s", base / "p", *names)
    finally:
        for ns in names:
            pids = _sh("ip", "netns", "pids", ns).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    continue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            _sh("ip", "netns", "pids", ns).stdout.strip() for ns in names
        ):
            time.sleep(0.2)
        for ns in names:
            _sh("ip", "netns", "del", ns)
            _sh("ip", "link", "del", ns)
        _sh("ip", "link", "del", bridge)
        shutil.rmtree(base, ignore_errors=True)


def _submit(m: Machines, *raydx_args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "ray"), "job", "submit", "--address", f"http://{m.head_ip}:8265"]
    cmd += ["--working-dir", str(REPO), "--", "raydx", *raydx_args]
    return submit(cmd, m.client_env)


def _search(
    output: Path, data: str = "synthetic", epochs: int = 2, limit: int | None = 80
) -> list[str]:
    # 3 fold workers of 0.5 CPU fit on no single node of 1 CPU: the trial spans both
    return [
        *("tune", "--ray-address", "auto", "--space", "search_spaces/cnn.yaml"),
        *("--data", data, *(("--limit", str(limit)) if limit else ()), "--trials", "1"),
        "--folds",
        "3",
        *("--epochs", str(epochs), "--workers-per-trial", "3", "--cpus-per-worker", "0.5"),
        *("--output", str(output)),
    ]


def _train_worker_ips(m: Machines) -> set[str]:
    """The addresses of the nodes that Ray Train's fold workers ran on."""
    ray = str(BIN / "ray")
    api = ["--address", f"http://{m.head_ip}:8265", "--format", "json", "--limit", "10000"]
    run = {"env": m.client_env, "capture_output": True, "text": True, "timeout": 120}
    actors = subprocess.run(
        [ray, "list", "actors", "--detail", "--filter", "class_name=RayTrainWorker", *api], **run
    )
    nodes = subprocess.run([ray, "list", "nodes", *api], **run)
    ip = {n["node_id"]: n["node_ip"] for n in json.loads(nodes.stdout)}
    return {ip[a["node_id"]] for a in json.loads(actors.stdout)}


def test_a_search_runs_across_two_machines(machines: Machines) -> None:
    out = machines.shared / "run"
    done = _submit(machines, *_search(out))
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Connecting to existing Ray cluster" in log
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["TERMINATED"]
    assert json.loads((out / "test_metrics.json").read_text())["n"] == 16
    assert (out / "model" / "config.json").is_file()
    # the fold workers of the one trial ran on both machines, and exchanged their
    # epochs' metrics over gloo between them
    assert _train_worker_ips(machines) == {machines.head_ip, machines.worker_ip}
    # the shared-storage check left nothing behind
    assert not list(machines.shared.glob(".raydx-shared-check-*"))


def test_a_run_folder_that_is_not_shared_is_refused_before_the_search(
    machines: Machines,
) -> None:
    done = _submit(machines, *_search(machines.private / "run"))
    log = done.stdout + done.stderr
    assert done.returncode != 0
    line = next(x for x in log.splitlines() if x.startswith("raydx: error:"))
    assert "is not on storage that every node of the cluster shares" in line
    assert f"node(s) {machines.worker_ip} (1 of 2)" in line
    assert "Traceback" not in log
    assert "Trial status" not in log  # before Tune started a trial


def test_image_files_on_the_drivers_machine_alone_are_decoded_there(
    machines: Machines,
) -> None:
    # A class folder copied to the head's own disk only. Enough files for 3 decoding
    # tasks (1024 a task), which Ray Data would spread over both nodes.
    src = machines.shared / "images"
    rng = np.random.default_rng(0)
    for c, mean in (("benign", 90), ("malignant", 160)):
        (src / c).mkdir(parents=True)
        for i in range(1100):
            a = np.clip(rng.normal(mean, 40, (16, 16)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(src / c / f"{i}.png")
    data = machines.private / "images"
    assert machines.on_head("cp", "-r", str(src), str(data)).returncode == 0
    # every file decoded (a --limit would be cut from the listing first: too few tasks)
    run = _search(machines.shared / "run_images", str(data), epochs=1, limit=None)
    done = _submit(machines, *run)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "decoded 2200 images" in log  # every file, none "unreadable"
    assert "unreadable" not in log
    note = f"node(s) {machines.worker_ip} (1 of 2 with CPUs) do not find them"
    assert note in log and "decoded on this driver's node only" in log


def test_a_node_that_does_not_see_the_run_folder_when_a_trial_reaches_it_fails_the_trial(
    machines: Machines,
) -> None:
    # As a node that joins after the driver's check would (an autoscaler's, started for
    # a trial that waits for CPUs): once the check has passed and the run folder is
    # marked, the worker node's view of the shared folder is hidden (a folder of its
    # own mounted over it). The trial spans both nodes, so a process of it is there.
    out = machines.shared / "late"
    marker = out / "ray" / ".raydx-shared"  # written after the check, before any trial
    done: list[subprocess.CompletedProcess[str]] = []
    # no restarts, which would fail alike (Ray Train's each after a worker start and an epoch)
    args = [*_search(out), "--max-failures", "0"]
    job = threading.Thread(target=lambda: done.append(_submit(machines, *args)))
    job.start()
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert time.monotonic() < deadline and job.is_alive(), done[0].stdout[-3000:]
        time.sleep(0.1)
    hide = machines.on_worker("mount", "-t", "tmpfs", "tmpfs", str(machines.shared))
    try:
        assert hide.returncode == 0, hide.stderr
        job.join(timeout=600)
    finally:
        machines.on_worker("umount", str(machines.shared))
    log = done[0].stdout + done[0].stderr
    assert done[0].returncode != 0, log[-3000:]
    reason = f"node {machines.worker_ip} does not see the run folder {out}"
    assert reason in log, pd.read_parquet(out / "trials.parquet")["error"][0]
    assert "every trial failed (1 of 1)" in log
    assert reason in pd.read_parquet(out / "trials.parquet")["error"][0]
