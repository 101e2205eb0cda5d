"""The saved model: round trip, ensemble probability, threshold, preprocessing, bad folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import raydx
from raydx.artifact import FORMAT, FORMAT_VERSION, load_model, save_state_dicts
from raydx.data.pipeline import Preprocessing, normalise_batch
from raydx.errors import RaydxError
from raydx.fold_calibration import DEFAULT
from raydx.models import create_model

SIZE = 16


def _config(
    *, channels: int = 1, classes: int = 2, positive: int = 1, threshold: float = 0.5
) -> dict[str, Any]:
    """What raydx/final.py writes next to the weights."""
    names = ["malignant", "benign", "normal"][:classes]
    return {
        "model": "cnn_tiny",
        "model_params": {"dropout": 0.1},
        "trial_id": "abc_00001",
        "class_names": names,
        "label_map": {n: i for i, n in enumerate(names)},
        "positive_class": positive,
        "positive_class_name": names[positive],
        "threshold": threshold,
        "preprocessing": {"image_size": SIZE, "channels": channels, "mean": 0.5, "std": 0.5},
    }


def _members(n: int, *, channels: int = 1, outputs: int = 1) -> list[nn.Module]:
    """Members with random weights and random batch-norm statistics (eval mode matters)."""
    members = []
    for i in range(n):
        torch.manual_seed(100 + i)
        m = create_model(
            "cnn_tiny", in_channels=channels, num_outputs=outputs, image_size=SIZE, dropout=0.1
        )
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.5)
            for name, b in m.named_buffers():
                if name.endswith("running_mean"):
                    b.normal_(0.0, 0.3)
                elif name.endswith("running_var"):
                    b.uniform_(0.5, 2.0)
        members.append(m.eval())
    return members


def _save(path: Path, members: list[nn.Module], config: dict[str, Any]) -> Path:
    return save_state_dicts(path, [m.state_dict() for m in members], config)


def _images(n: int, *, size: int = SIZE, channels: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@torch.no_grad()
def _direct(members: list[nn.Module], x: torch.Tensor) -> np.ndarray:
    outs = []
    for m in members:
        logits = m.eval()(x)
        outs.append(
            torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
        )
    return torch.stack(outs).mean(0).numpy()


def test_round_trip_ensemble_probability(tmp_path: Path) -> None:
    members = _members(2)
    path = _save(tmp_path / "model", members, _config())
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "member_0.safetensors",
        "member_1.safetensors",
    ]  # no temporary weight files left behind
    saved = json.loads((path / "config.json").read_text())
    assert saved["format"] == FORMAT
    assert saved["members"] == ["member_0.safetensors", "member_1.safetensors"]

    model = load_model(path)
    assert len(model.members) == 2
    assert all(not m.training for m in model.members)
    assert model.class_names == ["malignant", "benign"]
    assert model.positive_class == 1 and model.threshold == 0.5

    img = _images(12)  # (N, H, W) uint8
    x = torch.from_numpy(img.astype(np.float32) / 255.0).unsqueeze(1)
    expected = _direct(members, (x - 0.5) / 0.5)
    p = model.predict_proba(img)
    assert p.shape == (12,)
    np.testing.assert_allclose(p, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(img[..., None]), expected, rtol=1e-5, atol=1e-6)
    # The ensemble is the mean: it differs from each member alone.
    one = _direct(members[:1], (x - 0.5) / 0.5)
    assert np.abs(p - one).max() > 1e-3
    # The package-level entry point loads the same model, from the run folder too (as
    # raydx predict --model takes it).
    np.testing.assert_allclose(raydx.load_model(path).predict_proba(img), p, rtol=1e-6)
    np.testing.assert_allclose(raydx.load_model(tmp_path).predict_proba(img), p, rtol=1e-6)


@pytest.mark.parametrize("positive", [1, 0])
def test_predict_applies_threshold_to_the_positive_class(tmp_path: Path, positive: int) -> None:
    members = _members(2)
    img = _images(40, seed=1)
    probe = load_model(_save(tmp_path / "probe", members, _config(positive=positive)))
    p = probe.predict_proba(img)
    threshold = float(np.median(p))  # half the images on each side
    model = load_model(
        _save(tmp_path / "m", members, _config(positive=positive, threshold=threshold))
    )
    pred = model.predict(img)
    negative = 1 - positive
    expected = np.where(p >= threshold, positive, negative)
    np.testing.assert_array_equal(pred, expected)
    assert set(pred.tolist()) == {0, 1}
    # positive=0: a high probability means class 0 ("malignant"), not class 1.
    assert (pred[p >= threshold] == positive).all()
    assert (pred[p < threshold] == negative).all()


def test_multiclass_predict_is_argmax(tmp_path: Path) -> None:
    members = _members(2, outputs=3)
    model = load_model(_save(tmp_path / "m", members, _config(classes=3, positive=2)))
    img = _images(10)
    p = model.predict_proba(img)
    assert p.shape == (10, 3)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(model.predict(img), p.argmax(1))


def test_rgb_images_resized_like_training(tmp_path: Path) -> None:
    members = _members(2, channels=3)
    model = load_model(_save(tmp_path / "m", members, _config(channels=3)))
    img = _images(6, size=24, channels=3)  # larger than the trained size
    x = model.prepare(img)
    assert x.shape == (6, 3, SIZE, SIZE)
    # Exactly what training saw (the Ray Data step runs the same function).
    ref = torch.from_numpy(normalise_batch(img, Preprocessing(image_size=SIZE, channels=3)))
    torch.testing.assert_close(x, ref)
    np.testing.assert_allclose(model.predict_proba(img), _direct(members, ref), rtol=1e-5)
    # A flat colour stays that colour through the resize.
    flat = np.zeros((2, 24, 24, 3), np.uint8)
    flat[0] = (255, 0, 51)
    flat[1] = (0, 255, 102)
    xf = model.prepare(flat)
    want = (torch.tensor([[255, 0, 51], [0, 255, 102]]) / 255.0 - 0.5) / 0.5
    torch.testing.assert_close(xf.mean((2, 3)), want, atol=1e-4, rtol=0)
    spread = xf.amax((2, 3)) - xf.amin((2, 3))
    torch.testing.assert_close(spread, torch.zeros(2, 3), atol=1e-4, rtol=0)


def test_grey_model_takes_rgb_images(tmp_path: Path) -> None:
    members = _members(1)
    model = load_model(_save(tmp_path / "m", members, _config(channels=1)))
    grey = _images(5)
    rgb = np.repeat(grey[..., None], 3, axis=3)
    np.testing.assert_allclose(model.predict_proba(rgb), model.predict_proba(grey), rtol=1e-5)


def test_non_uint8_images_are_rejected(tmp_path: Path) -> None:
    model = load_model(_save(tmp_path / "m", _members(1), _config()))
    with pytest.raises(RaydxError, match=r"uint8.*dtype=float32"):
        model.predict_proba(_images(2).astype(np.float32))


def test_a_model_saved_before_input_modes_scales_arrays_as_it_did(tmp_path: Path) -> None:
    """Without config.json's "input_modes" nothing tells whether the training images
    were 8-bit pixels or scaled ones: to_uint8 keeps the rule such models were saved
    with, the batch as a whole deciding whether integers within 0-255 are 8-bit."""
    from raydx.data.intensity import Intensity, scale_grey

    path = _save(tmp_path / "m", _members(1), _config())
    assert "input_modes" not in json.loads((path / "config.json").read_text())
    model = load_model(path)
    rng = np.random.default_rng(3)
    dim = rng.integers(50, 200, (SIZE, SIZE)).astype(np.uint16)
    bright = rng.integers(0, 4096, (SIZE, SIZE)).astype(np.uint16)
    assert np.array_equal(model.to_uint8(dim[None])[0], dim)
    got = model.to_uint8(np.stack([dim, bright]))
    assert np.array_equal(got[0], scale_grey(dim, Intensity()))
    assert np.array_equal(got[1], scale_grey(bright, Intensity()))


def test_one_image_without_a_batch_axis_is_rejected_with_the_fix(tmp_path: Path) -> None:
    model = load_model(_save(tmp_path / "m", _members(1), _config()))
    one = _images(1)[0]
    with pytest.raises(RaydxError, match=r"\(N, H, W\).*shape \(16, 16\); for one image pass"):
        model.predict_proba(one)
    assert model.predict_proba(one[None]).shape == (1,)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_one_channels_last_image_is_not_read_as_a_batch_of_rows(
    tmp_path: Path, channels: int
) -> None:
    model = load_model(_save(tmp_path / "m", _members(1), _config()))
    one = _images(1, channels=channels)[0]  # (16, 16, C)
    with pytest.raises(RaydxError, match=r"look like one \(H, W, C\) image.*image\[None\]"):
        model.predict_proba(one)
    assert model.predict_proba(one[None]).shape == (1,)


def test_channels_first_images_are_rejected_with_the_transpose(tmp_path: Path) -> None:
    model = load_model(_save(tmp_path / "m", _members(1), _config()))
    img = _images(3, channels=1)
    with pytest.raises(
        RaydxError, match=r"channels last.*\(3, 1, 16, 16\).*transpose\(0, 2, 3, 1\)"
    ):
        model.predict_proba(img.transpose(0, 3, 1, 2))


def test_alpha_is_dropped_as_ingestion_drops_it(tmp_path: Path) -> None:
    """Pillow's convert("RGB") on an RGBA file discards alpha; an array must score alike."""
    model = load_model(_save(tmp_path / "m", _members(1, channels=3), _config(channels=3)))
    rgb = _images(4, channels=3)
    alpha = np.random.default_rng(1).integers(0, 256, size=(4, SIZE, SIZE, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=3)
    np.testing.assert_array_equal(model.predict_proba(rgba), model.predict_proba(rgb))


@pytest.mark.parametrize(("classes", "shape"), [(2, (0,)), (3, (0, 3))])
def test_an_empty_batch_gives_empty_probabilities(
    tmp_path: Path, classes: int, shape: tuple[int, ...]
) -> None:
    outputs = 1 if classes == 2 else classes
    model = load_model(
        _save(tmp_path / "m", _members(2, outputs=outputs), _config(classes=classes))
    )
    empty = _images(0)
    assert model.predict_proba(empty).shape == shape
    assert model.predict(empty).shape == (0,)


def test_missing_config_is_an_error(tmp_path: Path) -> None:
    path = _save(tmp_path / "m", _members(1), _config())
    (path / "config.json").unlink()
    with pytest.raises(RaydxError, match=r"neither a run folder .* nor a model folder"):
        load_model(path)
    with pytest.raises(RaydxError, match=r"does_not_exist' does not exist; pass a run folder"):
        load_model(tmp_path / "does_not_exist")


_GONE = object()  # _with_config: the key is removed


def _with_config(path: Path, **changes: Any) -> Path:
    """``path``'s saved config.json with ``changes`` written over it (``_GONE``: removed),
    as an older or a hand-edited folder has it."""
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is _GONE:
            del cfg[key]
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_weights_of_another_architecture_are_one_clear_error(tmp_path: Path) -> None:
    # As a model saved by another raydx version whose network had other shapes.
    path = _with_config(_save(tmp_path / "m", _members(1), _config()), model="cnn_seed")
    with pytest.raises(RaydxError, match=r"do not fit the model that config\.json") as info:
        load_model(path)
    assert "model='cnn_seed'" in str(info.value)
    assert "member_0" in str(info.value) or ".safetensors" in str(info.value)


@pytest.mark.parametrize("fmt", ["raydx-model/999", None])
def test_wrong_format_is_an_error(tmp_path: Path, fmt: str | None) -> None:
    path = _save(tmp_path / "m", _members(1), _config())
    _with_config(path, format=_GONE if fmt is None else fmt)
    with pytest.raises(RaydxError, match="is not supported") as info:
        load_model(path)
    assert repr(fmt) in str(info.value)
    assert FORMAT in str(info.value)


@pytest.mark.parametrize("channels", [1, 3])
def test_normalise_fast_path_equals_the_torch_path(channels: int) -> None:
    """Same size and channels skip torch (Ray Data workers need not import it)."""
    img = np.random.default_rng(channels).integers(0, 256, (20, 16, 16, channels), np.uint8)
    fast = normalise_batch(img, Preprocessing(image_size=16, channels=channels))
    # what the torch path computes when nothing needs resizing
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float().div(255.0)
    assert fast.dtype == np.float32 and fast.shape == (20, channels, 16, 16)
    np.testing.assert_array_equal(fast, ((x - 0.5) / 0.5).numpy())


def test_an_interrupted_save_leaves_no_config_and_no_half_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.json marks a complete model folder: a crash while saving the out-of-fold
    scores must leave neither a truncated file nor a config naming it."""
    import pandas as pd

    oof = pd.DataFrame({"fold": [0, 1], "label": [0, 1], "is_positive": [True, False]})
    oof["prob"] = [0.9, 0.2]

    def half(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_bytes(b"PAR1")
        raise OSError(28, "No space left on device")

    members = [m.state_dict() for m in _members(1)]
    with monkeypatch.context() as m:
        m.setattr(pd.DataFrame, "to_parquet", half)
        with pytest.raises(OSError, match="No space left"):
            save_state_dicts(tmp_path / "m", members, _config(), oof=oof)
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["member_0.safetensors"]
    with pytest.raises(RaydxError, match=r"nor a model folder \(with config\.json\)"):
        load_model(tmp_path / "m")
    path = save_state_dicts(tmp_path / "m", members, _config(), oof=oof)
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "member_0.safetensors", "oof_scores.parquet"]
    assert load_model(path).oof is not None


def test_an_autoencoder_saved_under_a_cnn_name_loads_as_the_conv_ae_it_was(
    tmp_path: Path,
) -> None:
    # Before December 2026, family autoencoder with model cnn_seed trained conv_ae.
    torch.manual_seed(0)
    ae = create_model("conv_ae", in_channels=1, num_outputs=1, image_size=SIZE).eval()
    cfg = _config()
    # depth went to cnn_seed's build, which does not take it: conv_ae kept its default
    cfg["params"] = {"family": "autoencoder", "model": "cnn_seed", "dropout": 0.0, "depth": 4}
    path = _save(tmp_path / "m", [ae], cfg)
    with pytest.warns(UserWarning, match="an older raydx trained as 'conv_ae'"):
        model = load_model(path)
    img = _images(4)
    x = torch.from_numpy(img.astype(np.float32) / 255.0).unsqueeze(1)
    expected = _direct([ae], (x - 0.5) / 0.5)
    np.testing.assert_allclose(model.predict_proba(img), expected, rtol=1e-5, atol=1e-6)


def test_config_records_the_raydx_version_and_the_format(tmp_path: Path) -> None:
    path = _save(tmp_path / "m", _members(1), _config())
    saved = json.loads((path / "config.json").read_text())
    assert saved["raydx_version"] == raydx.__version__
    assert saved["format_version"] == FORMAT_VERSION == 2


# What a model saved before format 2 got from its fold scalings for every probability
# beyond 1e-7 (beyond 1 - 1e-7): one value, so its threshold, chosen among such values
# out of fold, may sit on it. One float64 step off 1e-7 (1 - 1e-7), from the logit's
# round trip.
LOW_TIE, HIGH_TIE = 9.99999999999999e-08, 0.9999998999999999


def _constant(logit: float) -> nn.Module:
    """A member that gives every image the probability sigmoid(logit)."""
    member = _members(1)[0]
    with torch.no_grad():
        member.head[-1].weight.zero_()
        member.head[-1].bias.fill_(logit)
    return member


def _identity_scaled(threshold: float) -> dict[str, Any]:
    identity = {"slope": 1.0, "intercept": 0.0}
    return _config(threshold=threshold) | {
        "member_calibration": {"method": DEFAULT, "members": [identity]}
    }


def _saved_before_format_2(path: Path) -> Path:
    """``path``'s config.json as raydx wrote it before it recorded a format and version."""
    return _with_config(path, format_version=_GONE, raydx_version=_GONE)


@pytest.mark.parametrize(
    ("logit", "threshold", "then", "now"),
    [  # the member's probability is about 1e-9 (logit -20.7) or 1 - 1e-12 (logit 27.6)
        (-20.7, LOW_TIE, 1, 0),  # a high-sensitivity threshold on the tie flagged it
        (-20.7, 1e-7, 0, 0),
        (27.6, HIGH_TIE, 1, 1),
        (27.6, 1 - 1e-7, 0, 1),  # the tie fell one step short of 1 - 1e-7
    ],
)
def test_a_model_saved_before_format_2_classifies_as_it_did(
    tmp_path: Path, logit: float, threshold: float, then: int, now: int
) -> None:
    members = [_constant(logit)]
    img = _images(3)
    new = load_model(_save(tmp_path / "new", members, _identity_scaled(threshold)))
    old = load_model(
        _saved_before_format_2(_save(tmp_path / "old", members, _identity_scaled(threshold)))
    )
    assert old.config["format_version"] == 1
    assert old.predict(img).tolist() == [then] * 3
    assert new.predict(img).tolist() == [now] * 3
    assert old.predict_proba(img) == pytest.approx(LOW_TIE if logit < 0 else HIGH_TIE, abs=0)


def test_a_threshold_re_chosen_on_a_format_1_folder_flags_as_its_saved_scores(
    tmp_path: Path,
) -> None:
    import pandas as pd

    # Out of fold, the old scalings tied everything below 1e-7 at LOW_TIE: sensitivity=1
    # picks that tie, and a new image below 1e-7 is flagged as those rows were.
    oof = pd.DataFrame({"fold": [0, 0, 0, 1, 1, 1], "label": [0, 0, 0, 1, 1, 1]})
    oof["is_positive"] = oof["label"] == 1
    oof["prob"] = [LOW_TIE, LOW_TIE, 0.3, LOW_TIE, 0.7, 0.8]
    states = [_constant(-20.7).state_dict()]
    path = save_state_dicts(tmp_path / "m", states, _identity_scaled(0.5), oof=oof)
    model = load_model(_saved_before_format_2(path)).at_operating_point("sensitivity=1")
    assert model.threshold == LOW_TIE
    assert model.predict(_images(2)).tolist() == [1, 1]
    # Re-saved (say, at that point), the model stays format 1 and predicts so.
    again = load_model(save_state_dicts(tmp_path / "again", states, model.config, oof=model.oof))
    assert again.config["format_version"] == 1 and again.threshold == LOW_TIE
    assert again.predict(_images(2)).tolist() == [1, 1]


def _oof_frame(labels: list[int], probs: list[float]) -> Any:
    import pandas as pd

    oof = pd.DataFrame({"fold": [k % 2 for k in range(len(labels))], "label": labels})
    oof["is_positive"] = oof["label"] == 1
    oof["prob"] = probs
    return oof


def _over_confident(tmp_path: Path, *, format_1: bool) -> Any:
    """A model whose probabilities are all near 1e-12, its threshold chosen with
    sensitivity=1 on out-of-fold rows beyond 1e-7 (a prevalence of 0.5)."""
    member = _members(1)[0]
    with torch.no_grad():
        member.head[-1].weight.mul_(3.0)
        member.head[-1].bias.fill_(-30.0)
    oof = _oof_frame([0, 1, 0, 1], [1e-12, 1e-9, 1e-11, 1e-8])
    path = save_state_dicts(tmp_path / "m", [member.state_dict()], _identity_scaled(0.5), oof=oof)
    model = load_model(_recorded_as_format_1(path) if format_1 else path)
    return model.at_operating_point("sensitivity=1")


def _recorded_as_format_1(path: Path) -> Path:
    """``path`` as a format-1 model loaded and saved again (format_version 1 written):
    the clip holds, whatever its out-of-fold rows (``_unrecorded_format`` is not asked)."""
    return _with_config(path, format_version=1)


def test_an_unrecorded_format_is_told_by_the_out_of_fold_scores(tmp_path: Path) -> None:
    """Models saved in the days between the scalings keeping float64's order and
    config.json recording format 2 hold out-of-fold scores beyond what the clipped
    scalings give: they load as format 2 (order kept), older ones as format 1."""
    states = [_constant(-27.6).state_dict()]  # about 1e-12
    beyond = _oof_frame([0, 1, 0, 1], [1e-12, 1e-9, 1e-11, 1e-8])
    inside = _oof_frame([0, 1, 0, 1], [2e-7, 0.3, 0.2, 0.9])
    for name, oof, version in (("beyond", beyond, 2), ("inside", inside, 1)):
        path = save_state_dicts(tmp_path / name, states, _identity_scaled(0.5), oof=oof)
        model = load_model(_saved_before_format_2(path))
        assert model.config["format_version"] == version, name
        p = model.predict_proba(_images(2))
        if version == 2:
            assert (p < 1e-11).all()
        else:
            assert (p == LOW_TIE).all()
    plain = save_state_dicts(tmp_path / "plain", states, _config(), oof=beyond)
    assert load_model(_saved_before_format_2(plain)).config["format_version"] == 1  # no scalings


@pytest.mark.parametrize("format_1", [False, True])
def test_a_prevalence_move_keeps_every_decision_and_the_order_beyond_1e7(
    tmp_path: Path, format_1: bool
) -> None:
    # The reviewer's case: moved with the fit's 1e-7 clip, the threshold (1e-9) and every
    # probability (about 1e-12) came out as 1e-7, even at the model's own prevalence:
    # 200 images flagged instead of none, and the AUC 0.858 -> 0.500.
    from raydx.metrics import auc

    model = _over_confident(tmp_path, format_1=format_1)
    img = _images(200, seed=3)
    p, flagged = model.predict_proba(img), model.predict(img)
    assert model.threshold == 1e-9 and model.prevalence == 0.5
    if format_1:  # its scalings tie everything beyond 1e-7 above the threshold
        assert (p == LOW_TIE).all() and flagged.all()
    else:
        assert p.max() < 1e-11 and len(np.unique(p)) == 200 and not flagged.any()
    y = (np.random.default_rng(0).random(200) < (p > np.median(p)) * 0.8 + 0.1).astype(int)
    # Its own prevalence changes nothing, to the bit.
    same = model.at_prevalence(0.5)
    assert same.threshold == model.threshold
    assert same.predict_proba(img).tolist() == p.tolist()
    assert same.predict(img).tolist() == flagged.tolist()
    assert same.oof is not None and model.oof is not None
    assert same.oof["prob"].tolist() == model.oof["prob"].tolist()

    # Another moves every probability and the threshold by one logit shift: the same
    # decisions, the same order (so the same AUC), now for a rarer disease.
    def bayes(p: Any) -> Any:  # odds 1 (a prevalence of 0.5) -> 1/19 (0.05)
        odds = np.asarray(p) / (1 - np.asarray(p)) / 19
        return odds / (1 + odds)

    there = model.at_prevalence(0.05)
    q = there.predict_proba(img)
    assert there.threshold == pytest.approx(bayes(1e-9), rel=1e-12) and (q < p).all()
    assert there.predict(img).tolist() == flagged.tolist()
    assert list(np.argsort(q, kind="stable")) == list(np.argsort(p, kind="stable"))
    assert len(np.unique(q)) == len(np.unique(p)) and auc(y, q) == auc(y, p)
    np.testing.assert_allclose(q, bayes(p), rtol=1e-12)
    np.testing.assert_allclose(there.oof["prob"], bayes(model.oof["prob"]), rtol=1e-12)
    # Moving twice is moving once: decisions, threshold and probabilities.
    twice = model.at_prevalence(0.3).at_prevalence(0.05)
    assert twice.predict(img).tolist() == flagged.tolist()
    assert twice.threshold == pytest.approx(there.threshold, rel=1e-12)
    np.testing.assert_allclose(twice.predict_proba(img), q, rtol=1e-12)
    assert twice.config["class_mix"]["trained"] == there.config["class_mix"]["trained"]
    assert twice.config["class_mix"]["mapped_to"] == there.config["class_mix"]["mapped_to"]
    assert twice.prevalence == there.prevalence == 0.05


def _refit_with_a_fitted_mix(tmp_path: Path) -> tuple[Any, float]:
    """A refit-style model with a fitted class mix (0.5 -> 0.12), an out-of-fold positive
    saturated as the fit's clip leaves it, and its threshold there (sensitivity=1); its
    one member gives every image a saturated probability too."""
    from raydx.prior import shift

    mix = {"trained": [0.5, 0.5], "mapped_to": [0.88, 0.12], "nominal": [0.5, 0.5], "shift": -2.0}
    sat = float(shift(np.array([1e-11]), mix["trained"], mix["mapped_to"])[0])
    oof = _oof_frame([0, 1, 0, 1, 0, 1], [sat, sat, 0.01, 0.6, 0.02, 0.7])
    states = [_constant(-25.0).state_dict()]
    path = save_state_dicts(tmp_path / "m", states, _config() | {"class_mix": mix}, oof=oof)
    return load_model(path).at_operating_point("sensitivity=1"), sat


def test_a_prevalence_move_keeps_the_decisions_of_a_fitted_class_mix(tmp_path: Path) -> None:
    # The reviewer's second case: the threshold, on the saturated rows, was moved with
    # a second clip at 1e-7 where the images were moved once from their own: [1, 1, 1]
    # became [0, 0, 0] at the model's own prevalence.
    model, sat = _refit_with_a_fitted_mix(tmp_path)
    img = _images(3)
    assert model.threshold == sat and model.prevalence == 0.12
    assert model.predict_proba(img).tolist() == [sat] * 3  # the fit's clip, as saved
    assert model.predict(img).tolist() == [1, 1, 1]
    same = model.at_prevalence(0.12)
    assert same.threshold == sat and same.predict_proba(img).tolist() == [sat] * 3
    assert same.predict(img).tolist() == [1, 1, 1]
    once = model.at_prevalence(0.05)
    twice = model.at_prevalence(0.3).at_prevalence(0.05)
    for moved in (once, twice):
        p = moved.predict_proba(img)
        assert p[0] == moved.threshold < sat  # still on the threshold, as the rows are
        assert moved.predict(img).tolist() == [1, 1, 1]
        assert moved.config["class_mix"]["trained"] == [0.5, 0.5]
        assert moved.config["class_mix"]["as_saved"]["mapped_to"] == [0.88, 0.12]
    assert twice.threshold == pytest.approx(once.threshold, rel=1e-12)
    # Saved moved and loaded again, it predicts as it did.
    states = [m.state_dict() for m in twice.members]
    again = load_model(save_state_dicts(tmp_path / "again", states, twice.config, oof=twice.oof))
    assert again.threshold == twice.threshold and again.prevalence == 0.05
    assert again.predict_proba(img).tolist() == twice.predict_proba(img).tolist()
    assert again.predict(img).tolist() == [1, 1, 1]


def test_a_class_mix_moved_by_an_older_raydx_is_one_clipped_shift_as_it_was(
    tmp_path: Path,
) -> None:
    # Older raydx wrote a move as {trained, mapped_to} alone, applied as one shift from
    # the networks' probabilities with the fit's clip, its out-of-fold rows and its
    # threshold moved with it: a model saved so predicts so, and moves on from there.
    from raydx.prior import shift

    mix = {"trained": [0.5, 0.5], "mapped_to": [0.95, 0.05]}
    tie = float(shift(np.array([1e-7]), mix["trained"], mix["mapped_to"])[0])
    oof = _oof_frame([0, 1, 0, 1], [tie, tie, 0.01, 0.3])
    states = [_constant(-25.0).state_dict()]
    config = _config(threshold=tie) | {"class_mix": mix}
    model = load_model(save_state_dicts(tmp_path / "m", states, config, oof=oof))
    img = _images(2)
    assert model.predict_proba(img).tolist() == [tie] * 2
    assert model.predict(img).tolist() == [1, 1] and model.prevalence == 0.05
    there = model.at_prevalence(0.2)
    assert there.predict_proba(img).tolist() == [there.threshold] * 2
    assert there.predict(img).tolist() == [1, 1]


def test_a_prevalence_needs_two_classes_out_of_fold(tmp_path: Path) -> None:
    oof = _oof_frame([1, 1], [0.3, 0.6])
    path = save_state_dicts(tmp_path / "m", [_members(1)[0].state_dict()], _config(), oof=oof)
    with pytest.raises(RaydxError, match=r"hold one class \(a prevalence of 1\)"):
        load_model(path).at_prevalence(0.1)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "2", 0])
