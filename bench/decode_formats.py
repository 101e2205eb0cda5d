"""Per-image decode time of large medical images: raydx's ``decode`` against the floor
of reading the pixels alone.

    .venv/bin/python bench/decode_formats.py                  # 4096 x 3276, ~1 min
    .venv/bin/python bench/decode_formats.py --side 1024 --repeats 5

One synthetic mammogram-sized 12-bit image (a smooth breast-like dome plus noise, and
one hot pixel at full scale, as a burnt-in marker would be) is written as a 16-bit PNG,
an uncompressed DICOM with and without a window, and an RLE-compressed DICOM. For each
file and ``--intensity`` setting: raydx's ``decode`` (read, check, hash, scale to 8
bits, resize to 64 x 64) and the floor, Pillow's or pydicom's bare read of the pixels;
best of ``--repeats`` in this one process. What decode adds beyond the floor is raydx's
own cost per image; an ingestion of N such files on C cores takes about
N x decode / C.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the DICOM writer the tests use


def best(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def mammogram(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    dome = np.clip(1 - ((y - height / 2) / (0.45 * height)) ** 2 - (x / (0.8 * width)) ** 2, 0, 1)
    a = 300 + 3000 * np.sqrt(dome) + rng.normal(0, 40, (height, width))
    return np.clip(a, 0, 4095).astype(np.uint16)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=4096, help="image height (width: 0.8 x)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import pydicom
    from image_files import dicom_bytes, png_bytes
    from PIL import Image
    from pydicom.uid import RLELossless

    from raydx.data.decode import decode
    from raydx.data.intensity import Intensity

    h, w = args.side, int(args.side * 0.8)
    a = mammogram(h, w)
    hot = a.copy()
    hot[10, 10] = 65535  # a burnt-in marker at full scale
    png = png_bytes(hot)
    a[10, 10] = 4095  # DICOM: the top of its 12 bits
    plain = dicom_bytes(a, BitsStored=12)
    window = dicom_bytes(a, BitsStored=12, WindowCenter=1800, WindowWidth=3200)
    ds = pydicom.dcmread(io.BytesIO(plain))
    ds.compress(RLELossless)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    rle = buf.getvalue()

    def pillow(raw: bytes) -> Callable[[], object]:
        return lambda: Image.open(io.BytesIO(raw)).load()

    def pydicom_read(raw: bytes) -> Callable[[], object]:
        return lambda: pydicom.dcmread(io.BytesIO(raw)).pixel_array

    files = [
        ("16-bit PNG", png, pillow(png)),
        ("DICOM, no window", plain, pydicom_read(plain)),
        ("DICOM, window", window, pydicom_read(window)),
        ("DICOM RLE, no window", rle, pydicom_read(rle)),
    ]
    print(f"{h} x {w} pixels, 12-bit; best of {args.repeats}, one process")
    print(f"{'file':22} {'MB':>6} {'floor s':>8}  " + "  ".join(f"{s:>12}" for s in SETTINGS))
    for name, raw, floor in files:
        cells = []
        for setting in SETTINGS:
            scaling = Intensity.parse(setting)
            t = best(lambda r=raw, s=scaling: decode(r, 64, s), args.repeats)
            cells.append(f"{t:12.3f}")
        t_floor = best(floor, args.repeats)
        print(f"{name:22} {len(raw) / 1e6:6.1f} {t_floor:8.3f}  " + "  ".join(cells))
    print("(decode columns: seconds per image with --intensity auto, percentile, range:0:4095)")


SETTINGS = ("auto", "percentile", "range:0:4095")

if __name__ == "__main__":
    main()
