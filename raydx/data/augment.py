"""Batch augmentation of normalised float tensors ``(B, C, H, W)``, driven by AugmentConfig.

All geometric changes (flips, rotation, random-resized-crop scale, translation) are
folded into one affine matrix per sample and applied with a single ``affine_grid`` +
``grid_sample`` call (bilinear), so a batch costs one resampling whatever is switched
on. When flips are the only geometric change they are done exactly with ``torch.flip``
instead (no interpolation blur). The intensity changes (contrast, brightness, noise)
follow, in that order, and cutout comes last: a square of each image set to 0 (DeVries
& Taylor, 2017), so the network cannot lean on one small region. 0 is mid-grey (pixel
127.5: normalisation is a fixed 0.5/0.5), not the data's mean: on a dark background
(X-ray, ultrasound) the square is lighter than its surroundings.

Randomness comes only from the transform's own CPU ``torch.Generator`` (MONAI's habit):
the same seed gives the same augmentation on CPU and on CUDA, and a fold worker seeds
it per epoch with ``augment_seed(base_seed, fold, epoch)``.

Padding: ``"border"`` (edge pixels are repeated). The edges of medical images are
almost always background, so a rotated or shifted image is filled with background.
``"zeros"`` would fill with 0, which is mid-grey (normalisation is a fixed 0.5/0.5, as
for cutout above), not black: it draws a grey frame that a network can learn as a cue;
``"reflection"`` would mirror anatomy into the corners.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from raydx.config import AugmentConfig
from raydx.lookup import lookup

PADDING_MODES = ("border", "zeros", "reflection")


class BatchAugment:
    """Random, per-sample augmentation of a training batch, reproducible from ``seed``.

    The geometric part samples the input at ``A @ p + t`` for each output point ``p``
    (normalised coordinates, ``align_corners=False``), with ``A = R(angle) S(zoom) F(flips)``
    and ``t`` = crop offset + translation. A crop of area fraction ``a`` in
    ``[1 - scale, 1]`` is a zoom of ``sqrt(a)`` (square crop, aspect ratio kept) placed
    uniformly inside the image, then resized back to ``(H, W)`` as random resized crop does.
    """

    def __init__(self, cfg: AugmentConfig, *, seed: int, padding_mode: str = "border") -> None:
        self.cfg = cfg
        self.padding_mode = lookup(padding_mode, PADDING_MODES, "padding_mode")
        self._gen = torch.Generator(device="cpu")
        self._gen.manual_seed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the random stream (called per fold and epoch)."""
        self._gen.manual_seed(seed)

    @property
    def geometric(self) -> bool:
        c = self.cfg
        return bool(c.hflip or c.vflip or c.rotate or c.scale or c.translate)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.cfg.active:
            return x
        if x.ndim != 4 or not x.is_floating_point():
            raise TypeError(
                f"BatchAugment expects a float tensor of shape (B, C, H, W), but got "
                f"dtype={x.dtype} shape={tuple(x.shape)}."
            )
        if self.geometric:
            x = self._affine(x)
        x = self._intensity(x)
        if self.cfg.cutout:
            x = self._cutout(x)
        return x

    def _uniform(self, n: int, low: float, high: float) -> Tensor:
        return torch.rand(n, generator=self._gen) * (high - low) + low

    def _affine(self, x: Tensor) -> Tensor:
        c = self.cfg
        b, _, h, w = x.shape
        one = torch.ones(b)
        fx = torch.where(torch.rand(b, generator=self._gen) < c.hflip, -one, one)
        fy = torch.where(torch.rand(b, generator=self._gen) < c.vflip, -one, one)
        if not (c.rotate or c.scale or c.translate):
            # Flips alone need no resampling: exact (no interpolation) and cheaper.
            hf = (fx < 0).to(x.device).view(b, 1, 1, 1)
            vf = (fy < 0).to(x.device).view(b, 1, 1, 1)
            if c.hflip:
                x = torch.where(hf, x.flip(3), x)
            if c.vflip:
                x = torch.where(vf, x.flip(2), x)
            return x
        angle = self._uniform(b, -c.rotate, c.rotate) * (math.pi / 180.0)
        zoom = self._uniform(b, 1.0 - c.scale, 1.0).sqrt()  # side of the crop
        # The crop (side `zoom`, in units of the half-side) lies fully inside the image.
        tx = self._uniform(b, -1.0, 1.0) * (1.0 - zoom)
        ty = self._uniform(b, -1.0, 1.0) * (1.0 - zoom)
        # Translation by a fraction of the side; the normalised image spans 2 units.
        tx = tx + self._uniform(b, -2.0 * c.translate, 2.0 * c.translate)
        ty = ty + self._uniform(b, -2.0 * c.translate, 2.0 * c.translate)

        # Rotation in pixel space, expressed in normalised coordinates (H may differ from W).
        cos, sin = angle.cos() * zoom, angle.sin() * zoom
        theta = torch.empty(b, 2, 3)
        theta[:, 0, 0] = cos * fx
        theta[:, 0, 1] = -sin * (h / w) * fy
        theta[:, 1, 0] = sin * (w / h) * fx
        theta[:, 1, 1] = cos * fy
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty

        theta = theta.to(device=x.device, dtype=x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.padding_mode, align_corners=False
        )

    def _intensity(self, x: Tensor) -> Tensor:
        c = self.cfg
        b = x.shape[0]
        if c.contrast:
            # Scale around each image's own mean, so contrast does not shift brightness;
            # AugmentConfig keeps contrast < 1, so the factor is > 0 (never inverts).
            k = self._uniform(b, 1.0 - c.contrast, 1.0 + c.contrast)
            k = k.to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * k + mean
        if c.brightness:  # at most 1: half the [-1, 1] range
            shift = self._uniform(b, -c.brightness, c.brightness)
            x = x + shift.to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1)
        if c.noise:
            noise = torch.randn(x.shape, generator=self._gen) * c.noise
            x = x + noise.to(device=x.device, dtype=x.dtype)
        return x

    def _cutout(self, x: Tensor) -> Tensor:
        # A square of side cutout * H (rows) by cutout * W (columns), centred anywhere in
        # the image, so near the edges part of it falls outside (as in the paper).
        b, _, h, w = x.shape
        cy = self._uniform(b, 0.0, float(h))
        cx = self._uniform(b, 0.0, float(w))
        half_h, half_w = self.cfg.cutout * h / 2, self.cfg.cutout * w / 2
        rows = torch.arange(h, dtype=torch.float32) + 0.5  # pixel centres
        cols = torch.arange(w, dtype=torch.float32) + 0.5
        in_rows = (rows[None, :] - cy[:, None]).abs() < half_h  # (B, H)
        in_cols = (cols[None, :] - cx[:, None]).abs() < half_w  # (B, W)
        keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (B, H, W)
        return x * keep[:, None].to(device=x.device, dtype=x.dtype)


def augment_seed(base_seed: int, fold: int, epoch: int) -> int:
    """A seed for one fold's epoch: deterministic, and distinct across (base, fold, epoch).

    A 63-bit hash (not arithmetic like ``base + 1000 * fold + epoch``), so seeds of
    neighbouring runs, folds and epochs do not overlap; fits ``torch.manual_seed``.
    """
    key = f"raydx.augment/{int(base_seed)}/{int(fold)}/{int(epoch)}".encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
