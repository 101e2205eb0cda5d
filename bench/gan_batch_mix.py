"""How strongly the GAN's generated images carry their class, by how they are batched.

    .venv/bin/python bench/gan_batch_mix.py [GAN_EPOCHS]   # default 80; ~1 min on 2 cores

A toy set of 400 images: a quarter (class 1) have a bright central disc (0.60 in the
[-1, 1] pixels the networks see) on a dark background (-0.60). A class-conditional
DCGAN pretrains on them as ``gan_mode: augment`` does, then the mean brightness of the
disc area is printed for images generated in batches of one class, in batches mixed as
the training batches are, one at a time, in batches with 5-75% of class 1, and as
``GANTrainer._sample`` makes the images that the classifier trains on (with the
statistics of training-like batches, ``raydx.families.gan.training_mix_statistics``).
The generator's batch norm uses each batch's own statistics, so a batch of one class
loses much of what the label adds.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from raydx.config import TrialConfig
from raydx.families import get_family


def main(gan_epochs: int) -> None:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    n, size = 400, 28
    y = (rng.random(n) < 0.25).astype(np.int64)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - 14) ** 2 + (xx - 14) ** 2 < 64).astype(np.float32)
    x_np = rng.normal(-0.6, 0.1, (n, 1, size, size)).astype(np.float32)
    x_np += y[:, None, None, None] * 1.2 * disc[None, None]
    x = torch.from_numpy(np.clip(x_np, -1, 1))
    params = {"family": "gan", "model": "cnn_tiny", "pretrain_epochs": gan_epochs}
    cfg = TrialConfig.from_params({**params, "batch_size": 64})
    trainer = get_family("gan").trainer(
        cfg, x_train=x, y_train=y, x_val=x[:20], y_val=y[:20], n_classes=2, positive=1,
        epochs=1, seed=0, fold=0,
    )  # fmt: skip
    t0 = time.time()
    with trainer.own_rng():
        trainer.pretrain()
    print(f"GAN pretraining: {gan_epochs} epochs in {time.time() - t0:.1f} s")
    centre = torch.from_numpy(disc.astype(bool))

    def disc_mean(images: torch.Tensor) -> float:
        return float(images[:, 0][:, centre].mean())

    print(f"real images: class 1 {disc_mean(x[y == 1]):.3f}, class 0 {disc_mean(x[y == 0]):.3f}")
    gen = torch.Generator().manual_seed(1)
    gan = trainer.gan
    with torch.no_grad():
        gan.eval()
        pure = gan.sample(64, torch.ones(64, dtype=torch.long), generator=gen)
        labels = (torch.rand(64, generator=gen) < 0.25).long()
        mixed = gan.sample(64, labels, generator=gen)
        ones = [gan.sample(1, torch.ones(1, dtype=torch.long), generator=gen) for _ in range(16)]
    print(f"class 1 generated in batches of class 1 alone: {disc_mean(pure):.3f}")
    print(f"class 1 generated in batches mixed as in training: {disc_mean(mixed[labels == 1]):.3f}")
    print(f"class 1 generated one at a time: {disc_mean(torch.cat(ones)):.3f}")
    with torch.no_grad():
        for share in (0.05, 0.25, 0.5, 0.75):
            k = round(64 * share)
            labels = torch.cat([torch.ones(k), torch.zeros(64 - k)]).long()
            made = [gan.sample(64, labels, generator=gen)[:k] for _ in range(4)]
            print(
                f"class 1 in batches with {share:.0%} of class 1: {disc_mean(torch.cat(made)):.3f}"
            )
    syn = trainer._sample(trainer.synthetic_per_class, torch.Generator().manual_seed(2))
    k0 = int(trainer.synthetic_per_class[0])
    print(
        f"what the classifier trains on ({trainer.synthetic_per_class.tolist()} per class): "
        f"class 1 {disc_mean(syn[k0:]):.3f}"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 80)
