"""How high-bit-depth pixels (16-bit and float images, DICOM) become the 0-255 a network sees.

A network sees 8-bit pixels; 16-bit, float and DICOM images hold more, and how they are
brought down decides what the network can learn from them:

- ``auto`` (default): a DICOM file's own window (the picture a viewer shows) where it
  has one, otherwise each image's minimum -> 0 and maximum -> 255 (MONAI's
  ``ScaleIntensity``). Works on any data, but absolute intensity is lost (two exposures
  of one tissue read alike) and one hot pixel darkens the rest of its image.
- ``percentile:LOW:HIGH`` (``percentile`` alone: 0.5 and 99.5): each image's LOW and
  HIGH percentiles -> 0 and 255, clipped beyond (MONAI's
  ``ScaleIntensityRangePercentiles``): a hot pixel or a burnt-in marker no longer sets
  the scale.
- ``range:LOW:HIGH``: the same values for every image -> 0 and 255, clipped beyond
  (MONAI's ``ScaleIntensityRange``; a CT window in Hounsfield units such as
  ``range:-1000:400``, or ``range:0:4095`` for a 12-bit camera): absolute intensity is
  kept. For DICOM the values are those after the modality LUT (rescale slope and
  intercept), and the file's own window is not used.

8-bit images (and colour) are display pixels already and pass through unchanged; so are
integer arrays within 0-255 under ``auto`` where their data set is 8-bit pixels stored
wide: a ``.npz`` all of whose values are, or arrays for a model trained on 8-bit pixels
(``scale_images``, ``eight_bit_of``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from raydx.errors import RaydxError
from raydx.lookup import lookup

KINDS = ("auto", "percentile", "range")
DEFAULT_PERCENTILES = (0.5, 99.5)
_FORMS = "'auto', 'percentile', 'percentile:LOW:HIGH' or 'range:LOW:HIGH'"


@dataclass(frozen=True)
class Intensity:
    kind: str = "auto"
    low: float = 0.0
    high: float = 0.0

    @classmethod
    def parse(cls, text: object) -> Intensity:
        """``"auto"``, ``"percentile"``, ``"percentile:1:99"`` or ``"range:-1000:400"``."""
        if isinstance(text, Intensity):
            return text
        if not isinstance(text, str) or not text.strip():
            raise RaydxError(f"intensity must be one of {_FORMS}, but got intensity={text!r}.")
        kind, *values = (part.strip() for part in text.strip().split(":"))
        try:
            kind = lookup(kind.lower(), KINDS, "intensity")
        except RaydxError as e:
            raise RaydxError(f"{e} Forms: {_FORMS}.") from None
        if kind == "auto":
            if values:
                raise RaydxError(f"intensity 'auto' takes no values, but got intensity={text!r}.")
            return cls()
        if kind == "percentile" and not values:
            return cls("percentile", *DEFAULT_PERCENTILES)
        if len(values) != 2:
            example = "percentile:1:99" if kind == "percentile" else "range:-1000:400"
            raise RaydxError(
                f"intensity '{kind}' needs two values, as {kind}:LOW:HIGH (e.g. {example}), "
                f"but got intensity={text!r}."
            )
        try:
            low, high = float(values[0]), float(values[1])
        except ValueError:
            raise RaydxError(
                f"intensity {kind}:LOW:HIGH needs two numbers, but got intensity={text!r}."
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise RaydxError(
                f"intensity {kind}:LOW:HIGH needs finite LOW < HIGH, but got intensity={text!r}."
            )
        if kind == "percentile" and not 0 <= low < high <= 100:
            raise RaydxError(
                f"intensity percentile:LOW:HIGH needs 0 <= LOW < HIGH <= 100, but got "
                f"intensity={text!r}."
            )
        return cls(kind, low, high)

    def __str__(self) -> str:
        if self.kind == "auto":
            return "auto"
        return f"{self.kind}:{_number(self.low)}:{_number(self.high)}"

    def bounds(self, values: np.ndarray, counts: np.ndarray | None = None) -> tuple[float, float]:
        """The values that map to 0 and 255. ``values`` are one image's pixels (infinite
        ones left out), or with ``counts`` the distinct values of a table and how often
        each occurs."""
        if self.kind == "range":
            return self.low, self.high
        percentile = self.kind == "percentile"
        if percentile and counts is None and values.dtype in (np.uint8, np.uint16):
            counts = np.bincount(values.ravel(), minlength=256)  # 4x faster than sorting
            values = np.arange(len(counts))
        if counts is None:
            if values.dtype.kind == "f":  # -inf (a NaN, see no_nan) and +inf are no scale
                finite = np.isfinite(values)
                values = values if finite.all() else values[finite]
            if percentile:
                lo, hi = np.percentile(values, [self.low, self.high])
                return float(lo), float(hi)
            return float(values.min()), float(values.max())
        present = counts > 0
        values, counts = values[present], counts[present]
        if self.kind == "percentile":
            return _percentiles_of_counts(values, counts, self.low, self.high)
        return float(values.min()), float(values.max())

    def describe(self) -> str:
        """For the console and the model card."""
        low, high = _number(self.low), _number(self.high)
        if self.kind == "range":
            return (
                f"values {low} to {high} (as stored; for DICOM after the rescale slope and "
                "intercept, so Hounsfield units for CT) mapped onto 0-255 for every image"
            )
        if self.kind == "percentile":
            return f"each image's percentiles {low} to {high} mapped onto 0-255"
        return "each DICOM file's window, else each image's minimum to maximum, onto 0-255"


AUTO = Intensity()


def _number(x: float) -> str:
    """The shortest spelling that reads back as the same float: 1234567, 0.5, 1e-06."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def _percentiles_of_counts(
    values: np.ndarray, counts: np.ndarray, low: float, high: float
) -> tuple[float, float]:
    """numpy's default (linear) percentiles of ``values[i]`` repeated ``counts[i]`` times,
    exactly, without building the repeats."""
    order = np.argsort(values, kind="stable")
    values, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])
    out = []
    for q in (low, high):
        pos = q / 100 * (n - 1)
        k = int(np.floor(pos))
        a = float(values[np.searchsorted(cum, k, side="right")])  # the k-th smallest, from 0
        b = float(values[np.searchsorted(cum, min(k + 1, n - 1), side="right")])
        t = pos - k
        out.append(b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t)  # as numpy's lerp
    return out[0], out[1]


