"""The GAN family: a class-conditional DCGAN learns the fold's training images, then helps
the diagnosis in one of two ways.

The GAN (``gan_model``, a registry member of the ``gan`` family, built with this
family's ``latent_size``/``g_width``/``d_width`` where it takes them) trains in
``pretrain()`` for ``pretrain_epochs`` epochs on the fold's TRAINING images only
(``gan_train_x``; validation images never reach it), conditioned on the diagnosis
class (positive vs rest for binary tasks, the class for multi-class ones).

``gan_mode="augment"``: the diagnosis model is ``cfg.model`` (a registry CNN), trained
by :class:`raydx.train.FoldTrainer`'s own epoch loop on the real images plus
``round(synthetic_ratio * n_train)`` freshly generated ones per epoch. The generated
images top up the minority classes first (each one goes to the class with the fewest
images so far), so at a small ratio they rebalance the classes and beyond that they are
shared equally. The GAN does not train during diagnosis epochs.

``gan_mode="disc_features"``: the diagnosis model is the GAN itself, ``forward(x) =
head(D.features(x))``. The discriminator is FROZEN and only the head learns: the
mode then asks one question, whether features learnt without labels (real vs fake)
carry the diagnosis; fine-tuning them on ~500 labelled images would make it a CNN with
a GAN initialisation, which the CNN family already searches. Before the head trains,
the discriminator's batch-norm statistics are recomputed on the real training images
(during GAN training they averaged real and generated batches).

Failures of the configuration raise :class:`raydx.train.TrialFailure`: a non-finite
GAN loss (:class:`raydx.train.DivergedError`), or a collapsed generator: after
pretraining, 32 samples per class whose per-pixel standard deviation across the
samples, averaged over pixels, is below ``COLLAPSE_STD`` for some class. Images lie in
[-1, 1]; BreastMNIST's real images give about 0.3, an untrained DCGAN about 0.03, a
generator that ignores ``z`` exactly 0.

``EpochResult.extra``: ``gan_sample_std`` (that spread, measured once after
pretraining: how close the GAN came to collapse) and, in augment mode, ``n_synthetic``
(generated images per classifier epoch).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raydx.config import TrialConfig
from raydx.data.rows import Joined
from raydx.errors import RaydxError
from raydx.families import register_family
from raydx.families.params import is_int, is_real
from raydx.families.params import parse_params as parse_family_params
from raydx.lookup import lookup
from raydx.models.gan import ConditionalGAN, condition_classes
from raydx.models.registry import create_model, model_family, model_params
from raydx.train import (
    DivergedError,
    EpochResult,
    FoldTrainer,
    TrialFailure,
    batches,
    make_lr_schedule,
    num_outputs,
    steps_for,
)

FAMILY = "gan"
GAN_MODES = ("augment", "disc_features")
COLLAPSE_STD = 0.005  # mean per-pixel std across one class's samples, normalised units
COLLAPSE_SAMPLES = 32  # samples per class for the collapse check
ADAM_BETAS = (0.5, 0.999)  # DCGAN's
PARAMS: dict[str, Any] = {
    "gan_mode": "augment",  # augment | disc_features
    "gan_model": "dcgan",  # registry name of the GAN
    "latent_size": 32,  # passed to the GAN model when it takes it
    "g_width": 32,  # idem
    "d_width": 32,  # idem
    "g_lr": 2e-4,  # Adam learning rate of the generator
    "d_lr": 2e-4,  # Adam learning rate of the discriminator
    "pretrain_epochs": 20,  # GAN epochs before the first diagnosis epoch
    "synthetic_ratio": 0.5,  # augment mode: generated images per real image, per epoch
}
# Family params that are the GAN model's hyperparameters (passed when it declares them).
_MODEL_KEYS = ("latent_size", "g_width", "d_width")


@dataclass(frozen=True)
class GANParams:
    """The family's parameters, checked (one-line messages naming the value)."""

    gan_mode: str = "augment"
    gan_model: str = "dcgan"
    latent_size: int = 32
    g_width: int = 32
    d_width: int = 32
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    pretrain_epochs: int = 20
    synthetic_ratio: float = 0.5

    def __post_init__(self) -> None:
        lookup(self.gan_mode, GAN_MODES, "gan_mode")
        if model_family(self.gan_model) != FAMILY:
            from raydx.models.registry import list_models

            raise RaydxError(
                f"gan_model must be a model of the gan family ({', '.join(list_models(FAMILY))}), "
                f"but got gan_model={self.gan_model!r}."
            )
        for name in ("g_lr", "d_lr"):
            v = getattr(self, name)
            if not is_real(v) or not v > 0 or not math.isfinite(v):
                raise RaydxError(f"{name} must be a float > 0, but got {name}={v!r}.")
        if not is_int(self.pretrain_epochs) or self.pretrain_epochs < 0:
            raise RaydxError(
                "pretrain_epochs must be an int >= 0, but got "
                f"pretrain_epochs={self.pretrain_epochs!r}."
            )
        r = self.synthetic_ratio
        if not is_real(r) or not r >= 0 or not math.isfinite(r):
            raise RaydxError(
                f"synthetic_ratio must be a float >= 0, but got synthetic_ratio={r!r}."
            )

    @classmethod
    def from_config(cls, cfg: TrialConfig) -> GANParams:
        return parse_params(cfg.family_params)


