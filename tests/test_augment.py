"""BatchAugment: reproducible from its seed, exact where it must be, vectorised."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch

from raydx.config import AugmentConfig
from raydx.data.augment import BatchAugment, augment_seed
from raydx.errors import RaydxError

ALL = AugmentConfig(
    hflip=0.5,
    vflip=0.5,
    rotate=20.0,
    scale=0.2,
    translate=0.1,
    brightness=0.2,
    contrast=0.2,
    noise=0.1,
    cutout=0.25,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors run far faster on one intra-op thread than on contended cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_same_seed_same_output(batch: torch.Tensor) -> None:
    a = BatchAugment(ALL, seed=7)
    b = BatchAugment(ALL, seed=7)
    for _ in range(2):  # the streams stay in step across calls
        torch.testing.assert_close(a(batch), b(batch), rtol=0, atol=0)


def test_other_seed_other_output(batch: torch.Tensor) -> None:
    assert not torch.allclose(BatchAugment(ALL, seed=7)(batch), BatchAugment(ALL, seed=8)(batch))


def test_reseed_restarts_the_stream(batch: torch.Tensor) -> None:
    aug = BatchAugment(ALL, seed=3)
    first = aug(batch)
    assert not torch.allclose(aug(batch), first)
    aug.reseed(3)
    torch.testing.assert_close(aug(batch), first, rtol=0, atol=0)


def test_global_rng_is_neither_used_nor_disturbed(batch: torch.Tensor) -> None:
    torch.manual_seed(0)
    out_a = BatchAugment(ALL, seed=1)(batch)
    after_a = torch.rand(1)
    torch.manual_seed(123)
    out_b = BatchAugment(ALL, seed=1)(batch)
    torch.manual_seed(0)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    assert torch.equal(torch.rand(1), after_a)


def test_samples_get_different_parameters() -> None:
    x = torch.randn(1, 1, 28, 28).expand(8, 1, 28, 28).contiguous()
    out = BatchAugment(AugmentConfig(rotate=30.0), seed=0)(x)
    assert not torch.allclose(out[0], out[1])


def test_inactive_config_returns_input(batch: torch.Tensor) -> None:
    assert BatchAugment(AugmentConfig(), seed=0)(batch) is batch


def test_hflip_is_exactly_torch_flip(batch: torch.Tensor) -> None:
    out = BatchAugment(AugmentConfig(hflip=1.0), seed=0)(batch)
    assert torch.equal(out, torch.flip(batch, dims=[3]))


def test_vflip_is_exactly_torch_flip(batch: torch.Tensor) -> None:
    out = BatchAugment(AugmentConfig(vflip=1.0), seed=0)(batch)
    assert torch.equal(out, torch.flip(batch, dims=[2]))


def test_flip_inside_the_affine_is_torch_flip(
    batch: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With another geometric change on, the flip is folded into the one resampling.
    aug = BatchAugment(AugmentConfig(hflip=1.0, vflip=1.0, rotate=1.0), seed=0)
    monkeypatch.setattr(aug, "_uniform", lambda n, low, high: torch.full((n,), (low + high) / 2))
    expected = torch.flip(batch, dims=[2, 3])
    torch.testing.assert_close(aug(batch), expected, rtol=0, atol=1e-4)


def test_flip_probability_is_per_sample() -> None:
    x = torch.randn(1, 1, 8, 8).expand(200, 1, 8, 8).contiguous()
    out = BatchAugment(AugmentConfig(hflip=0.5), seed=0)(x)
    flipped = torch.isclose(out, torch.flip(x, dims=[3]), atol=1e-5).flatten(1).all(1)
    kept = torch.isclose(out, x, atol=1e-5).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 60 < int(flipped.sum()) < 140


def test_rotate_180_on_non_square_image(monkeypatch: pytest.MonkeyPatch) -> None:
    # The rotation is done in pixel space, so H != W must not shear the image.
    x = torch.randn(4, 2, 12, 20)
    aug = BatchAugment(AugmentConfig(rotate=180.0), seed=0)
    monkeypatch.setattr(aug, "_uniform", lambda n, low, high: torch.full((n,), high))
    torch.testing.assert_close(aug(x), torch.flip(x, dims=[2, 3]), rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(rotate=45.0),
        AugmentConfig(scale=0.5),
        AugmentConfig(translate=0.3),
        AugmentConfig(hflip=0.5, rotate=30.0, scale=0.3, translate=0.2),
    ],
)
def test_constant_image_stays_constant(cfg: AugmentConfig) -> None:
    # Border padding fills uncovered corners with the (background) edge, not with zero.
    x = torch.full((8, 1, 28, 28), -0.7)
    torch.testing.assert_close(BatchAugment(cfg, seed=0)(x), x, rtol=0, atol=1e-5)


def test_zeros_padding_can_be_chosen() -> None:
    x = torch.full((8, 1, 28, 28), -0.7)
    out = BatchAugment(AugmentConfig(rotate=45.0), seed=0, padding_mode="zeros")(x)
    assert (out > -0.69).any()
    with pytest.raises(RaydxError, match="Did you mean 'border'"):
        BatchAugment(AugmentConfig(rotate=45.0), seed=0, padding_mode="boarder")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_preserved(dtype: torch.dtype) -> None:
    x = torch.randn(5, 3, 32, 32, dtype=dtype)
    out = BatchAugment(ALL, seed=0)(x)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert torch.isfinite(out).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(batch: torch.Tensor) -> None:
    out = BatchAugment(ALL, seed=5)(batch.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), BatchAugment(ALL, seed=5)(batch), rtol=0, atol=1e-4)


def test_rejects_integer_images() -> None:
    with pytest.raises(TypeError, match="float tensor"):
        BatchAugment(ALL, seed=0)(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_noise_changes_only_the_std() -> None:
    x = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = BatchAugment(AugmentConfig(noise=0.5), seed=0)(x)
    noise = out - x
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)
    assert out.std().item() == pytest.approx((x.std().item() ** 2 + 0.25) ** 0.5, rel=0.02)
    # Noise is independent of the image: no pixel is left unchanged, none is moved.
    assert (noise != 0).float().mean() > 0.99


def test_brightness_shifts_each_image_uniformly(batch: torch.Tensor) -> None:
    diff = BatchAugment(AugmentConfig(brightness=0.3), seed=0)(batch) - batch
    per_image = diff.flatten(1)
    torch.testing.assert_close(per_image, per_image[:, :1].expand_as(per_image))
    assert per_image.abs().max() <= 0.3 + 1e-6
    assert per_image[:, 0].std() > 0


def test_contrast_keeps_each_image_mean(batch: torch.Tensor) -> None:
    out = BatchAugment(AugmentConfig(contrast=0.5), seed=0)(batch)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), batch.mean(dim=(1, 2, 3)))
    ratio = out.std(dim=(1, 2, 3)) / batch.std(dim=(1, 2, 3))
    assert ((ratio >= 0.5 - 1e-5) & (ratio <= 1.5 + 1e-5)).all()
    assert ratio.std() > 0


def test_scale_zooms_in() -> None:
    # Zooming in on a centred blob makes it bigger: more bright pixels, never fewer.
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = BatchAugment(AugmentConfig(scale=0.5), seed=0)(x)
    assert ((out > 0.5).flatten(1).sum(1) >= 64).all()


def test_augment_seed_is_deterministic_and_distinct() -> None:
    assert augment_seed(0, 1, 2) == augment_seed(0, 1, 2)
    pairs = list(itertools.product(range(3), range(10), range(200)))
    seeds = {augment_seed(base, fold, epoch) for base, fold, epoch in pairs}
    assert len(seeds) == len(pairs)
    assert all(0 <= s < 2**63 for s in seeds)
    torch.Generator().manual_seed(max(seeds))  # fits a torch seed


def test_cutout_zeroes_one_square_per_image() -> None:
    # With the square's centre inside the image and side 0.25 * 28 = 7, each image loses
    # between a quarter of the square (a corner) and the whole of it; nothing else moves.
    x = torch.rand(200, 2, 28, 28, generator=torch.Generator().manual_seed(0)) + 1.0
    out = BatchAugment(AugmentConfig(cutout=0.25), seed=0)(x)
    zeroed = out == 0
    assert torch.equal(zeroed[:, 0], zeroed[:, 1])  # the same square in every channel
    torch.testing.assert_close(out[~zeroed], x[~zeroed], rtol=0, atol=0)
    per_image = zeroed[:, 0].flatten(1).sum(1)
    assert int(per_image.min()) >= 4 * 4 - 4  # a corner square at the least
    assert int(per_image.max()) <= 7 * 7
    assert (per_image == 49).float().mean() > 0.3  # most squares lie fully inside
    rows, cols = zeroed[:, 0].any(2), zeroed[:, 0].any(1)
    assert bool(rows.any(0).all() and cols.any(0).all())  # centres spread over the image


def test_cutout_on_its_own_changes_nothing_else_and_is_seeded(batch: torch.Tensor) -> None:
    aug = AugmentConfig(cutout=0.5)
    assert aug.active
    out = BatchAugment(aug, seed=1)(batch)
    torch.testing.assert_close(out, BatchAugment(aug, seed=1)(batch), rtol=0, atol=0)
    assert not torch.equal(out, BatchAugment(aug, seed=2)(batch))
    # Off, it draws nothing: the other transforms keep their random streams.
    base = AugmentConfig(rotate=10.0, noise=0.1)
    torch.testing.assert_close(
        BatchAugment(base, seed=3)(batch),
        BatchAugment(AugmentConfig(rotate=10.0, noise=0.1, cutout=0.0), seed=3)(batch),
        rtol=0,
        atol=0,
    )


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_cutout_out_of_range_is_rejected(value: float) -> None:
    with pytest.raises(RaydxError, match=f"cutout must be .*but got cutout={value}"):
        AugmentConfig(cutout=value)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("contrast", 1.0, r"in \[0, 1\)"),
        ("contrast", 1.5, r"in \[0, 1\)"),
        ("contrast", -0.1, r"in \[0, 1\)"),
        ("contrast", float("nan"), r"in \[0, 1\)"),
        ("brightness", 1.5, r"in \[0, 1\]"),
        ("brightness", -0.1, r"in \[0, 1\]"),
        ("noise", float("nan"), ">= 0"),
    ],
)
def test_intensity_out_of_range_is_rejected(field: str, value: float, allowed: str) -> None:
    with pytest.raises(RaydxError, match=rf"^{field} must .*{allowed}.*but got {field}={value}\.$"):
        AugmentConfig(**{field: value})


def test_contrast_and_brightness_at_their_limits_never_invert_an_image() -> None:
    """Every contrast factor stays > 0 below 1, so each image stays positively
    correlated with itself; the largest brightness shift is half the [-1, 1] range."""
    x = torch.linspace(-1, 1, 28 * 28).view(1, 1, 28, 28).repeat(64, 1, 1, 1)
    out = BatchAugment(AugmentConfig(contrast=0.999, brightness=1.0), seed=0)(x)
    centred_x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    centred_out = out.flatten(1) - out.flatten(1).mean(1, keepdim=True)
    assert ((centred_x * centred_out).sum(1) > 0).all()
    shift = out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
    assert shift.abs().max() <= 1.0 + 1e-5
