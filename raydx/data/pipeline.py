"""Images into Ray: normalised and shaped by Ray Data, then held in the object store.

The CV pool is put into Ray's object store once per search; every fold worker of
every trial maps it read-only (zero copy on the same node) instead of reading files,
and copies out the rows of its own folds (training and validation: one pool's worth for
each fold it trains).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

# A fixed affine normalisation: it needs no statistics, so nothing about the
# validation or test rows can leak into training through it.
MEAN = 0.5
STD = 0.5


@dataclass(frozen=True)
class Preprocessing:
    image_size: int
    channels: int
    mean: float = MEAN
    std: float = STD
    # How 16-bit, float and DICOM files were brought to 0-255 (raydx.data.intensity);
    # raydx predict decodes new files the same way.
    intensity: str = "auto"

    def to_dict(self) -> dict[str, float | int | str]:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
            "intensity": self.intensity,
        }


def normalise_batch(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, S, S) normalised; the same for training and predict."""
    _, h, w, c = images.shape
    if c == prep.channels and h == w == prep.image_size:
        # The common case needs no torch: a Ray Data worker that imports it pays ~2 s.
        x = images.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray((x - np.float32(prep.mean)) / np.float32(prep.std))
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if t.shape[1] != prep.channels:
        if prep.channels == 1:
            t = t.mean(dim=1, keepdim=True)
        else:
            t = t.expand(-1, prep.channels, -1, -1)
    if t.shape[2] != prep.image_size or t.shape[3] != prep.image_size:
        t = F.interpolate(
            t, size=(prep.image_size, prep.image_size), mode="bilinear", antialias=True
        )
    return ((t - prep.mean) / prep.std).contiguous().numpy()


@contextmanager
def ray_data_run() -> Iterator[None]:
    """Settings for raydx's own Ray Data runs, restored afterwards.

    Rows keep their order (row i is image i), progress bars and INFO logs are off
    (raydx prints its own summary), and Ray Data re-reads its resource allocation
    every 0.1 s instead of every second. Ray Data 2.60 starts each dataset with zero
    reserved resources, so until the first re-read one task runs at a time; for a
    job of a few seconds that cost half the speed (bench/ingest.py: 1.35 s -> 1.06 s
    for 3900 PNGs on 2 CPUs).
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    manager: Any = None
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager

        manager = ResourceManager
    except ImportError:  # another Ray: nothing to tune
        pass
    interval = getattr(manager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", None)
    if interval is not None:
        manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = min(interval, 0.1)
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = old
        if interval is not None:
            manager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = interval


def to_ray_dataset(images: np.ndarray, prep: Preprocessing):  # -> ray.data.Dataset
    """A Ray Dataset of normalised images (column ``x``), in source order."""
    import ray.data

    ds = ray.data.from_numpy(images)

    def _normalise(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": normalise_batch(batch["data"], prep)}

    return ds.map_batches(_normalise, batch_format="numpy", batch_size=1024)


def materialise(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Run the Ray Data pipeline and collect its rows in source order."""
    with ray_data_run():
        ds = to_ray_dataset(images, prep)
        parts = [b["x"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    if not parts:
        return np.zeros((0, prep.channels, prep.image_size, prep.image_size), np.float32)
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32, copy=False))
