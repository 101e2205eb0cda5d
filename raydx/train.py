"""One fold's training: the model owns its forward, this loop owns the epoch.

Pure PyTorch, no Ray, so that the Ray Train workers, the final refit and the plain
baseline in ``bench/`` run the same code.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raydx.config import TrialConfig
from raydx.data.augment import BatchAugment, augment_seed
from raydx.data.rows import Images
from raydx.errors import RaydxError
from raydx.metrics import auc as auc_score
from raydx.models import create_model


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_acc: float
    val_auc: float
    val_prob: np.ndarray  # (n_val,) positive-class probability, or (n_val, C)
    extra: dict[str, float] = field(default_factory=dict)  # family metrics, per fold


class TrialFailure(RuntimeError):
    """The configuration failed, or the node it ran on cannot use the run folder: the
    trial ends as ERROR, no retry."""


class DivergedError(TrialFailure):
    """Training produced a non-finite loss."""


def num_outputs(n_classes: int) -> int:
    """Binary tasks get one logit (probability of the positive class)."""
    return 1 if n_classes == 2 else n_classes


def build_model(
    cfg: TrialConfig, *, in_channels: int, n_classes: int, image_size: int
) -> nn.Module:
    """The diagnosis model of a configuration (images -> logits), as every family saves it.

    A family whose diagnosis model is not a plain registry model (an encoder with a
    head, an anomaly scorer) provides ``build_diagnosis_model`` on its trainer.
    """
    from raydx.families import get_family

    trainer = get_family(cfg.family).trainer
    custom = getattr(trainer, "build_diagnosis_model", None)
    if custom is not None:
        return custom(cfg, in_channels=in_channels, n_classes=n_classes, image_size=image_size)
    return create_model(
        cfg.model,
        in_channels=in_channels,
        num_outputs=num_outputs(n_classes),
        image_size=image_size,
        **cfg.model_params,
    )


@functools.cache
def skip_init() -> type:
    """A torch function mode that skips filling new weights (``nn.init``): on the meta
    device there is nothing to fill, and torch's meta ``normal_`` imports torch._dynamo,
    which takes seconds."""
    import torch
    from torch.overrides import TorchFunctionMode

    fills = {
        "normal_",
        "uniform_",
        "trunc_normal_",
        "kaiming_normal_",
        "kaiming_uniform_",
        "xavier_normal_",
        "xavier_uniform_",
        "orthogonal_",
    }

    class SkipInit(TorchFunctionMode):
        def __torch_function__(
            self,
            func: Any,
            types: Any,
            args: tuple[Any, ...] = (),
            kwargs: dict[str, Any] | None = None,
        ) -> Any:
            kwargs = kwargs or {}
            if getattr(func, "__name__", "") in fills:
                t = args[0] if args else kwargs.get("tensor")
                if isinstance(t, torch.Tensor) and t.is_meta:
                    return t
            return func(*args, **kwargs)

    return SkipInit


def diagnosis_network(cfg: TrialConfig) -> tuple[str, dict[str, Any]]:
    """The registry model the diagnosis model is built from and its arguments, as a
    saved model's config names them: ``cfg.model`` unless the family's trainer says
    otherwise (``diagnosis_network``, beside ``build_diagnosis_model``)."""
    from raydx.families import get_family

    custom = getattr(get_family(cfg.family).trainer, "diagnosis_network", None)
    if custom is not None:
        return custom(cfg)
    return cfg.model, dict(cfg.model_params)


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid or softmax, in float64: float32 rounds every logit above about 17 to a
    probability of exactly 1.0, and the AUC then counts confident images of both classes
    as ties (float64 keeps them apart up to about 36)."""
    logits = logits.double()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)


@torch.inference_mode()  # no autograd bookkeeping at all: 20% faster than no_grad here
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> np.ndarray:
    """Probabilities for ``x`` (N, C, H, W) in eval mode, as numpy."""
    model.eval()
    device = next(model.parameters()).device
    out = [  # an empty x still runs once, so the result keeps its shape: (0,) or (0, C)
        probabilities(model(x[i : i + batch_size].to(device))).cpu()
        for i in range(0, max(len(x), 1), batch_size)
    ]
    return torch.cat(out).numpy()


