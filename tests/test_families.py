"""The family contract (cnn, autoencoder, gan) on one fold of tiny synthetic images.

Every family trains ``pretrain()`` + epochs through the same surface, resumes exactly
from ``state_dict()``, and saves a diagnosis model that ``build_model`` rebuilds from
the config alone. Family-specific properties: the GAN never sees validation images and
reports a collapsed generator; the anomaly autoencoder learns only non-positive images.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from PIL import Image

from raydx.config import TrialConfig
from raydx.data.rows import Joined, Rows, read_only_tensor, take
from raydx.errors import RaydxError
from raydx.families import get_family, list_family_names
from raydx.families.autoencoder import AutoencoderTrainer
from raydx.families.gan import COLLAPSE_STD, GANTrainer, top_up
from raydx.models.autoencoder import AutoEncoder, ReconstructionScorer
from raydx.models.gan import ConditionalGAN
from raydx.space import load_space
from raydx.train import DivergedError, FoldTrainer, TrialFailure, build_model, predict

SIZE = 28
POSITIVE = 0  # as BreastMNIST: label 0 is malignant
SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

optuna.logging.set_verbosity(optuna.logging.WARNING)

# (id, family, model, family params): one tiny member per family and mode.
CASES = [
    ("cnn", "cnn", "cnn_tiny", {}),
    ("ae-classifier", "autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1, "denoise": 0.1}),
    ("ae-frozen", "autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1, "freeze_encoder": True}),
    ("ae-anomaly", "autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1, "ae_mode": "anomaly"}),
    ("gan-augment", "gan", "cnn_tiny", {"pretrain_epochs": 1, "gan_model": "dcgan_tiny"}),
    (
        "gan-disc",
        "gan",
        "cnn_tiny",
        {"pretrain_epochs": 1, "gan_model": "dcgan_tiny", "gan_mode": "disc_features"},
    ),
]
IDS = [c[0] for c in CASES]


def _images(n: int, *, n_classes: int = 2, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Grey 28x28 in [-1, 1]: dark noisy background; the positive class adds a bright blob."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    x = rng.normal(-0.5, 0.2, size=(n, 1, SIZE, SIZE)).astype(np.float32)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(y == POSITIVE):
        cy, cx = rng.integers(8, SIZE - 8, size=2)
        x[i, 0] += 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 10.0)
    return torch.from_numpy(np.clip(x, -1.0, 1.0)), y.astype(np.int64)


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    x, y = _images(120)
    return {"x_train": x[:80], "y_train": y[:80], "x_val": x[80:], "y_val": y[80:]}


def _cfg(family: str, model: str, fp: dict[str, Any], **kw: Any) -> TrialConfig:
    kw = {"lr": 1e-2, "batch_size": 32, **kw}
    return TrialConfig(family=family, model=model, family_params=dict(fp), **kw)


def _trainer(
    cfg: TrialConfig,
    data: dict[str, Any],
    *,
    n_classes: int = 2,
    epochs: int = 3,
    fold: int = 1,
    device: str = "cpu",
):
    return get_family(cfg.family).trainer(
        cfg,
        **data,
        n_classes=n_classes,
        positive=POSITIVE,
        epochs=epochs,
        seed=0,
        fold=fold,
        device=device,
    )


def _saved(state: dict[str, Any]) -> dict[str, Any]:
    """Through torch.save/torch.load, as the fold worker's checkpoint does."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


# ---------------------------------------------------------------- every family


def test_every_family_is_registered() -> None:
    assert {"autoencoder", "cnn", "gan"} <= set(list_family_names())
    assert get_family("autoencoder").params["ae_mode"] == "classifier"
    assert get_family("gan").params["gan_mode"] == "augment"


@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_pretrain_and_one_epoch(case, family, model, fp, data, device) -> None:
    tr = _trainer(_cfg(family, model, fp), data, device=device)
    tr.pretrain()
    r = tr.run_epoch(1)
    assert r.epoch == 1
    for v in (r.val_auc, r.val_loss, r.val_acc, r.train_loss):
        assert np.isfinite(v), (case, r)
    assert r.val_prob.shape == (40,)
    assert ((r.val_prob >= 0) & (r.val_prob <= 1)).all()
    assert all(np.isfinite(v) for v in r.extra.values())
    if family == "autoencoder":
        assert r.extra["recon_error"] > 0
    if family == "gan":
        assert r.extra["gan_sample_std"] >= COLLAPSE_STD


