"""The CNN family: the fixed seed network, a searchable general CNN and a tiny test member.

Every member returns logits of shape ``(B, num_outputs)``; the caller applies sigmoid
(``num_outputs == 1``) or softmax. Arguments are checked when the model is built, so a
bad point of the search space fails before any fold trains.

Pooling rule (general ``cnn``): every stage ends with a 2x2 max-pool (floor division,
as ``nn.MaxPool2d`` does) only while the pooled side stays >= 2 pixels; once halving
would give a side below 2 the remaining stages keep the spatial size. So depth 5-6 at
28x28 runs as 28 -> 14 -> 7 -> 3 -> 3 -> 3, and at 64x64 as 64 -> 32 -> 16 -> 8 -> 4 -> 2 -> 2.
"""

from __future__ import annotations

import math
import numbers

from torch import Tensor, nn

from raydx.errors import RaydxError
from raydx.lookup import lookup
from raydx.models.registry import register_model

NORMS = ("none", "batch", "group", "instance")
HEADS = ("dense", "gap")
MAX_DEPTH = 6
MAX_WIDTH = 512
MAX_KERNEL = 7
SEED_FILTERS = (32, 64, 128)
SEED_DENSE = 128


class ConvNet(nn.Module):
    """``features`` (conv stages) then ``head`` (to logits); split so callers can probe either."""

    def __init__(self, features: nn.Module, head: nn.Module, num_outputs: int) -> None:
        super().__init__()
        self.features = features
        self.head = head
        self.num_outputs = num_outputs

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ResidualStage(nn.Module):
    """ResNet basic block: ``convs_per_stage`` convs on the branch plus a shortcut.

    The shortcut is a 1x1 projection (with norm) when the channel count changes, else the
    identity. With two convs this is exactly ResNet's basic block; pooling follows it.
    """

    def __init__(self, c_in: int, c_out: int, *, kernel_size: int, norm: str, convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [
                _conv(c_in if i == 0 else c_out, c_out, kernel_size, norm),
                _norm(norm, c_out),
            ]
            if i < convs - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.shortcut: nn.Module = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(_conv(c_in, c_out, 1, norm), _norm(norm, c_out))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def _conv(c_in: int, c_out: int, kernel_size: int, norm: str) -> nn.Conv2d:
    # A bias before a normalisation layer is redundant (the norm's shift replaces it).
    return nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=norm == "none")


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        # Up to 8 groups; gcd keeps it a divisor of any width (e.g. 4, 6, 12).
        return nn.GroupNorm(math.gcd(channels, 8), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


def _pooled(size: int) -> int:
    """Side after a stage's pool under the module's rule (pool only while it stays >= 2)."""
    return size // 2 if size // 2 >= 2 else size


def _int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise RaydxError(f"{name} must be an int, but got {name}={value!r}.")
    v = int(value)
    if v < low or (high is not None and v > high):
        bounds = f"[{low}, {high}]" if high is not None else f"[{low}, inf)"
        raise RaydxError(f"{name} must be in {bounds}, but got {name}={v}.")
    return v


def _dropout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RaydxError(f"dropout must be a float, but got dropout={value!r}.")
    if not 0.0 <= float(value) < 1.0:
        raise RaydxError(f"dropout must be in [0, 1), but got dropout={value}.")
    return float(value)


def _common(in_channels: object, num_outputs: object, image_size: object, min_size: int) -> None:
    _int("in_channels", in_channels, 1)
    _int("num_outputs", num_outputs, 1)
    _int("image_size", image_size, min_size)


def build_cnn(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    depth: int = 3,
    width: int = 32,
    kernel_size: int = 3,
    norm: str = "batch",
    dropout: float = 0.0,
    head: str = "dense",
    dense_units: int = 128,
    convs_per_stage: int = 1,
    residual: bool = False,
) -> ConvNet:
    """Validate the hyperparameters and assemble the network (shared by the members)."""
    _common(in_channels, num_outputs, image_size, 2)
    depth = _int("depth", depth, 1, MAX_DEPTH)
    width = _int("width", width, 1, MAX_WIDTH)
    kernel_size = _int("kernel_size", kernel_size, 1, MAX_KERNEL)
    if kernel_size % 2 == 0:
        raise RaydxError(
            "kernel_size must be odd (to keep the spatial size), but got "
            f"kernel_size={kernel_size}."
        )
    norm = lookup(norm, NORMS, "norm")
    head = lookup(head, HEADS, "head")
    dropout = _dropout(dropout)
    dense_units = _int("dense_units", dense_units, 1)
    convs_per_stage = _int("convs_per_stage", convs_per_stage, 1, 2)
    if not isinstance(residual, bool):
        raise RaydxError(f"residual must be a bool, but got residual={residual!r}.")

    stages: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for i in range(depth):
        c_out = min(width * 2**i, MAX_WIDTH)
        if residual:
            stages.append(
                ResidualStage(
                    c_in, c_out, kernel_size=kernel_size, norm=norm, convs=convs_per_stage
                )
            )
        else:
            for j in range(convs_per_stage):
                stages += [
                    _conv(c_in if j == 0 else c_out, c_out, kernel_size, norm),
                    _norm(norm, c_out),
                    nn.ReLU(inplace=True),
                ]
        if _pooled(size) != size:
            stages.append(nn.MaxPool2d(2))
            size = _pooled(size)
        c_in = c_out

    return ConvNet(
        nn.Sequential(*stages),
        _head(head, c_in, size, dense_units, dropout, num_outputs),
        num_outputs,
    )


class GlobalAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(1)`` as a mean: its CUDA backward is deterministic.

    PyTorch's adaptive pooling backward adds with atomics on CUDA, so two GPU runs of
    one seed would differ; a mean's backward is a broadcast.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _head(
    kind: str, channels: int, size: int, dense_units: int, dropout: float, num_outputs: int
) -> nn.Sequential:
    if kind == "gap":
        return nn.Sequential(
            GlobalAvgPool(),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_outputs),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * size * size, dense_units),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(dense_units, num_outputs),
    )


