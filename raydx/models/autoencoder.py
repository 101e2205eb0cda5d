"""The autoencoder family: a convolutional autoencoder with a diagnosis head on its code.

Every member returns an :class:`AutoEncoder`: ``encoder`` (x -> z, shape (B, latent)),
``decoder`` (z -> x̂, the shape of x), ``reconstruct(x)`` and ``head`` (z -> logits), so
``forward(x) = head(encoder(x))`` is an ordinary images -> logits classifier and the
CNN training loop, the saved artifact and ``raydx.load_model`` need nothing new.

Shapes: each encoder stage is a stride-2 3x3 conv (side ``s -> ceil(s / 2)``); each
decoder stage is the transposed conv that inverts it exactly (``output_padding`` 1 for
an even side, 0 for an odd one), so 28 -> 14 -> 7 -> 4 -> 2 decodes back to 28 and
64 -> 32 -> 16 -> 8 -> 4 back to 64 without cropping or interpolation. The decoder ends
in ``tanh``: raydx inputs are normalised with mean 0.5 and std 0.5, i.e. lie in [-1, 1].

:class:`ReconstructionScorer` is the anomaly-mode diagnosis model: the log of the
reconstruction error over the training (non-positive) images' typical one, as the logit.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from raydx.data.rows import Images
from raydx.errors import RaydxError
from raydx.lookup import lookup
from raydx.models.cnn import NORMS, _common, _dropout, _int, _norm
from raydx.models.registry import register_model

MAX_DEPTH = 4
MAX_CHANNELS = 256
MAX_LATENT = 1024
HEAD_UNITS = 64
AE_LOSSES = ("mse", "l1")


class AutoEncoder(nn.Module):
    """``encoder`` / ``decoder`` for reconstruction, ``head`` on the code for diagnosis.

    ``freeze_encoder(True)`` stops the encoder's gradients and keeps it in eval mode
    through ``train()`` (so batch-norm statistics learnt on reconstruction stay put):
    the classifier-on-frozen-features setting.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head
        self.encoder_frozen = False

    def reconstruct(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def freeze_encoder(self, frozen: bool = True) -> None:
        self.encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> AutoEncoder:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self


class ReconstructionScorer(nn.Module):
    """Anomaly score as a logit: ``log(err(x) / typical)``, ``typical`` being the geometric
    mean of the training errors.

    ``err`` is the per-image mean squared (``loss="mse"``) or absolute (``"l1"``)
    reconstruction error; ``log_err_mean`` is a buffer (saved with the weights) set by
    :meth:`fit_scale` on images of the non-positive class, so a typical normal image
    scores about 0 (probability 0.5, ``err / (err + typical)``) and one reconstructed
    twice as badly ``log 2``. Not divided by the training errors' spread: those are the
    images the autoencoder learnt, so their errors are tight (a spread of 13% of their
    mean in a 28x28 test) and every unseen image, normal or not, landed tens of spreads
    above; its sigmoid rounded to 1.0 and the AUC counted those images as ties (0.916
    where the errors ranked at 0.945).
    """

    log_err_mean: Tensor

    def __init__(self, ae: AutoEncoder, *, loss: str = "mse") -> None:
        super().__init__()
        self.ae = ae
        self.loss = lookup(loss, AE_LOSSES, "ae_loss")
        self.register_buffer("log_err_mean", torch.zeros(()))
        # (mean, std) of a model saved before the log score: it keeps its own score,
        # which its saved threshold was chosen on
        self.standardised: tuple[float, float] | None = None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        old = (prefix + "err_mean", prefix + "err_std")
        if all(k in state_dict for k in old) and prefix + "log_err_mean" not in state_dict:
            mean, std = (float(state_dict.pop(k)) for k in old)
            self.standardised = (mean, std)
            state_dict[prefix + "log_err_mean"] = torch.zeros(())
        super()._load_from_state_dict(state_dict, prefix, *args)

    def errors(self, x: Tensor) -> Tensor:
        """Per-image reconstruction error, shape (B,)."""
        return reconstruction_error(self.ae.reconstruct(x), x, self.loss)

    @torch.no_grad()
    def fit_scale(self, x: Images, *, batch_size: int = 512) -> None:
        """Set ``log_err_mean`` from the errors on ``x`` (eval mode)."""
        was = self.training
        self.eval()
        err = torch.cat([self.errors(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        self.log_err_mean.fill_(_log(err).mean())
        self.standardised = None  # fitted now: the log score, whatever a checkpoint held
        self.train(was)

    def forward(self, x: Tensor) -> Tensor:
        if self.standardised is not None:
            mean, std = self.standardised
            return ((self.errors(x) - mean) / std).unsqueeze(1)
        return (_log(self.errors(x)) - self.log_err_mean).unsqueeze(1)


def _log(err: Tensor) -> Tensor:
    """``log`` of errors, a perfect reconstruction (0) kept finite."""
    return err.clamp_min(1e-12).log()


def reconstruction_error(recon: Tensor, x: Tensor, loss: str) -> Tensor:
    """Per-image mean squared or absolute error, shape (B,)."""
    diff = recon - x
    d = diff.abs() if loss == "l1" else diff.square()
    return d.flatten(1).mean(1)


def build_autoencoder(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    depth: int = 3,
    width: int = 16,
    latent_size: int = 32,
    norm: str = "batch",
    dropout: float = 0.0,
) -> AutoEncoder:
    """Validate the hyperparameters and assemble encoder, decoder and head."""
    _common(in_channels, num_outputs, image_size, 2)
    depth = _int("depth", depth, 1, MAX_DEPTH)
    width = _int("width", width, 1, MAX_CHANNELS)
    latent_size = _int("latent_size", latent_size, 1, MAX_LATENT)
    norm = lookup(norm, NORMS, "norm")
    dropout = _dropout(dropout)

    channels = [min(width * 2**i, MAX_CHANNELS) for i in range(depth)]
    sides = [image_size]  # sides[i]: input side of encoder stage i; sides[-1]: the code map
    for _ in range(depth):
        sides.append((sides[-1] + 1) // 2)
    if norm == "instance" and sides[-1] < 2:  # instance norm of one pixel per channel
        fits = sum(1 for side in sides[1:] if side >= 2)
        raise RaydxError(
            f"norm='instance' needs a code map of at least 2x2 pixels, but "
            f"image_size={image_size} with depth={depth} halves it to 1x1; use depth <= "
            f"{fits} or another norm."
        )

    enc: list[nn.Module] = []
    c_in = in_channels
    for c in channels:
        enc += [
            nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=norm == "none"),
            _norm(norm, c),
            nn.ReLU(inplace=True),
        ]
        c_in = c
    c, s = channels[-1], sides[-1]
    encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(c * s * s, latent_size))

    dec: list[nn.Module] = [
        nn.Linear(latent_size, c * s * s),
        nn.ReLU(inplace=True),
        nn.Unflatten(1, (c, s, s)),
    ]
    for i in reversed(range(depth)):
        last = i == 0
        c_out = in_channels if last else channels[i - 1]
        dec.append(
            nn.ConvTranspose2d(
                channels[i],
                c_out,
                3,
                stride=2,
                padding=1,
                # ceil-halving inverted exactly: 2n - 1 + output_padding == sides[i]
                output_padding=1 if sides[i] % 2 == 0 else 0,
                bias=last or norm == "none",
            )
        )
        dec += [nn.Tanh()] if last else [_norm(norm, c_out), nn.ReLU(inplace=True)]
    decoder = nn.Sequential(*dec)

    head = nn.Sequential(
        nn.Linear(latent_size, HEAD_UNITS),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(HEAD_UNITS, num_outputs),
    )
    return AutoEncoder(encoder, decoder, head)


@register_model("autoencoder")
def conv_ae(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    depth: int = 3,
    width: int = 16,
    latent_size: int = 32,
    norm: str = "batch",
    dropout: float = 0.0,
) -> AutoEncoder:
    """The searchable autoencoder: ``depth`` stride-2 stages of ``width * 2**i`` filters.

    The code is a dense ``latent_size`` vector; the head is dense 64 + ReLU, dropout,
    linear. Mirrors ``cnn``'s parameter names where they mean the same thing.
    """
    return build_autoencoder(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        depth=depth,
        width=width,
        latent_size=latent_size,
        norm=norm,
        dropout=dropout,
    )


@register_model("autoencoder")
def conv_ae_tiny(
    *, in_channels: int, num_outputs: int, image_size: int, dropout: float = 0.0
) -> AutoEncoder:
    """Two stages of 4-8 filters and an 8-d code, for tests that train in seconds."""
    return build_autoencoder(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        depth=2,
        width=4,
        latent_size=8,
        norm="batch",
        dropout=dropout,
    )