def scale_grey(a: np.ndarray, intensity: Intensity) -> np.ndarray:
    """One grey image of any integer or float type -> uint8 as ``intensity`` says; a NaN
    reads as the low end, +inf as the high end. The one place 16-bit files, ``.npz``
    arrays and arrays handed to a saved model are scaled, so all three agree."""
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:  # a table of every 16-bit value's byte
        a = a.astype(np.uint16, copy=False)  # big-endian TIFFs: native order
        lo, hi = intensity.bounds(a)
        return to_byte(np.arange(1 << 16, dtype=np.float32), lo, hi)[a]
    # float32 halves float64's memory on a big image; 32- and 64-bit values need float64
    f = no_nan(np.asarray(a, dtype=np.float32 if a.dtype.itemsize <= 2 else np.float64))
    return to_byte(f, *intensity.bounds(f))


def no_nan(f: np.ndarray) -> np.ndarray:
    """Float pixels with NaN (no data) as -inf: ``bounds`` leaves infinities out and
    ``to_byte`` clips them, so no data reads as the low end and +inf as the high end."""
    finite = np.isfinite(f)
    if finite.all():
        return f
    if not finite.any():
        raise ValueError("every pixel is NaN or infinite")
    return np.where(np.isnan(f), f.dtype.type(-np.inf), f)


def modes_of(info: dict[str, Any]) -> dict[str, int]:
    """The image modes a source recorded: decoded files' ("modes") or arrays' that were
    scaled ("array_modes", ``raydx.data.npz``)."""
    return dict(info.get("modes") or info.get("array_modes") or {})


def scale_images(
    x: np.ndarray,
    intensity: Intensity,
    names: Sequence[str] | None = None,
    *,
    eight_bit: bool | None = None,
) -> tuple[np.ndarray, bool]:
    """(N, H, W, C) arrays -> uint8, and whether ``intensity`` scaled any of them.

    uint8 passes. Colour must be 8-bit: integers within 0-255 are cast, under any
    setting. Grey images are scaled image by image as ``intensity`` says, as 16-bit files
    are, except under ``auto`` integer ones that are 8-bit pixels stored wide (as arrays
    read from PNGs often are), which are cast. ``eight_bit`` says which those are:

    - None: all or none, as ``x`` as a whole says (every value within 0-255): ``x`` is
      one data set, whose images are of one kind (a ``.npz``, all splits at once).
    - True: each integer image within 0-255, on its own; the others are scaled (arrays
      for a model trained on 8-bit pixels, ``eight_bit_of``).
    - False: none (arrays for a model whose training images were scaled).

    With True or False an image's bytes do not depend on the images beside it.
    """
    if x.dtype == np.uint8:
        return x, False
    integral = np.issubdtype(x.dtype, np.integer)
    if not (integral or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"pixels must be of an integer or float type, but got dtype={x.dtype}")
    if x.shape[3] != 1:
        if integral and _within_bytes(x):
            return x.astype(np.uint8), False
        raise ValueError(
            f"holds colour images of dtype={x.dtype} that are not 8-bit (integers within "
            "0-255); colour must be 8-bit. "
            "Grey images (N, H, W) of any integer or float type are brought to 0-255 as "
            "--intensity says"
        )
    cast = np.zeros(len(x), bool)  # the images taken as 8-bit pixels stored wide
    if integral and intensity.kind == "auto" and eight_bit is not False:
        if eight_bit is None:
            cast[:] = _within_bytes(x)
        elif x.size:
            flat = x.reshape(len(x), -1)
            cast = (flat.min(1) >= 0) & (flat.max(1) <= 255)
        else:
            cast[:] = True
    if cast.all():
        return x.astype(np.uint8), False
    out = np.empty(x.shape, np.uint8)
    for i in range(len(x)):
        if cast[i]:
            out[i] = x[i].astype(np.uint8)
            continue
        try:
            out[i, ..., 0] = scale_grey(x[i, ..., 0], intensity)
        except ValueError as e:
            raise ValueError(f"{names[i] if names else f'image {i}'}: {e}") from None
    return out, True