def batches(order: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """``order`` (indices, or anything sliceable) cut into consecutive batches of
    ``batch_size``, the last one shorter: every trainer's training loop (classifier,
    autoencoder, GAN) draws its batches here.

    A trailing batch of one image is left out (batch norm cannot normalise one image in
    training), unless it is the only batch (a training set of one image). ``steps_for``
    counts what this yields; the learning-rate schedules are laid over that count.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, but got batch_size={batch_size}.")
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        if len(idx) < 2 and i:  # a batch of one breaks batch norm
            return  # only the last batch can be short
        yield idx


def steps_for(n: int, batch_size: int) -> int:
    """How many batches ``batches`` makes of ``n`` images: the optimizer steps of one
    epoch over them."""
    return sum(1 for _ in batches(torch.arange(n), batch_size))


def make_deterministic(device: torch.device) -> None:
    """On CUDA, one seed must give one run, as it does on the CPU (MONAI's set_determinism).

    cuDNN then picks deterministic convolution algorithms and does no autotuning (small
    images lose little by it); an op with no deterministic CUDA kernel warns once and
    names itself instead of failing a search. cuBLAS reads its workspace setting when it
    first starts in the process, which is after this: trainers are built before any step.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


class FoldTrainer:
    """Trains one model on one fold's training rows and scores its validation rows.

    ``y`` holds class indices; for binary tasks the target is ``y == positive`` so that
    the single output is the probability of the disease class.
    """

    def __init__(
        self,
        cfg: TrialConfig,
        *,
        x_train: Images,
        y_train: np.ndarray,
        x_val: Images | None,
        y_val: np.ndarray | None,
        n_classes: int,
        positive: int,
        epochs: int,
        seed: int,
        fold: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if cfg.batch_size < 2:  # every trainer skips a batch of one (batch norm needs 2)
            raise RaydxError(
                f"batch_size must be >= 2 to train (a batch of one image breaks batch "
                f"norm), but got batch_size={cfg.batch_size}."
            )
        self.cfg = cfg
        self.device = torch.device(device)
        make_deterministic(self.device)
        self.n_classes = n_classes
        self.positive = positive
        self.binary = n_classes == 2
        self.fold = fold
        self.seed = seed
        self.epochs = epochs
        torch.manual_seed(seed * 1000 + fold)
        self.x_train = x_train.to(self.device)
        self.t_train = self._targets(y_train).to(self.device)
        self.y_train = y_train
        self.x_val = None if x_val is None else x_val.to(self.device)
        self.y_val = y_val
        self.t_val = None if y_val is None else self._targets(y_val).to(self.device)
        self.model = build_model(
            cfg,
            in_channels=int(x_train.shape[1]),
            n_classes=n_classes,
            image_size=int(x_train.shape[2]),
        ).to(self.device)
        self.optimizer = _optimizer(cfg, self.model)
        self.steps_per_epoch = steps_for(len(x_train), cfg.batch_size)
        self.scheduler = make_lr_schedule(cfg, self.optimizer, epochs * self.steps_per_epoch)
        self.augment = BatchAugment(cfg.augment, seed=augment_seed(seed, fold, 0))
        self.generator = torch.Generator().manual_seed(seed * 7919 + fold)
        self.class_weight = self._class_weight() if cfg.class_balance == "weighted" else None
        self.sample_weight = self._sample_weight() if cfg.class_balance == "sampler" else None
        # This fold's own stream of the global RNG (dropout draws from it); see own_rng.
        self.rng_state = torch.get_rng_state()
        self.cuda_rng_state = (
            torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        )

    @contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run with this fold's own global-RNG stream, then restore the caller's.

        A worker may train several folds in one process; without this, dropout in fold 2
        would draw after fold 0's draws, and a fold's result would depend on how the
        folds were dealt to workers.
        """
        outer = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        outer_cuda = None
        if self.cuda_rng_state is not None:
            outer_cuda = torch.cuda.get_rng_state(self.device)
            torch.cuda.set_rng_state(self.cuda_rng_state, self.device)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(outer)
            if outer_cuda is not None:
                self.cuda_rng_state = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer_cuda, self.device)

    def _targets(self, y: np.ndarray) -> torch.Tensor:
        if self.binary:
            return torch.as_tensor(y == self.positive, dtype=torch.float32)
        return torch.as_tensor(y, dtype=torch.long)

    def _class_counts(self) -> np.ndarray:
        if self.binary:
            pos = int((self.y_train == self.positive).sum())
            return np.array([len(self.y_train) - pos, pos], dtype=np.float64)
        return np.bincount(self.y_train, minlength=self.n_classes).astype(np.float64)

    def _class_weight(self) -> torch.Tensor:
        counts = np.maximum(self._class_counts(), 1.0)
        if self.binary:  # pos_weight of BCEWithLogits
            return torch.tensor([counts[0] / counts[1]], dtype=torch.float32, device=self.device)
        w = counts.sum() / (len(counts) * counts)
        return torch.tensor(w, dtype=torch.float32, device=self.device)

    def _sample_weight(self) -> torch.Tensor:
        counts = np.maximum(self._class_counts(), 1.0)
        cls = (self.y_train == self.positive).astype(int) if self.binary else self.y_train
        return torch.as_tensor(1.0 / counts[cls], dtype=torch.float64)

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, *, train: bool) -> torch.Tensor:
        smooth = self.cfg.label_smoothing if train else 0.0
        if self.binary:
            t = target * (1 - smooth) + 0.5 * smooth if smooth else target
            pw = self.class_weight if train else None
            return F.binary_cross_entropy_with_logits(logits[:, 0], t, pos_weight=pw)
        w = self.class_weight if train else None
        return F.cross_entropy(logits, target, weight=w, label_smoothing=smooth)

    def _order(self) -> torch.Tensor:
        n = len(self.x_train)
        if self.sample_weight is not None:
            return torch.multinomial(
                self.sample_weight, n, replacement=True, generator=self.generator
            )
        return torch.randperm(n, generator=self.generator)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        self.augment.reseed(augment_seed(self.seed, self.fold, epoch))
        order = self._order().to(self.device)
        total, count = 0.0, 0
        for idx in batches(order, self.cfg.batch_size):
            xb, tb = self.augment(self.x_train[idx]), self.t_train[idx]
            loss_fn = self._loss_fn(xb, tb)
            loss = loss_fn()
            if not torch.isfinite(loss):
                raise DivergedError(
                    f"training loss became {loss.item()} at epoch {epoch} (fold {self.fold}); "
                    "the configuration diverged (try a lower lr)."
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.cfg.sam > 0:
                self._sharpness_aware_gradient(loss_fn)
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.item() * len(idx)
            count += len(idx)
        return total / max(count, 1)

    def _loss_fn(self, x: torch.Tensor, target: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The batch's training loss as a function of the current weights (SAM calls it
        twice; both calls see the same images, targets and mixup draw)."""
        if self.cfg.mixup <= 0:
            return lambda: self._loss(self.model(x), target, train=True)
        # mixup (Zhang et al., 2018): train on convex mixes of image pairs and their
        # targets, as the mix of the two losses (the paper's form; without class weights
        # it equals the loss against the mixed target). The weight and the pairing come
        # from the fold's own generator, so a resumed fold mixes exactly as the
        # uninterrupted one would.
        draw = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        lam = float(np.random.default_rng(draw).beta(self.cfg.mixup, self.cfg.mixup))
        perm = torch.randperm(len(x), generator=self.generator).to(self.device)
        mixed = lam * x + (1 - lam) * x[perm]

        def mixup_loss() -> torch.Tensor:
            logits = self.model(mixed)
            return lam * self._loss(logits, target, train=True) + (1 - lam) * self._loss(
                logits, target[perm], train=True
            )

        return mixup_loss

    def _sharpness_aware_gradient(self, loss_fn: Callable[[], torch.Tensor]) -> None:
        """Replace the gradient by SAM's (Foret et al., 2021): the gradient at the worst
        nearby weights, ``w + rho * g / ||g||``, so the optimizer prefers flat minima.

        Costs a second forward and backward per step. Batch-norm running statistics are
        updated by the first pass only, so they stay those of the weights being trained.
        """
        params, grads = [], []
        for p in self.model.parameters():
            if p.grad is not None:  # frozen parts (a fixed encoder) have none
                params.append(p)
                grads.append(p.grad)
        with torch.no_grad():
            norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            scale = self.cfg.sam / (norm + 1e-12)
            steps = [g * scale for g in grads]
            for p, e in zip(params, steps, strict=True):
                p.add_(e)
        self.optimizer.zero_grad(set_to_none=True)
        with _frozen_batch_norm_stats(self.model):
            loss_fn().backward()
        with torch.no_grad():
            for p, e in zip(params, steps, strict=True):
                p.sub_(e)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float, float, np.ndarray]:
        """Validation loss, accuracy, AUC and probabilities."""
        assert self.x_val is not None and self.t_val is not None and self.y_val is not None
        self.model.eval()
        logits = torch.cat(
            [self.model(self.x_val[i : i + 512]) for i in range(0, len(self.x_val), 512)]
        )
        loss = self._loss(logits, self.t_val, train=False).item()
        prob = probabilities(logits).cpu().numpy()
        if self.binary:
            y01 = (self.y_val == self.positive).astype(int)
            acc = float(((prob >= 0.5).astype(int) == y01).mean())
            auc = auc_score(y01, prob)
        else:
            acc = float((prob.argmax(1) == self.y_val).mean())
            auc = auc_score(self.y_val, prob)
        return loss, acc, auc, prob

    def pretrain(self) -> None:
        """Nothing to do before the first diagnosis epoch of a plain classifier."""

    def run_epoch(self, epoch: int) -> EpochResult:
        train_loss = self.train_epoch(epoch)
        val_loss, val_acc, val_auc, prob = self.evaluate()
        return EpochResult(epoch, train_loss, val_loss, val_acc, val_auc, prob)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly where it stopped."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": self.rng_state,
            "cuda_rng": self.cuda_rng_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.rng_state = state["torch_rng"]
        if self.cuda_rng_state is not None and state.get("cuda_rng") is not None:
            self.cuda_rng_state = state["cuda_rng"]

    def write_artifacts(self, directory: str) -> None:
        """A plain classifier has nothing to show beyond its weights."""


@contextmanager
def _frozen_batch_norm_stats(model: nn.Module) -> Iterator[None]:
    """Batch norm normalises with the batch's statistics but leaves its running ones."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - momentum) * running + momentum * batch
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum


def _optimizer(cfg: TrialConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        # Nesterov momentum needs a momentum: momentum 0 is plain SGD.
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay,
            nesterov=cfg.momentum > 0,
        )
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_lr_schedule(
    cfg: TrialConfig, opt: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule of ``cfg.lr_schedule``, laid over exactly
    ``total_steps`` optimizer steps (``epochs * steps_for(n_train, batch_size)``); None
    for ``none``.

    ``cosine`` decays from ``lr`` towards 0. ``onecycle`` (Smith & Topin, 2019; torch's
    OneCycleLR with its defaults): ``lr / 25`` up to ``lr`` over the first quarter of the
    steps, then down to ``lr / 25 / 1e4``, the rate of the last step. Adam and AdamW
    cycle their beta1 against it (0.95 -> 0.85 -> 0.95, fastai's one-cycle); SGD keeps
    the ``momentum`` it was given (0: plain SGD), which OneCycleLR's default would
    otherwise replace by that same 0.95 -> 0.85 -> 0.95 cycle, leaving a searched
    ``momentum`` without effect.
    """
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total_steps, 1))
    if cfg.lr_schedule == "onecycle":
        steps = max(total_steps, 1)
        return torch.optim.lr_scheduler.OneCycleLR(
            opt,
            max_lr=cfg.lr,
            total_steps=steps,
            pct_start=_onecycle_warmup(steps),
            cycle_momentum=cfg.optimizer != "sgd",
        )
    return None


def _onecycle_warmup(steps: int) -> float:
    """OneCycleLR's ``pct_start`` for a run of ``steps`` steps: 0.25, or for runs too short
    for a warm-up of a quarter, one that still starts at ``lr / 25`` and ends at the
    minimum.

    The rate of step ``k`` (0-based) is the schedule at ``k``: the warm-up ends (at
    ``lr``) at step ``pct_start * steps - 1``, the decay (at the minimum) at step
    ``steps - 1``. OneCycleLR divides by zero when either phase has length 0, i.e. when
    the warm-up ends at step 0 (``pct_start * steps == 1``: 0.25 of 4 steps) or at the
    last step; and with ``pct_start * steps < 1`` the first step is already in the decay.
    """
    if steps >= 5:  # warm-up ends at step 0.25 * steps - 1 >= 0.25
        return 0.25
    if steps >= 3:  # lr / 25, lr at step 1, ..., the minimum at the last step
        return 2.0 / steps
    if steps == 2:  # warm-up ends between the two steps: lr / 25, then the minimum
        return 0.75
    return 0.5  # one step: no room for a warm-up; it runs at the minimum, as last steps do
