"""The autoencoder family: learn to reconstruct the fold's images, then diagnose from that.

``ae_mode="classifier"``: ``pretrain()`` trains the autoencoder (``cfg.model``, a
registry member of the ``autoencoder`` family; ``conv_ae`` when the configuration
names no model; a model of another kind is an error) on all of the fold's training images,
labels unused; the diagnosis epochs are ordinary classifier epochs of
:class:`raydx.train.FoldTrainer` on ``head(encoder(x))``, with the encoder frozen
(``freeze_encoder``) or fine-tuned.

``ae_mode="anomaly"`` (binary tasks only): the autoencoder learns only the non-positive
training images; each diagnosis epoch is one more autoencoder epoch on them, after
which validation images are scored by the log of their reconstruction error over the
typical error of those training images (:class:`raydx.models.autoencoder.ReconstructionScorer`).
A positive image, never seen in training, should reconstruct worse.

Either way the diagnosis model maps images to logits, is rebuilt from the config alone
by :meth:`AutoencoderTrainer.build_diagnosis_model`, and ``EpochResult.extra`` carries
``recon_error``: the mean validation reconstruction error of the epoch.
``train_loss`` is the epoch's training objective: the classifier loss in classifier
mode, the reconstruction loss in anomaly mode.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydx.config import TrialConfig
from raydx.data.rows import Images, take
from raydx.errors import RaydxError
from raydx.families import register_family
from raydx.families.params import is_int, is_real
from raydx.families.params import parse_params as parse_family_params
from raydx.lookup import lookup
from raydx.models import autoencoder as ae_models
from raydx.models.autoencoder import AE_LOSSES, AutoEncoder, ReconstructionScorer
from raydx.models.registry import create_model, model_family
from raydx.train import (
    DivergedError,
    EpochResult,
    FoldTrainer,
    TrialFailure,
    batches,
    num_outputs,
)

FAMILY = "autoencoder"
AE_MODES = ("classifier", "anomaly")
# The model used when a configuration names none (other families default to a CNN):
# lets a space that searches several families leave `model` to the CNN branch.
DEFAULT_MODEL = "conv_ae"
PARAMS: dict[str, Any] = {
    "ae_loss": "mse",  # reconstruction loss: mse | l1
    "denoise": 0.0,  # std of Gaussian noise on the AE's input in training (0: off)
    "ae_mode": "classifier",  # classifier | anomaly
    "freeze_encoder": False,  # classifier mode: train the head only
    "pretrain_epochs": 10,  # autoencoder epochs before the first diagnosis epoch
    "ae_lr": 1e-3,  # Adam learning rate of the autoencoder
}


@dataclass(frozen=True)
class AEParams:
    """The family's parameters, checked (one-line messages naming the value)."""

    ae_loss: str = "mse"
    denoise: float = 0.0
    ae_mode: str = "classifier"
    freeze_encoder: bool = False
    pretrain_epochs: int = 10
    ae_lr: float = 1e-3

    def __post_init__(self) -> None:
        lookup(self.ae_loss, AE_LOSSES, "ae_loss")
        lookup(self.ae_mode, AE_MODES, "ae_mode")
        if not isinstance(self.freeze_encoder, bool):
            raise RaydxError(
                "freeze_encoder must be true or false, but got "
                f"freeze_encoder={self.freeze_encoder!r}."
            )
        if not is_real(self.denoise) or not self.denoise >= 0:
            raise RaydxError(f"denoise must be a float >= 0, but got denoise={self.denoise!r}.")
        if not is_int(self.pretrain_epochs) or self.pretrain_epochs < 0:
            raise RaydxError(
                "pretrain_epochs must be an int >= 0, but got "
                f"pretrain_epochs={self.pretrain_epochs!r}."
            )
        if not is_real(self.ae_lr) or not self.ae_lr > 0 or not math.isfinite(self.ae_lr):
            raise RaydxError(f"ae_lr must be a float > 0, but got ae_lr={self.ae_lr!r}.")

    @classmethod
    def from_config(cls, cfg: TrialConfig) -> AEParams:
        return parse_params(cfg.family_params)


def parse_params(params: Mapping[str, Any]) -> AEParams:
    """Family params (defaults filled in) -> :class:`AEParams`; unknown keys are ignored
    (``TrialConfig.family_params`` holds only this family's keys)."""
    return parse_family_params(AEParams, PARAMS, params)


def _autoencoder(
    cfg: TrialConfig, *, in_channels: int, n_classes: int, image_size: int
) -> AutoEncoder:
    """The configuration's autoencoder, ``cfg.model`` (TrialConfig puts DEFAULT_MODEL there
    when a configuration names none, and rejects a model of another kind)."""
    name, kwargs = cfg.model, dict(cfg.model_params)
    if model_family(name) != FAMILY:  # a TrialConfig never holds one; never swap it quietly
        raise RaydxError(
            f"family 'autoencoder' needs a model of the autoencoder family "
            f"({', '.join(_ae_models())}), but got model={name!r}."
        )
    model = create_model(
        name,
        in_channels=in_channels,
        num_outputs=num_outputs(n_classes),
        image_size=image_size,
        **kwargs,
    )
    if not isinstance(model, AutoEncoder):
        raise RaydxError(f"model {name!r} does not build an AutoEncoder.")
    return model


def _ae_models() -> list[str]:
    from raydx.models.registry import list_models

    return list_models(FAMILY)


