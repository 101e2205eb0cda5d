"""The GAN family: a class-conditional DCGAN (Radford et al., 2016) sized for the input.

Why one conditional GAN, not one GAN per class: a training fold of BreastMNIST holds
about 100-150 malignant images; a GAN of its own for the minority class would learn
from those alone, while a conditional GAN shares every convolution between the classes
(edges, texture, the ultrasound speckle) and spends only a label embedding on what
differs. It is also one model, one training loop and one checkpoint per fold whatever
the number of classes.

Conditioning. Generator: the label's embedding is concatenated to ``z``. Discriminator:
a projection discriminator (Miyato & Koyama, 2018), ``D(x, y) = w . phi(x) + b +
embed(y) . phi(x)``, rather than a label channel stacked on the image, so that the
features ``phi(x)`` never see the label: they are what the diagnosis head reads
(``forward(x) = head(phi(x))``), and at diagnosis time the label is the unknown.

Shapes. The generator projects ``z`` to a ``base x base`` map, ``base`` being the image
side halved while it stays even and > 7 (28 -> 7, 64 -> 4, 32 -> 4), then doubles it
with stride-2 4x4 transposed convs + batch norm + ReLU, ending in ``tanh`` (raydx
inputs are normalised to [-1, 1]). The discriminator mirrors it with stride-2 4x4 convs
+ batch norm + LeakyReLU(0.2) (no norm on the first, as in DCGAN). Weights start from
N(0, 0.02), batch-norm scales from N(1, 0.02), as in DCGAN.

A side whose halving stops at an odd number > 7 (150 -> 75, 100 -> 25, 18 -> 9) would
start the generator at that map, with a first layer of ``c x 75 x 75`` outputs (11.5M
weights at 150 px). Such sides start at a ``base`` of 4-7 instead and the generator makes
the next ``base x 2**n`` side up (150 -> 5 x 32 = 160), cropped to the image's centre,
as MNIST's 28 px are padded to 32 for power-of-two networks; the discriminator's strided
convs halve the image's own side (rounding down) the same ``n`` times.

The generator's batch norm always uses batch statistics (``track_running_stats=False``),
as DCGAN samples in training mode: after a short training on a small fold the running
averages are far from the batch statistics and would turn eval-mode samples into noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from raydx.models.cnn import _common, _dropout, _int
from raydx.models.registry import register_model

MAX_LATENT = 1024
MAX_WIDTH = 512
MAX_CHANNELS = 512
MIN_SIZE = 4


def plan(image_size: int) -> tuple[int, int]:
    """``(base, n)``: the side of the smallest map and the number of 2x steps to the image.

    ``base * 2**n`` is the image side where the side halves down to 7 or less; else it is
    the smallest such side above the image's (cropped to it), so that ``base`` stays <= 7.
    """
    base, n = image_size, 0
    while base % 2 == 0 and base > 7:
        base //= 2
        n += 1
    if base <= 7:
        return base, n
    n = 0
    while -(-image_size // 2**n) > 7:
        n += 1
    return -(-image_size // 2**n), n


def _halved(side: int, n: int) -> int:
    """The side after ``n`` stride-2 4x4 convs with padding 1 (each rounds down)."""
    for _ in range(n):
        side //= 2
    return side


def condition_classes(num_outputs: int) -> int:
    """Classes the GAN is conditioned on: one logit stands for a binary task."""
    return 2 if num_outputs == 1 else num_outputs


class Generator(nn.Module):
    """``(z, labels) -> images`` in [-1, 1]."""

    def __init__(
        self, *, latent_size: int, n_classes: int, out_channels: int, image_size: int, width: int
    ) -> None:
        super().__init__()
        base, n = plan(image_size)
        c = min(width * 2 ** max(n - 1, 0), MAX_CHANNELS)
        self.latent_size = latent_size
        self.image_size = image_size
        self.crop = (base * 2**n - image_size) // 2  # > 0 where the side is generated larger
        self.embed = nn.Embedding(n_classes, latent_size)
        self.project = nn.Sequential(
            nn.Linear(2 * latent_size, c * base * base, bias=False),
            nn.Unflatten(1, (c, base, base)),
            nn.BatchNorm2d(c, track_running_stats=False),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for i in range(n):
            last = i == n - 1
            c_out = out_channels if last else max(c // 2, 1)
            layers.append(nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_out, track_running_stats=False), nn.ReLU(inplace=True)]
            c = c_out
        if n == 0:  # an odd side <= 7: no upsampling, one conv to the image
            layers.append(nn.Conv2d(c, out_channels, 3, padding=1))
        layers.append(nn.Tanh())
        self.body = nn.Sequential(*layers)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        x = self.body(self.project(torch.cat([z, self.embed(labels)], dim=1)))
        if x.shape[-1] != self.image_size:
            side, lo = self.image_size, self.crop
            x = x[..., lo : lo + side, lo : lo + side]
        return x


class Discriminator(nn.Module):
    """Projection discriminator: label-free ``features(x)``; ``forward(x, y)`` = real/fake logit."""

    def __init__(self, *, n_classes: int, in_channels: int, image_size: int, width: int) -> None:
        super().__init__()
        base, n = plan(image_size)
        layers: list[nn.Module] = []
        c_in, c = in_channels, width
        for i in range(n):
            layers.append(nn.Conv2d(c_in, c, 4, stride=2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in, c = c, min(c * 2, MAX_CHANNELS)
        if n == 0:
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        side = _halved(image_size, n) if n else base
        self.num_features = c_in * side * side
        self.out = nn.Linear(self.num_features, 1)
        self.embed = nn.Embedding(n_classes, self.num_features)

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Real/fake logits, shape (B,)."""
        h = self.features(x)
        return self.out(h)[:, 0] + (self.embed(labels) * h).sum(1)


