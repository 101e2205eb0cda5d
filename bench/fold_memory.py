"""Memory and speed of a fold worker's images: copies of each fold's rows (raydx up to
session 36) against ``Rows`` of the one shared pool (``raydx.data.rows``).

Builds the trainers of every fold in one process, as a worker that trains all the folds
of a trial does, on a random pool of ``--images`` images of ``--size`` px and
``--channels`` channels, and prints the resident memory they add; then times one epoch
of the seed CNN per fold on each. Each mode runs in a process of its own, so the
numbers do not share an allocator.

    .venv/bin/python bench/fold_memory.py --size 224 --channels 3 --images 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(mode: str, images: int, size: int, channels: int, folds: int, epochs: int) -> dict:
    import torch

    from raydx.config import TrialConfig
    from raydx.data.rows import Rows, read_only_tensor
    from raydx.families import get_family

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((images, channels, size, size), dtype=np.float32)
    pool.flags.writeable = False  # as an array from Ray's object store
    y = rng.integers(0, 2, images)
    fold = np.arange(images) % folds
    cfg = TrialConfig(family="cnn", model="cnn_seed", lr=1e-3, batch_size=64)
    before = _rss_mib()
    shared = read_only_tensor(pool)
    trainers = []
    for f in range(folds):
        tr, va = fold != f, fold == f
        if mode == "copies":
            x_train, x_val = torch.from_numpy(pool[tr]), torch.from_numpy(pool[va])
        else:
            x_train = Rows(shared, torch.from_numpy(np.flatnonzero(tr)))
            x_val = Rows(shared, torch.from_numpy(np.flatnonzero(va)))
        trainers.append(
            get_family("cnn").trainer(
                cfg,
                x_train=x_train,
                y_train=y[tr],
                x_val=x_val,
                y_val=y[va],
                n_classes=2,
                positive=1,
                epochs=epochs,
                seed=0,
                fold=f,
            )
        )
    added = _rss_mib() - before
    start = time.perf_counter()
    probs = []
    for e in range(1, epochs + 1):
        for t in trainers:
            with t.own_rng():
                probs.append(t.run_epoch(e).val_prob)
    seconds = time.perf_counter() - start
    digest = float(sum(float(np.sum(p)) for p in probs))
    return {"added_mib": added, "pool_mib": pool.nbytes / 2**20, "s": seconds, "digest": digest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--mode", choices=["copies", "rows"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(json.dumps(measure(a.mode, a.images, a.size, a.channels, a.folds, a.epochs)))
        return
    print(
        f"{a.images} images of {a.channels}x{a.size}x{a.size}, {a.folds} folds in one "
        f"process, {a.epochs} epoch(s) of cnn_seed each, 1 thread"
    )
    got = {}
    for mode in ("copies", "rows"):
        out = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--mode", mode],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        got[mode] = r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{mode:>6}: pool {r['pool_mib']:.0f} MiB; the fold trainers add "
            f"{r['added_mib']:.0f} MiB; epochs {r['s']:.1f} s"
        )
    same = got["copies"]["digest"] == got["rows"]["digest"]
    print(
        f"memory rows/copies {got['rows']['added_mib'] / got['copies']['added_mib']:.2f}x; "
        f"time {got['rows']['s'] / got['copies']['s']:.2f}x; same probabilities: {same}"
    )


if __name__ == "__main__":
    main()