@pytest.mark.parametrize(("n", "batch_size", "epochs"), [(33, 16, 3), (17, 16, 3), (3, 2, 2)])
@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_one_cycle_spans_exactly_the_steps_that_run(
    case, family, model, fp, n, batch_size, epochs, data
) -> None:
    """Every family's schedule is laid over the steps its loop takes (a trailing batch of
    one left out; a GAN epoch longer by its generated images): the last step runs at the
    schedule's minimum, and OneCycleLR never runs out of steps."""
    if case == "ae-anomaly":  # its epochs train the autoencoder: no classifier steps
        pytest.skip("no classifier schedule")
    cfg = _cfg(family, model, fp, lr_schedule="onecycle", batch_size=batch_size)
    d = {**data, "x_train": data["x_train"][:n], "y_train": data["y_train"][:n]}
    tr = _trainer(cfg, d, epochs=epochs)
    used: list[float] = []
    tr.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"])
    )
    tr.pretrain()
    for e in range(1, epochs + 1):
        tr.train_epoch(e)
    assert len(used) == tr.scheduler.total_steps == epochs * tr.steps_per_epoch
    assert used[-1] == pytest.approx(cfg.lr / 25 / 1e4)
    assert max(used) <= cfg.lr * (1 + 1e-9)


@pytest.mark.parametrize(("n", "sizes"), [(33, [16, 16]), (34, [16, 16, 2]), (1, [1])])
def test_gan_batches_are_every_trainers(n, sizes, data, monkeypatch) -> None:
    """The GAN cuts its epochs as every trainer does (``raydx.train.batches``): a trailing
    batch of one is left out, a training set of one image is trained on."""
    fp = {"pretrain_epochs": 1, "gan_model": "dcgan_tiny", "synthetic_ratio": 0.0}
    d = {**data, "x_train": data["x_train"][:n], "y_train": data["y_train"][:n]}
    tr = _trainer(_cfg("gan", "cnn_tiny", fp, batch_size=16), d)
    seen: list[int] = []
    step = tr.gan_step

    def spy(real: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        seen.append(len(real))
        return step(real, labels)

    monkeypatch.setattr(tr, "gan_step", spy)
    tr.gan_epoch()
    assert seen == sizes


@pytest.mark.parametrize("mixup", [0.0, 0.4])
@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_state_round_trip_resumes_exactly(case, family, model, fp, mixup, data, device) -> None:
    # Dropout, mixup and a one-cycle schedule: the fold's RNG streams and the scheduler
    # must resume too. Fold workers run every step of a trainer inside its own_rng().
    cfg = _cfg(
        family, model, fp, lr_schedule="onecycle", model_params={"dropout": 0.2}, mixup=mixup
    )
    a = _trainer(cfg, data, device=device)
    with a.own_rng():
        a.pretrain()
        a.run_epoch(1)
    state = _saved(a.state_dict())
    with a.own_rng():
        expected = a.run_epoch(2).val_prob

    torch.manual_seed(12345)  # whatever the process's global RNG holds
    b = _trainer(cfg, data, device=device)  # fresh: everything comes from the state
    b.load_state_dict(state)
    with b.own_rng():
        got = b.run_epoch(2).val_prob
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_folds_interleaved_in_one_process_train_as_if_alone(
    case, family, model, fp, data, device
) -> None:
    """A worker that trains several folds steps them in turn; each must train exactly as
    it would in a process of its own (dropout draws included)."""
    cfg = _cfg(family, model, fp, model_params={"dropout": 0.3})

    def alone(fold: int) -> list[np.ndarray]:
        tr = _trainer(cfg, data, fold=fold, device=device)
        with tr.own_rng():
            tr.pretrain()
            return [tr.run_epoch(e).val_prob for e in (1, 2)]

    expected = {fold: alone(fold) for fold in (0, 1)}
    both = {fold: _trainer(cfg, data, fold=fold, device=device) for fold in (0, 1)}
    got: dict[int, list[np.ndarray]] = {0: [], 1: []}
    for tr in both.values():
        with tr.own_rng():
            tr.pretrain()
    for epoch in (1, 2):
        for fold, tr in both.items():
            with tr.own_rng():
                got[fold].append(tr.run_epoch(epoch).val_prob)
    for fold in (0, 1):
        for g, e in zip(got[fold], expected[fold], strict=True):
            np.testing.assert_array_equal(g, e)
    assert not np.array_equal(got[0][1], got[1][1])  # the folds differ: not one stream


@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_rows_of_a_shared_pool_train_as_copies_do(case, family, model, fp, data, device) -> None:
    """A fold worker hands its trainers ``Rows`` of the trial's one pool (no copy per
    fold; ``cv.fold_inputs``): every family trains bit for bit as it does on copies of
    the fold's rows, and reads the pool in place, never writing to it."""
    from raydx.cv import fold_inputs

    cfg = _cfg(family, model, fp, model_params={"dropout": 0.2}, mixup=0.2)
    x = torch.cat([data["x_train"], data["x_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    order = np.random.default_rng(1).permutation(len(x))  # the fold's rows, scattered
    tr, va = np.sort(order[:80]), np.sort(order[80:])
    pool = x.numpy().copy()
    pool.flags.writeable = False  # as an array from Ray's object store
    shared = read_only_tensor(pool).to(device)

    def trained(**images: Any) -> list[np.ndarray]:
        t = _trainer(cfg, {**images, "y_train": y[tr], "y_val": y[va]}, device=device)
        with t.own_rng():
            t.pretrain()
            return [t.run_epoch(e).val_prob for e in (1, 2)]

    expected = trained(x_train=x[tr], x_val=x[va])
    fold = np.zeros(len(x), dtype=np.int64)
    fold[va] = 1
    given = fold_inputs({"x": pool, "y": y, "fold": fold}, shared, 1)
    np.testing.assert_array_equal(given["y_train"], y[tr])
    np.testing.assert_array_equal(given["y_val"], y[va])
    for key in ("x_train", "x_val"):  # the pool itself, not a copy of the fold's rows
        assert isinstance(given[key], Rows) and given[key].base is shared, key
    got = trained(x_train=given["x_train"], x_val=given["x_val"])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(pool, x.numpy())


def test_rows_index_as_the_tensor_of_their_rows_does() -> None:
    base = torch.arange(60, dtype=torch.float32).reshape(10, 1, 2, 3)
    index = torch.tensor([7, 2, 9, 4])
    rows, copy = Rows(base, index), base[index]
    assert len(rows) == 4 and rows.shape == copy.shape == (4, 1, 2, 3)
    for key in (
        1,
        slice(1, 3),
        slice(0, 0),
        torch.tensor([3, 0, 0]),
        torch.tensor([1, 0, 1, 0]) > 0,
    ):
        assert torch.equal(rows[key], copy[key]), key
    mask = torch.tensor([True, False, True, True])
    assert isinstance(take(rows, mask), Rows) and torch.equal(take(rows, mask)[:], copy[mask])
    assert torch.equal(take(copy, mask), copy[mask])
    picked = rows[torch.tensor([0])]
    picked += 1  # a gathered batch is a copy: the pool stays as it was
    assert torch.equal(base, torch.arange(60, dtype=torch.float32).reshape(10, 1, 2, 3))
    assert rows.to("cpu").base is base  # already there: no copy


def test_joined_rows_index_as_their_concatenation_does() -> None:
    """A GAN augment epoch reads its real rows (``Rows`` of the pool) and the generated
    images as one set, without gathering the real ones first."""
    base = torch.arange(60, dtype=torch.float32).reshape(10, 1, 2, 3)
    real = Rows(base, torch.tensor([7, 2, 9, 4]))
    syn = -torch.arange(18, dtype=torch.float32).reshape(3, 1, 2, 3)
    copy = torch.cat([real[:], syn])
    for first in (real, real[:]):
        joined = Joined(first, syn)
        assert len(joined) == 7 and joined.shape == copy.shape
        for key in (
            0,
            5,
            -1,
            slice(2, 6),
            slice(0, 0),
            torch.tensor([6, 0, 4, 3, 3]),
            torch.tensor([-1, 1]),
            torch.tensor([], dtype=torch.long),
            torch.tensor([1, 0, 1, 0, 0, 1, 1]) > 0,
        ):
            assert torch.equal(joined[key], copy[key]), key
        assert torch.equal(joined.to("cpu")[torch.arange(7)], copy)


@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_build_model_rebuilds_the_saved_model(case, family, model, fp, data) -> None:
    cfg = _cfg(family, model, fp)
    tr = _trainer(cfg, data)
    tr.pretrain()
    tr.run_epoch(1)
    rebuilt = build_model(cfg, in_channels=1, n_classes=2, image_size=SIZE)
    rebuilt.load_state_dict(tr.model.state_dict())  # strict: same keys and shapes
    np.testing.assert_allclose(
        predict(rebuilt, data["x_val"]), predict(tr.model, data["x_val"]), atol=1e-6
    )


def test_config_routes_family_and_model_params() -> None:
    ae = TrialConfig.from_params(
        {"family": "autoencoder", "model": "conv_ae", "latent_size": 16, "ae_mode": "anomaly"}
    )
    assert ae.model_params == {"latent_size": 16}
    assert ae.family_params["ae_mode"] == "anomaly"
    assert (
        ae.family_params["pretrain_epochs"] == get_family("autoencoder").params["pretrain_epochs"]
    )
    gan = TrialConfig.from_params(
        {"family": "gan", "model": "cnn_tiny", "latent_size": 16, "gan_mode": "disc_features"}
    )
    assert gan.model_params == {}
    assert gan.family_params["latent_size"] == 16  # the GAN's, not the classifier's


@pytest.mark.parametrize("name", ["cnn", "autoencoder", "gan", "all"])
def test_shipped_spaces_build_every_sampled_point(name: str) -> None:
    space = load_space(SPACES / f"{name}.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for point in space.enqueue_points():
        study.enqueue_trial(point)
    families = set()
    for _ in range(12):
        trial = study.ask()
        cfg = TrialConfig.from_params(space.sample(trial))
        families.add(cfg.family)
        model = build_model(cfg, in_channels=1, n_classes=2, image_size=SIZE)
        assert model(torch.zeros(2, 1, SIZE, SIZE)).shape == (2, 1)
        study.tell(trial, 0.5)
    if name == "all":
        assert families == {"cnn", "autoencoder", "gan"}
        assert [p["family"] for p in space.enqueue_points()] == ["cnn", "autoencoder", "gan"]


# ---------------------------------------------------------------- autoencoder


def test_anomaly_autoencoder_learns_only_non_positive_images(data, monkeypatch) -> None:
    cfg = _cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 2, "ae_mode": "anomaly"})
    tr = _trainer(cfg, data)
    assert isinstance(tr, AutoencoderTrainer)
    assert isinstance(tr.model, ReconstructionScorer)
    normal = data["x_train"][data["y_train"] != POSITIVE]
    assert torch.equal(tr.ae_train_x, normal)
    seen: list[torch.Tensor] = []
    reconstruct = tr.ae.reconstruct

    def spy(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training steps (scoring runs under no_grad)
            seen.append(x.detach().clone())
        return reconstruct(x)

    monkeypatch.setattr(tr.ae, "reconstruct", spy)
    tr.pretrain()
    tr.run_epoch(1)
    rows = {r.numpy().tobytes() for r in normal}
    trained = torch.cat(seen)
    assert len(trained) == 3 * len(normal)  # 2 pretraining epochs + 1 diagnosis epoch
    assert all(r.numpy().tobytes() in rows for r in trained)


def test_anomaly_scores_are_log_errors_over_the_training_errors_typical_one(data) -> None:
    cfg = _cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1, "ae_mode": "anomaly"})
    tr = _trainer(cfg, data)
    tr.pretrain()
    tr.run_epoch(1)
    model = tr.model
    assert isinstance(model, ReconstructionScorer)
    model.eval()
    with torch.no_grad():
        logits = model(tr.ae_train_x)[:, 0]
        err = model.errors(tr.ae_train_x)
    assert logits.shape == (len(tr.ae_train_x),)
    assert abs(float(logits.mean())) < 1e-4  # a typical training image scores 0 (p = 0.5)
    torch.testing.assert_close(logits, err.log() - err.log().mean(), atol=1e-5, rtol=0)


def test_anomaly_mode_needs_a_binary_task(data) -> None:
    cfg = _cfg("autoencoder", "conv_ae_tiny", {"ae_mode": "anomaly"})
    with pytest.raises(TrialFailure, match=r"needs a binary task .* but got n_classes=3;"):
        _trainer(cfg, data, n_classes=3)


def test_autoencoder_classifier_mode_is_multiclass(data) -> None:
    x, y = _images(60, n_classes=3, seed=1)
    tr = _trainer(
        _cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1}),
        {"x_train": x[:40], "y_train": y[:40], "x_val": x[40:], "y_val": y[40:]},
        n_classes=3,
    )
    tr.pretrain()
    r = tr.run_epoch(1)
    assert r.val_prob.shape == (20, 3)
    np.testing.assert_allclose(r.val_prob.sum(1), 1.0, atol=1e-5)


