"""Some rows of one image tensor, read a batch at a time.

A trial's fold workers all read the CV pool from Ray's object store (one shared,
read-only copy per node). Taking each fold's training and validation rows by boolean
index copied the whole pool once per fold: a trial of 5 folds held 5 pools in its
workers' memory, and two trials at once 10, which at 224 px is many GiB more than the
pool itself. ``Rows`` keeps the pool and the fold's row numbers instead, and gathers
only the batch a trainer asks for, so the pool is held once (once per GPU worker on a
GPU). A trainer reads its images only through ``len``, ``shape``, ``[index]``
and ``to``, which a plain tensor has too (the refit and tests pass one).
"""

from __future__ import annotations

import warnings
from typing import TypeAlias

import numpy as np
import torch


def read_only_tensor(array: np.ndarray) -> torch.Tensor:
    """``array`` as a tensor without a copy: an array from Ray's object store is
    read-only, which torch warns of; ``Rows`` never writes through it."""
    with warnings.catch_warnings():  # "the given NumPy array is not writable"
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class Rows:
    """``base[index]``, gathered a batch at a time: ``rows[i]`` is ``base[index[i]]``."""

    def __init__(self, base: torch.Tensor, index: torch.Tensor) -> None:
        self.base = base
        self.index = index.to(device=base.device, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.index), *self.base.shape[1:]))

    def __getitem__(self, key: torch.Tensor | slice | int) -> torch.Tensor:
        """A copy of the rows ``key`` names (never a view of ``base``)."""
        picked = self.index[key]
        return self.base[picked.reshape(-1)].reshape(*picked.shape, *self.base.shape[1:])

    def take(self, mask: torch.Tensor) -> Rows:
        """The rows where ``mask`` holds, still without a copy."""
        return Rows(self.base, self.index[mask.to(self.index.device)])

    def to(self, device: torch.device | str) -> Rows:
        """The same rows on ``device``: no copy where ``base`` is there already, else a
        copy of the whole base (move the pool once, before making each fold's rows)."""
        return Rows(self.base.to(device), self.index.to(device))


class Joined:
    """``first``'s rows, then ``second``'s, as one set, gathered a batch at a time: a
    GAN augment epoch's real training rows and its generated images, without a copy of
    the real ones (``torch.cat`` gathered a fold's training rows every epoch)."""

    def __init__(self, first: Images, second: torch.Tensor) -> None:
        self.first, self.second = first, second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self.second.shape[1:]))

    def __getitem__(self, key: torch.Tensor | slice | int) -> torch.Tensor:
        """A copy of the rows ``key`` names, as ``torch.cat([first, second])[key]``."""
        n, split = len(self), len(self.first)
        if isinstance(key, torch.Tensor) and key.dtype == torch.bool:
            picked = key.nonzero().reshape(-1)
        elif isinstance(key, torch.Tensor):
            picked = torch.where(key < 0, key + n, key)  # no arange(n) per batch
        else:
            picked = torch.arange(n)[key]
        flat = picked.reshape(-1).to(self.second.device)
        out = self.second.new_empty((len(flat), *self.second.shape[1:]))
        mine = flat < split
        out[mine] = self.first[flat[mine].to(_device(self.first))].to(out.device)
        out[~mine] = self.second[flat[~mine] - split]
        return out.reshape(*picked.shape, *self.second.shape[1:])

    def to(self, device: torch.device | str) -> Joined:
        return Joined(self.first.to(device), self.second.to(device))


def _device(x: Images) -> torch.device:
    if isinstance(x, Rows):
        return x.base.device
    return x.second.device if isinstance(x, Joined) else x.device


# What a trainer takes for its images: a tensor (N, C, H, W), or rows of one.
Images: TypeAlias = torch.Tensor | Rows | Joined


def take(x: Images, mask: torch.Tensor) -> Images:
    """``x[mask]``, as ``Rows`` where ``x`` is (no copy of the images)."""
    return x.take(mask) if isinstance(x, Rows) else x[mask]
