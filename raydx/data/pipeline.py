"""Images into Ray: normalised and shaped by Ray Data, then held in the object store.

The CV pool is put into Ray's object store once per search; every fold worker of
every trial maps it read-only (zero copy on the same node) instead of reading files.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def to_dict(self) -> dict[str, float | int]:
        return {
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": self.mean,
            "std": self.std,
        }


def normalise_batch(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 (N, H, W, C) -> float32 (N, C, S, S) normalised; the same for training and predict."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[1] != prep.channels:
        if prep.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            x = x.expand(-1, prep.channels, -1, -1)
    if x.shape[2] != prep.image_size or x.shape[3] != prep.image_size:
        x = F.interpolate(
            x, size=(prep.image_size, prep.image_size), mode="bilinear", antialias=True
        )
    return ((x - prep.mean) / prep.std).contiguous().numpy()


def to_ray_dataset(images: np.ndarray, prep: Preprocessing):  # -> ray.data.Dataset
    """A Ray Dataset of normalised images (column ``x``), in source order."""
    import ray.data

    ds = ray.data.from_numpy(images)

    def _normalise(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"x": normalise_batch(batch["data"], prep)}

    return ds.map_batches(_normalise, batch_format="numpy", batch_size=1024)


def materialise(images: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Run the Ray Data pipeline and collect its rows in source order."""
    import logging

    import ray.data

    ctx = ray.data.DataContext.get_current()
    old = ctx.execution_options.preserve_order, ctx.enable_progress_bars
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        ds = to_ray_dataset(images, prep)
        parts = [b["x"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = old
    if not parts:
        return np.zeros((0, prep.channels, prep.image_size, prep.image_size), np.float32)
    return np.ascontiguousarray(np.concatenate(parts).astype(np.float32, copy=False))
