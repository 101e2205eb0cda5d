"""The fold workers' gloo group binds to the interface of Ray's node address (raydx.gloo).

Across machines it is what makes the group connect at all (tests/test_two_machines.py);
here, what it picks and what it leaves alone.
"""

from __future__ import annotations

import os

import pytest
import ray.util
from ray.train.torch import TorchConfig

from raydx import gloo


def test_interface_of_finds_the_interface_that_holds_an_address() -> None:
    assert gloo.interface_of("127.0.0.1") == "lo"
    assert gloo.interface_of("203.0.113.77") is None  # TEST-NET-3: on no interface here


def test_use_ray_network_takes_the_interface_of_rays_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(gloo.GLOO_IFNAME, raising=False)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    assert gloo.use_ray_network() == "lo"
    assert os.environ[gloo.GLOO_IFNAME] == "lo"


def test_use_ray_network_leaves_gloo_alone_where_rays_address_is_not_local(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # behind NAT, Ray may be told an address that no local interface holds
    monkeypatch.delenv(gloo.GLOO_IFNAME, raising=False)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "203.0.113.77")
    assert gloo.use_ray_network() is None
    assert gloo.GLOO_IFNAME not in os.environ


def test_a_users_own_gloo_interface_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gloo.GLOO_IFNAME, "ib0")
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    assert gloo.use_ray_network() == "ib0"


def test_the_config_is_ray_trains_torch_config_with_gloo() -> None:
    config = gloo.GlooOnRayNetwork()
    assert isinstance(config, TorchConfig) and config.backend == "gloo"
    assert issubclass(config.backend_cls, TorchConfig().backend_cls)


def test_the_backend_binds_gloo_before_ray_trains_process_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    class Group:
        def execute(self, fn: object, **kwargs: object) -> None:
            calls.append(getattr(fn, "__name__", ""))

    monkeypatch.setattr(
        TorchConfig().backend_cls, "on_start", lambda self, group, config: calls.append("torch")
    )
    gloo.GlooOnRayNetwork().backend_cls().on_start(Group(), gloo.GlooOnRayNetwork())
    assert calls == ["use_ray_network", "torch"]