class AutoencoderTrainer(FoldTrainer):
    """One fold of the autoencoder family (constructor as :class:`FoldTrainer`).

    ``ae_train_x`` is the set the autoencoder learns from: all training images
    (classifier mode) or the non-positive ones (anomaly mode).
    """

    @staticmethod
    def build_diagnosis_model(
        cfg: TrialConfig, *, in_channels: int, n_classes: int, image_size: int
    ) -> nn.Module:
        """Classifier mode: the autoencoder itself; anomaly mode: its reconstruction scorer."""
        p = AEParams.from_config(cfg)
        if p.ae_mode == "anomaly" and n_classes != 2:
            raise TrialFailure(
                f"ae_mode='anomaly' needs a binary task (positive vs rest), but got "
                f"n_classes={n_classes}; use ae_mode='classifier'."
            )
        ae = _autoencoder(cfg, in_channels=in_channels, n_classes=n_classes, image_size=image_size)
        return ReconstructionScorer(ae, loss=p.ae_loss) if p.ae_mode == "anomaly" else ae

    def __init__(self, cfg: TrialConfig, **kwargs: Any) -> None:
        self.params = AEParams.from_config(cfg)
        super().__init__(cfg, **kwargs)
        self.anomaly = self.params.ae_mode == "anomaly"
        ae = self.model.ae if isinstance(self.model, ReconstructionScorer) else self.model
        assert isinstance(ae, AutoEncoder)
        self.ae = ae
        if self.anomaly:
            normal = self.t_train == 0
            if not bool(normal.any()):
                raise TrialFailure(
                    f"ae_mode='anomaly' needs non-positive training images, but fold "
                    f"{self.fold} has none."
                )
            self.ae_train_x: Images = take(self.x_train, normal)
        else:
            self.ae_train_x = self.x_train
        self.ae_optimizer = torch.optim.Adam(
            [*self.ae.encoder.parameters(), *self.ae.decoder.parameters()], lr=self.params.ae_lr
        )
        self.ae_generator = torch.Generator().manual_seed(self.seed * 7919 + self.fold + 104729)
        self.ae_epochs_done = 0

    # ------------------------------------------------------------- autoencoder training

    def _recon_loss(self, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ae_models.reconstruction_error(recon, x, self.params.ae_loss).mean()

    def ae_epoch(self) -> float:
        """One reconstruction epoch on ``ae_train_x``; the mean training loss."""
        self.ae.freeze_encoder(False)
        self.ae.train()
        x = self.ae_train_x
        order = torch.randperm(len(x), generator=self.ae_generator).to(self.device)
        total, count = 0.0, 0
        for idx in batches(order, self.cfg.batch_size):
            xb = x[idx]
            inp = xb
            if self.params.denoise:
                noise = torch.randn(xb.shape, generator=self.ae_generator)
                inp = xb + self.params.denoise * noise.to(self.device)
            loss = self._recon_loss(self.ae.reconstruct(inp), xb)
            if not torch.isfinite(loss):
                raise DivergedError(
                    f"autoencoder loss became {loss.item()} (fold {self.fold}, autoencoder "
                    f"epoch {self.ae_epochs_done + 1}); try a lower ae_lr."
                )
            self.ae_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.ae_optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        self.ae_optimizer.zero_grad(set_to_none=True)
        self.ae_epochs_done += 1
        return total / max(count, 1)

    def _fit_scale(self) -> None:
        assert isinstance(self.model, ReconstructionScorer)
        self.model.fit_scale(self.ae_train_x)

    @torch.no_grad()
    def recon_error(self, x: Images) -> float:
        """Mean per-image reconstruction error on ``x`` (eval mode, no input noise)."""
        self.ae.eval()
        err = [
            ae_models.reconstruction_error(
                self.ae.reconstruct(x[i : i + 512]), x[i : i + 512], self.params.ae_loss
            )
            for i in range(0, len(x), 512)
        ]
        return float(torch.cat(err).mean().item())

    # ------------------------------------------------------------- the interface

    def pretrain(self) -> None:
        """``pretrain_epochs`` autoencoder epochs (all images, or non-positive ones)."""
        for _ in range(self.params.pretrain_epochs):
            self.ae_epoch()
        if self.anomaly:  # scores are defined even after zero epochs
            self._fit_scale()

    def train_epoch(self, epoch: int) -> float:
        """Anomaly mode: one more autoencoder epoch; classifier mode: a classifier epoch."""
        if self.anomaly:
            loss = self.ae_epoch()
            self._fit_scale()
            return loss
        self.ae.freeze_encoder(self.params.freeze_encoder)
        return super().train_epoch(epoch)

    def run_epoch(self, epoch: int) -> EpochResult:
        r = super().run_epoch(epoch)
        if self.x_val is None:
            return r
        return dataclasses.replace(
            r, extra={**r.extra, "recon_error": self.recon_error(self.x_val)}
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "ae_optimizer": self.ae_optimizer.state_dict(),
            "ae_generator": self.ae_generator.get_state(),
            "ae_epochs_done": self.ae_epochs_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ae_optimizer.load_state_dict(state["ae_optimizer"])
        self.ae_generator.set_state(state["ae_generator"])
        self.ae_epochs_done = int(state["ae_epochs_done"])

    @torch.no_grad()
    def write_artifacts(self, directory: str) -> None:
        """``reconstructions_fold{fold}.png``: 8 images (top row) and their reconstructions."""
        from torchvision.utils import save_image

        x = (self.x_val if self.x_val is not None else self.x_train)[:8]
        self.ae.eval()
        grid = torch.cat([x, self.ae.reconstruct(x)]).cpu()
        Path(directory).mkdir(parents=True, exist_ok=True)
        path = Path(directory) / f"reconstructions_fold{self.fold}.png"
        save_image(grid, str(path), nrow=len(x), normalize=True, value_range=(-1.0, 1.0))


register_family(
    FAMILY,
    AutoencoderTrainer,
    PARAMS,
    default_model=DEFAULT_MODEL,
    model_kind=FAMILY,
    check=parse_params,
)
