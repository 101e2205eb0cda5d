"""raydx on a cluster whose autoscaler adds nodes for the trials that wait for them.

Ray's fake multi-node provider runs the autoscaler of ``ray up`` (cluster/ray-cluster.yaml)
against nodes that are processes on this machine. The cluster runs in its own PID,
network and mount namespaces, apart from the local Ray the other tests share. Needs root
and ``unshare``; skipped without them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a Ray cluster of its own

# A head of 2 CPUs; nodes of 1 CPU, none at the start, up to 2 (as min_workers: 0).
CLUSTER = {
    "cluster_name": "raydx-test",
    "max_workers": 2,
    "provider": {
        "type": "fake_multinode",
        "use_node_id_as_ip": True,
        "disable_node_updaters": True,
        "disable_launch_config_check": True,
    },
    "available_node_types": {
        "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
        "cpu_node": {
            "resources": {"CPU": 1},
            "node_config": {},
            "min_workers": 0,
            "max_workers": 2,
        },
    },
    "head_node_type": "ray.head.default",
    "auth": {},
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,
    "docker": {},
    **{k: [] for k in ("initialization_commands", "setup_commands", "head_setup_commands")},
    **{k: [] for k in ("worker_setup_commands", "head_start_ray_commands")},
    **{k: [] for k in ("worker_start_ray_commands", "cluster_synced_files")},
    **{k: [] for k in ("rsync_exclude", "rsync_filter")},
    "file_mounts": {},
    "file_mounts_sync_continuously": False,
}


def _search_on_an_autoscaling_cluster(tmp: Path, *raydx_args: str) -> tuple[str, int]:
    """raydx's output and the number of nodes alive at its end."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a cluster of its own")
    config = tmp / "cluster.json"
    config.write_text(json.dumps(CLUSTER))
    (tmp / "home").mkdir()
    count = "import ray; ray.init('auto'); print('NODES', sum(n['Alive'] for n in ray.nodes()))"
    script = "\n".join(
        [
            "set -eu",
            "ip link set lo up",
            "mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray",  # not the tests' own Ray's
            f"export PATH={BIN}:$PATH HOME={tmp}/home RAY_AUTH_MODE=token",
            "export RAY_USAGE_STATS_ENABLED=0",
            "ray get-auth-token --generate > /dev/null",
            "AUTOSCALER_UPDATE_INTERVAL_S=1 RAY_FAKE_CLUSTER=1 ray start --head --num-cpus 2 "
            f"--autoscaling-config={config} > /dev/null",
            f"cd {REPO}",
            f"raydx tune --ray-address auto --output {tmp}/run {' '.join(raydx_args)} 2>&1",
            f'python -c "{count}" 2> /dev/null',
        ]
    )
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--mount"]
    cmd += ["--propagation", "private", "bash", "-c", script]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    nodes = int(done.stdout.rsplit("NODES ", 1)[1])
    return done.stdout, nodes


def test_trials_beyond_the_nodes_present_wait_for_the_autoscaler_s(tmp_path: Path) -> None:
    # 3 trials of one 1-CPU worker each, all at once: the head holds one (its 2 CPUs
    # less the trials' own bits), and the autoscaler adds a node for each other.
    log, nodes = _search_on_an_autoscaling_cluster(
        tmp_path,
        *("--data", "synthetic", "--limit", "80", "--trials", "3", "--folds", "2"),
        *("--epochs", "2", "--workers-per-trial", "1", "--cpus-per-worker", "1"),
        *("--max-concurrent-trials", "3"),
    )
    assert "1 worker(s) per trial with 1 CPU each, up to 3 trial(s) at once" in log
    assert nodes == 3  # the head and two added
    trials = pd.read_parquet(tmp_path / "run" / "trials.parquet")
    assert list(trials["status"]) == ["TERMINATED"] * 3
