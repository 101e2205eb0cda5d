"""One image file's bytes -> a fixed-size uint8 array, its content hash, and what it was.

Runs inside Ray Data tasks (see ``ingest.py``). Every failure is caught per image and
returned as a reason, so one broken file never crashes a batch, let alone a search.
"""

from __future__ import annotations

import functools
import hashlib
import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from raydx.data.dicom import dicom_size, headerless_dicom, is_dicom, read_dicom
from raydx.data.intensity import AUTO, Intensity, scale_grey

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from PIL.ImageCms import ImageCmsTransform

# File name endings of image folders in the field: what Pillow reads, and DICOM
# (raydx.data.dicom; a manifest may list DICOM files of any name).
IMAGE_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".tif", ".tiff", ".bmp", ".gif", ".webp",
    ".jp2", ".j2k",  # JPEG 2000: pathology and some scanners' exports
    ".pgm", ".ppm", ".pnm",  # the mini-MIAS mammograms are PGM
    ".tga", ".dcm", ".dicom",
)  # fmt: skip
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray  # (size, size, 1) uint8 for grey files, else (size, size, 3)
    grey: bool  # every pixel has R == G == B (grey files, or grey stored as RGB)
    hash: str  # of the pixels at the file's own size, in a canonical form (canonical_pixels)
    mode: str  # Pillow mode of the file, e.g. "L", "RGB", "RGBA", "I;16"; "DICOM ..."
    width: int
    height: int
    patient: str = ""  # a DICOM file's PatientID (raydx.data.dicom)
    format: str = ""  # the file's format: "PNG", "JPEG", "TIFF", "DICOM", ...

    @property
    def size(self) -> str:
        return size_key(self.width, self.height)


def size_key(width: int, height: int) -> str:
    """How runs record an image's size ("WxH"): config.json's ``input_sizes``, the console."""
    return f"{width}x{height}"


def aspect(size: str) -> float:
    """Width / height of a ``size_key``."""
    w, _, h = size.partition("x")
    return int(w) / int(h)


def content_hash(pixels: np.ndarray, kind: str = "") -> str:
    """Exact-duplicate key: the same pixels give the same key whatever the file format.

    The shape and bytes, with the number kind where it is not unsigned (int16 and uint16,
    float32 and int32 can hold the same bytes; the item size follows from the shape and
    the byte count), and ``kind``, what else tells equal arrays apart (a DICOM file's
    MONOCHROME1, which shows the same values inverted). Unsigned images and an empty
    ``kind`` hash as they did before the kind was added."""
    if pixels.dtype.byteorder == ">":  # the same numbers, in the machine's order
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
    h = hashlib.blake2b(digest_size=16)
    h.update(str(pixels.shape).encode())
    if pixels.dtype.kind != "u":
        h.update(f"|{pixels.dtype.kind}".encode())
    if kind:
        h.update(f"|{kind}".encode())
    h.update(np.ascontiguousarray(pixels).data)  # the buffer itself: no copy of a large image
    return h.hexdigest()


def is_grey_mode(mode: str) -> bool:
    """Whether a mode that ingestion records (``input_modes``) is of grey images: Pillow's
    grey modes, and greyscale DICOM (``DICOM MONOCHROME2 12-bit ...``)."""
    return mode in _GREY_MODES or mode.startswith("DICOM MONOCHROME")


