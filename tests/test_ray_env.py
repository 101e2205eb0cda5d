"""Starting or joining Ray: which cluster, and one line where it cannot be joined (an
audit of a shared workstation). Ray itself is replaced: nothing here starts it."""

from __future__ import annotations

import re
import socket
import time
from typing import Any

import pytest

import raydx.ray_env as R
from raydx.errors import RaydxError


@pytest.fixture
def calls(monkeypatch) -> list[dict[str, Any]]:
    import ray

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **k: seen.append(k) or "ctx")
    monkeypatch.setattr(R, "quiet_raylet_startup_warnings", lambda: None)
    monkeypatch.setattr(R, "_started", [])  # the shared test Ray's context stays as it was
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for k in R.RAY_ENV:  # init_ray sets these for the process; keep the test's own
        monkeypatch.setenv(k, R.RAY_ENV[k])
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    return seen


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # free once closed: nothing listens there


def test_without_an_address_raydx_starts_its_own_ray(calls, monkeypatch) -> None:
    """Ray's own default (address None) joins the cluster that the last `ray start`
    recorded in /tmp/ray/ray_current_cluster: the audit's plain `raydx tune` hung for
    minutes on a stale record of a cluster that was gone."""
    R.init_ray(None, num_cpus=2)
    assert calls[-1]["address"] == "local" and calls[-1]["num_cpus"] == 2
    watcher = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
    assert calls[-1]["runtime_env"]["env_vars"][watcher] == "0"  # one node: nothing to watch
    monkeypatch.setattr(R, "_reachable", lambda address: None)
    monkeypatch.delenv(watcher)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a job's, or the user's: joined
    R.init_ray(None)
    assert calls[-1]["address"] is None
    assert watcher not in calls[-1]["runtime_env"]["env_vars"]  # an autoscaler may drain


def test_an_address_nothing_answers_at_fails_in_seconds(calls, monkeypatch) -> None:
    port = _closed_port()
    t0 = time.perf_counter()
    with pytest.raises(RaydxError) as e:
        R.init_ray(f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 5
    # (Ray names this machine by its own address, not 127.0.0.1)
    assert re.match(
        rf"no Ray cluster answers at \S+:{port} \(--ray-address 127.0.0.1:{port}\): ", str(e.value)
    )
    assert "`ray start --head`" in str(e.value)
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(RaydxError, match=rf"\(RAY_ADDRESS=127.0.0.1:{port}\)"):
        R.init_ray(None)
    assert calls == []  # Ray was never asked


def test_a_cluster_that_refuses_the_driver_says_what_token_auth_needs(calls, monkeypatch) -> None:
    """An explicit address never turns Ray 2.60's token authentication on by itself: a
    60-line traceback ended in "ConnectionError: Failed to connect to Ray cluster"."""
    import ray

    def refused(**_: Any) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6390\nmore")

    monkeypatch.setattr(ray, "init", refused)
    monkeypatch.setattr(R, "_reachable", lambda address: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(RaydxError) as e:
        R.init_ray("192.0.2.2:6390")
    said = str(e.value)
    assert said.startswith(
        "could not join the Ray cluster (--ray-address 192.0.2.2:6390): Failed to connect "
        "to Ray cluster at 192.0.2.2:6390. If the cluster uses token authentication"
    )
    assert "set RAY_AUTH_MODE=token here too" in said and "\n" not in said
    with pytest.raises(RaydxError, match=r"^could not start Ray on this machine: Failed"):
        R.init_ray(None)  # its own Ray: no cluster to join, no advice about one
    monkeypatch.setenv("RAY_ADDRESS", "192.0.2.2:6390")  # Ray turns token auth on itself
    with pytest.raises(RaydxError) as e:
        R.init_ray(None)
    assert str(e.value).startswith("could not join the Ray cluster (RAY_ADDRESS=192.0.2.2:6390)")
    assert "RAY_AUTH_MODE" not in str(e.value)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # already set: no advice to set it
    with pytest.raises(RaydxError) as e:
        R.init_ray("192.0.2.2:6390")
    assert "RAY_AUTH_MODE" not in str(e.value)


def test_a_second_call_asking_for_another_cluster_is_refused(monkeypatch) -> None:
    """From Python, Ray already running in the process (an earlier run, the notebook's
    own ray.init): another cluster's address was ignored without a word."""
    import ray

    class Context:
        gcs_address = "127.0.0.1:6379"

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())
    for same in (None, "auto", "127.0.0.1:6379"):
        R.init_ray(same)
    # the run's own second call: Ray names the address it joined by this machine's
    from ray._private.services import canonicalize_bootstrap_address

    Context.gcs_address = canonicalize_bootstrap_address("127.0.0.1:6379")
    R.init_ray("127.0.0.1:6379")
    Context.gcs_address = "127.0.0.1:6379"
    with pytest.raises(RaydxError) as e:
        R.init_ray("10.0.0.7:6379")
    assert str(e.value) == (
        "ray_address='10.0.0.7:6379', but Ray already runs in this process, joined to "
        "127.0.0.1:6379; call ray.shutdown() first to join another cluster."
    )


def test_addresses_are_split_and_compared_as_ray_names_them(calls, monkeypatch) -> None:
    """A review: ``[fd00::5]:6379`` kept its brackets ("no Ray cluster answers"); Ray
    Client's ``ray://`` in RAY_ADDRESS was refused; this machine's name and its address
    were two clusters."""
    assert R._host_port("[fd00::5]:6379") == ("fd00::5", 6379)
    assert R._host_port("10.0.0.7:6379") == ("10.0.0.7", 6379)
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.7:10001")
    R.init_ray(None)  # no check of ours: Ray Client has its own
    R.init_ray("auto")
    assert [c["address"] for c in calls] == [None, "auto"]
    me = socket.gethostname()
    assert R._same_place(f"{me}:6379", "127.0.0.1:6379") is True
    assert R._same_place("127.0.0.1:6379", "127.0.0.1:6380") is False
    assert R._same_place("10.0.0.7:6379", "127.0.0.1:6379") is False
    assert R._same_place("no-such-host.invalid:6379", "127.0.0.1:6379") is None
