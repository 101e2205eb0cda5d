"""Ingestion speed: raydx's Ray Data path vs torchvision ImageFolder + DataLoader.

    .venv/bin/python bench/ingest.py
    .venv/bin/python bench/ingest.py --copies 1 --repeats 1      # quick end-to-end check
    .venv/bin/python bench/ingest.py --work /tmp/ingest-bench    # keep (and reuse) the files

Builds a folder of PNG files, one subfolder per class (``malignant/``, ``benign/``), from
the real BreastMNIST arrays in ``../shared/data/breastmnist.npz``: each of the 780 images
is written ``--copies`` times, upscaled to ``--source-size`` with Pillow's bilinear filter,
copy ``k`` flipped left-right when ``k`` is odd and rolled ``k // 2`` pixels sideways, so
no two files are the same. Then it turns that folder into training-ready batches twice:

- raydx: ``load_files(folder, image_size=SIZE)`` (Ray Data decodes and resizes in
  parallel; also lists the folder, hashes every image and builds the ``ImageTable``),
  then uint8 NHWC -> float32 NCHW ``(x / 255 - 0.5) / 0.5`` in the driver.
- baseline: ``ImageFolder`` with a loader/transform doing the same decode and resize
  (open -> convert "L" -> resize((SIZE, SIZE), BILINEAR) -> float32 CHW, normalised the
  same way) through a ``DataLoader(batch_size=64, shuffle=False)``, every batch kept and
  concatenated at the end.

Both endpoints are one float32 tensor (N, 1, SIZE, SIZE) plus int64 labels; the script
checks that they agree (same order, same labels, pixels within a grey level). Ray's
start-up is timed and reported on its own, not counted as ingestion; the first raydx
call after Ray starts carries Ray Data's one-off warm-up, so it is reported apart from
the warm calls. Warm raydx calls and DataLoader passes alternate (the machine's other
load drifts); the DataLoader runs while Ray is up but idle. "raydx decode() loop" is
raydx's per-image work in one plain process: the floor any parallel path must beat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.data  # imported up front: its import time is not ingestion
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from raydx.data.decode import decode
from raydx.data.files import load_files
from raydx.ray_env import init_ray

REPO = Path(__file__).resolve().parents[1]
NPZ = REPO.parent / "shared" / "data" / "breastmnist.npz"
CLASS_DIRS = {0: "malignant", 1: "benign"}  # BreastMNIST label -> class folder
SPLITS = ("train", "val", "test")


def build_folder(root: Path, copies: int, source_size: int) -> int:
    """Write the PNG folder under ``root`` unless it is already there; returns the count."""
    stamp = root / f".built-{copies}x{source_size}"
    if stamp.exists():
        return sum(1 for d in CLASS_DIRS.values() for _ in (root / d).glob("*.png"))
    if any(root.glob("*/*.png")):
        sys.exit(f"{root} holds PNG files from other settings; use another --work folder.")
    data = np.load(NPZ)
    for d in CLASS_DIRS.values():
        (root / d).mkdir(parents=True, exist_ok=True)
    n = 0
    for split in SPLITS:
        images, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            up = Image.fromarray(img, mode="L").resize(
                (source_size, source_size), Image.Resampling.BILINEAR
            )
            base = np.asarray(up)
            for k in range(copies):
                a = base[:, ::-1] if k % 2 else base
                a = np.roll(a, k // 2, axis=1)
                name = f"{split}_{i:04d}_c{k}.png"
                Image.fromarray(np.ascontiguousarray(a), mode="L").save(
                    root / CLASS_DIRS[int(label)] / name
                )
                n += 1
    stamp.touch()
    return n


def to_float_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) in [-1, 1], as the baseline makes it."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32)
    return x.div_(255.0).sub_(0.5).div_(0.5).contiguous()


def grey_loader(path: str) -> Image.Image:
    """ImageFolder loader: Pillow open -> mode "L" (the default loader converts to RGB)."""
    with open(path, "rb") as f:
        return Image.open(f).convert("L")


class GreyTransform:
    """resize((size, size), BILINEAR) -> float32 (1, size, size), (x / 255 - 0.5) / 0.5."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, im: Image.Image) -> torch.Tensor:
        im = im.resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).to(torch.float32)
        return x.div_(255.0).sub_(0.5).div_(0.5).unsqueeze(0)


def run_dataloader(
    folder: Path, size: int, workers: int, batch: int
) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """ImageFolder + DataLoader to the end -> (x NCHW float32, labels, paths, classes)."""
    ds = ImageFolder(str(folder), transform=GreyTransform(size), loader=grey_loader)
    dl = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=False)
    xs, ys = [], []
    for x, y in dl:
        xs.append(x)
        ys.append(y)
    names = [Path(p).relative_to(folder).as_posix() for p, _ in ds.samples]
    return torch.cat(xs), torch.cat(ys), names, ds.classes


def run_raydx(folder: Path, size: int) -> tuple[Any, ...]:
    """load_files + float conversion -> (x NCHW float32, labels, ids, table, s load, s norm)."""
    t0 = time.perf_counter()
    table = load_files(str(folder), image_size=size)
    t1 = time.perf_counter()
    x = to_float_nchw(table.images)
    t2 = time.perf_counter()
    y = torch.tensor(table.labels)
    return x, y, list(table.sample_ids), table, t1 - t0, t2 - t1