@register_model("cnn")
def cnn_seed(
    *, in_channels: int, num_outputs: int, image_size: int, dropout: float = 0.0
) -> ConvNet:
    """The fixed seed network the search starts from (and is compared against).

    3x (3x3 conv, ReLU, 2x2 max-pool) with 32-64-128 filters, dense 128 + ReLU, dropout,
    linear to logits. No normalisation. Needs image_size >= 8 (three halvings).
    """
    _common(in_channels, num_outputs, image_size, 2 ** len(SEED_FILTERS))
    dropout = _dropout(dropout)
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for c_out in SEED_FILTERS:
        layers += [
            nn.Conv2d(c_in, c_out, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        c_in, size = c_out, size // 2
    head = _head("dense", c_in, size, SEED_DENSE, dropout, num_outputs)
    return ConvNet(nn.Sequential(*layers), head, num_outputs)


@register_model("cnn")
def cnn(
    *,
    in_channels: int,
    num_outputs: int,
    image_size: int,
    depth: int = 3,
    width: int = 32,
    kernel_size: int = 3,
    norm: str = "batch",
    dropout: float = 0.0,
    head: str = "dense",
    dense_units: int = 128,
    convs_per_stage: int = 1,
    residual: bool = False,
) -> ConvNet:
    """The searchable CNN: ``depth`` stages of ``width * 2**i`` filters (capped at 512).

    ``head="dense"``: flatten, dense ``dense_units`` + ReLU, dropout, linear.
    ``head="gap"``: global average pool, dropout, linear. ``residual`` turns each stage
    into a ResNet basic block (1x1 projection shortcut when the channels change).
    See the module docstring for when stages pool.
    """
    return build_cnn(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        depth=depth,
        width=width,
        kernel_size=kernel_size,
        norm=norm,
        dropout=dropout,
        head=head,
        dense_units=dense_units,
        convs_per_stage=convs_per_stage,
        residual=residual,
    )


@register_model("cnn")
def cnn_tiny(
    *, in_channels: int, num_outputs: int, image_size: int, dropout: float = 0.0
) -> ConvNet:
    """A few hundred parameters (2 stages of 4-8 filters, batch norm, GAP head) for fast tests."""
    return build_cnn(
        in_channels=in_channels,
        num_outputs=num_outputs,
        image_size=image_size,
        depth=2,
        width=4,
        norm="batch",
        head="gap",
        dropout=dropout,
    )