def test_a_format_version_this_raydx_cannot_read_is_an_error(
    tmp_path: Path, version: object
) -> None:
    path = _with_config(_save(tmp_path / "m", _members(1), _config()), format_version=version)
    with pytest.raises(RaydxError, match="format_version") as info:
        load_model(path)
    if version == FORMAT_VERSION + 1:
        assert f"reads up to format_version={FORMAT_VERSION}" in str(info.value)
    else:
        assert f"format_version={version!r}" in str(info.value)


@pytest.mark.parametrize("saved_by", ["0.0.9", None])
def test_saved_hyperparameters_this_raydx_lacks_are_one_clear_error(
    tmp_path: Path, saved_by: str | None
) -> None:
    cfg = _config()
    cfg["params"] = {
        "family": "cnn",
        "model": "cnn_tiny",
        "dropout": 0.1,
        "stem_stride": 2,
        "warmup_epochs": 3,
    }
    path = _save(tmp_path / "m", _members(1), cfg)
    _with_config(path, raydx_version=_GONE if saved_by is None else saved_by)
    with pytest.raises(RaydxError) as info:
        load_model(path)
    msg = str(info.value)
    assert f"model folder '{path}'" in msg
    assert "'stem_stride', 'warmup_epochs'" in msg  # every one, not only the first
    assert f"this raydx ({raydx.__version__})" in msg
    if saved_by is None:
        assert "did not record its version" in msg and "the raydx version that saved it" in msg
    else:
        assert "saved by raydx 0.0.9" in msg and "load it with raydx 0.0.9" in msg
    assert "'dropout'" not in msg