def collapse_grey(a: np.ndarray) -> np.ndarray:
    """An (H, W, 3) array whose channels are equal -> (H, W): grey saved as RGB hashes as
    the grey file it equals. A few pixels are compared first, so colour costs little."""
    if a.ndim != 3 or a.shape[2] != 3 or not a.size:
        return a
    few = a[:: max(1, a.shape[0] // 16), :: max(1, a.shape[1] // 16)]
    if not ((few[..., 0] == few[..., 1]).all() and (few[..., 1] == few[..., 2]).all()):
        return a
    if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
        return a[..., 0]
    return a


def canonical_pixels(im: PILImage, pixels: np.ndarray) -> np.ndarray:
    """The pixels raydx reads from a Pillow image, at the file's own size, in one form per
    picture, for ``content_hash``: a palette image as its colours (two files of equal
    indices but other palettes are other pictures), alpha left out as decoding leaves it
    out, 1-bit as 0/255, colour whose channels are equal as grey. Grey and colour files
    of 8 bits hash as before; 16-bit and float grey keep their values.

    ``pixels``: ``np.asarray(im)``."""
    mode = im.mode
    if mode == "1":
        return pixels.astype(np.uint8) * np.uint8(255)
    if mode in ("L", "RGB") or mode.startswith("I") or mode == "F":
        return collapse_grey(pixels)
    if mode == "LA":
        return pixels[..., 0]
    if mode == "RGBA":
        return collapse_grey(pixels[..., :3])
    return collapse_grey(np.asarray(im.convert("RGB")))  # P, PA, CMYK, YCbCr, ... as decoded


def _to_uint8(
    im: PILImage, intensity: Intensity = AUTO, pixels: np.ndarray | None = None
) -> PILImage:
    """A Pillow image in mode L or RGB; high-bit-depth images are scaled by ``intensity``.

    16-bit and float images (CT, MRI, many microscopes) rarely use their full range (12
    bits in 16 is common), so a fixed /257 would leave them nearly black; by default a
    per-image min-max stretch (MONAI's ``ScaleIntensity``), see ``raydx.data.intensity``.
    ``pixels``: ``np.asarray(im)`` where the caller holds it already (a 4096 x 3276
    16-bit image takes 0.014 s to turn into an array).
    """
    from PIL import Image

    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode.startswith("I") or mode == "F":
        values = np.asarray(im) if pixels is None else pixels
        return Image.fromarray(scale_grey(values, intensity), mode="L")
    if mode in ("1", "LA"):
        return im.convert("L")
    return im.convert("RGB")  # RGBA, P, CMYK, YCbCr, ...


# A user's own files, not untrusted uploads: Pillow's guard against decompression bombs
# (a warning above 89 million pixels, an error above 179 million) would refuse a large
# whole-slide tile or a stitched scan. raydx reads up to a gigapixel, with its own words.
MAX_PIXELS = 1 << 30
_OPEN_LOCK = threading.Lock()


@contextmanager
def _opened(raw: bytes) -> Iterator[PILImage]:
    from PIL import Image

    with _OPEN_LOCK, warnings.catch_warnings():  # predict opens files from threads
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, MAX_PIXELS // 2
        try:
            im = Image.open(io.BytesIO(raw))
        except Image.DecompressionBombError:
            raise ValueError(
                f"an image of more than {MAX_PIXELS:,} pixels, beyond what raydx reads; "
                "cut it into tiles (whole-slide images are classified tile by tile)"
            ) from None
        finally:
            Image.MAX_IMAGE_PIXELS = old
    with im:
        yield im


def _check_one_frame(im: PILImage) -> None:
    """One image per file: a multi-page TIFF or an animated GIF/WebP is refused, not cut
    to its first frame. Pages all smaller than the first (a TIFF pyramid's reduced
    resolutions) are fine: the first page is the image."""
    n = int(getattr(im, "n_frames", 1) or 1)
    if n == 1:
        return
    first = im.size
    sizes = []
    for i in range(1, n):
        im.seek(i)
        sizes.append(im.size)
    im.seek(0)
    if all(w < first[0] and h < first[1] for w, h in sizes):
        return
    raise ValueError(
        f"a file of {n} frames or pages (a stack, an animation); raydx reads one 2-D image "
        "per file: save each frame as a file of its own"
    )


def _check_not_deep_colour(im: PILImage) -> None:
    """Pillow reads 16-bit colour (48-bit RGB, 16-bit grey with alpha) as its top 8 bits:
    12-bit data would come out as 0-15 of 255, nearly black, with no sign of it."""
    for tile in getattr(im, "tile", None) or []:
        args = tile.args if hasattr(tile, "args") else tile[3]
        rawmode = args[0] if isinstance(args, tuple) else args
        if im.mode in ("RGB", "RGBA", "LA") and isinstance(rawmode, str) and ";16" in rawmode:
            raise ValueError(
                f"a 16-bit {rawmode.split(';')[0]} image, which Pillow reads as its top 8 bits "
                "only (12-bit data would come out nearly black); save it as 8-bit colour, or "
                "as 16-bit greyscale, which raydx stretches in full"
            )


def decode(raw: bytes, size: int, intensity: Intensity = AUTO) -> Decoded:
    """Decode, convert and resize one image (squashed to ``size`` x ``size``); 16-bit,
    float and DICOM pixels are brought to 0-255 as ``intensity`` says.

    Per image this costs about 1.5x Pillow's bare open-convert-resize (the hash and
    the checks); measured with ``bench/ingest.py``.

    Raises on unreadable or truncated data (Pillow's ``load`` checks the whole stream).
    """
    from PIL import Image

    if is_dicom(raw):
        return _from_dicom(raw, size, intensity)
    try:
        return _from_pillow(raw, size, intensity)
    except Image.UnidentifiedImageError:
        if headerless_dicom(raw):  # a bare data set: no preamble, no "DICM"
            return _from_dicom(raw, size, intensity)
        raise


def _from_dicom(raw: bytes, size: int, intensity: Intensity) -> Decoded:
    from PIL import Image

    dicom = read_dicom(raw, intensity)
    height, width = dicom.picture.shape[:2]
    im8 = Image.fromarray(dicom.picture)  # (H, W) -> L, (H, W, 3) -> RGB
    if im8.size != (size, size):
        im8 = im8.resize((size, size), Image.Resampling.BILINEAR)
    a = np.asarray(im8, dtype=np.uint8)
    return _decoded(
        a,
        a.ndim == 2,
        content_hash(
            collapse_grey(dicom.pixels), "MONOCHROME1" if dicom.photometric == "MONOCHROME1" else ""
        ),
        dicom.mode,
        width,
        height,
        dicom.patient,
        "DICOM",
    )


# An ICC profile in a colour file says what its RGB numbers mean: a camera's
# Adobe RGB or Display P3, a slide scanner's calibration. Viewers convert to the screen's
# sRGB; so does raydx, so that one tissue photographed in two colour spaces reads alike
# (and the mode names the profile, so the shortcut check sees a class that has its own).
# Converted after resizing: 0.6 ms for a 224-px image, where a 12-megapixel photo's
# conversion takes 0.18 s (as long as its decoding).
# (CMYK files, rare here, keep Pillow's plain conversion.)
_PROFILED_MODES = ("RGB", "RGBA")
PROFILED = " with ICC profile "  # in a mode: "RGB with ICC profile 'Adobe RGB (1998)'"


def converted_colour(modes: dict[str, int]) -> tuple[int, str]:
    """From ingestion's mode counts: how many images were converted from an ICC profile
    to sRGB, and the commonest profile's quoted name ("" when none were)."""
    profiled = {m: n for m, n in modes.items() if PROFILED in m}
    if not profiled:
        return 0, ""
    commonest = max(profiled, key=lambda m: profiled[m])
    return sum(profiled.values()), commonest.split(PROFILED, 1)[1]


@functools.lru_cache(maxsize=32)
def _foreign_profile(icc: bytes) -> str | None:
    """The description of an embedded RGB ICC profile that is not sRGB; None for sRGB,
    for another space's profile (a grey or CMYK profile on an RGB image), or for one
    lcms cannot read (raydx then takes the numbers as sRGB, as browsers do)."""
    from PIL import ImageCms

    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        description = ImageCms.getProfileDescription(profile)
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None
    if profile.profile.xcolor_space.strip() != "RGB":
        return None
    name = " ".join(str(description or "").split()) or "unnamed"
    return None if "srgb" in name.lower() else name[:60]


@functools.lru_cache(maxsize=32)
def _to_srgb(icc: bytes) -> ImageCmsTransform:
    from PIL import ImageCms

    # NOCACHE: lcms's one-pixel cache is not safe when predict's threads share a transform
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
        ImageCms.Intent.RELATIVE_COLORIMETRIC,
        ImageCms.Flags.NOCACHE,
    )


def _profiled(im: PILImage, size: int) -> tuple[PILImage, str] | None:
    """A colour image with a non-sRGB ICC profile: resized to ``size`` and converted to
    sRGB, and the profile's description; None for every other image."""
    from PIL import Image, ImageCms

    icc = im.info.get("icc_profile")
    if not icc or im.mode not in _PROFILED_MODES or not isinstance(icc, bytes):
        return None
    name = _foreign_profile(icc)
    if name is None:
        return None
    src = im if im.mode == "RGB" else im.convert("RGB")
    if src.size != (size, size):
        src = src.resize((size, size), Image.Resampling.BILINEAR)
    try:
        out = ImageCms.applyTransform(src, _to_srgb(icc))
    except (OSError, ValueError, ImageCms.PyCMSError):
        return None
    return (out, name) if out is not None else None


def _from_pillow(raw: bytes, size: int, intensity: Intensity) -> Decoded:
    from PIL import Image, ImageOps

    with _opened(raw) as im:
        _check_one_frame(im)
        _check_not_deep_colour(im)
        im.load()
        fmt = str(im.format or "")
        # As viewers show a camera's rotated photo (exif_transpose copies even when
        # there is nothing to turn, so it runs only on a tag that says to).
        turn = im.getexif().get(0x0112, 1) not in (None, 1)
        shown = ImageOps.exif_transpose(im) if turn else im
        mode, (width, height) = shown.mode, shown.size
        pixels = np.asarray(shown)
        digest = content_hash(canonical_pixels(shown, pixels))
        profiled = _profiled(shown, size)
        if profiled is not None:
            im8, profile = profiled
            mode = f"{mode}{PROFILED}{profile!r}"
        else:
            im8 = _to_uint8(shown, intensity, pixels)
        if im8.size != (size, size):
            im8 = im8.resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(im8, dtype=np.uint8)
    return _decoded(a, mode in _GREY_MODES, digest, mode, width, height, "", fmt)


def _decoded(
    a: np.ndarray,
    grey: bool,
    digest: str,
    mode: str,
    width: int,
    height: int,
    patient: str,
    fmt: str,
) -> Decoded:
    """(S, S, 1) for grey, (S, S, 3) for colour; RGB holding grey counts as grey."""
    if a.ndim == 2:
        a = a[:, :, None]
        grey = True
    else:
        grey = grey or bool((a[:, :, 0] == a[:, :, 1]).all() and (a[:, :, 1] == a[:, :, 2]).all())
    return Decoded(a, grey, digest, mode, int(width), int(height), patient, fmt)


def probe_size(raw: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, or None if Pillow cannot tell."""
    if is_dicom(raw):
        return dicom_size(raw)
    try:
        with _opened(raw) as im:
            return im.size
    except Exception:
        return None


def reason(e: BaseException) -> str:
    """A one-line, user-facing reason for a failed decode."""
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(e, PermissionError):
        return "permission denied"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    name = type(e).__name__
    if name == "UnidentifiedImageError":
        return "not an image file (neither a format Pillow reads nor DICOM)"
    return f"{name}: {text}" if text else name
