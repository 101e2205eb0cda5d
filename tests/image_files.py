"""Writers of awkward image files for the tests (pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def dicom_bytes(pixels: np.ndarray, photometric: str | None = None, **attrs: Any) -> bytes:
    """A DICOM Part 10 file (preamble, "DICM", file meta) of one uncompressed frame."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    rgb = pixels.ndim == 3
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if rgb else "MONOCHROME2")
    if rgb:
        ds.PlanarConfiguration = 0
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = attrs.pop("BitsStored", bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def png_bytes(a: np.ndarray, mode: str | None = None) -> bytes:
    """A PNG of ``a``; uint16 arrays give 16-bit greyscale (mode I;16)."""
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


# Adobe RGB (1998)'s primaries, adapted to the D50 connection space as ICC profiles store
# them; its greens reach beyond sRGB's, so a saturated green changes on conversion.
ADOBE_RGB_D50 = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


def icc_profile(
    description: str = "Adobe RGB (1998)",
    colorants: tuple[tuple[float, float, float], ...] = ADOBE_RGB_D50,
    gamma: float = 2.2,
) -> bytes:
    """A matrix/TRC RGB display profile (ICC v2), as cameras and scanners embed: Pillow
    reads and uses profiles but cannot write one other than sRGB and Lab."""
    import struct

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(v: tuple[float, float, float]) -> bytes:
        return b"XYZ " + bytes(4) + b"".join(s15(c) for c in v)

    text = description.encode("ascii") + b"\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    d50 = (0.9642, 1.0, 0.8249)
    tags = [(b"desc", desc), (b"wtpt", xyz(d50)), (b"cprt", b"text" + bytes(4) + b"none\0")]
    tags += [(n, xyz(c)) for n, c in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants, strict=True)]
    tags += [(n, curve) for n in (b"rTRC", b"gTRC", b"bTRC")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for name, body in tags:
        body += bytes(-len(body) % 4)
        table += name + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
        + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + bytes(4 * 4 + 8 + 4)
        + b"".join(s15(c) for c in d50) + bytes(4 + 16 + 28)
    )  # fmt: skip
    assert len(header) == 128
    return header + table + data


def photo_bytes(a: np.ndarray, fmt: str = "JPEG", icc: bytes | None = None, **kw: Any) -> bytes:
    """A colour photo of ``a`` (H, W, 3 uint8), with an embedded ICC profile if given."""
    buf = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    Image.fromarray(a).save(buf, format=fmt, **extra, **kw)
    return buf.getvalue()


def ingest_here(paths: list[str], size: int, intensity: Any = None, where: Any = None) -> Any:
    """``raydx.data.ingest.ingest_paths`` without Ray: the same decoding map, run on this
    process (for tests of the listing's rules that need decoded files, not Ray Data)."""
    import pyarrow as pa

    from raydx.data.ingest import Ingested, _decode_batch

    batch = pa.record_batch({"row": np.arange(len(paths)), "path": pa.array(paths)})
    out = _decode_batch(batch, size=size, column="path")
    return Ingested(
        out["image"],
        out["ok"],
        out["reason"],
        out["hash"],
        out["mode"],
        out["wh"],
        patients=out["patient"],
        formats=out["format"],
    )


def bare_dicom_bytes(pixels: np.ndarray, **attrs: Any) -> bytes:
    """The data set of ``dicom_bytes`` alone, in implicit VR little endian: no preamble,
    no "DICM", no file meta, as older exports write it."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, pydicom.dcmread(io.BytesIO(dicom_bytes(pixels, **attrs))))
    return buf.getvalue()
