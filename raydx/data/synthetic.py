"""A generated cytology-like image set, so that everything runs without downloading data.

Each image is a small field of cell nuclei on a textured, blurred, noisy background.
A hidden per-image "severity" drives the nuclear features; malignant images draw it
from a shifted distribution, so the signal is real but overlaps with benign images
and a small CNN lands around AUC 0.8-0.9, not 1.0 (a perfect toy hides bugs).
"""

from __future__ import annotations

import numpy as np

from raydx.data.table import ImageTable
from raydx.errors import DataError

CLASS_NAMES = ("benign", "malignant")
MALIGNANT_FRACTION = 0.3
SEVERITY_SHIFT = 1.7  # malignant minus benign mean of the latent severity, in its std units
MAX_NUCLEI = 10
CHUNK = 256  # images rendered at once; bounds memory at (CHUNK, MAX_NUCLEI, S, S) floats


def make_synthetic(n: int = 600, *, image_size: int = 28, seed: int = 0) -> ImageTable:
    """Generate ``n`` grey ``image_size`` x ``image_size`` images, ~30% malignant.

    Deterministic for ``seed`` (one ``numpy.random.default_rng``), no files written.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise DataError(f"n must be an int >= 1, but got n={n!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer):
        raise DataError(f"image_size must be an int >= 8, but got image_size={image_size!r}.")
    if image_size < 8:
        raise DataError(f"image_size must be an int >= 8, but got image_size={image_size}.")
    n, size = int(n), int(image_size)
    rng = np.random.default_rng(seed)

    labels = np.zeros(n, dtype=np.int64)
    labels[: round(MALIGNANT_FRACTION * n)] = 1
    rng.shuffle(labels)

    # The latent severity overlaps between classes: this is what keeps AUC below 1.
    severity = rng.normal(size=n) + SEVERITY_SHIFT * labels
    images = np.empty((n, size, size), dtype=np.float64)
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        images[start:stop] = _render(severity[start:stop], size, rng)

    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)[..., None]
    return ImageTable(
        images=pixels,
        labels=labels,
        sample_ids=np.array([f"synthetic/{i}" for i in range(n)], dtype=object),
        class_names=CLASS_NAMES,
        name="synthetic",
    )


def _render(severity: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one chunk of images in [0, 1] (bright background, dark nuclei)."""
    b, m = len(severity), MAX_NUCLEI
    scale = size / 28.0
    s = severity[:, None]

    # Per-nucleus features: severity sets the mean, per-nucleus noise the spread.
    count = np.clip(rng.poisson(3.5 + 1.2 * np.clip(severity, -2, 4)), 2, m)
    active = np.arange(m)[None, :] < count[:, None]
    radius = scale * np.clip(2.3 + 0.35 * s + 0.35 * rng.normal(size=(b, m)), 1.3, 4.5)
    irregular = np.clip(0.06 + 0.05 * s + 0.05 * rng.normal(size=(b, m)), 0.0, 0.35)
    darkness = np.clip(0.38 + 0.06 * s + 0.06 * rng.normal(size=(b, m)), 0.15, 0.75)
    hetero = np.clip(0.15 + 0.08 * s + 0.06 * rng.normal(size=(b, m)), 0.0, 0.6)
    margin = 2.0 * scale
    cy = rng.uniform(margin, size - 1 - margin, size=(b, m))
    cx = rng.uniform(margin, size - 1 - margin, size=(b, m))
    a2, a3 = irregular * rng.uniform(0.5, 1.0, size=(2, b, m))
    p2, p3 = rng.uniform(0, 2 * np.pi, size=(2, b, m))

    # Offsets from every pixel to every nucleus centre: (b, m, size, size), float32 for speed.
    ex = (..., None, None)
    grid = np.arange(size, dtype=np.float32)
    dy = grid[None, None, :, None] - cy[ex].astype(np.float32)
    dx = grid[None, None, None, :] - cx[ex].astype(np.float32)
    dist = np.sqrt(dx * dx + dy * dy) + np.float32(1e-6)
    c, sn = dx / dist, dy / dist  # cos and sin of the polar angle, without arctan2
    cos2, sin2 = c * c - sn * sn, 2 * c * sn
    cos3, sin3 = c * (4 * c * c - 3), sn * (3 - 4 * sn * sn)
    # Radial harmonics (2nd and 3rd) make the outline irregular, as in atypical nuclei:
    # r(theta) = radius * (1 + a2 cos(2 theta + p2) + a3 cos(3 theta + p3)).
    f32 = {"dtype": np.float32}
    h2c, h2s = (a2 * np.cos(p2)).astype(**f32), (a2 * np.sin(p2)).astype(**f32)
    h3c, h3s = (a3 * np.cos(p3)).astype(**f32), (a3 * np.sin(p3)).astype(**f32)
    shape = 1 + h2c[ex] * cos2 - h2s[ex] * sin2 + h3c[ex] * cos3 - h3s[ex] * sin3
    edge = radius.astype(np.float32)[ex] * shape
    soft = np.float32(0.6 * scale)
    on = active.astype(np.float32)[ex]
    nucleus = on / (1 + np.exp((dist - edge) / soft))
    cytoplasm = on / (1 + np.exp((dist - 2.2 * edge) / (2 * soft)))

    # Chromatin texture: clumpier (more heterogeneous) with severity.
    blur_fine = _blur_matrix(size, 0.7 * scale)
    tex = _blur(rng.normal(size=(b, size, size)), blur_fine)
    tex = _normalised(tex).astype(np.float32)
    dark, het = darkness.astype(np.float32)[ex], hetero.astype(np.float32)[ex]
    stain = (nucleus * dark * (1 + het * tex[:, None])).max(axis=1)
    halo = np.float32(0.08) * cytoplasm.max(axis=1)

    blur_coarse = _blur_matrix(size, 3.0 * scale)
    background = 0.80 + 0.05 * _normalised(_blur(rng.normal(size=(b, size, size)), blur_coarse))
    img = background - halo - stain

    # Optics and staining variability: blur, per-image gain/offset, sensor noise.
    img = _blur(img, _blur_matrix(size, 0.5 * scale))
    gain = rng.normal(1.0, 0.08, size=(b, 1, 1))
    offset = rng.normal(0.0, 0.04, size=(b, 1, 1))
    img = gain * (img - 0.6) + 0.6 + offset + rng.normal(0.0, 0.03, size=img.shape)
    return np.clip(img, 0.0, 1.0)


def _blur_matrix(size: int, sigma: float) -> np.ndarray:
    """A (size, size) Gaussian blur operator with reflected borders, rows summing to 1."""
    radius = max(1, int(np.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    idx = np.arange(size)[:, None] + offsets[None, :]
    idx = np.abs(idx)  # reflect at 0
    idx = np.where(idx > size - 1, 2 * (size - 1) - idx, idx)
    idx = np.clip(idx, 0, size - 1)
    mat = np.zeros((size, size))
    np.add.at(mat, (np.repeat(np.arange(size), len(offsets)), idx.ravel()), np.tile(weights, size))
    return mat


def _blur(x: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Separable blur of a (b, size, size) stack: ``mat @ x @ mat.T`` per image."""
    return np.einsum("ij,bjk,lk->bil", mat, x, mat, optimize=True)


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / (x.std(axis=(1, 2), keepdims=True) + 1e-8)