def parse_params(params: Mapping[str, Any]) -> GANParams:
    """Family params (defaults filled in) -> :class:`GANParams`."""
    return parse_family_params(GANParams, PARAMS, params)


def build_gan(
    cfg: TrialConfig, *, in_channels: int, n_classes: int, image_size: int
) -> ConditionalGAN:
    """The configuration's GAN: ``gan_model`` with the family's size params it declares,
    and other ``cfg.model_params`` it declares (e.g. the diagnosis head's ``dropout``)."""
    name, kwargs = gan_network(cfg)
    gan = create_model(
        name,
        in_channels=in_channels,
        num_outputs=num_outputs(n_classes),
        image_size=image_size,
        **kwargs,
    )
    if not isinstance(gan, ConditionalGAN):
        raise RaydxError(f"gan_model {name!r} does not build a ConditionalGAN.")
    return gan


def gan_network(cfg: TrialConfig) -> tuple[str, dict[str, Any]]:
    """The GAN's registry name and the arguments it is built with (``build_gan``)."""
    p = GANParams.from_config(cfg)
    own = model_params(p.gan_model)
    given = {
        **{k: v for k, v in cfg.model_params.items() if k not in _MODEL_KEYS},
        **{k: getattr(p, k) for k in _MODEL_KEYS},
    }
    return p.gan_model, {k: v for k, v in given.items() if k in own}


def top_up(counts: np.ndarray, n: int) -> np.ndarray:
    """Split ``n`` generated images over classes: each goes to the class with the fewest
    images so far (real + generated; ties to the lower index), i.e. minority first."""
    have = np.asarray(counts, dtype=np.int64).copy()
    out = np.zeros_like(have)
    for _ in range(int(n)):
        k = int(np.argmin(have))
        have[k] += 1
        out[k] += 1
    return out


MIX_BATCHES = 8  # training-like batches whose batch-norm statistics the samples use


@contextmanager
def training_mix_statistics(module: nn.Module, run_batches: Callable[[], None]) -> Iterator[None]:
    """Within it, ``module``'s batch norms (which keep no running statistics: the GAN's
    generator) normalise with the mean statistics of the batches ``run_batches`` makes,
    not with each batch's own.

    A batch of one class (the topped-up minority) or of one image normalised away much
    of what the label adds: in ``bench/gan_batch_mix.py`` a class feature of 0.60 in the
    real images came out at 0.16, where batches mixed as in training gave 0.62; a batch
    of 5% of that class gave 0.93. Generating only the wanted class in training-like
    batches would cost 1 / its share (20 times the images at 5%); fixed statistics cost
    ``MIX_BATCHES`` batches, and make an image independent of the rest of its batch.
    """
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
    ]
    momenta = [m.momentum for m in norms]
    for m in norms:
        assert m.weight is not None  # affine: the generator's are
        m.running_mean = torch.zeros_like(m.weight)
        m.running_var = torch.ones_like(m.weight)
        m.num_batches_tracked = torch.tensor(0, device=m.weight.device)
        m.track_running_stats, m.momentum = True, None  # a plain mean over the batches
    was_training = module.training
    try:
        module.train()
        run_batches()
        module.eval()
        yield
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.running_mean = m.running_var = m.num_batches_tracked = None
            m.track_running_stats, m.momentum = False, momentum
        module.train(was_training)