def test_frozen_encoder_trains_the_head_only(data) -> None:
    tr = _trainer(
        _cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 1, "freeze_encoder": True}), data
    )
    tr.pretrain()
    ae = tr.model
    assert isinstance(ae, AutoEncoder)
    enc = {k: v.clone() for k, v in ae.encoder.state_dict().items()}  # BN statistics too
    head = {k: v.clone() for k, v in ae.head.state_dict().items()}
    tr.run_epoch(1)
    assert all(torch.equal(v, ae.encoder.state_dict()[k]) for k, v in enc.items())
    assert not all(torch.equal(v, ae.head.state_dict()[k]) for k, v in head.items())


def test_pretraining_reduces_reconstruction_error(data) -> None:
    cfg = _cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 3, "ae_lr": 3e-3})
    tr = _trainer(cfg, data)
    before = tr.recon_error(data["x_val"])
    tr.pretrain()
    assert tr.recon_error(data["x_val"]) < before


def test_default_model_and_wrong_model(data) -> None:
    # No model named (TrialConfig's default is a CNN): the family's default member.
    model = build_model(
        TrialConfig(family="autoencoder"), in_channels=1, n_classes=2, image_size=SIZE
    )
    assert isinstance(model, AutoEncoder)
    with pytest.raises(RaydxError, match="model='cnn'"):
        build_model(
            TrialConfig(family="autoencoder", model="cnn"),
            in_channels=1,
            n_classes=2,
            image_size=SIZE,
        )


