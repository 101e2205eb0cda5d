"""Starting or joining Ray with the settings raydx's fold workers rely on."""

from __future__ import annotations

import os
from typing import Any

from raydx.console import quiet_raylet_startup_warnings, quiet_tune_console
from raydx.errors import RaydxError

# Ray Train V2 hands a worker's next report over only when the controller polls
# (every 2 s by default), so epochs shorter than that would wait on it.
RAY_ENV = {
    "RAY_TRAIN_V2_ENABLED": "1",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
}


_started: list[Any] = []  # the context of the Ray this process started, if any


def init_ray(address: str | None = None, **kwargs: Any) -> Any:
    """``ray.init`` for raydx; returns the context (``None`` if someone else started Ray)."""
    import ray

    env = dict(RAY_ENV)
    # Without an address (nor RAY_ADDRESS, which a Ray job's driver always has) raydx
    # starts its own Ray, never the cluster that the last `ray start` on this machine
    # recorded (/tmp/ray/ray_current_cluster), as Ray's default does: it hung where that
    # one was gone.
    own = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
    if own:
        # A Ray that raydx starts here has one node, which no autoscaler drains: Ray
        # Train's preemption watcher (one more process per trial, about 1 s of CPU to
        # start) would watch for nothing.
        env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    for k, v in env.items():
        os.environ.setdefault(k, v)
    quiet_tune_console()
    if ray.is_initialized():
        _same_ray(address)
        return _started[-1] if _started else None
    _started.clear()
    if own:
        address = "local"
    else:
        _reachable(address)
    try:
        ctx = ray.init(
            address=address,
            # a value set in the environment wins (to tune it without editing raydx)
            runtime_env={"env_vars": {k: os.environ[k] for k in env}},
            log_to_driver=kwargs.pop("log_to_driver", True),
            **kwargs,
        )
    except ConnectionError as e:
        raise RaydxError(_join_failed(address, e)) from None
    _started.append(ctx)
    quiet_raylet_startup_warnings()
    return ctx


def _where(address: str | None) -> str:
    return f"--ray-address {address}" if address else f"RAY_ADDRESS={os.environ['RAY_ADDRESS']}"


def _reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """A cluster address that nothing answers at fails in seconds, not after minutes of
    Ray's retries (an audit: a mistyped address, or a cluster gone, hung over 200 s)."""
    import socket

    from ray._private.services import canonicalize_bootstrap_address

    if _client(address):
        return  # Ray Client: its own protocol and errors
    try:
        # auto (or None with RAY_ADDRESS): RAY_ADDRESS, or the last `ray start`'s record
        target = canonicalize_bootstrap_address(address)  # type: ignore[arg-type]
    except (ConnectionError, ValueError) as e:
        raise RaydxError(f"{_where(address)}: {e}") from None
    if target is None:
        return
    try:
        host, port = _host_port(target)
        socket.create_connection((host, port), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise RaydxError(
            f"no Ray cluster answers at {target} ({_where(address)}): "
            f"{getattr(e, 'strerror', None) or e}; start it (`ray start --head`) or correct "
            "the address."
        ) from None


def _client(address: str | None) -> bool:
    """A Ray Client address (``ray://``), given or in RAY_ADDRESS."""
    if address in (None, "auto"):  # Ray reads RAY_ADDRESS for these
        address = os.environ.get("RAY_ADDRESS") or address
    return (address or "").startswith("ray://")


def _host_port(address: str) -> tuple[str, int]:
    """``host:port`` as Ray splits it (``[fd00::5]:6379`` too)."""
    from ray._common.network_utils import parse_address

    parsed = parse_address(address)
    if parsed is None:
        raise ValueError(f"not a host:port address: {address!r}")
    return parsed[0], int(parsed[1])


def _join_failed(address: str | None, e: ConnectionError) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if address == "local":
        return f"could not start Ray on this machine: {first}"
    said = f"could not join the Ray cluster ({_where(address)}): {first}"
    if os.environ.get("RAY_AUTH_MODE") != "token" and address not in (None, "auto"):
        # Ray 2.60 turns token authentication on by itself for auto or RAY_ADDRESS (an
        # address of None), not for an address given (its worker.py, ray.init)
        said += (
            ". If the cluster uses token authentication (Ray 2.60's default for a cluster "
            "that `ray.init` or `ray start` made where a token exists), set "
            "RAY_AUTH_MODE=token here too, with its token (RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)."
        )
    return said


def _same_ray(address: str | None) -> None:
    """Ray already runs in this process (a notebook's own ``ray.init``, or an earlier
    run): a different cluster asked for would otherwise be ignored without a word."""
    import ray

    if address in (None, "auto", "local") or _client(address):
        return
    current = ray.get_runtime_context().gcs_address
    if _same_place(address, current) is False:
        raise RaydxError(
            f"ray_address={address!r}, but Ray already runs in this process, joined to "
            f"{current}; call ray.shutdown() first to join another cluster."
        )


def _same_place(a: str, b: str) -> bool | None:
    """Whether two ``host:port`` addresses name one listener (hosts resolved: a name and
    its address, 127.0.0.1 and the machine's own address); None where one does not
    resolve, which is not taken for a difference."""
    import socket

    try:
        (ha, pa), (hb, pb) = _host_port(a), _host_port(b)
        if pa != pb:
            return False
        ips = [{str(i[4][0]) for i in socket.getaddrinfo(h, None)} for h in (ha, hb)]
    except (OSError, ValueError):
        return None
    local = {"127.0.0.1", "::1"}
    mine = _own_addresses()
    return bool(ips[0] & ips[1]) or all(ip & (local | mine) for ip in ips)


def _own_addresses() -> set[str]:
    """This machine's addresses as Ray names them (it joins 127.0.0.1 as the node's)."""
    import contextlib
    import socket

    import ray.util

    own: set[str] = set()
    with contextlib.suppress(Exception):  # only a better guess
        own.add(ray.util.get_node_ip_address())
    with contextlib.suppress(OSError):
        own |= {str(i[4][0]) for i in socket.getaddrinfo(socket.gethostname(), None)}
    return own
