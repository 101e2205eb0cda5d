"""Peak memory of a GAN augment epoch: the fold's real training rows gathered into a copy
beside the generated images every epoch (raydx up to session 37) against read in place
(``raydx.data.rows.Joined``).

Builds one GAN-augment fold trainer on a random pool of ``--images`` images of
``--size`` px and 3 channels (``Rows`` of it, as a fold worker has), skips the GAN's
pretraining, and prints how much the process's peak resident memory grew over two
augment epochs, and their time. Each mode runs in a process of its own.

    .venv/bin/python bench/gan_augment_memory.py --size 64 --images 3000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import numpy as np


def measure(mode: str, size: int, images: int) -> str:
    import torch

    import raydx.families.gan as gan
    from raydx.config import TrialConfig
    from raydx.data.rows import Rows, read_only_tensor
    from raydx.families import get_family

    torch.set_num_threads(1)
    if mode == "copies":  # what train_epoch did before Joined
        gan.Joined = lambda a, b: torch.cat([a[:], b])  # type: ignore[assignment,misc]
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((images, 3, size, size), dtype=np.float32)
    pool.flags.writeable = False  # as an array from Ray's object store
    y = rng.integers(0, 2, images)
    fold = np.arange(images) % 5
    shared = read_only_tensor(pool)
    params = {"pretrain_epochs": 0, "gan_model": "dcgan_tiny", "synthetic_ratio": 0.5}
    cfg = TrialConfig(family="gan", model="cnn_tiny", lr=1e-3, batch_size=64, family_params=params)
    trainer = get_family("gan").trainer(
        cfg,
        x_train=Rows(shared, torch.from_numpy(np.flatnonzero(fold != 0))),
        y_train=y[fold != 0],
        x_val=Rows(shared, torch.from_numpy(np.flatnonzero(fold == 0))),
        y_val=y[fold == 0],
        n_classes=2,
        positive=0,
        epochs=3,
        seed=0,
        fold=0,
        device="cpu",
    )
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    for epoch in (1, 2):
        trainer.train_epoch(epoch)
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    return (
        f"{mode:7s} pool {pool.nbytes / 2**20:.0f} MiB: peak grew {grew:.0f} MiB over 2 "
        f"augment epochs, {time.perf_counter() - t:.1f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--mode", choices=["copies", "joined"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(measure(a.mode, a.size, a.images))
        return
    for mode in ("copies", "joined"):
        args = [sys.executable, __file__, "--mode", mode, "--size", str(a.size)]
        out = subprocess.run([*args, "--images", str(a.images)], capture_output=True, text=True)
        print(out.stdout.strip() or out.stderr.strip()[-2000:])


if __name__ == "__main__":
    main()