def _within_bytes(x: np.ndarray) -> bool:
    return not x.size or bool(0 <= x.min() <= x.max() <= 255)


def eight_bit_of(modes: dict[str, int] | None) -> bool | None:
    """What a saved model's training modes (config.json "input_modes", ``modes_of``) say
    integer grey arrays within 0-255 are, for ``scale_images(eight_bit=...)``, so that
    arrays are scaled as its training images were, each whatever is beside it:

    - False when training scaled images (16-bit, float or DICOM greyscale,
      ``scaled_count``): a 16-bit file is stretched however dim, and a ``.npz`` with any
      value beyond 255 had every image stretched, so a dim image is stretched too. (A
      model trained on 8-bit and 16-bit files together takes arrays as the 16-bit kind;
      8-bit pixels go to it as uint8, which pass.)
    - True when it scaled none: its images were 8-bit pixels, passed or cast.
    - None when the model recorded no modes (saved before it did, and before to_uint8
      decided this): the whole array handed in decides, as it did then.
    """
    if modes is None:
        return None
    return not scaled_count(modes)


def to_byte(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``a`` with ``lo`` -> 0 and ``hi`` -> 255, clipped and rounded; flat is all 0."""
    if not (np.isfinite(lo) and np.isfinite(hi)):  # never a silently constant image
        raise ValueError(f"cannot map pixel values onto 0-255 between {lo} and {hi}")
    if not hi > lo:
        return np.zeros(a.shape, np.uint8)
    scaled = (a - lo) * (255.0 / (hi - lo))  # in a's own float type (float32 halves memory)
    return np.rint(np.clip(scaled, 0.0, 255.0, out=scaled)).astype(np.uint8)


_MAPPING_ENDS = {
    " with a window": "window",
    " with a VOI LUT": "VOI LUT",
    " without a window": "no window",
}


def dicom_mapping(mode: str) -> str | None:
    """What a greyscale DICOM mode ("DICOM MONOCHROME2 12-bit with a window") says its
    files carried: "window", "VOI LUT" or "no window"; "" for 8-bit files that pass
    unchanged; None where it does not tell (not DICOM greyscale, or a mode recorded
    before modes named the mapping)."""
    if not mode.startswith("DICOM MONOCHROME"):
        return None
    for end, mapping in _MAPPING_ENDS.items():
        if mode.endswith(end):
            return mapping
    return "" if mode.endswith(" 8-bit") else None


def scaled_count(modes: dict[str, int]) -> int:
    """How many decoded images ``intensity`` applies to, from ingestion's mode counts
    (Pillow's 32-bit "I", 16-bit "I;16...", float "F"; greyscale DICOM but 8-bit files
    without a rescale, window or LUT, which pass unchanged)."""

    def scaled(mode: str) -> bool:
        if mode.startswith("DICOM MONOCHROME"):
            return dicom_mapping(mode) != ""
        return mode.startswith(("I", "F"))

    return sum(n for m, n in modes.items() if scaled(m))


def intensity_note(intensity: str, modes: dict[str, int] | None) -> str:
    """One console line on how pixel values were scaled, or "" when nothing was."""
    n = scaled_count(modes or {})
    if n:
        return (
            f"{n} 16-bit, float or DICOM greyscale images brought to 0-255 with intensity "
            f"{intensity}: {Intensity.parse(intensity).describe()}"
        )
    if intensity != "auto":
        return (
            f"WARNING: intensity {intensity} changes nothing here: no image is 16-bit, float "
            "or DICOM greyscale (8-bit and colour images pass unchanged)"
        )
    return ""