def serial_decode(folder: Path, size: int) -> float:
    """Seconds for raydx's own ``decode`` over every file in this one process (no Ray)."""
    paths = sorted(folder.glob("*/*.png"))
    t0 = time.perf_counter()
    for p in paths:
        decode(p.read_bytes(), size)
    return time.perf_counter() - t0


def timed(fn: Callable[[], tuple[Any, ...]], repeats: int) -> tuple[list[float], Any]:
    times: list[float] = []
    out: Any = ()
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="folder for the PNG files (default: a temp dir)")
    ap.add_argument("--copies", type=int, default=5, help="files per BreastMNIST image")
    ap.add_argument("--source-size", type=int, default=128, help="side of the written PNGs")
    ap.add_argument("--size", type=int, default=64, help="side of the training images")
    ap.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's num_cpus")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader num_workers")
    ap.add_argument("--batch-size", type=int, default=64, help="DataLoader batch size")
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of each warm method")
    args = ap.parse_args(argv)
    if args.repeats < 1 or args.copies < 1:
        ap.error("--repeats and --copies must be at least 1")

    torch.set_num_threads(1)
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="raydx-ingest-")
        args.work = Path(tmp.name)
    folder = args.work / f"breastmnist-{args.copies}x{args.source_size}"
    t0 = time.perf_counter()
    n = build_folder(folder, args.copies, args.source_size)
    mb = sum(p.stat().st_size for p in folder.glob("*/*.png")) / 1e6
    print(
        f"folder {folder}: {n} PNG files, {args.source_size}x{args.source_size} grey, "
        f"{mb:.1f} MB (ready in {time.perf_counter() - t0:.1f} s)"
    )
    print(
        f"target {args.size}x{args.size}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}"
    )

    t0 = time.perf_counter()
    init_ray(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    dl_times: list[float] = []
    warm: list[tuple[Any, ...]] = []
    try:
        first = run_raydx(folder, args.size)
        # Alternate the two so that a change in the machine's other load hits both alike.
        for _ in range(args.repeats):
            t, (x_dl, y_dl, names_dl, classes_dl) = timed(
                lambda: run_dataloader(folder, args.size, args.workers, args.batch_size), 1
            )
            dl_times += t
            warm.append(run_raydx(folder, args.size))
        w0_times, _ = timed(lambda: run_dataloader(folder, args.size, 0, args.batch_size), 1)
        serial = serial_decode(folder, args.size)
    finally:
        ray.shutdown()
    x_rd, y_rd, ids_rd, table = warm[-1][:4]
    rows = [
        (f"DataLoader num_workers={args.workers}", dl_times),
        ("DataLoader num_workers=0", w0_times),
        ("raydx decode() loop, 1 process, no Ray", [serial]),
        ("raydx load_files, first call after Ray start", [first[4] + first[5]]),
        ("raydx load_files, warm", [w[4] + w[5] for w in warm]),
    ]

    print(f"\nRay start (not counted below): {ray_start:.2f} s")
    print(
        "raydx split: load_files "
        + ", ".join(f"{w[4]:.2f}" for w in [first, *warm])
        + " s; uint8 -> float NCHW "
        + ", ".join(f"{w[5]:.3f}" for w in [first, *warm])
        + " s (first call, then warm)"
    )
    print(f"raydx Ingested.seconds (warm): {table.info['seconds']} s in Ray Data map + collect")

    # Same endpoint?
    same_order = ids_rd == names_dl
    same_labels = bool(torch.equal(y_rd, y_dl)) and table.class_names == tuple(classes_dl)
    diff = (x_rd - x_dl).abs() * 127.5  # in grey levels of the uint8 image
    per_image = diff.amax(dim=(1, 2, 3))
    few = np.linspace(0, n - 1, 5).astype(int)
    print(
        f"\nendpoints: raydx {tuple(x_rd.shape)} {x_rd.dtype}, DataLoader {tuple(x_dl.shape)} "
        f"{x_dl.dtype}; same file order: {same_order}; same labels/classes: {same_labels} "
        f"{table.class_names}"
    )
    print(
        f"max |raydx - DataLoader| in grey levels: all {n} images {diff.max().item():.3f}; "
        f"images {few.tolist()}: {[round(per_image[i].item(), 3) for i in few]}; "
        f"images differing at all: {int((per_image > 1e-4).sum())}"
    )

    # The table.
    dl_ips = n / statistics.median(dl_times)
    print(f"\n{'method':<46} {'seconds':>16} {'images/s':>9} {'raydx/DL':>9}")
    for method, times in rows:
        med = statistics.median(times)
        ips = n / med
        shown = (
            f"{med:.2f}"
            if len(times) == 1
            else f"{med:.2f} (" + "/".join(f"{t:.2f}" for t in times) + ")"
        )
        ratio = f"{ips / dl_ips:.2f}" if method.startswith("raydx load") else ""
        print(f"{method:<46} {shown:>16} {ips:>9.0f} {ratio:>9}")
    print(
        f"\nseconds: median of the runs shown in brackets; raydx/DL = images/s of the row "
        f"over images/s of DataLoader num_workers={args.workers} (>1: raydx faster). "
        f"Target: raydx warm >= 1. Load average now {os.getloadavg()[0]:.1f}."
    )
    if tmp is not None:
        tmp.cleanup()
    return 0 if same_order and same_labels and diff.max().item() <= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
