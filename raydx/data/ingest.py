"""Image files (or encoded bytes in Parquet) -> training-ready uint8 arrays, via Ray Data.

Reading, decoding, mode conversion, resizing and hashing run as a streaming Ray Data
map over blocks of file paths, in parallel on every CPU of the cluster. The driver only
ever holds the compact result (``N x size x size x 3`` bytes), never the files, so
image sets far larger than memory ingest fine as long as their *resized* form fits.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.data.decode import decode, probe_size, reason
from raydx.data.intensity import AUTO, Intensity
from raydx.data.pipeline import ray_data_run
from raydx.errors import DataError

DEFAULT_MAX_SIZE = 64  # default side length when --image-size is not given
BATCH = 1024  # images per decode call and at most per block: few tasks, bounded memory


@dataclass(frozen=True)
class Ingested:
    """Per-row outcome of ingestion, in the order of the input rows."""

    images: np.ndarray  # (N, size, size, C) uint8; C = 1 if every image was grey, else 3
    ok: np.ndarray  # (N,) bool
    reasons: np.ndarray  # (N,) object: "" where ok
    hashes: np.ndarray  # (N,) object
    modes: np.ndarray  # (N,) object
    sizes: np.ndarray  # (N,) object: "WxH" of the file
    seconds: float = 0.0
    # (N,) object: a DICOM file's PatientID, "" for other files (None: not collected)
    patients: np.ndarray | None = None
    formats: np.ndarray | None = None  # (N,) object: "PNG", "JPEG", "DICOM", ...
    # (N,) bool: the image as read was grey (a mode says no more than how it was stored:
    # an X-ray saved as RGB is grey)
    grey: np.ndarray | None = None

    def summary(self) -> dict[str, Any]:
        good = self.ok
        return {
            "images": int(good.sum()),
            "unreadable": int((~good).sum()),
            "modes": dict(Counter(self.modes[good]).most_common()),
            **({} if self.grey is None else {"grey_images": int(self.grey[good].sum())}),
            "sizes": dict(Counter(self.sizes[good]).most_common()),
            "image_size": int(self.images.shape[1]),
            "channels": int(self.images.shape[3]),
            "seconds": round(self.seconds, 2),
        }


@dataclass
class _Collector:
    n: int
    size: int
    images: np.ndarray = field(init=False)
    grey: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.images = np.zeros((self.n, self.size, self.size, 3), np.uint8)
        self.grey = np.ones(self.n, bool)
        self.ok = np.zeros(self.n, bool)
        self.reasons = np.full(self.n, "", dtype=object)
        self.hashes = np.full(self.n, "", dtype=object)
        self.modes = np.full(self.n, "", dtype=object)
        self.sizes = np.full(self.n, "", dtype=object)
        self.patients = np.full(self.n, "", dtype=object)
        self.formats = np.full(self.n, "", dtype=object)


def _decode_batch(
    batch: Any, *, size: int, column: str, intensity: str = "auto"
) -> dict[str, np.ndarray]:
    """Ray Data map: a pyarrow batch of paths (or encoded bytes) -> decoded columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = batch.column(column)
    if pa.types.is_struct(col.type):  # Hugging Face's Image feature: {bytes, path}
        col = pc.struct_field(col, "bytes")
    is_path = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    values = col.to_pylist()
    n = len(values)
    scaling = Intensity.parse(intensity)
    out: dict[str, np.ndarray] = {
        "row": (
            batch.column("row").to_numpy()
            if "row" in batch.column_names
            else np.full(n, -1, np.int64)
        ),
        "ok": np.zeros(n, bool),
        "reason": np.full(n, "", dtype=object),
        "image": np.zeros((n, size, size, 3), np.uint8),
        "grey": np.ones(n, bool),
        "hash": np.full(n, "", dtype=object),
        "mode": np.full(n, "", dtype=object),
        "wh": np.full(n, "", dtype=object),
        "patient": np.full(n, "", dtype=object),
        "format": np.full(n, "", dtype=object),
    }
    for i, v in enumerate(values):
        try:
            if v is None:
                raise ValueError("no image data")
            raw = Path(v).read_bytes() if is_path else bytes(v)
            d = decode(raw, size, scaling)
        except Exception as e:  # every failure is data to report, not a crash
            out["reason"][i] = reason(e)
            continue
        out["ok"][i] = True
        out["image"][i] = d.image  # a grey (S, S, 1) image broadcasts to 3 channels
        out["grey"][i] = d.grey
        out["hash"][i] = d.hash
        out["mode"][i] = d.mode
        out["wh"][i] = d.size
        out["patient"][i] = d.patient
        out["format"][i] = d.format
    if out["grey"].all():  # a third of the bytes to move; the driver broadcasts it back
        out["image"] = np.ascontiguousarray(out["image"][..., :1])
    return out


