"""Near-copy search at scale: every pair compared vs the index of principal components.

    .venv/bin/python bench/near_copies.py                       # 20,000, 100,000, 200,000
    .venv/bin/python bench/near_copies.py --sizes 30000 --compare

Builds look-alike ultrasound sets from the real BreastMNIST arrays in
``../shared/data/breastmnist.npz``: each image drawn at random from the 780, shifted by up
to 6 pixels (reflected at the border), flipped left-right half the time, with Gaussian
noise of 6 grey levels, so that near copies occur as in a set that holds the same
pictures several times. Prints, per size, the seconds of ``near_pairs`` (thumbnails
included: every pair compared up to ``DENSE`` images, the index above), the pairs found
and the process's peak memory so far (the images included). ``--compare`` also compares
every pair at that size (``DENSE`` raised) and checks that the same pairs come back (up
to float32 rounding: a correlation within about 1e-6 of the threshold may fall on
either side, the two ways sum in another order).
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from raydx.data import near_copies

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"


def look_alike(n: int, seed: int = 0) -> np.ndarray:
    d = np.load(DATA)
    base = np.concatenate([d[f"{s}_images"] for s in ("train", "val", "test")])
    rng = np.random.default_rng(seed)
    pad = np.pad(base, ((0, 0), (6, 6), (6, 6)), mode="reflect")
    idx, dy, dx = rng.integers(0, len(base), n), rng.integers(0, 13, n), rng.integers(0, 13, n)
    images = np.stack([pad[i, y : y + 28, x : x + 28] for i, y, x in zip(idx, dy, dx, strict=True)])
    flip = rng.random(n) < 0.5
    images[flip] = images[flip, :, ::-1]
    return np.clip(images + rng.normal(0, 6, images.shape), 0, 255).astype(np.uint8)[..., None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 200_000])
    ap.add_argument("--compare", action="store_true", help="also compare every pair")
    args = ap.parse_args()
    print(f"DENSE={near_copies.DENSE:,} COMPONENTS={near_copies.COMPONENTS}")
    for n in args.sizes:
        images = look_alike(n)
        start = time.perf_counter()
        pairs, _ = near_copies.near_pairs(images)
        took = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        how = "every pair" if n <= near_copies.DENSE else "index"
        print(f"{n:>8,} images  {how:<10}  {took:6.1f} s  {len(pairs):>8,} pairs  peak {peak:,} MB")
        if args.compare:
            dense = near_copies.DENSE
            near_copies.DENSE = max(dense, n)
            start = time.perf_counter()
            every, _ = near_copies.near_pairs(images)
            took = time.perf_counter() - start
            near_copies.DENSE = dense
            print(f"{n:>8,} images  every pair  {took:6.1f} s  {len(every):>8,} pairs  ", end="")
            odd = {tuple(p) for p in pairs.tolist()} ^ {tuple(p) for p in every.tolist()}
            if not odd:
                print("the same pairs")
                continue
            t = near_copies.thumbnails(images)  # float64 correlations of the pairs that differ
            off = max(
                abs(float(t[a].astype(np.float64) @ t[b]) - near_copies.CORRELATION) for a, b in odd
            )
            print(f"{len(odd)} pairs differ, all within {off:.1e} of the threshold (float32)")


if __name__ == "__main__":
    main()
