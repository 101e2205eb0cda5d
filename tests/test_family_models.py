"""Shapes and contracts of the autoencoder and GAN registry members (28x28 grey, 64x64 RGB).

tests/test_models.py runs the classifier contract over the CNN family; these members
also map images to logits, but their other parts (decoder, generator, discriminator)
get no gradient from a classification loss, so they have their own checks here.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from raydx.errors import RaydxError

# Importing the model modules registers their members.
from raydx.models.autoencoder import AutoEncoder, ReconstructionScorer
from raydx.models.gan import ConditionalGAN, plan
from raydx.models.registry import create_model, list_models, model_family

INPUTS = [(1, 28), (3, 64)]  # (in_channels, image_size): grey MedMNIST and RGB
AE_MODELS = list_models("autoencoder")
GAN_MODELS = list_models("gan")


def test_members() -> None:
    assert {"conv_ae", "conv_ae_tiny"} <= set(AE_MODELS)
    assert {"dcgan", "dcgan_tiny"} <= set(GAN_MODELS)
    assert model_family("conv_ae") == "autoencoder" and model_family("dcgan") == "gan"


# ---------------------------------------------------------------- autoencoder


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize(("in_channels", "image_size"), INPUTS)
@pytest.mark.parametrize("name", AE_MODELS)
def test_autoencoder_shapes(name: str, in_channels: int, image_size: int, num_outputs: int) -> None:
    torch.manual_seed(0)
    ae = create_model(name, in_channels=in_channels, num_outputs=num_outputs, image_size=image_size)
    assert isinstance(ae, AutoEncoder)
    x = torch.rand(4, in_channels, image_size, image_size) * 2 - 1
    z = ae.encoder(x)
    assert z.ndim == 2 and z.shape[0] == 4
    recon = ae.decoder(z)
    assert recon.shape == x.shape
    assert recon.abs().max() <= 1.0  # tanh: the range of normalised inputs
    assert torch.equal(ae.reconstruct(x), recon)
    logits = ae(x)
    assert logits.shape == (4, num_outputs)
    assert torch.equal(logits, ae.head(z))


@pytest.mark.parametrize("image_size", [9, 28, 31, 64])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_autoencoder_decodes_to_the_input_size(depth: int, image_size: int) -> None:
    ae = create_model("conv_ae", image_size=image_size, depth=depth, width=4, latent_size=8)
    x = torch.randn(2, 1, image_size, image_size)
    assert ae.reconstruct(x).shape == x.shape


def test_autoencoder_hyperparameters() -> None:
    ae = create_model("conv_ae", depth=2, width=8, latent_size=12, norm="none")
    convs = [m for m in ae.encoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16]
    assert all(c.stride == (2, 2) for c in convs)
    assert ae.encoder(torch.randn(2, 1, 28, 28)).shape == (2, 12)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ae.modules())


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"depth": 5}, "depth=5"),
        ({"depth": 0}, "depth=0"),
        ({"width": 0}, "width=0"),
        ({"latent_size": 0}, "latent_size=0"),
        ({"norm": "btach"}, "Did you mean 'batch'"),
        ({"dropout": 1.0}, "dropout=1.0"),
        (
            {"norm": "instance", "image_size": 16, "depth": 4},
            "image_size=16 with depth=4 halves it to 1x1; use depth <= 3",
        ),
    ],
)
def test_autoencoder_bad_values(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(RaydxError) as info:
        create_model("conv_ae", **params)
    assert needle in str(info.value)


def test_instance_norm_trains_where_the_code_map_is_2x2() -> None:
    ae = create_model("conv_ae", norm="instance", image_size=16, depth=3)
    ae.train()
    assert ae(torch.randn(2, 1, 16, 16)).shape == (2, 1)


def test_frozen_encoder_stays_in_eval_mode() -> None:
    ae = create_model("conv_ae_tiny")
    assert isinstance(ae, AutoEncoder)
    ae.freeze_encoder(True)
    ae.train()
    assert not ae.encoder.training and ae.head.training
    assert not any(p.requires_grad for p in ae.encoder.parameters())
    ae.freeze_encoder(False)
    assert ae.encoder.training and all(p.requires_grad for p in ae.encoder.parameters())


def test_reconstruction_scorer() -> None:
    torch.manual_seed(0)
    ae = create_model("conv_ae_tiny")
    assert isinstance(ae, AutoEncoder)
    scorer = ReconstructionScorer(ae, loss="l1")
    x = torch.rand(16, 1, 28, 28) * 2 - 1
    scorer.fit_scale(x)
    scorer.eval()
    with torch.no_grad():
        logits = scorer(x)
        err = (ae.reconstruct(x) - x).abs().flatten(1).mean(1)
    assert logits.shape == (16, 1)
    torch.testing.assert_close(logits[:, 0], err.log() - err.log().mean())
    assert "log_err_mean" in scorer.state_dict()  # saved with the weights


# ---------------------------------------------------------------- gan


def test_plan() -> None:
    assert plan(28) == (7, 2)
    assert plan(64) == (4, 4)
    assert plan(32) == (4, 3)
    assert plan(7) == (7, 0)
    assert plan(224) == (7, 5)


@pytest.mark.parametrize(
    ("side", "expected"), [(150, (5, 5)), (100, (7, 4)), (18, (5, 2)), (9, (5, 1)), (225, (4, 6))]
)
def test_plan_of_a_side_with_a_large_odd_factor_starts_small(
    side: int, expected: tuple[int, int]
) -> None:
    # Halving 150 stops at 75: a 75x75 first map would hold c x 75 x 75 outputs.
    base, n = plan(side)
    assert (base, n) == expected
    assert 4 <= base <= 7
    assert base * 2**n >= side > base * 2 ** (n - 1)  # the next side up, then cropped


@pytest.mark.parametrize("side", [9, 18, 29, 100, 150])
def test_gan_at_a_side_with_a_large_odd_factor(side: int) -> None:
    torch.manual_seed(0)
    gan = create_model("dcgan", in_channels=1, num_outputs=1, image_size=side)
    assert isinstance(gan, ConditionalGAN)
    assert sum(p.numel() for p in gan.parameters()) < 7_000_000  # 150 px: 11.5M in one layer before
    fake = gan.sample(3, [0, 1, 0], generator=torch.Generator().manual_seed(0))
    assert fake.shape == (3, 1, side, side)
    assert gan.discriminator.features(fake).shape == (3, gan.discriminator.num_features)
    assert gan(fake).shape == (3, 1)
    # the crop keeps the centre: the generator's full output, cut evenly on both sides
    z = torch.randn(2, gan.latent_size)
    labels = torch.tensor([0, 1])
    full = gan.generator.body(gan.generator.project(torch.cat([z, gan.generator.embed(labels)], 1)))
    lo = (full.shape[-1] - side) // 2
    assert torch.equal(gan.generator(z, labels), full[..., lo : lo + side, lo : lo + side])


@pytest.mark.parametrize("num_outputs", [1, 3])
@pytest.mark.parametrize(("in_channels", "image_size"), INPUTS)
@pytest.mark.parametrize("name", GAN_MODELS)
def test_gan_shapes(name: str, in_channels: int, image_size: int, num_outputs: int) -> None:
    torch.manual_seed(0)
    gan = create_model(
        name, in_channels=in_channels, num_outputs=num_outputs, image_size=image_size
    )
    assert isinstance(gan, ConditionalGAN)
    n_classes = 2 if num_outputs == 1 else num_outputs
    assert gan.n_classes == n_classes
    labels = torch.arange(4) % n_classes
    fake = gan.sample(4, labels, generator=torch.Generator().manual_seed(0))
    assert fake.shape == (4, in_channels, image_size, image_size)
    assert fake.abs().max() <= 1.0
    z = torch.randn(4, gan.latent_size)
    assert gan.generator(z, labels).shape == fake.shape
    assert gan.discriminator(fake, labels).shape == (4,)
    feats = gan.discriminator.features(fake)
    assert feats.shape == (4, gan.discriminator.num_features)
    assert gan(fake).shape == (4, num_outputs)


def test_gan_sampling_is_seeded_and_conditional() -> None:
    gan = create_model("dcgan_tiny")
    assert isinstance(gan, ConditionalGAN)
    gan.eval()
    with torch.no_grad():
        a = gan.sample(6, [0, 0, 0, 1, 1, 1], generator=torch.Generator().manual_seed(3))
        b = gan.sample(6, [0, 0, 0, 1, 1, 1], generator=torch.Generator().manual_seed(3))
        c = gan.sample(6, [1, 1, 1, 0, 0, 0], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # same z, other labels
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        gan.sample(6, [0, 1])


def test_discriminator_score_is_conditional_features_are_not() -> None:
    # Projection discriminator: the label enters only the real/fake score.
    gan = create_model("dcgan_tiny")
    assert isinstance(gan, ConditionalGAN)
    gan.eval()
    x = torch.randn(3, 1, 28, 28)
    d = gan.discriminator
    assert not torch.equal(
        d(x, torch.zeros(3, dtype=torch.long)), d(x, torch.ones(3, dtype=torch.long))
    )
    assert gan(x).shape == (3, 1)


def test_gan_one_step_changes_generator_and_discriminator() -> None:
    torch.manual_seed(0)
    gan = create_model("dcgan_tiny")
    assert isinstance(gan, ConditionalGAN)
    g0 = [p.detach().clone() for p in gan.generator.parameters()]
    d0 = [p.detach().clone() for p in gan.discriminator.parameters()]
    labels = torch.arange(8) % 2
    fake = gan.sample(8, labels)
    real = torch.rand(8, 1, 28, 28) * 2 - 1
    bce = nn.functional.binary_cross_entropy_with_logits
    d_real, d_fake = gan.discriminator(real, labels), gan.discriminator(fake.detach(), labels)
    d_loss = bce(d_real, torch.ones(8)) + bce(d_fake, torch.zeros(8))
    g_loss = bce(gan.discriminator(fake, labels), torch.ones(8))
    d_grads = torch.autograd.grad(d_loss, list(gan.discriminator.parameters()))
    g_grads = torch.autograd.grad(g_loss, list(gan.generator.parameters()))
    with torch.no_grad():
        for p, g in zip(gan.discriminator.parameters(), d_grads, strict=True):
            p -= 0.1 * g
        for p, g in zip(gan.generator.parameters(), g_grads, strict=True):
            p -= 0.1 * g
    assert all(torch.isfinite(g).all() for g in (*d_grads, *g_grads))
    assert any(not torch.equal(a, b) for a, b in zip(g0, gan.generator.parameters(), strict=True))
    assert any(
        not torch.equal(a, b) for a, b in zip(d0, gan.discriminator.parameters(), strict=True)
    )


def test_frozen_discriminator() -> None:
    gan = create_model("dcgan_tiny")
    assert isinstance(gan, ConditionalGAN)
    gan.freeze_discriminator(True)
    gan.train()
    assert not gan.discriminator.training and gan.head.training
    assert not any(p.requires_grad for p in gan.discriminator.parameters())
    assert not any(p.requires_grad for p in gan.generator.parameters())
    assert all(p.requires_grad for p in gan.head.parameters())


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"latent_size": 0}, "latent_size=0"),
        ({"g_width": 0}, "g_width=0"),
        ({"d_width": 1.5}, "d_width=1.5"),
        ({"dropout": -0.1}, "dropout=-0.1"),
    ],
)
def test_gan_bad_values(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(RaydxError) as info:
        create_model("dcgan", **params)
    assert needle in str(info.value)


def test_gan_rejects_too_small_images() -> None:
    with pytest.raises(RaydxError, match="image_size=3"):
        create_model("dcgan", image_size=3)


def test_reconstruction_scores_of_unseen_images_do_not_tie_at_one() -> None:
    # Training errors are tight; an unseen image's error can be many times theirs. Its
    # probability must still rank it: a standardised score put such images tens of
    # spreads up, where the float32 sigmoid is exactly 1.0 and the AUC sees ties.
    torch.manual_seed(0)
    ae = create_model("conv_ae_tiny")
    assert isinstance(ae, AutoEncoder)
    scorer = ReconstructionScorer(ae).eval()
    x = torch.rand(32, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        err = scorer.errors(x)
        scorer.log_err_mean.fill_(float(err.min().log()) - 6)  # training errors ~400x smaller
        prob = torch.sigmoid(scorer(x)[:, 0]).float()
    assert prob.max() < 1.0
    assert len(prob.unique()) == len(err.unique())
    assert torch.equal(prob.argsort(), err.argsort())


def test_an_anomaly_scorer_saved_with_standardised_scores_keeps_them() -> None:
    # Its saved threshold was chosen on (err - mean) / std: loaded, it scores so again.
    torch.manual_seed(0)
    ae = create_model("conv_ae_tiny")
    assert isinstance(ae, AutoEncoder)
    old = {k: v for k, v in ReconstructionScorer(ae).state_dict().items() if k != "log_err_mean"}
    old |= {"err_mean": torch.tensor(0.02), "err_std": torch.tensor(0.005)}
    scorer = ReconstructionScorer(create_model("conv_ae_tiny"))
    scorer.load_state_dict(old)
    scorer.eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(scorer(x)[:, 0], (scorer.errors(x) - 0.02) / 0.005)
    assert "log_err_mean" in scorer.state_dict() and "err_std" not in scorer.state_dict()
    scorer.fit_scale(x)  # a trial resumed from such a checkpoint fits the log score again
    with torch.no_grad():
        err = scorer.errors(x)
        torch.testing.assert_close(scorer(x)[:, 0], err.log() - err.log().mean())
