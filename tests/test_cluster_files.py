"""The cluster definitions (cluster/) and the Dockerfile, read as Ray's launcher and
KubeRay would read them; no cluster is started (tests/test_job_submission.py starts one)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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


def test_the_launcher_file_is_a_valid_ray_cluster_config() -> None:
    """What ``ray up`` checks first: Ray's schema, after it fills in its defaults."""
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    launcher = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    config = prepare_config(launcher)
    validate_config(config)  # raises on an unknown key or a wrong type
    assert config["docker"]["pull_before_run"] and "/" in config["docker"]["image"]
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 1


def test_the_cluster_files_share_one_run_folder_and_give_the_image_what_ray_runs() -> None:
    """What no schema checks: the storage every node writes (/shared) is mounted on each
    and bound into the container, KubeRay's claim can be mounted by pods on several
    nodes, and the image holds what `ray up` (rsync, ssh) and KubeRay's probes (wget) run
    in it, and asks the NVIDIA runtime for its GPUs."""
    import yaml

    launcher = yaml.safe_load((REPO / "cluster" / "ray-cluster.yaml").read_text())
    assert any("/shared" in c and "mount" in c for c in launcher["initialization_commands"])
    assert "-v /shared:/shared" in launcher["docker"]["run_options"]
    assert "-e RAY_AUTH_MODE=token" in launcher["docker"]["run_options"]
    token_path = next(iter(launcher["file_mounts"]))
    assert f"-e RAY_AUTH_TOKEN_PATH={token_path}" in launcher["docker"]["run_options"]
    job = yaml.safe_load((REPO / "cluster" / "kuberay-rayjob.yaml").read_text())
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    claims = {v["persistentVolumeClaim"]["claimName"] for t in pods for v in t["spec"]["volumes"]}
    shared = list(yaml.safe_load_all((REPO / "cluster" / "kuberay-shared.yaml").read_text()))
    claim = next(d for d in shared if d["kind"] == "PersistentVolumeClaim")
    assert claims == {claim["metadata"]["name"]}
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    dockerfile = (REPO / "Dockerfile").read_text()
    for package in ("rsync", "openssh-client", "wget"):
        assert re.search(rf"apt-get install[^\n]*(\\\n[^\n]*)*\b{package}\b", dockerfile), package
    assert "NVIDIA_VISIBLE_DEVICES=all" in dockerfile
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in dockerfile