def default_size(samples: list[bytes]) -> int:
    """``min(64, median shorter side)`` of a sample: never upsample small images."""
    sides = [min(s) for s in (probe_size(b) for b in samples) if s]
    if not sides:
        return DEFAULT_MAX_SIZE
    return int(max(8, min(DEFAULT_MAX_SIZE, int(np.median(sides)))))


def probe_paths(paths: list[str], k: int = 64) -> int:
    """``default_size`` from the headers of up to ``k`` files spread over the list."""
    pick = [paths[i] for i in np.linspace(0, len(paths) - 1, min(k, len(paths))).astype(int)]
    heads = []
    for p in pick:
        try:
            with open(p, "rb") as f:
                heads.append(f.read(1 << 16))  # headers sit at the start
        except OSError:
            continue
    return default_size(heads)


def probe_parquet(path: str, column: str, k: int = 64) -> int:
    """``default_size`` from the first ``k`` encoded images of a Parquet column."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    batch = next(pq.ParquetFile(path).iter_batches(batch_size=k, columns=[column]), None)
    if batch is None:
        return DEFAULT_MAX_SIZE
    col = batch.column(0)
    if pa.types.is_struct(col.type):
        col = pc.struct_field(col, "bytes")
    return default_size([b for b in col.to_pylist() if b])


def ingest_paths(
    paths: list[str],
    size: int,
    intensity: Intensity = AUTO,
    ray_remote_args: dict[str, Any] | None = None,
) -> Ingested:
    """Decode the files at ``paths`` (absolute) with Ray Data, in order.

    ``ray_remote_args`` go to every decoding task (raydx.shared_storage.decode_placement).
    """
    import ray
    import ray.data

    n = len(paths)
    frame = pd.DataFrame({"row": np.arange(n, dtype=np.int64), "path": paths})
    # Every Ray Data task costs ~30 ms here (measured with bench/ingest.py): a few big
    # blocks per CPU, not one per batch.
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    blocks = max(1, min(math.ceil(n / BATCH), 4 * max(1, cpus)))
    bounds = np.linspace(0, n, blocks + 1).astype(int)
    parts = [frame.iloc[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    ds = ray.data.from_pandas(parts)
    return _run(ds, n, size, "path", intensity, ray_remote_args or {})


def ingest_parquet(
    path: str,
    column: str,
    n: int,
    size: int,
    intensity: Intensity = AUTO,
    ray_remote_args: dict[str, Any] | None = None,
) -> Ingested:
    """Decode the encoded images in ``column`` of a Parquet file, in file order."""
    import ray.data

    args = ray_remote_args or {}
    ds = ray.data.read_parquet(path, ray_remote_args=args).select_columns([column])
    return _run(ds, n, size, column, intensity, args)


def check_memory(n: int, size: int, memory: int | None = None) -> None:
    """Refuse decoding into more than half of this machine's memory (the driver holds
    every resized image), rather than fail on the allocation."""
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = n * size * size * 3
    if need > memory / 2:
        raise DataError(
            f"{n} images at image_size={size} take {need / 2**30:.1f} GiB as decoded, "
            f"more than half of this machine's {memory / 2**30:.1f} GiB; use a smaller "
            "--image-size."
        )


def _run(
    ds: Any, n: int, size: int, column: str, intensity: Intensity, ray_remote_args: dict[str, Any]
) -> Ingested:
    t0 = time.perf_counter()
    check_memory(n, size)
    c = _Collector(n, size)
    with ray_data_run():
        mapped = ds.map_batches(
            _decode_batch,
            batch_format="pyarrow",
            batch_size=BATCH,
            fn_kwargs={"size": size, "column": column, "intensity": str(intensity)},
            **ray_remote_args,
        )
        at = 0  # sources without a row column come back in order
        for b in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            rows = b["row"]
            if (rows < 0).any():
                rows = np.arange(at, at + len(rows))
            at += len(rows)
            c.images[rows] = b["image"]
            c.grey[rows] = b["grey"]
            c.ok[rows] = b["ok"]
            c.reasons[rows] = b["reason"]
            c.hashes[rows] = b["hash"]
            c.modes[rows] = b["mode"]
            c.sizes[rows] = b["wh"]
            c.patients[rows] = b["patient"]
            c.formats[rows] = b["format"]
    grey = bool(c.grey[c.ok].all())
    images = np.ascontiguousarray(c.images[..., :1]) if grey else c.images
    return Ingested(
        images,
        c.ok,
        c.reasons,
        c.hashes,
        c.modes,
        c.sizes,
        time.perf_counter() - t0,
        patients=c.patients,
        formats=c.formats,
        grey=c.grey,
    )