class ConditionalGAN(nn.Module):
    """Generator, discriminator, and a diagnosis ``head`` on the discriminator's features.

    ``forward(x)`` = ``head(discriminator.features(x))`` = logits (B, num_outputs).
    ``freeze_discriminator(True)`` stops gradients to generator and discriminator and
    keeps the discriminator in eval mode through ``train()``: only the head learns.
    """

    def __init__(
        self, generator: Generator, discriminator: Discriminator, head: nn.Module, n_classes: int
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.head = head
        self.n_classes = n_classes
        self.latent_size = generator.latent_size
        self.discriminator_frozen = False

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.discriminator.features(x))

    def sample(
        self,
        n: int,
        labels: Tensor | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n`` images of the given classes (default: the classes in turn).

        ``z`` is drawn on the CPU from ``generator`` (then moved), so samples are the
        same on any device for the same generator state.
        """
        device = next(self.parameters()).device
        if labels is None:
            labels = torch.arange(n) % self.n_classes
        labels = torch.as_tensor(labels, dtype=torch.long).to(device)
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), but got shape={tuple(labels.shape)}.")
        z = torch.randn(n, self.latent_size, generator=generator).to(device)
        return self.generator(z, labels)

    def freeze_discriminator(self, frozen: bool = True) -> None:
        self.discriminator_frozen = frozen
        for p in [*self.generator.parameters(), *self.discriminator.parameters()]:
            p.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> ConditionalGAN:
        super().train(mode)
        if self.discriminator_frozen:
            self.discriminator.eval()
        return self


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: weights N(0, 0.02); batch-norm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            bias = getattr(m, "bias", None)
            if isinstance(bias, Tensor):
                nn.init.zeros_(bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_dcgan(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    latent_size: int = 32,
    g_width: int = 32,
    d_width: int = 32,
    dropout: float = 0.0,
) -> ConditionalGAN:
    """Validate the hyperparameters and assemble generator, discriminator and head."""
    _common(in_channels, num_outputs, image_size, MIN_SIZE)
    latent_size = _int("latent_size", latent_size, 1, MAX_LATENT)
    g_width = _int("g_width", g_width, 1, MAX_WIDTH)
    d_width = _int("d_width", d_width, 1, MAX_WIDTH)
    dropout = _dropout(dropout)
    n_classes = condition_classes(num_outputs)
    g = Generator(
        latent_size=latent_size,
        n_classes=n_classes,
        out_channels=in_channels,
        image_size=image_size,
        width=g_width,
    )
    d = Discriminator(
        n_classes=n_classes, in_channels=in_channels, image_size=image_size, width=d_width
    )
    dcgan_init(g)
    dcgan_init(d)
    # Frozen features are unnormalised LeakyReLU outputs; standardising them lets one
    # learning rate suit every width (the linear probe of the DCGAN paper used an SVM).
    head = nn.Sequential(
        nn.BatchNorm1d(d.num_features),
        nn.Dropout(dropout),
        nn.Linear(d.num_features, num_outputs),
    )
    return ConditionalGAN(g, d, head, n_classes)


@register_model("gan")
def dcgan(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    latent_size: int = 32,
    g_width: int = 32,
    d_width: int = 32,
    dropout: float = 0.0,
) -> ConditionalGAN:
    """The searchable conditional DCGAN; ``g_width``/``d_width`` are the filters at full size.

    At 28x28 the generator runs 64x7x7 -> 32x14x14 -> Cx28x28 and the discriminator
    Cx28x28 -> 32x14x14 -> 64x7x7 (defaults); ``dropout`` is the diagnosis head's.
    """
    return build_dcgan(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        latent_size=latent_size,
        g_width=g_width,
        d_width=d_width,
        dropout=dropout,
    )


@register_model("gan")
def dcgan_tiny(
    *, in_channels: int, num_outputs: int, image_size: int, dropout: float = 0.0
) -> ConditionalGAN:
    """An 8-d latent and 4 filters at full size, for tests that train in seconds."""
    return build_dcgan(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        latent_size=8,
        g_width=4,
        d_width=4,
        dropout=dropout,
    )
