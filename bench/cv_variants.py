"""Cross-validate one configuration as plain fold loops, with variants a search does not try.

    .venv/bin/python bench/cv_variants.py RUN/best.yaml                    # as searched
    .venv/bin/python bench/cv_variants.py RUN/best.yaml --split-seed 1 2   # other splits
    .venv/bin/python bench/cv_variants.py RUN/best.yaml --epochs 60 --mixup 0.2
    .venv/bin/python bench/cv_variants.py RUN/best.yaml --set sam=0.05 --tta 8
    .venv/bin/python bench/cv_variants.py search_spaces/cnn.yaml --ensemble 3  # its enqueued point

A search's winner is the best of many noisy CV estimates on one fold assignment, so its
CV AUC is optimistic. Scoring the same configuration on the folds of other split seeds
shows by how much, and is the fair baseline for a variant: a variant judged on the
winner's own split is judged against a lucky draw. Variants (all off by default):
``--epochs``, ``--label-smoothing``, ``--mixup ALPHA`` (raydx's own ``mixup`` training
option), ``--ema DECAY`` (weights averaged after every step, scored as well), ``--size
PX`` (images resized before training), ``--ensemble N`` (N models per fold from N
training seeds, their probabilities averaged, scored as well), ``--snapshots K`` (each
epoch's probabilities averaged with those of the K - 1 epochs before it: K checkpoints
of one training run as an ensemble, no extra training), ``--tta N`` (the plain
probabilities averaged with those of N - 1 copies augmented as in training, scored as
well), ``--set KEY=VALUE ...`` (any parameter, e.g. ``cutout=0.25``, ``sam=0.05``,
``width=48``); every run also scores horizontal-flip test-time augmentation. The folds
train one after another with raydx's own ``FoldTrainer`` (no Ray), and the CV AUC is
taken as raydx takes it: the best epoch of the mean over folds. A run's best.yaml brings
the run's data, folds and epochs (``bench/pool_args.py``); the training seed is the split
seed, so a run that drew its folds from its ``--seed`` gets its winner's CV AUC back.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pool_args import add_pool_args, pool_kwargs


def _ema(trainer: Any, decay: float) -> torch.nn.Module:
    """A copy of the model that follows it as an exponential moving average of steps."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    avg = AveragedModel(trainer.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    step = trainer.optimizer.step

    @functools.wraps(step)  # keeps the LR scheduler's mark on the step it wrapped
    def step_and_average(*a: Any, **k: Any) -> Any:
        out = step(*a, **k)
        avg.update_parameters(trainer.model)
        return out

    trainer.optimizer.step = step_and_average
    return avg.module


def _pairwise_auc_loss(trainer: Any, weight: float, margin: float) -> None:
    """Add a pairwise AUC surrogate to the fold's training loss: the squared hinge
    ``max(0, margin - (z_pos - z_neg))**2`` over every positive/negative pair of logits
    in a batch (the composite of cross-entropy and an AUC loss, as in Yuan et al., 2021)."""
    base = trainer._loss

    def loss(logits: torch.Tensor, target: torch.Tensor, *, train: bool) -> torch.Tensor:
        out = base(logits, target, train=train)
        if not train:
            return out
        z = logits[:, 0]
        pos, neg = z[target > 0.5], z[target <= 0.5]
        if len(pos) == 0 or len(neg) == 0:
            return out
        gap = pos[:, None] - neg[None, :]
        return out + weight * torch.clamp(margin - gap, min=0).pow(2).mean()

    trainer._loss = loss


@torch.no_grad()
def _probabilities(model: torch.nn.Module, x: torch.Tensor, *, tta: bool) -> np.ndarray:
    from raydx.train import probabilities

    model.eval()
    p = probabilities(model(x)).numpy()
    if tta:
        p = (p + probabilities(model(torch.flip(x, dims=[3]))).numpy()) / 2
    return p


@torch.no_grad()
def _augmented_tta(
    model: torch.nn.Module, x: torch.Tensor, cfg: Any, n: int, plain: np.ndarray
) -> np.ndarray:
    """The plain probabilities averaged with those of n - 1 copies augmented as in
    training (the same seeded draws every epoch)."""
    from raydx.data.augment import BatchAugment
    from raydx.train import probabilities

    model.eval()
    augment = BatchAugment(cfg.augment, seed=12345)
    draws = [plain] + [probabilities(model(augment(x))).numpy() for _ in range(n - 1)]
    return np.mean(draws, axis=0)


