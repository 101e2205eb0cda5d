"""raydx as a Ray job: a cluster started with ``ray start``, a search sent by ``ray job submit``.

As README's cluster instructions say: token authentication on, on every node, the
repository as the job's ``--working-dir``, ``raydx tune --ray-address auto``, results in
an absolute ``--output``. The cluster is a second, private one of two nodes (a head and a
worker node, each with 1 CPU, its own ports and its own temp folder, as two machines would
have), stopped by killing its own processes: ``ray stop`` would stop every Ray here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODE_PORT_FLAGS = (
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
    "--node-manager-port",
    "--object-manager-port",
)
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", *NODE_PORT_FLAGS)

pytestmark = pytest.mark.slow


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process, from /proc."""
    procs = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        procs[int(d.name)] = (ppid, cmdline)
    return procs


def _kill_cluster(temp_dir: str, gcs_port: int) -> None:
    """Kill the processes of the cluster kept in ``temp_dir``, and their descendants.

    Ray's client server names neither the folder nor a parent, only the GCS address.
    """
    procs = _processes()
    mine = re.compile(rf"{re.escape(temp_dir)}|--address=\S+:{gcs_port}(\s|$)")
    victims = {pid for pid, (_, cmd) in procs.items() if mine.search(cmd)}
    me = os.getpid()
    while me in procs:  # never this process or the ones that started it
        victims.discard(me)
        me = procs[me][0] if procs[me][0] != me else -1
    while True:  # Ray's workers are the raylet's children, named ray::...
        more = {pid for pid, (ppid, _) in procs.items() if ppid in victims} - victims
        if not more:
            break
        victims |= more
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(map(_alive, victims)):
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:  # a zombie (state Z) is dead; its parent may never reap it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _flags(ports: dict[str, int]) -> list[str]:
    return [a for kv in ports.items() for a in map(str, kv)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A two-node Ray cluster of its own; yields the environment to submit jobs with."""
    # short names: Ray's socket paths live in these folders
    # One each, as on two machines: sharing one, the worker node's runtime-env agent
    # deleted the job's copy of the working directory, the driver's cwd, under it.
    temp_dirs = [tempfile.mkdtemp(prefix=p, dir="/tmp") for p in ("rdxjob", "rdxjw")]
    # RAY_AUTH_MODE=token on every node: Ray 2.60's `ray start --head` turns token
    # authentication on by itself only when it finds a token, and a worker node's `ray
    # start --address` never does, so without the mode it cannot join such a head
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, capture_output=True)
    ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
    head = [str(BIN / "ray"), "start", "--head", "--temp-dir", temp_dirs[0], "--num-cpus", "1"]
    head += ["--disable-usage-stats", *_flags(ports)]
    worker_ports = dict(zip(NODE_PORT_FLAGS, _free_ports(len(NODE_PORT_FLAGS)), strict=True))
    worker = [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{ports['--port']}"]
    worker += ["--temp-dir", temp_dirs[1], "--num-cpus", "1", *_flags(worker_ports)]
    try:
        for start in (head, worker):
            done = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stdout + done.stderr
        env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{ports['--dashboard-port']}"
        yield env
    finally:
        for temp_dir in temp_dirs:
            _kill_cluster(temp_dir, ports["--port"])
            shutil.rmtree(temp_dir, ignore_errors=True)


def _train_worker_nodes(env: dict[str, str]) -> set[str]:
    """The nodes that Ray Train's fold workers ran on (dead actors are still listed)."""
    cmd = [str(BIN / "ray"), "list", "actors", "--detail", "--format", "json", "--limit", "10000"]
    cmd += ["--filter", "class_name=RayTrainWorker", "--address", env["RAY_API_SERVER_ADDRESS"]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return {a["node_id"] for a in json.loads(done.stdout)}


def _submit(env: dict[str, str], *raydx_args: str) -> subprocess.CompletedProcess[str]:
    cmd = [str(BIN / "ray"), "job", "submit", "--working-dir", str(REPO), "--"]
    cmd += [str(BIN / "raydx"), *raydx_args]
    deadline = time.monotonic() + 90
    while True:  # the job agent may still be starting
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        out = done.stdout + done.stderr
        if "No available agent" not in out or time.monotonic() > deadline:
            return done
        time.sleep(3)


def test_search_runs_as_a_ray_job_across_two_nodes(cluster: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 3 fold workers of 0.5 CPU fit on no single node of 1 CPU: the trial spans both
    done = _submit(
        cluster,
        *("tune", "--ray-address", "auto", "--space", "search_spaces/cnn.yaml"),
        *("--data", "synthetic", "--limit", "80", "--trials", "1", "--folds", "3"),
        *("--epochs", "2", "--workers-per-trial", "3", "--cpus-per-worker", "0.5"),
        *("--output", str(out)),
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    assert "Connecting to existing Ray cluster" in log  # joined it, did not start its own
    assert "succeeded" in log
    trials = pd.read_parquet(out / "trials.parquet")
    assert len(trials) == 1 and (trials["status"] == "TERMINATED").all()
    assert json.loads((out / "test_metrics.json").read_text())["n"] == 16
    assert (out / "model" / "config.json").is_file()
    assert len(_train_worker_nodes(cluster)) == 2
    # the job's working directory was the repository's copy: the relative --space held
    assert json.loads((out / "run.json").read_text())["options"]["space"].endswith("cnn.yaml")


def test_the_cluster_files_turn_token_authentication_on_for_every_node() -> None:
    import yaml

    launcher = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    starts = [
        c
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
        for c in launcher[key]
        if "ray start" in c
    ]
    assert len(starts) == 2
    token_path = next(iter(launcher["file_mounts"]))
    for command in starts:
        assert f"RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token_path} ray start" in command
    assert launcher["file_mounts"][token_path] == "~/.ray/auth_token"
    kuberay = yaml.safe_load((REPO / "cluster" / "kuberay-rayjob.yaml").read_text())
    assert kuberay["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}


def test_relative_output_in_a_job_is_refused(cluster: dict[str, str]) -> None:
    done = _submit(cluster, "tune", "--ray-address", "auto", "--output", "runs/job")
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Ray's temporary copy of this job's working directory" in log
    assert "Traceback" not in log
