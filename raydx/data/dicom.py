"""One DICOM file's bytes -> the 8-bit picture a viewer shows, with pydicom.

Radiology exports (mammograms, X-rays, ultrasound stills, CT/MR slices one per file) are
DICOM, often with no other copy. The picture is built as a DICOM viewer builds it (PS3.3
C.11): the stored values go through the modality LUT (rescale slope/intercept, so CT
reads Hounsfield units), then the file's first VOI window or VOI LUT, the one the
modality chose for reading; the window's full output range is mapped onto 0-255, so
every image of a series gets the same mapping. Without a window the values are stretched
min-max per image, as 16-bit PNGs are (``raydx.data.decode``); ``--intensity`` chooses
otherwise (``raydx.data.intensity``). MONOCHROME1 (low values
white, common in mammography and X-ray) is inverted, so that white means dense
everywhere. Colour (RGB, YBR, palette) becomes RGB.

Compressed transfer syntaxes decode with GDCM (python-gdcm, Apache-2.0: JPEG lossless and
baseline, JPEG-LS, JPEG 2000), Pillow and pydicom's own RLE; 12-bit JPEG Extended, which
only the GPL libjpeg reads, fails, as anything else does, with a reason that names the
transfer syntax. One frame per file:
volumes, cine loops and tomosynthesis stacks are refused, not cut to their first frame.
The PatientID comes along: where the listing names no patients, folds group by it
(``raydx.data.files``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from raydx.data.intensity import AUTO, Intensity, no_nan, to_byte

_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420")


def is_dicom(raw: bytes) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then "DICM" (PS3.10 7.1)."""
    return raw[128:132] == b"DICM"


@dataclass(frozen=True)
class DicomImage:
    pixels: np.ndarray  # as stored (a palette's through its colours), for the content hash
    picture: np.ndarray  # uint8 (H, W) or (H, W, 3), as a viewer shows it
    mode: str  # for summaries, e.g. "DICOM MONOCHROME2 12-bit with a window"
    patient: str  # PatientID (0010,0020), "" when empty: folds group by it
    photometric: str = "MONOCHROME2"  # (0028,0004): MONOCHROME1 stores white as low


# The longest element value read while telling a bare data set by its elements: longer
# ones (an embedded ICC profile, a private vendor header, text) are skipped with a seek,
# so a file is read only as far as it parses as DICOM, and no further than its pixel
# data's tag. A log or archive among the images fails within its first bytes.
DICOM_DEFER = 1024
_PIXEL_TAGS = {0x7FE00010, 0x7FE00009, 0x7FE00008}  # PixelData, Float-, DoubleFloatPixelData


def headerless_dicom(raw: bytes | BinaryIO) -> bool:
    """A DICOM data set without the Part 10 preamble (older exports, some ``.dcm`` files
    written by scripts): its elements parse up to pixel data, with Rows. ``raw``: the
    file's bytes or the open file (read from its start); parsing stops at the pixel
    data's tag, and skips long values (``DICOM_DEFER``), so a large file costs its
    elements' headers; the pixel data is ``read_dicom``'s, which refuses what it cannot
    decode."""
    from pydicom.filereader import read_partial

    found: list[int] = []

    def at_pixels(tag: int, vr: str | None, length: int) -> bool:
        if tag in _PIXEL_TAGS:
            found.append(tag)
            return True
        return False

    f = io.BytesIO(raw) if isinstance(raw, bytes | bytearray) else raw
    try:
        f.seek(0)
        with warnings.catch_warnings():  # pydicom's guesses about a file that is no DICOM
            warnings.simplefilter("ignore")
            ds = read_partial(f, stop_when=at_pixels, defer_size=DICOM_DEFER, force=True)
        return bool(found) and "Rows" in ds
    except Exception:
        return False


def read_dicom(raw: bytes, intensity: Intensity = AUTO) -> DicomImage:
    """The picture of a one-frame DICOM file, and what summaries and folds need.

    ``intensity`` (``raydx.data.intensity``) replaces the window of greyscale files."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(raw), force=not is_dicom(raw))
    if "TransferSyntaxUID" not in ds.file_meta:  # no Part 10 header: as it was read
        from pydicom import uid

        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            uid.ImplicitVRLittleEndian
            if implicit
            else uid.ExplicitVRLittleEndian
            if little
            else uid.ExplicitVRBigEndian
        )
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        kind = str(ds.get("Modality") or ds.get("SOPClassUID", "no image"))
        raise ValueError(f"a DICOM file without pixel data ({kind}), not an image")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise ValueError(
            f"a DICOM file of {frames} frames (a volume, cine loop or stack); raydx reads "
            "2-D images: export one frame per file"
        )
    try:
        pixels = ds.pixel_array  # YBR is converted to RGB
    except Exception as e:  # pydicom lists each decoder's reason on a line of its own
        syntax = getattr(ds.get("file_meta"), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or "unknown transfer syntax"
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ValueError(
            f"cannot decode its DICOM pixel data ({name}): {'; '.join(lines[1:] or lines)}"
        ) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    bits = int(ds.get("BitsStored") or pixels.dtype.itemsize * 8)
    mode = f"DICOM {photometric} {bits}-bit"
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        pixels = apply_color_lut(pixels, ds)  # the colours: one index means another colour
        picture = _to_byte(pixels, 0.0, 2.0**depth - 1)
    elif photometric in _COLOUR or pixels.ndim == 3:
        picture = _to_byte(pixels, 0.0, 2.0**bits - 1)
    elif pixels.dtype == np.uint8 and not _transforms(ds):
        picture = pixels  # 8-bit pixels as they are, as 8-bit PNGs, whatever --intensity
        if photometric == "MONOCHROME1":
            picture = 255 - picture
    else:
        # what the file itself asks for (--intensity auto uses it): the summary, the
        # intensity count and DiagnosisModel.to_uint8's warning read it from the mode
        mode += f" {_mapping(ds)}"
        padding = _padding(pixels, ds)
        picture = _grey(pixels, ds, intensity, padding)
        if photometric == "MONOCHROME1":
            picture = 255 - picture
        if padding is not None:
            picture[padding] = 0  # outside the field of view: background
    patient = str(ds.get("PatientID") or "").strip()
    return DicomImage(pixels, picture, mode, patient, photometric)


def _mapping(ds: Any) -> str:
    """The display mapping a greyscale file carries, as its mode's suffix."""
    if ds.get("VOILUTSequence"):
        return "with a VOI LUT"
    return "with a window" if _has_window(ds) else "without a window"


