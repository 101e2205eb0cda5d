"""Cross-validate one configuration as plain fold loops, with variants a search does not try.

    .venv/bin/python bench/cv_variants.py RUN/best.yaml                    # as searched
    .venv/bin/python bench/cv_variants.py RUN/best.yaml --split-seed 1 2   # other splits
    .venv/bin/python bench/cv_variants.py RUN/best.yaml --epochs 60 --mixup 0.2

A search's winner is the best of many noisy CV estimates on one fold assignment, so its
CV AUC is optimistic. Scoring the same configuration on the folds of other split seeds
shows by how much, and is the fair baseline for a variant: a variant judged on the
winner's own split is judged against a lucky draw. Variants (all off by default):
``--epochs``, ``--label-smoothing``, ``--mixup ALPHA`` (batches and targets mixed with a
Beta(alpha, alpha) weight), ``--ema DECAY`` (weights averaged after every step, scored
as well), ``--size PX`` (images resized before training); every run also scores
horizontal-flip test-time augmentation. The folds train one after another with raydx's
own ``FoldTrainer`` (no Ray), and the CV AUC is taken as raydx takes it: the best epoch
of the mean over folds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"


def _mixup(trainer: Any, alpha: float, seed: int) -> None:
    """Mix each training batch with a shuffled copy of itself, targets alike."""
    augment, loss = trainer.augment, trainer._loss
    rng = np.random.default_rng(seed)
    state: dict[str, Any] = {}

    def mixed_batch(x: torch.Tensor) -> torch.Tensor:
        x = augment(x)
        lam, perm = float(rng.beta(alpha, alpha)), torch.from_numpy(rng.permutation(len(x)))
        state.update(lam=lam, perm=perm)
        return lam * x + (1 - lam) * x[perm]

    def mixed_loss(logits: torch.Tensor, target: torch.Tensor, *, train: bool) -> torch.Tensor:
        if not train:
            return loss(logits, target, train=False)
        lam, perm = state["lam"], state["perm"]
        return lam * loss(logits, target, train=True) + (1 - lam) * loss(
            logits, target[perm], train=True
        )

    mixed_batch.reseed = augment.reseed  # type: ignore[attr-defined]
    trainer.augment, trainer._loss = mixed_batch, mixed_loss


def _ema(trainer: Any, decay: float) -> torch.nn.Module:
    """A copy of the model that follows it as an exponential moving average of steps."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    avg = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    step = trainer.optimizer.step

    def step_and_average(*a: Any, **k: Any) -> Any:
        out = step(*a, **k)
        avg.update_parameters(trainer.model)
        return out

    trainer.optimizer.step = step_and_average
    return avg.module


@torch.no_grad()
def _score(model: torch.nn.Module, x: torch.Tensor, y01: np.ndarray, *, tta: bool) -> float:
    from raydx.metrics import auc
    from raydx.train import probabilities

    model.eval()
    p = probabilities(model(x)).numpy()
    if tta:
        p = (p + probabilities(model(torch.flip(x, dims=[3]))).numpy()) / 2
    return auc(y01, p)


def cross_validate(params: dict[str, Any], args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from raydx.config import TrialConfig
    from raydx.data.folds import make_splits
    from raydx.data.npz import load_npz
    from raydx.data.pipeline import Preprocessing, normalise_batch
    from raydx.train import FoldTrainer

    table = load_npz(args.data)
    splits = make_splits(
        table.labels,
        folds=args.folds,
        seed=seed,
        test_mask=table.official_split == "test",
        class_names=table.class_names,
    )
    x = torch.from_numpy(
        normalise_batch(table.images, Preprocessing(table.image_size, table.channels))
    )
    if args.size:
        x = torch.nn.functional.interpolate(
            x, size=(args.size, args.size), mode="bilinear", align_corners=False
        )
    cfg = TrialConfig.from_params(params)
    positive = 0  # malignant, as raydx resolves it for BreastMNIST
    curves: dict[str, list[list[float]]] = {"plain": [], "hflip_tta": [], "ema": []}
    t0 = time.perf_counter()
    for fold in range(args.folds):
        tr, va = splits.train_val_indices(fold)
        trainer = FoldTrainer(
            cfg,
            x_train=x[tr],
            y_train=table.labels[tr],
            x_val=x[va],
            y_val=table.labels[va],
            n_classes=table.n_classes,
            positive=positive,
            epochs=args.epochs,
            seed=seed,
            fold=fold,
        )
        if args.mixup:
            _mixup(trainer, args.mixup, seed * 100 + fold)
        ema = _ema(trainer, args.ema) if args.ema else None
        y01 = (table.labels[va] == positive).astype(int)

        xv = x[va]
        runs: dict[str, list[float]] = {k: [] for k in curves}
        for epoch in range(1, args.epochs + 1):
            trainer.train_epoch(epoch)
            runs["plain"].append(_score(trainer.model, xv, y01, tta=False))
            runs["hflip_tta"].append(_score(trainer.model, xv, y01, tta=True))
            if ema is not None:
                runs["ema"].append(_score(ema, xv, y01, tta=False))
        for k, v in runs.items():
            curves[k].append(v)
    out: dict[str, Any] = {"split_seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
    for k, v in curves.items():
        if v and v[0]:
            mean = np.mean(v, axis=0)
            out[k] = {"cv_auc": round(float(mean.max()), 4), "epoch": int(mean.argmax() + 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", help="a run's best.yaml, or a YAML/JSON file of parameters")
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--split-seed", type=int, nargs="+", default=[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--label-smoothing", type=float, default=None)
    ap.add_argument("--mixup", type=float, default=0.0, help="Beta(alpha, alpha); 0: off")
    ap.add_argument("--ema", type=float, default=0.0, help="decay per step; 0: off")
    ap.add_argument("--size", type=int, default=None, help="resize images to this side")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    doc = yaml.safe_load(Path(args.config).read_text())
    params = dict(doc.get("params", doc))
    if args.label_smoothing is not None:
        params["label_smoothing"] = args.label_smoothing
    variant = {
        k: getattr(args, k)
        for k in ("epochs", "label_smoothing", "mixup", "ema", "size")
        if getattr(args, k)
    }
    for seed in args.split_seed:
        print(json.dumps({"variant": variant, **cross_validate(params, args, seed)}), flush=True)


if __name__ == "__main__":
    main()