class GANTrainer(FoldTrainer):
    """One fold of the GAN family (constructor as :class:`FoldTrainer`).

    ``gan`` is the GAN (the diagnosis model itself in ``disc_features`` mode);
    ``gan_train_x``/``gan_train_labels`` are exactly what it trains on; ``gan_step``
    is one discriminator + generator update (tests wrap it to inspect the inputs).
    """

    @staticmethod
    def build_diagnosis_model(
        cfg: TrialConfig, *, in_channels: int, n_classes: int, image_size: int
    ) -> nn.Module:
        """augment: the registry classifier ``cfg.model``; disc_features: the GAN."""
        p = GANParams.from_config(cfg)
        if p.gan_mode == "disc_features":
            return build_gan(
                cfg, in_channels=in_channels, n_classes=n_classes, image_size=image_size
            )
        return create_model(
            cfg.model,
            in_channels=in_channels,
            num_outputs=num_outputs(n_classes),
            image_size=image_size,
            **cfg.model_params,
        )

    @staticmethod
    def diagnosis_network(cfg: TrialConfig) -> tuple[str, dict[str, Any]]:
        """What ``build_diagnosis_model`` builds, as a saved model's config names it: the
        classifier in augment mode, the GAN (its discriminator's head) in disc_features."""
        if GANParams.from_config(cfg).gan_mode == "disc_features":
            return gan_network(cfg)
        return cfg.model, dict(cfg.model_params)

    def __init__(self, cfg: TrialConfig, **kwargs: Any) -> None:
        self.params = GANParams.from_config(cfg)
        super().__init__(cfg, **kwargs)
        self.augment_mode = self.params.gan_mode == "augment"
        shape = dict(
            in_channels=int(self.x_train.shape[1]),
            n_classes=self.n_classes,
            image_size=int(self.x_train.shape[2]),
        )
        if self.augment_mode:
            self.gan = build_gan(cfg, **shape).to(self.device)
        else:
            assert isinstance(self.model, ConditionalGAN)
            self.gan = self.model
        self.n_cond = condition_classes(num_outputs(self.n_classes))
        self.gan_train_x = self.x_train  # training rows only: never validation
        self.gan_train_labels = self._labels(self.t_train)
        self.g_optimizer = torch.optim.Adam(
            self.gan.generator.parameters(), lr=self.params.g_lr, betas=ADAM_BETAS
        )
        self.d_optimizer = torch.optim.Adam(
            self.gan.discriminator.parameters(), lr=self.params.d_lr, betas=ADAM_BETAS
        )
        base = self.seed * 7919 + self.fold
        self.gan_generator = torch.Generator().manual_seed(base + 15485863)
        self.sample_generator = torch.Generator().manual_seed(base + 32452843)
        self.gan_epochs_done = 0
        self.sample_std = float("nan")  # set by the collapse check after pretraining
        self.synthetic_per_class = np.zeros(self.n_cond, dtype=np.int64)
        if self.augment_mode:
            counts = np.bincount(self.gan_train_labels.cpu().numpy(), minlength=self.n_cond)
            n_syn = round(self.params.synthetic_ratio * len(self.x_train))
            self.synthetic_per_class = top_up(counts, n_syn)
            # The classifier's epochs are longer by the generated images: resize the
            # learning-rate schedule FoldTrainer set up for the real ones.
            self.steps_per_epoch = steps_for(len(self.x_train) + n_syn, cfg.batch_size)
            self.scheduler = make_lr_schedule(
                cfg, self.optimizer, self.epochs * self.steps_per_epoch
            )

    def _labels(self, t: torch.Tensor) -> torch.Tensor:
        """Training targets -> the GAN's class indices (binary: 1 = positive)."""
        return t.long()

    def _targets_of(self, labels: torch.Tensor) -> torch.Tensor:
        """The GAN's class indices -> classifier targets (as FoldTrainer's ``t_train``)."""
        return labels.float() if self.binary else labels.long()

    # ------------------------------------------------------------- GAN training

    def gan_step(self, real: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """One DCGAN update: D on real vs generated, then G (non-saturating loss)."""
        gan, n = self.gan, len(real)
        z = torch.randn(n, gan.latent_size, generator=self.gan_generator).to(self.device)
        fake = gan.generator(z, labels)
        d_real = gan.discriminator(real, labels)
        d_fake = gan.discriminator(fake.detach(), labels)
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        self._check_finite(d_loss, "discriminator")
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        g_out = gan.discriminator(fake, labels)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        self._check_finite(g_loss, "generator")
        self.g_optimizer.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_optimizer.step()
        return d_loss.item(), g_loss.item()

    def _check_finite(self, loss: torch.Tensor, who: str) -> None:
        if not torch.isfinite(loss):
            raise DivergedError(
                f"GAN {who} loss became {loss.item()} (fold {self.fold}, GAN epoch "
                f"{self.gan_epochs_done + 1}); try lower g_lr/d_lr."
            )

    def gan_epoch(self) -> tuple[float, float]:
        """One pass over ``gan_train_x``; mean discriminator and generator losses."""
        self.gan.freeze_discriminator(False)
        self.gan.train()
        x, y = self.gan_train_x, self.gan_train_labels
        order = torch.randperm(len(x), generator=self.gan_generator).to(self.device)
        d_total = g_total = 0.0
        count = 0
        for idx in batches(order, self.cfg.batch_size):
            d, g = self.gan_step(x[idx], y[idx])
            d_total += d * len(idx)
            g_total += g * len(idx)
            count += len(idx)
        self.gan_epochs_done += 1
        return d_total / max(count, 1), g_total / max(count, 1)

    @torch.no_grad()
    def _sample(self, per_class: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        """``per_class[c]`` images of each class, in class order, generated with the
        batch-norm statistics of batches whose labels are drawn as the training
        batches' are (``training_mix_statistics``)."""
        labels = torch.repeat_interleave(
            torch.arange(self.n_cond), torch.as_tensor(per_class, dtype=torch.long)
        )
        self.gan.eval()
        bs = max(self.cfg.batch_size, 2)
        mix = self.gan_train_labels.cpu()

        def training_batches() -> None:
            for _ in range(MIX_BATCHES):
                batch = mix[torch.randint(len(mix), (bs,), generator=generator)]
                self.gan.sample(bs, batch, generator=generator)

        with training_mix_statistics(self.gan.generator, training_batches):
            out = [
                self.gan.sample(len(part), part, generator=generator) for part in labels.split(bs)
            ]
        return torch.cat(out) if out else self.x_train[:0]

    def check_collapse(self) -> float:
        """Raise TrialFailure if the generator collapsed; return the smallest class's spread."""
        g = torch.Generator().manual_seed(self.seed * 7919 + self.fold + 49979687)
        per = np.full(self.n_cond, COLLAPSE_SAMPLES)
        x = self._sample(per, g)
        if not torch.isfinite(x).all():
            raise DivergedError(f"GAN generator produced non-finite images (fold {self.fold}).")
        spread = [float(part.std(0).mean()) for part in x.split(COLLAPSE_SAMPLES)]
        k = int(np.argmin(spread))
        if spread[k] < COLLAPSE_STD:
            raise TrialFailure(
                f"GAN generator collapsed (fold {self.fold}): samples of class {k} have a "
                f"per-pixel std of {spread[k]:.2g} < {COLLAPSE_STD}; try other g_lr/d_lr "
                "or pretrain_epochs."
            )
        return spread[k]

    @torch.no_grad()
    def _recalibrate_discriminator(self) -> None:
        """Recompute D's batch-norm running statistics on the real training images."""
        d = self.gan.discriminator
        norms = [m for m in d.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        d.train()
        for xb in batches(self.gan_train_x, self.cfg.batch_size):
            d.features(xb)
        for m, mom in zip(norms, momenta, strict=True):
            m.momentum = mom

    # ------------------------------------------------------------- the interface

    def pretrain(self) -> None:
        """``pretrain_epochs`` GAN epochs on the training rows, then the collapse check."""
        for _ in range(self.params.pretrain_epochs):
            self.gan_epoch()
        self.g_optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        self.sample_std = self.check_collapse()
        if not self.augment_mode:
            self._recalibrate_discriminator()

    def train_epoch(self, epoch: int) -> float:
        """A FoldTrainer epoch: on real + generated images (augment) or of the head only."""
        if not self.augment_mode:
            self.gan.freeze_discriminator(True)
            return super().train_epoch(epoch)
        syn = self._sample(self.synthetic_per_class, self.sample_generator)
        labels = torch.repeat_interleave(
            torch.arange(self.n_cond), torch.as_tensor(self.synthetic_per_class)
        )
        if self.binary:
            y_syn = np.where(labels.numpy() == 1, self.positive, 1 - self.positive)
        else:
            y_syn = labels.numpy()
        real = (self.x_train, self.t_train, self.y_train, self.sample_weight, self.class_weight)
        # FoldTrainer's loop reads these; for this epoch they include the generated
        # images (restored afterwards, so nothing else ever sees them), and the class
        # weights follow the classes as topped up.
        self.x_train = Joined(real[0], syn)
        self.t_train = torch.cat([real[1], self._targets_of(labels.to(self.device))])
        self.y_train = np.concatenate([real[2], y_syn.astype(real[2].dtype)])
        if real[3] is not None:
            self.sample_weight = self._sample_weight()
        if real[4] is not None:
            self.class_weight = self._class_weight()
        try:
            return super().train_epoch(epoch)
        finally:
            self.x_train, self.t_train, self.y_train, self.sample_weight, self.class_weight = real

    def run_epoch(self, epoch: int) -> EpochResult:
        r = super().run_epoch(epoch)
        extra = {**r.extra, "gan_sample_std": self.sample_std}
        if self.augment_mode:
            extra["n_synthetic"] = float(self.synthetic_per_class.sum())
        return dataclasses.replace(r, extra=extra)

    def state_dict(self) -> dict[str, Any]:
        state = {
            **super().state_dict(),
            "g_optimizer": self.g_optimizer.state_dict(),
            "d_optimizer": self.d_optimizer.state_dict(),
            "gan_generator": self.gan_generator.get_state(),
            "sample_generator": self.sample_generator.get_state(),
            "gan_epochs_done": self.gan_epochs_done,
            "sample_std": self.sample_std,
        }
        if self.augment_mode:  # otherwise the GAN is the model, saved above
            state["gan"] = self.gan.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.augment_mode:
            self.gan.load_state_dict(state["gan"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.gan_generator.set_state(state["gan_generator"])
        self.sample_generator.set_state(state["sample_generator"])
        self.gan_epochs_done = int(state["gan_epochs_done"])
        self.sample_std = float(state["sample_std"])

    @torch.no_grad()
    def write_artifacts(self, directory: str) -> None:
        """``samples_fold{fold}.png``: one row of 8 generated images per class."""
        from torchvision.utils import save_image

        g = torch.Generator().manual_seed(self.seed * 7919 + self.fold + 86028121)
        x = self._sample(np.full(self.n_cond, 8), g).cpu()
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / f"samples_fold{self.fold}.png"
        save_image(x, str(path), nrow=8, normalize=True, value_range=(-1.0, 1.0))


register_family(
    FAMILY,
    GANTrainer,
    PARAMS,
    default_model="cnn_seed",  # the augment mode's classifier
    sub_model="gan_model",
    sub_model_params=_MODEL_KEYS,
    check=parse_params,
)
