"""timm-style contract over every registered model, plus the CNN family's own checks."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from raydx.errors import RaydxError
from raydx.models import create_model, list_models, model_params
from raydx.models.cnn import ConvNet, ResidualStage
from raydx.models.registry import _MODELS

# Families whose models map (B, C, H, W) images to logits (B, num_outputs). A family
# added to the registry with the same forward contract only needs to be listed here.
CLASSIFIER_FAMILIES = ("cnn",)
CLASSIFIERS = [name for family in CLASSIFIER_FAMILIES for name in list_models(family)]
INPUTS = [(1, 28), (3, 64)]  # (in_channels, image_size): grey MedMNIST and RGB


def _loss(logits: torch.Tensor, num_outputs: int) -> torch.Tensor:
    if num_outputs == 1:
        target = torch.arange(logits.shape[0]).remainder(2).float().unsqueeze(1)
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    target = torch.arange(logits.shape[0]).remainder(num_outputs)
    return nn.functional.cross_entropy(logits, target)


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    # Tiny tensors run far faster on one intra-op thread than on contended cores.
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- every registered model -------------------------------------------------------


def test_registry_has_cnn_family() -> None:
    assert {"cnn", "cnn_seed", "cnn_tiny"} <= set(list_models("cnn"))


@pytest.mark.parametrize("name", list_models())
def test_every_hyperparameter_has_a_default(name: str) -> None:
    # The search passes only the parameters it samples; the rest must default.
    fn = _MODELS[name]
    for p in inspect.signature(fn).parameters.values():
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, f"{name}: {p.name} is not keyword-only"
    assert all(v is not inspect.Parameter.empty for v in model_params(name).values())


@pytest.mark.parametrize("name", list_models())
def test_unknown_parameter_is_rejected(name: str) -> None:
    with pytest.raises(RaydxError, match="Unknown parameter"):
        create_model(name, no_such_parameter=1)


def test_unknown_parameter_did_you_mean() -> None:
    with pytest.raises(RaydxError, match="Did you mean 'depth'"):
        create_model("cnn", dept=3)


def test_unknown_model_did_you_mean() -> None:
    with pytest.raises(RaydxError, match="Did you mean 'cnn_seed'"):
        create_model("cnn_sed")


# --- classifier contract ----------------------------------------------------------


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize(("in_channels", "image_size"), INPUTS)
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_output_shape_and_finite_loss(
    name: str, in_channels: int, image_size: int, num_outputs: int
) -> None:
    model = create_model(
        name, in_channels=in_channels, num_outputs=num_outputs, image_size=image_size
    )
    x = torch.randn(4, in_channels, image_size, image_size)
    logits = model(x)
    assert logits.shape == (4, num_outputs)
    assert torch.isfinite(_loss(logits, num_outputs))
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, num_outputs)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_one_step_changes_every_weight(name: str) -> None:
    model = create_model(name, in_channels=1, num_outputs=1, image_size=28)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = _loss(model(torch.randn(8, 1, 28, 28)), 1)
    loss.backward()
    for k, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), k
    opt.step()
    unchanged = [k for k, p in model.named_parameters() if torch.equal(p, before[k])]
    assert not unchanged


# --- the CNN family ---------------------------------------------------------------


def test_cnn_seed_architecture() -> None:
    model = create_model("cnn_seed", in_channels=1, num_outputs=1, image_size=28)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [lin.out_features for lin in linears] == [128, 1]
    assert linears[0].in_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    big = create_model("cnn_seed", in_channels=3, num_outputs=3, image_size=64)
    assert next(m for m in big.modules() if isinstance(m, nn.Linear)).in_features == 128 * 8 * 8


def test_cnn_seed_dropout() -> None:
    model = create_model("cnn_seed", dropout=0.3)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.3]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"depth": 9}, "depth=9"),
        ({"depth": 0}, "depth=0"),
        ({"kernel_size": 4}, "kernel_size=4"),
        ({"norm": "btach"}, "'btach'. Did you mean 'batch'"),
        ({"head": "gapp"}, "Did you mean 'gap'"),
        ({"width": 0}, "width=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"convs_per_stage": 3}, "convs_per_stage=3"),
        ({"residual": "yes"}, "residual='yes'"),
        ({"depth": 2.5}, "depth=2.5"),
    ],
)
def test_cnn_bad_values(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(RaydxError) as info:
        create_model("cnn", **params)
    assert needle in str(info.value)


def test_cnn_bad_value_message_form() -> None:
    with pytest.raises(RaydxError, match=r"depth must be in \[1, 6\], but got depth=9\."):
        create_model("cnn", depth=9)


def test_cnn_seed_rejects_too_small_images() -> None:
    with pytest.raises(RaydxError, match="image_size=4"):
        create_model("cnn_seed", image_size=4)


GRID = [
    {"depth": 1, "norm": "none", "head": "dense", "residual": False, "convs_per_stage": 1},
    {"depth": 2, "norm": "group", "head": "gap", "residual": True, "convs_per_stage": 2},
    {"depth": 3, "norm": "instance", "head": "dense", "residual": True, "convs_per_stage": 1},
    {"depth": 4, "norm": "batch", "head": "gap", "residual": False, "convs_per_stage": 2},
    {"depth": 5, "norm": "batch", "head": "dense", "residual": True, "convs_per_stage": 2},
    {"depth": 6, "norm": "group", "head": "dense", "residual": False, "convs_per_stage": 1},
    {"depth": 6, "norm": "instance", "head": "gap", "residual": True, "convs_per_stage": 2},
]


@pytest.mark.parametrize(("in_channels", "image_size"), INPUTS)
@pytest.mark.parametrize("params", GRID, ids=lambda p: "-".join(str(v) for v in p.values()))
def test_cnn_variants_build_and_run(
    params: dict[str, Any], in_channels: int, image_size: int
) -> None:
    model = create_model(
        "cnn",
        in_channels=in_channels,
        num_outputs=2,
        image_size=image_size,
        width=8,
        kernel_size=5 if params["depth"] == 3 else 3,
        dropout=0.2,
        **params,
    )
    logits = model(torch.randn(2, in_channels, image_size, image_size))
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_cnn_pooling_stops_at_two_pixels() -> None:
    for size, final in [(28, 3), (64, 2)]:
        model = create_model("cnn", depth=6, width=4, image_size=size, norm="none")
        assert isinstance(model, ConvNet)
        assert model.forward_features(torch.randn(1, 1, size, size)).shape[-1] == final


def test_cnn_width_doubles_and_caps() -> None:
    model = create_model("cnn", depth=6, width=64, image_size=28, convs_per_stage=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 512, 512, 512]


def test_cnn_residual_projection_only_when_channels_change() -> None:
    model = create_model("cnn", depth=6, width=128, residual=True, convs_per_stage=2)
    shortcuts = [m.shortcut for m in model.modules() if isinstance(m, ResidualStage)]
    kinds = [isinstance(s, nn.Identity) for s in shortcuts]
    assert kinds == [False, False, False, True, True, True]  # 128 256 512 512 512 512


def test_cnn_tiny_trains() -> None:
    # Bright vs dark images: trivially separable, so a few dozen steps must learn it.
    n = 64
    y = torch.arange(n).remainder(2).float()
    x = torch.randn(n, 1, 28, 28) * 0.5 + (y * 2 - 1).view(n, 1, 1, 1)
    model = create_model("cnn_tiny", in_channels=1, num_outputs=1, image_size=28)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    model.eval()
    with torch.no_grad():
        accuracy = ((model(x).squeeze(1) > 0).float() == y).float().mean()
    assert accuracy == 1.0