def _has_window(ds: Any) -> bool:
    """A window with values and a positive width (empty ones occur in the wild)."""
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center in (None, "") or width in (None, ""):
        return False
    first = width[0] if isinstance(width, Sequence) and not isinstance(width, str) else width
    try:
        return float(first) > 0
    except (TypeError, ValueError):
        return False


def _transforms(ds: Any) -> bool:
    """Whether the file asks for a mapping of its stored values: a rescale other than
    1 and 0, a modality LUT, a window or a VOI LUT."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    rescale = slope not in (None, "", 1, 1.0) or intercept not in (None, "", 0, 0.0)
    return bool(
        rescale or _has_window(ds) or ds.get("VOILUTSequence") or ds.get("ModalityLUTSequence")
    )


def _padding(pixels: np.ndarray, ds: Any) -> np.ndarray | None:
    """Pixels outside the field of view (PixelPaddingValue, up to PixelPaddingRangeLimit):
    not image data (PS3.3 C.7.5.1.1.2), so no part of the scale; None where there are
    none, or where every pixel would be padding."""
    value = ds.get("PixelPaddingValue")
    if value in (None, "") or pixels.dtype.kind not in "iu":
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    limit = value if limit in (None, "") else limit
    lo, hi = sorted((int(value), int(limit)))
    mask = (pixels >= lo) & (pixels <= hi)
    return mask if mask.any() and not mask.all() else None


def _grey(
    pixels: np.ndarray, ds: Any, intensity: Intensity, padding: np.ndarray | None = None
) -> np.ndarray:
    """The greyscale picture. Every step is a function of the stored value, so integer
    pixels (nearly all files) go through a table of the values between their minimum and
    maximum: a 4096x3328 mammogram in about a third of the time of the whole-image float
    arithmetic, with the same bytes. ``padding`` pixels are left out of the scale."""
    from pydicom.pixels import apply_modality_lut

    if pixels.dtype.kind in "iu" and pixels.size:
        low, high = int(pixels.min()), int(pixels.max())
        if high - low < 1 << 17:
            index = np.subtract(pixels, low, dtype=np.int32)
            # How often each value occurs matters to percentiles, and to the extremes
            # after a modality LUT or without padding; a rescale keeps them at the ends.
            counts = None
            if intensity.kind == "percentile" or "ModalityLUTSequence" in ds or padding is not None:
                counts = np.bincount(
                    index[~padding] if padding is not None else index.ravel(),
                    minlength=high - low + 1,
                )
            domain = np.arange(low, high + 1).astype(pixels.dtype)
            values = apply_modality_lut(domain, ds).astype(np.float64)
            return _picture(values, counts, ds, intensity)[index]
    values = no_nan(apply_modality_lut(pixels, ds).astype(np.float64))  # float pixel data
    return _picture(values, None, ds, intensity)


def _picture(
    values: np.ndarray, counts: np.ndarray | None, ds: Any, intensity: Intensity
) -> np.ndarray:
    """Modality values -> bytes: the whole image (``counts`` None) or a table of distinct
    values with how often each occurs in the image."""
    from pydicom.pixels import apply_voi_lut

    if intensity.kind != "auto":  # the user's choice, the same for every file
        return to_byte(values, *intensity.bounds(values, counts))
    if ds.get("VOILUTSequence"):  # a table indexed by whole values
        whole = np.rint(np.clip(values, -(2.0**62), 2.0**62)).astype(np.int64)  # no inf
        shown = apply_voi_lut(whole, ds).astype(np.float64)
        # the range the LUT's entries span, as for a window: one mapping for the series
        # (its descriptor's bit depth is misreported by some vendors)
        entries, first = ds.VOILUTSequence[0].LUTDescriptor[:2]
        inputs = np.arange(int(first), int(first) + (int(entries) or 1 << 16))
        out = apply_voi_lut(inputs, ds).astype(np.float64)
        return _to_byte(shown, float(out.min()), float(out.max()))
    if _has_window(ds):
        shown = apply_voi_lut(values, ds).astype(np.float64)
        lo, hi = apply_voi_lut(np.array([-np.inf, np.inf]), ds)  # the window's output range
        return _to_byte(shown, float(lo), float(hi))
    return _to_byte(values, *AUTO.bounds(values, counts))


def _to_byte(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return to_byte(np.asarray(a, np.float64), lo, hi)


def dicom_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a DICOM file's first bytes (its header), or None."""
    import pydicom

    try:
        ds = pydicom.dcmread(io.BytesIO(head), stop_before_pixels=True, defer_size=1024)
        return int(ds.Columns), int(ds.Rows)
    except Exception:
        return None