@pytest.mark.parametrize(
    ("fp", "needle"),
    [
        ({"ae_mode": "anomly"}, "Did you mean 'anomaly'"),
        ({"ae_loss": "l2"}, "ae_loss"),
        ({"denoise": -0.1}, "denoise=-0.1"),
        ({"pretrain_epochs": 1.5}, "pretrain_epochs=1.5"),
        ({"ae_lr": 0}, "ae_lr=0"),
        ({"freeze_encoder": "yes"}, "freeze_encoder='yes'"),
    ],
)
def test_autoencoder_bad_params(fp, needle, data) -> None:
    with pytest.raises(RaydxError) as info:
        _trainer(_cfg("autoencoder", "conv_ae_tiny", fp), data)
    assert needle in str(info.value)


def test_autoencoder_writes_reconstructions(data, tmp_path) -> None:
    tr = _trainer(_cfg("autoencoder", "conv_ae_tiny", {"pretrain_epochs": 0}), data)
    tr.write_artifacts(str(tmp_path))
    with Image.open(tmp_path / "reconstructions_fold1.png") as im:
        assert im.size[0] < 300 and im.size[1] < 100


# ---------------------------------------------------------------- gan


@pytest.mark.parametrize("mode", ["augment", "disc_features"])
def test_gan_never_sees_validation_images(mode, data, monkeypatch) -> None:
    poisoned = {**data, "x_val": torch.ones_like(data["x_val"])}  # +1.0 everywhere
    fp = {"pretrain_epochs": 2, "gan_model": "dcgan_tiny", "gan_mode": mode}
    tr = _trainer(_cfg("gan", "cnn_tiny", fp), poisoned)
    assert isinstance(tr, GANTrainer)
    assert torch.equal(tr.gan_train_x, data["x_train"])
    seen: list[torch.Tensor] = []
    step = tr.gan_step

    def spy(real: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        seen.append(real.detach().clone())
        return step(real, labels)

    monkeypatch.setattr(tr, "gan_step", spy)
    tr.pretrain()
    tr.run_epoch(1)
    trained = torch.cat(seen)
    assert len(trained) == 2 * len(data["x_train"])
    assert not (trained == 1.0).flatten(1).all(1).any()  # no validation image among them
    rows = {r.numpy().tobytes() for r in data["x_train"]}
    assert all(r.numpy().tobytes() in rows for r in trained)


def test_gan_collapse_is_a_trial_failure(data) -> None:
    fp = {"pretrain_epochs": 0, "gan_model": "dcgan_tiny"}
    tr = _trainer(_cfg("gan", "cnn_tiny", fp), data)
    last = [m for m in tr.gan.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1]
    with torch.no_grad():  # every sample the same image, whatever z
        last.weight.zero_()
        last.bias.zero_()
    with pytest.raises(TrialFailure, match="collapsed") as info:
        tr.pretrain()
    assert "\n" not in str(info.value)


def test_gan_nan_loss_is_a_trial_failure(data) -> None:
    bad = {**data, "x_train": data["x_train"].clone()}
    bad["x_train"][:, :, 0, 0] = float("nan")
    tr = _trainer(_cfg("gan", "cnn_tiny", {"pretrain_epochs": 1, "gan_model": "dcgan_tiny"}), bad)
    with pytest.raises(DivergedError, match="GAN discriminator loss became nan"):
        tr.pretrain()


def test_top_up_fills_the_minority_first() -> None:
    np.testing.assert_array_equal(top_up(np.array([10, 3]), 5), [0, 5])
    np.testing.assert_array_equal(top_up(np.array([10, 3]), 9), [1, 8])
    np.testing.assert_array_equal(top_up(np.array([5, 1, 3]), 4), [0, 3, 1])
    np.testing.assert_array_equal(top_up(np.array([4, 4]), 0), [0, 0])


def test_gan_augment_trains_on_real_and_generated(data, monkeypatch) -> None:
    fp = {"pretrain_epochs": 1, "gan_model": "dcgan_tiny", "synthetic_ratio": 0.5}
    cfg = _cfg("gan", "cnn_tiny", fp, lr_schedule="onecycle", class_balance="sampler")
    tr = _trainer(cfg, {**data, "y_train": np.where(np.arange(80) < 20, 0, 1)}, epochs=2)
    # 20 positives (class 1 of the GAN) vs 60 others: all 40 generated images top up class 1.
    np.testing.assert_array_equal(tr.synthetic_per_class, [0, 40])
    sizes: list[int] = []

    class Spy:  # what FoldTrainer's loop feeds the augmentation = the epoch's images
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def reseed(self, seed: int) -> None:
            self.inner.reseed(seed)

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            sizes.append(len(x))
            return self.inner(x)

    monkeypatch.setattr(tr, "augment", Spy(tr.augment))
    epoch_images: list[Any] = []
    train_epoch = FoldTrainer.train_epoch

    def seen(self: Any, epoch: int) -> float:
        epoch_images.append(self.x_train)
        return train_epoch(self, epoch)

    monkeypatch.setattr(FoldTrainer, "train_epoch", seen)
    tr.pretrain()
    for epoch in (1, 2):  # a one-cycle schedule sized for real images only would overrun
        r = tr.run_epoch(epoch)
    assert sum(sizes) == 2 * 120
    # the real rows are read in place, not gathered into a copy every epoch
    assert [type(x) for x in epoch_images] == [Joined, Joined]
    assert all(x.first is tr.x_train for x in epoch_images)
    assert r.extra["n_synthetic"] == 40.0
    assert len(tr.x_train) == 80 and len(tr.t_train) == 80  # the real set is restored


def test_generated_images_use_the_statistics_of_training_like_batches(data, monkeypatch) -> None:
    """The generator's batch norm used each batch's own statistics: a batch of the
    topped-up class alone washed out its features. Samples now use the statistics of
    batches mixed as the training batches are, so an image does not depend on the rest
    of its batch, and the generator is left as it was."""
    from raydx.families.gan import MIX_BATCHES, training_mix_statistics

    fp = {"pretrain_epochs": 0, "gan_model": "dcgan_tiny", "synthetic_ratio": 0.5}
    y = np.where(np.arange(80) < 20, 0, 1)
    tr = _trainer(_cfg("gan", "cnn_tiny", fp), {**data, "y_train": y})
    batches: list[torch.Tensor] = []
    sample = tr.gan.sample

    def spy(n: int, labels: Any = None, generator: Any = None) -> torch.Tensor:
        batches.append(torch.as_tensor(labels).cpu())
        return sample(n, labels, generator=generator)

    monkeypatch.setattr(tr.gan, "sample", spy)
    x = tr._sample(np.array([0, 40]), torch.Generator().manual_seed(0))
    assert len(x) == 40
    drawn = torch.cat(batches[:MIX_BATCHES])  # the statistics' batches: the training mix
    share = float((tr.gan_train_labels == 0).float().mean())
    assert abs(float((drawn == 0).float().mean()) - share) < 0.15
    assert all((b == 1).all() for b in batches[MIX_BATCHES:])  # then the wanted ones alone
    assert torch.equal(x, tr._sample(np.array([0, 40]), torch.Generator().manual_seed(0)))
    assert len(tr._sample(np.array([3, 5]), torch.Generator().manual_seed(1))) == 8

    g = tr.gan.generator
    z = torch.randn(6, tr.gan.latent_size, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([1, 1, 1, 0, 0, 1])
    was_training = g.training
    with torch.no_grad(), training_mix_statistics(g, lambda: g(z, labels)):
        together = g(z, labels)
        alone = torch.cat([g(z[i : i + 1], labels[i : i + 1]) for i in range(6)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert g.training == was_training  # restored to the mode it had
    norms = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.running_mean is None and not m.track_running_stats for m in norms)
    assert "project.2.running_mean" not in g.state_dict()  # checkpoints unchanged


def test_disc_features_trains_the_head_only(data) -> None:
    fp = {"pretrain_epochs": 1, "gan_model": "dcgan_tiny", "gan_mode": "disc_features"}
    tr = _trainer(_cfg("gan", "cnn_tiny", fp), data)
    tr.pretrain()
    gan = tr.model
    assert isinstance(gan, ConditionalGAN) and gan is tr.gan
    frozen = {k: v.clone() for k, v in gan.discriminator.state_dict().items()}
    head = {k: v.clone() for k, v in gan.head.state_dict().items()}
    tr.run_epoch(1)
    assert all(torch.equal(v, gan.discriminator.state_dict()[k]) for k, v in frozen.items())
    assert not all(torch.equal(v, gan.head.state_dict()[k]) for k, v in head.items())


def test_gan_multiclass(data) -> None:
    x, y = _images(60, n_classes=3, seed=2)
    fp = {"pretrain_epochs": 1, "gan_model": "dcgan_tiny", "synthetic_ratio": 0.25}
    tr = _trainer(
        _cfg("gan", "cnn_tiny", fp),
        {"x_train": x[:40], "y_train": y[:40], "x_val": x[40:], "y_val": y[40:]},
        n_classes=3,
    )
    assert tr.n_cond == 3
    tr.pretrain()
    r = tr.run_epoch(1)
    assert r.val_prob.shape == (20, 3)


@pytest.mark.parametrize(
    ("fp", "needle"),
    [
        ({"gan_mode": "augmnt"}, "Did you mean 'augment'"),
        ({"gan_model": "cnn_tiny"}, "gan_model='cnn_tiny'"),
        ({"g_lr": -1.0}, "g_lr=-1.0"),
        ({"synthetic_ratio": -0.5}, "synthetic_ratio=-0.5"),
        ({"pretrain_epochs": -1}, "pretrain_epochs=-1"),
    ],
)
def test_gan_bad_params(fp, needle, data) -> None:
    with pytest.raises(RaydxError) as info:
        _trainer(_cfg("gan", "cnn_tiny", {"gan_model": "dcgan_tiny", **fp}), data)
    assert needle in str(info.value)


def test_gan_writes_a_sample_grid_per_class(data, tmp_path) -> None:
    tr = _trainer(_cfg("gan", "cnn_tiny", {"pretrain_epochs": 0, "gan_model": "dcgan_tiny"}), data)
    state = _saved(tr.state_dict())
    tr.write_artifacts(str(tmp_path))
    with Image.open(tmp_path / "samples_fold1.png") as im:
        assert im.size == (8 * (SIZE + 2) + 2, 2 * (SIZE + 2) + 2)  # 8 per class, 2 classes
    # Drawing the grid uses its own random stream: training continues unchanged.
    assert torch.equal(state["sample_generator"], tr.sample_generator.get_state())


# ---------------------------------------------------------------- final: refit


def _flat(family: str, model: str, fp: dict[str, Any]) -> dict[str, Any]:
    """The flat parameter dict a trial reports (best.yaml's ``params``)."""
    return {"family": family, "model": model, "lr": 1e-2, "batch_size": 32, "hflip": 0.5, **fp}


@pytest.mark.parametrize(("case", "family", "model", "fp"), CASES, ids=IDS)
def test_refit_is_the_fold_recipe_on_every_cv_image(case, family, model, fp, data) -> None:
    """A refit trains as a fold trainer given all the pool's images would, stopped at
    the chosen epoch of the same schedule; scoring validation rows draws nothing, so
    the weights are identical."""
    from raydx.refit import refit_state

    params = _flat(family, model, fp)
    x = torch.cat([data["x_train"], data["x_val"]])
    y = np.concatenate([data["y_train"], data["y_val"]])
    got = refit_state(
        params, x=x.numpy(), y=y, n_classes=2, positive=POSITIVE, epochs=3, stop_epoch=2,
        seed=0, folds=5,
    )  # fmt: skip
    tr = get_family(family).trainer(
        TrialConfig.from_params(params),
        x_train=x,
        y_train=y,
        x_val=data["x_val"],
        y_val=data["y_val"],
        n_classes=2,
        positive=POSITIVE,
        epochs=3,
        seed=0,
        fold=5,  # the refit's own random streams: the fold index after the last fold
    )
    with tr.own_rng():
        tr.pretrain()
        tr.run_epoch(1)
        tr.run_epoch(2)
    expected = tr.model.state_dict()
    assert got.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=0, atol=0, msg=k)
    rebuilt = build_model(
        TrialConfig.from_params(params), in_channels=1, n_classes=2, image_size=SIZE
    )
    rebuilt.load_state_dict(got)  # strict: what raydx.load_model does with it


def test_refit_stops_within_the_schedule(data) -> None:
    from raydx.refit import refit_state

    with pytest.raises(
        RaydxError, match=r"stop_epoch must be in \[1, epochs=3\], but got stop_epoch=4"
    ):
        refit_state(
            _flat("cnn", "cnn_tiny", {}), x=data["x_train"].numpy(), y=data["y_train"],
            n_classes=2, positive=POSITIVE, epochs=3, stop_epoch=4, seed=0, folds=5,
        )  # fmt: skip


def test_the_saved_network_name_is_what_the_diagnosis_model_is_built_from() -> None:
    from raydx.train import diagnosis_network

    disc = TrialConfig.from_params(
        {"family": "gan", "gan_mode": "disc_features", "gan_model": "dcgan", "dropout": 0.3}
    )
    name, kwargs = diagnosis_network(disc)
    assert name == "dcgan" and kwargs["dropout"] == 0.3  # the GAN, not the unused classifier
    model = GANTrainer.build_diagnosis_model(disc, in_channels=1, n_classes=2, image_size=28)
    assert isinstance(model, ConditionalGAN)
    augment = TrialConfig.from_params({"family": "gan", "model": "cnn_tiny", "dropout": 0.3})
    assert diagnosis_network(augment) == ("cnn_tiny", {"dropout": 0.3})
    cnn = TrialConfig.from_params({"model": "cnn_tiny", "dropout": 0.2})
    assert diagnosis_network(cnn) == ("cnn_tiny", {"dropout": 0.2})


def test_a_network_the_data_cannot_have_is_found_before_the_fold_workers_start() -> None:
    """The trial's process builds the network on the meta device first: an anomaly
    scorer for three classes failed only in the fold workers, after their start."""
    from raydx.cv import _unbuildable

    config = {"family": "autoencoder", "model": "conv_ae_tiny", "ae_mode": "anomaly"}
    reason = _unbuildable(config, {"shape": (1, 28), "n_classes": 3})
    assert reason is not None and "ae_mode='anomaly' needs a binary task" in reason
    assert _unbuildable(config, {"shape": (1, 28), "n_classes": 2}) is None
    assert (
        _unbuildable({**config, "ae_mode": "classifier"}, {"shape": (1, 28), "n_classes": 3})
        is None
    )
