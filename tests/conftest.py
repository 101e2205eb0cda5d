from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BREASTMNIST = REPO.parent / "shared" / "data" / "breastmnist.npz"


@pytest.fixture(scope="session")
def breastmnist() -> Path:
    if not BREASTMNIST.is_file():
        pytest.skip(f"{BREASTMNIST} is not present")
    return BREASTMNIST


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, _CUDA])])
def device(request: pytest.FixtureRequest) -> str:
    """The same test on the CPU and, where there is one (``pytest -m gpu``), a CUDA GPU."""
    return request.param


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test run (``ray.init`` costs seconds)."""
    import ray

    from raydx.ray_env import init_ray

    # With the dashboard, as users run it: Ray Train's placement-group cleaner asks
    # the State API (served by the dashboard) whether a stopped trial's controller died.
    init_ray(num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that takes the shared Ray is marked so too (the guard below only sees a
    test that starts Ray itself, not one that finds it started)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "ray"
        ):
            raise pytest.UsageError(f"{item.nodeid} uses ray_session without @pytest.mark.ray")


@pytest.fixture(autouse=True)
def _ray_only_where_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that starts Ray says so (``@pytest.mark.ray``), so that ``-m "not ray"``
    never starts one; Ray Data's implicit start goes through ``ray.init`` too."""
    if request.node.get_closest_marker("ray") is None:
        import ray

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"{request.node.nodeid} starts Ray without @pytest.mark.ray")

        monkeypatch.setattr(ray, "init", refuse)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors run 10-70x slower with 2 threads than 1 on this 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