def cross_validate(
    params: dict[str, Any], args: argparse.Namespace, pool: Any, kw: dict[str, Any], seed: int
) -> dict[str, Any]:
    from raydx.config import TrialConfig
    from raydx.metrics import auc
    from raydx.prepare import split_table
    from raydx.train import FoldTrainer

    table, positive = pool.table, pool.positive
    splits = split_table(
        table,
        folds=kw["folds"],
        seed=kw["seed"],
        fold_seed=seed,
        test_fraction=kw.get("test_fraction", 0.2),
    )
    x = torch.from_numpy(pool.images)
    if args.size:
        x = torch.nn.functional.interpolate(
            x, size=(args.size, args.size), mode="bilinear", align_corners=False
        )
    cfg = TrialConfig.from_params(params)
    names = ["plain", "hflip_tta"] + (["ema"] if args.ema else [])
    names += [f"aug_tta{args.tta}"] if args.tta > 1 else []
    names += [f"ensemble{args.ensemble}"] if args.ensemble > 1 else []
    names += [f"last{args.snapshots}_epochs"] if args.snapshots > 1 else []
    curves: dict[str, list[list[float]]] = {k: [] for k in names}
    t0 = time.perf_counter()
    for fold in range(args.folds):
        tr, va = splits.train_val_indices(fold)
        xv, y01 = x[va], (table.labels[va] == positive).astype(int)
        member_probs: list[list[np.ndarray]] = []  # [member][epoch]
        for member in range(max(args.ensemble, 1)):
            trainer = FoldTrainer(
                cfg,
                x_train=x[tr],
                y_train=table.labels[tr],
                x_val=xv,
                y_val=table.labels[va],
                n_classes=table.n_classes,
                positive=positive,
                epochs=args.epochs,
                seed=seed + 1000 * member,  # member 0 trains exactly as raydx would
                fold=fold,
            )
            if args.auc_loss:
                _pairwise_auc_loss(trainer, args.auc_loss, args.auc_margin)
            ema = _ema(trainer, args.ema) if args.ema and member == 0 else None
            probs: list[np.ndarray] = []
            runs: dict[str, list[float]] = {k: [] for k in ("plain", "hflip_tta", "ema")}
            runs |= {k: [] for k in names if k.startswith("aug_tta")}
            for epoch in range(1, args.epochs + 1):
                trainer.train_epoch(epoch)
                probs.append(_probabilities(trainer.model, xv, tta=False))
                if member > 0:
                    continue
                runs["plain"].append(auc(y01, probs[-1]))
                runs["hflip_tta"].append(auc(y01, _probabilities(trainer.model, xv, tta=True)))
                if args.tta > 1:
                    runs[f"aug_tta{args.tta}"].append(
                        auc(y01, _augmented_tta(trainer.model, xv, cfg, args.tta, probs[-1]))
                    )
                if ema is not None:
                    runs["ema"].append(auc(y01, _probabilities(ema, xv, tta=False)))
            for k, v in runs.items():
                if v:
                    curves[k].append(v)
            if member == 0 and args.snapshots > 1:
                k = args.snapshots
                curves[f"last{k}_epochs"].append(
                    [
                        auc(y01, np.mean(probs[max(0, e - k) : e], axis=0))
                        for e in range(1, len(probs) + 1)
                    ]
                )
            member_probs.append(probs)
        if args.ensemble > 1:
            mean = np.mean(member_probs, axis=0)  # [epoch, n_val]
            curves[f"ensemble{args.ensemble}"].append([auc(y01, p) for p in mean])
    out: dict[str, Any] = {"split_seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
    for k, v in curves.items():
        if v:
            mean = np.mean(v, axis=0)
            out[k] = {"cv_auc": round(float(mean.max()), 4), "epoch": int(mean.argmax() + 1)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "config", help="a run's best.yaml, a space file (its enqueued point), or parameters"
    )
    add_pool_args(ap)
    ap.add_argument(
        "--split-seed",
        type=int,
        nargs="+",
        default=None,
        help="fold seeds, also the training seeds (default: the run's)",
    )
    ap.add_argument("--label-smoothing", type=float, default=None)
    ap.add_argument("--mixup", type=float, default=0.0, help="Beta(alpha, alpha); 0: off")
    ap.add_argument("--ema", type=float, default=0.0, help="decay per step; 0: off")
    ap.add_argument(
        "--auc-loss", type=float, default=0.0, help="weight of a pairwise AUC loss; 0: off"
    )
    ap.add_argument("--auc-margin", type=float, default=1.0, help="its margin, in logits")
    ap.add_argument("--size", type=int, default=None, help="resize images to this side")
    ap.add_argument("--ensemble", type=int, default=1, help="models per fold, averaged")
    ap.add_argument(
        "--snapshots", type=int, default=1, help="average the last K epochs' probabilities"
    )
    ap.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override parameters (YAML values), e.g. --set cutout=0.25 width=48",
    )
    ap.add_argument("--tta", type=int, default=1, help="also score N-view test-time augmentation")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from raydx.prepare import load_pool

    kw, run_fold_seed = pool_kwargs(args.config, args)
    if args.split_seed is None:
        args.split_seed = [run_fold_seed]
    pool = load_pool(**kw)  # loaded (for image folders: decoded) once for all split seeds
    torch.set_num_threads(args.threads)
    doc = yaml.safe_load(Path(args.config).read_text())
    # a run's best.yaml, a space file (its first enqueued point) or a plain mapping
    params = dict(doc["enqueue"][0] if "enqueue" in doc else doc.get("params", doc))
    if args.label_smoothing is not None:
        params["label_smoothing"] = args.label_smoothing
    if args.mixup:
        params["mixup"] = args.mixup
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set takes KEY=VALUE, but got {item!r}.")
        overrides[key] = yaml.safe_load(value)
    params.update(overrides)
    variant = {
        k: getattr(args, k)
        for k in (
            "epochs",
            "folds",
            "label_smoothing",
            "mixup",
            "ema",
            "auc_loss",
            "size",
            "ensemble",
            "snapshots",
            "tta",
        )
        if getattr(args, k) != ap.get_default(k) or k == "epochs"
    } | overrides
    for seed in args.split_seed:
        print(
            json.dumps({"variant": variant, **cross_validate(params, args, pool, kw, seed)}),
            flush=True,
        )


if __name__ == "__main__":
    main()
