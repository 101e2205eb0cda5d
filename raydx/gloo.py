"""The fold workers' process group on the network that Ray uses, so it spans machines.

torch's gloo binds each worker to the address that the machine's hostname resolves to.
Debian and Ubuntu map the hostname to 127.0.1.1 in ``/etc/hosts`` (this machine maps
it to 127.0.0.1): fold workers on two machines then offer each other a loopback address
and every trial fails ("Gloo connectFullMesh failed ... Connection refused",
ray-project/ray#37461). Ray has already found each node's address, so each worker's
gloo uses the network interface that holds it (``GLOO_SOCKET_IFNAME``), unless the user
set that variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import psutil
import ray
from ray.train.torch import TorchConfig

GLOO_IFNAME = "GLOO_SOCKET_IFNAME"


def interface_of(ip: str) -> str | None:
    """The network interface that holds address ``ip``, or None (Ray's address is not local)."""
    for name, addrs in psutil.net_if_addrs().items():
        if any(a.address.split("%")[0] == ip for a in addrs):  # IPv6 carries %scope
            return name
    return None


def use_ray_network() -> str | None:
    """In a Train worker, before its process group starts; returns the interface gloo will use."""
    if os.environ.get(GLOO_IFNAME):
        return os.environ[GLOO_IFNAME]
    name = interface_of(ray.util.get_node_ip_address())
    if name is not None:
        os.environ[GLOO_IFNAME] = name
    return name


# TorchConfig names its backend through this public property; the class is private.
_TorchBackend: Any = TorchConfig().backend_cls


class _GlooOnRayNetworkBackend(_TorchBackend):  # type: ignore[misc]
    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        worker_group.execute(use_ray_network)
        super().on_start(worker_group, backend_config)


@dataclass
class GlooOnRayNetwork(TorchConfig):
    """Ray Train's gloo process group, each worker on the interface of its Ray node's address."""

    backend: str | None = "gloo"

    @property
    def backend_cls(self) -> Any:
        return _GlooOnRayNetworkBackend