@pytest.mark.parametrize(
    ("kind", "name"), [("model", "cnn_resnet9"), ("family", "diffusion")], ids=["model", "family"]
)
def test_a_saved_model_or_family_this_raydx_lacks_is_one_clear_error(
    tmp_path: Path, kind: str, name: str
) -> None:
    path = _with_config(
        _save(tmp_path / "m", _members(1), _config()),
        params={"family": "cnn", "model": "cnn_tiny", "dropout": 0.1, kind: name},
        raydx_version="0.0.9",
    )
    with pytest.raises(RaydxError) as info:
        load_model(path)
    msg = str(info.value)
    assert f"model folder '{path}' was saved by raydx 0.0.9 with {kind} {name!r}" in msg
    assert f"this raydx ({raydx.__version__}) does not have" in msg
    assert "load it with raydx 0.0.9" in msg
    assert "if your own code registered it (@register_model, @register_family), import" in msg
    # 0.1.0 was the number of every commit before 2026-12-07; this one: another commit
    for version, which in (
        ("0.1.0", "a commit of raydx from before 2026-12-07 (version 0.1.0)"),
        (raydx.__version__, f"the commit of raydx {raydx.__version__} that saved it"),
    ):
        _with_config(path, raydx_version=version)
        with pytest.raises(RaydxError, match=r"if your own code registered it") as info:
            load_model(path)
        assert f"otherwise load it with {which}, or train the model again" in str(info.value)


def test_an_unrecorded_format_is_told_fold_by_fold() -> None:
    """Each fold's rows went through its own model's scaling: rows beyond fold 0's clipped
    end (intercept +3) but above fold 1's (intercept -3) still tell format 2."""
    import pandas as pd

    from raydx.artifact import _unrecorded_format
    from raydx.fold_calibration import KEEP_ORDER, Platt

    cfg = {"member_calibration": {"members": [{"slope": 1.0, "intercept": 3.0},
                                              {"slope": 1.0, "intercept": -3.0}]}}  # fmt: skip
    raw0, raw1 = np.array([1e-9, 5e-9, 0.3, 0.9]), np.array([0.2, 0.4, 0.6, 0.8])
    prob = np.r_[Platt(1, 3.0, KEEP_ORDER)(raw0), Platt(1, -3.0, KEEP_ORDER)(raw1)]
    oof = pd.DataFrame({"fold": [0] * 4 + [1] * 4, "prob": prob})
    assert _unrecorded_format(cfg, oof) == 2
    assert _unrecorded_format(cfg, oof.assign(prob=np.r_[raw1, raw1])) == 1
