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
from ray_jobs import submit

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

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a Ray cluster of its own


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
    _kill(re.compile(rf"{re.escape(temp_dir)}|--address=\S+:{gcs_port}(\s|$)"))


def _kill(mine: re.Pattern[str]) -> None:
    """SIGKILL the processes whose command line matches ``mine``, and their descendants."""
    procs = _processes()
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


class _Cluster:
    """A private Ray cluster of nodes on this machine, each with its own ports and temp
    folder, as on separate machines (sharing one, a worker node's runtime-env agent
    deleted the job's copy of the working directory, the driver's cwd, under it).

    RAY_AUTH_MODE=token on every node: Ray 2.60's `ray start --head` turns token
    authentication on by itself only when it finds a token, and a worker node's `ray
    start --address` never does, so without the mode it cannot join such a head.
    """

    def __init__(self, head_cpus: int) -> None:
        self.temp_dirs: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env["RAY_AUTH_MODE"] = "token"
        generate = [str(BIN / "ray"), "get-auth-token", "--generate"]
        subprocess.run(generate, env=self.env, capture_output=True)
        self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        try:
            self._start(["--head", "--disable-usage-stats"], head_cpus, self.ports)
        except BaseException:
            self.stop()
            raise
        self.env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    def _start(self, args: list[str], cpus: int, ports: dict[str, int]) -> str:
        temp_dir = tempfile.mkdtemp(prefix="rdxj", dir="/tmp")  # short: Ray's socket paths
        self.temp_dirs.append(temp_dir)
        cmd = [str(BIN / "ray"), "start", *args, "--temp-dir", temp_dir]
        cmd += ["--num-cpus", str(cpus), *_flags(ports)]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return temp_dir

    def add_node(self, cpus: int) -> str:
        """Start a worker node; returns its temp folder, which names it."""
        ports = dict(zip(NODE_PORT_FLAGS, _free_ports(len(NODE_PORT_FLAGS)), strict=True))
        return self._start(["--address", f"127.0.0.1:{self.ports['--port']}"], cpus, ports)

    def kill_node(self, temp_dir: str) -> None:
        """Lose a worker node: SIGKILL its raylet and everything it started."""
        _kill(re.compile(re.escape(temp_dir)))

    def stop(self) -> None:
        for temp_dir in self.temp_dirs:
            _kill_cluster(temp_dir, self.ports["--port"])
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A head and a worker node of 1 CPU each; yields the environment to submit jobs with."""
    c = _Cluster(head_cpus=1)
    try:
        c.add_node(cpus=1)
        yield c.env
    finally:
        c.stop()


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
    return submit(cmd, env)


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


def test_relative_output_in_a_job_is_refused(cluster: dict[str, str]) -> None:
    done = _submit(cluster, "tune", "--ray-address", "auto", "--output", "runs/job")
    log = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Ray's temporary copy of this job's working directory" in log
    assert "Traceback" not in log


def _job_status(env: dict[str, str], job: str) -> str:
    cmd = [str(BIN / "ray"), "job", "status", job]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    # "Job 'x' succeeded", "Job 'x' is currently running", ...
    states = r"\b(PENDING|RUNNING|SUCCEEDED|FAILED|STOPPED)\b"
    found = re.findall(states, done.stdout + done.stderr, flags=re.IGNORECASE)
    return found[-1].upper() if found else "UNKNOWN"  # the dashboard did not answer


def test_a_trial_whose_node_is_lost_goes_on_from_its_checkpoint_on_another(
    tmp_path: Path,
) -> None:
    # A head without CPUs, as on many clusters: the trial (its process, its Train
    # controller and its fold workers) runs on the one worker node, which is then lost.
    c = _Cluster(head_cpus=0)
    try:
        first = c.add_node(cpus=2)
        out = tmp_path / "run"
        cmd = [str(BIN / "ray"), "job", "submit", "--no-wait", "--submission-id", "lost-node"]
        cmd += ["--working-dir", str(REPO), "--", str(BIN / "raydx"), "tune"]
        cmd += ["--ray-address", "auto", "--space", "search_spaces/cnn.yaml"]
        cmd += ["--data", "synthetic", "--limit", "600", "--trials", "1", "--folds", "3"]
        cmd += ["--epochs", "12", "--checkpoint-every", "1", "--report-interval-s", "0"]
        cmd += ["--scheduler", "none", "--output", str(out)]
        done = subprocess.run(cmd, env=c.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr

        def epochs() -> list[int]:
            path = out / "events.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            events = [json.loads(x) for x in lines if x.strip().endswith("}")]
            return [e["result"]["epoch"] for e in events if e["e"] == "result"]

        deadline = time.monotonic() + 240
        while max(epochs(), default=0) < 4:
            assert time.monotonic() < deadline, "the trial never reached epoch 4"
            assert _job_status(c.env, "lost-node") not in ("SUCCEEDED", "FAILED", "STOPPED")
            time.sleep(1)
        c.kill_node(first)
        time.sleep(5)
        c.add_node(cpus=2)  # as an autoscaler would
        deadline = time.monotonic() + 300
        while (status := _job_status(c.env, "lost-node")) in ("PENDING", "RUNNING", "UNKNOWN"):
            assert time.monotonic() < deadline, "the search did not end"
            time.sleep(2)
        logs = subprocess.run(
            [str(BIN / "ray"), "job", "logs", "lost-node"],
            env=c.env,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        assert status == "SUCCEEDED", logs[-3000:]
    finally:
        c.stop()
    trials = pd.read_parquet(out / "trials.parquet")
    assert list(trials["status"]) == ["TERMINATED"] and list(trials["epochs_run"]) == [12]
    lines = (out / "events.jsonl").read_text().splitlines()
    events = [json.loads(x) for x in lines]
    assert [e["e"] for e in events].count("recover") == 1
    assert "lost its process or node" in logs and "restart 1 of 2" in logs
    # resumed from its checkpoint on the new node, not from epoch 0
    resumed = [e["result"] for e in events if e["e"] == "result" and e["result"]["resumed_from"]]
    assert resumed and resumed[0]["resumed_from"] >= 4
    assert resumed[0]["epoch"] == resumed[0]["resumed_from"] + 1
    folds = pd.read_parquet(out / "folds.parquet")
    assert sorted(folds["epoch"].unique()) == list(range(1, 13)) and len(folds) == 3 * 12
    assert (out / "model" / "config.json").is_file()
