"""--intensity: how 16-bit, float and DICOM pixels become the 0-255 a network sees."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from image_files import dicom_bytes, png_bytes
from PIL import Image

from raydx.config import RunOptions
from raydx.data.decode import decode
from raydx.data.intensity import Intensity, intensity_note, scaled_count
from raydx.errors import RaydxError

RANGE_12 = Intensity.parse("range:0:4095")
PCT = Intensity.parse("percentile")


def _grey(raw: bytes, intensity: Intensity, size: int = 16) -> np.ndarray:
    return decode(raw, size, intensity).image[..., 0].astype(int)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("auto", "auto"),
        (" AUTO ", "auto"),
        ("percentile", "percentile:0.5:99.5"),
        ("percentile:1:99", "percentile:1:99"),
        ("range:-1000:400", "range:-1000:400"),
        ("Range: 0 : 4095", "range:0:4095"),
        ("range:0.5:2.5e3", "range:0.5:2500"),
    ],
)
def test_the_forms_parse_to_one_spelling(text: str, spec: str) -> None:
    assert str(Intensity.parse(text)) == spec
    assert str(Intensity.parse(spec)) == spec  # the spelling run.json keeps reads back
    assert RunOptions(intensity=text).intensity == spec


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("precentile", "Did you mean 'percentile'?"),
        ("minmax", "Unknown intensity 'minmax'"),
        ("range", "needs two values, as range:LOW:HIGH (e.g. range:-1000:400)"),
        ("range:0", "needs two values"),
        ("range:a:b", "needs two numbers"),
        ("range:400:-1000", "needs finite LOW < HIGH"),
        ("range:0:inf", "needs finite LOW < HIGH"),
        ("percentile:1:101", "needs 0 <= LOW < HIGH <= 100"),
        ("auto:1:2", "'auto' takes no values"),
        ("", "intensity must be one of"),
    ],
)
def test_a_wrong_form_is_refused_with_what_is_allowed(text: str, words: str) -> None:
    with pytest.raises(RaydxError, match="intensity") as e:
        RunOptions(intensity=text)
    assert words in str(e.value)
    assert repr(text) in str(e.value) or "Unknown" in str(e.value)


def test_auto_stretches_each_16_bit_image_min_max() -> None:
    a = np.linspace(1000, 3000, 256).reshape(16, 16).astype(np.uint16)
    got = _grey(png_bytes(a), Intensity())
    assert got.min() == 0 and got.max() == 255
    want = np.rint((a.astype(np.float64) - 1000) * 255 / 2000)
    assert np.abs(got - want).max() <= 1


def test_percentile_keeps_one_hot_pixel_from_darkening_the_image() -> None:
    """A burnt-in marker or a dead detector element at full scale: min-max maps the
    tissue (0-1000) onto 0-4 of 255; the percentiles map it onto nearly all of it."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 1000, (64, 64)).astype(np.uint16)
    a[5, 5] = 65535
    auto = decode(png_bytes(a), 64, Intensity()).image[..., 0]
    pct = decode(png_bytes(a), 64, PCT).image[..., 0]
    assert np.percentile(auto, 99) <= 4
    assert pct.max() == 255 and np.percentile(pct, 50) > 100
    lo, hi = np.percentile(a.astype(np.float32), [0.5, 99.5])
    want = np.rint(np.clip((a.astype(np.float64) - lo) * 255 / (hi - lo), 0, 255))
    assert np.abs(pct.astype(int) - want).max() <= 1


def test_a_fixed_range_keeps_two_exposures_apart() -> None:
    """The same tissue at half the dose: alike under auto (absolute intensity is lost),
    apart under a fixed range, which also clips what lies beyond it."""
    a = np.linspace(0, 2000, 256).reshape(16, 16).astype(np.uint16)
    dim, bright = png_bytes(a), png_bytes(a * 2)
    assert np.array_equal(_grey(dim, Intensity()), _grey(bright, Intensity()))
    d, b = _grey(dim, RANGE_12), _grey(bright, RANGE_12)
    assert d.max() == round(2000 * 255 / 4095) and b.max() == round(4000 * 255 / 4095)
    clipped = _grey(png_bytes(a * 3), RANGE_12)  # up to 6000 > 4095
    assert clipped.max() == 255 and (clipped == 255).mean() > 0.2


def test_eight_bit_and_colour_images_pass_unchanged_whatever_the_setting() -> None:
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    for raw in (png_bytes(grey), png_bytes(rgb)):
        want = decode(raw, 16).image
        for scaling in (PCT, RANGE_12, Intensity.parse("range:100:200")):
            assert np.array_equal(decode(raw, 16, scaling).image, want)


def test_a_float_image_with_no_data_pixels_under_a_range() -> None:
    a = np.full((16, 16), 0.5, np.float32)
    a[0, :] = np.nan
    buf = io.BytesIO()
    Image.fromarray(a, mode="F").save(buf, format="TIFF")
    got = _grey(buf.getvalue(), Intensity.parse("range:0:1"))
    assert (got[1:] == 128).all()  # 0.5 of [0, 1]
    assert (got[0] == 0).all()  # NaN reads as the range's low end


def test_a_dicom_range_is_in_rescaled_units_and_overrides_the_files_window() -> None:
    """CT: stored 0-4095 with intercept -1024 is -1024..3071 HU; a lung window set by the
    user wins over the soft-tissue window in the file."""
    stored = np.linspace(0, 4095, 256).round().astype(np.uint16).reshape(16, 16)
    raw = dicom_bytes(
        stored,
        BitsStored=12,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    hu = stored.astype(np.float64) - 1024
    lung = _grey(raw, Intensity.parse("range:-1000:400"))
    want = np.rint(np.clip((hu + 1000) * 255 / 1400, 0, 255))
    assert np.abs(lung - want).max() <= 1
    assert not np.array_equal(lung, _grey(raw, Intensity()))  # auto: the file's window
    inverted = dicom_bytes(
        stored, "MONOCHROME1", BitsStored=12, RescaleSlope=1, RescaleIntercept=-1024
    )
    assert np.array_equal(_grey(inverted, Intensity.parse("range:-1000:400")), 255 - lung)


def test_the_note_says_what_was_scaled_and_warns_when_nothing_was() -> None:
    modes = {
        "L": 10,
        "I;16": 4,
        "DICOM MONOCHROME2 12-bit with a window": 3,
        "DICOM MONOCHROME1 8-bit": 5,  # no rescale, window or LUT: passed unchanged
        "DICOM MONOCHROME2 8-bit with a window": 6,  # 8-bit with a window: mapped
        "DICOM MONOCHROME2 16-bit": 7,  # recorded before modes named the mapping
        "DICOM RGB 8-bit": 2,
        "F": 1,
    }
    assert scaled_count(modes) == 21
    note = intensity_note("range:0:4095", modes)
    assert note.startswith("21 16-bit, float or DICOM greyscale images") and "0 to 4095" in note
    assert intensity_note("auto", {"L": 10}) == ""
    assert intensity_note("percentile:0.5:99.5", {"L": 10, "RGB": 2}).startswith(
        "WARNING: intensity percentile:0.5:99.5 changes nothing here"
    )
    assert intensity_note("range:0:1", None).startswith("WARNING")  # an .npz: uint8 already


def _model_with_intensity(tmp_path: Path, intensity: str) -> Path:
    """test_predict's tiny saved model, as if trained with ``intensity``."""
    from test_predict import _model_dir

    model_dir = _model_dir(tmp_path)
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["preprocessing"]["intensity"] = intensity
    cfg_path.write_text(json.dumps(cfg))
    return model_dir


@pytest.mark.ray
def test_a_folder_is_decoded_and_predicted_with_the_models_intensity(
    ray_session, tmp_path: Path
) -> None:
    """The setting travels: ingestion decodes with it, the model folder keeps it, and
    ``raydx predict`` reads new files the same way (a model trained on a fixed range
    must not see new images min-max stretched)."""
    from test_predict import SIZE

    from raydx.artifact import load_model
    from raydx.data.sources import load_source
    from raydx.predict import predict_files

    rng = np.random.default_rng(2)
    for c in ("malignant", "normal, benign"):
        (tmp_path / "data" / c).mkdir(parents=True)
        for i in range(3):
            a = rng.integers(0, 1500, (SIZE, SIZE)).astype(np.uint16)
            (tmp_path / "data" / c / f"{i}.png").write_bytes(png_bytes(a))
    table = load_source(str(tmp_path / "data"), image_size=SIZE, intensity="range:0:4095")
    assert table.images.max() <= round(1500 * 255 / 4095)  # not stretched to 255
    assert table.info["modes"] == {"I;16": 6}

    model_dir = _model_with_intensity(tmp_path, "range:0:4095")
    model = load_model(model_dir)
    assert model.preprocessing.intensity == "range:0:4095"
    pred = predict_files(model_dir, tmp_path / "data")
    order = np.argsort(pred.table["path"].to_numpy())
    files = sorted((tmp_path / "data").rglob("*.png"))
    images = np.stack([decode(f.read_bytes(), SIZE, RANGE_12).image for f in files])
    got = pred.table["prob_malignant"].to_numpy()[order]
    np.testing.assert_allclose(got, model.predict_proba(images), atol=1e-6)
    stretched = np.stack([decode(f.read_bytes(), SIZE).image for f in files])
    assert np.abs(got - model.predict_proba(stretched)).max() > 1e-3  # auto would differ


def test_a_space_files_run_section_sets_it_and_a_flag_overrides(tmp_path: Path) -> None:
    from raydx.run import resolve_options
    from raydx.space import load_space

    path = tmp_path / "s.yaml"
    path.write_text(
        "run: {intensity: range:-1000:400}\n"
        "params:\n  lr: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}\n"
    )
    space = load_space(path)
    assert resolve_options(space, {}).intensity == "range:-1000:400"
    assert resolve_options(space, {"intensity": "percentile"}).intensity == "percentile:0.5:99.5"
    path.write_text(path.read_text().replace("range:", "rnge:"))
    with pytest.raises(RaydxError, match=r"run.intensity: Unknown intensity 'rnge'. Did you mean"):
        load_space(path)


def _npz(path: Path, images: np.ndarray) -> Path:
    y = np.arange(len(images)) % 2
    np.savez(path, train_images=images, train_labels=y)
    return path


def test_an_npz_of_hounsfield_units_or_floats_is_scaled_as_files_are(tmp_path: Path) -> None:
    """int16 CT slices in HU, float images: brought to 0-255 image by image as
    --intensity says; integers within 0-255 stay 8-bit pixels stored wide."""
    from raydx.data.npz import load_npz

    rng = np.random.default_rng(4)
    hu = rng.integers(-1024, 2000, (6, 8, 8)).astype(np.int16)
    t = load_npz(_npz(tmp_path / "ct.npz", hu), intensity="range:-1000:400")
    want = np.rint(np.clip((hu.astype(np.float64) + 1000) * 255 / 1400, 0, 255))
    assert np.abs(t.images[..., 0].astype(int) - want).max() <= 1
    assert t.info == {"array_modes": {"I;16": 6}}
    auto = load_npz(_npz(tmp_path / "ct.npz", hu))
    assert (auto.images.reshape(6, -1).min(1) == 0).all()
    assert (auto.images.reshape(6, -1).max(1) == 255).all()  # min-max per image

    floats = rng.random((4, 8, 8)).astype(np.float32)
    floats[0, 0, 0] = np.nan
    f = load_npz(_npz(tmp_path / "f.npz", floats), intensity="range:0:1")
    assert f.info == {"array_modes": {"F": 4}} and f.images[0, 0, 0, 0] == 0
    assert np.abs(f.images[1, ..., 0] - np.rint(floats[1] * 255)).max() <= 1

    wide = rng.integers(0, 256, (4, 8, 8)).astype(np.int64)
    w = load_npz(_npz(tmp_path / "w.npz", wide))
    assert np.array_equal(w.images[..., 0], wide) and w.info == {}
    assert intensity_note("auto", w.info.get("array_modes")) == ""

    with pytest.raises(
        RaydxError, match=r"holds colour images of dtype=float32 that are not 8-bit"
    ):
        load_npz(_npz(tmp_path / "c.npz", rng.random((4, 8, 8, 3)).astype(np.float32)))
    with pytest.raises(RaydxError, match=r"image 0: every pixel is NaN or infinite"):
        load_npz(_npz(tmp_path / "n.npz", np.full((4, 8, 8), np.nan, np.float32)))


def test_percentiles_of_8_and_16_bit_values_from_a_histogram_equal_numpys() -> None:
    rng = np.random.default_rng(7)
    for dtype in (np.uint8, np.uint16):
        for _ in range(100):
            top = int(rng.integers(1, np.iinfo(dtype).max + 1))
            shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
            a = rng.integers(0, top, shape, endpoint=True).astype(dtype)
            q = Intensity("percentile", float(rng.uniform(0, 50)), float(rng.uniform(50, 100)))
            want = np.percentile(a.astype(np.float64), [q.low, q.high])
            np.testing.assert_allclose(q.bounds(a), want, rtol=0, atol=1e-9)
    assert Intensity("percentile", 0, 100).bounds(np.array([7], np.uint16)) == (7.0, 7.0)


def test_a_saved_model_scales_arrays_on_request_as_its_training_files_were(
    tmp_path: Path,
) -> None:
    """``model.to_uint8`` gives the bytes ``raydx predict`` would decode from the same
    pixels saved as a 16-bit PNG; ``predict_proba`` refuses non-uint8 and says so."""
    from test_predict import SIZE

    from raydx.artifact import load_model

    model = load_model(_model_with_intensity(tmp_path, "percentile:1:99"))
    rng = np.random.default_rng(8)
    batch = rng.integers(0, 4096, (3, SIZE, SIZE)).astype(np.uint16)
    from_files = np.stack(
        [decode(png_bytes(a), SIZE, Intensity.parse("percentile:1:99")).image for a in batch]
    )
    assert np.array_equal(model.to_uint8(batch), from_files[..., 0])
    assert np.array_equal(model.to_uint8(batch[..., None]), from_files[..., 0])
    with pytest.raises(RaydxError, match=r"intensity 'percentile:1:99'\) with model.to_uint8"):
        model.predict_proba(batch)
    assert model.predict_proba(model.to_uint8(batch)).shape == (3,)
    with pytest.raises(RaydxError, match=r"to_uint8 takes grey images .* shape \(3, 16, 16, 3\)"):
        model.to_uint8(np.zeros((3, SIZE, SIZE, 3), np.float32))
    with pytest.raises(RaydxError, match=r"image 1: every pixel is NaN"):
        model.to_uint8(np.stack([np.ones((SIZE, SIZE)), np.full((SIZE, SIZE), np.nan)]))


def _dicom_grey(raw: bytes, text: str = "auto") -> np.ndarray:
    from raydx.data.dicom import read_dicom

    return read_dicom(raw, Intensity.parse(text)).picture.astype(int)


def test_an_empty_or_zero_width_window_falls_back_to_min_max() -> None:
    """Empty window tags occur in the wild; they used to give an all-black image."""
    stored = np.linspace(0, 4095, 256).round().astype(np.uint16).reshape(16, 16)
    want = _dicom_grey(dicom_bytes(stored, BitsStored=12))
    assert want.min() == 0 and want.max() == 255
    for window in ({"WindowCenter": "", "WindowWidth": ""}, {"WindowCenter": 40, "WindowWidth": 0}):
        assert np.array_equal(_dicom_grey(dicom_bytes(stored, BitsStored=12, **window)), want)


def test_eight_bit_dicom_passes_unchanged_as_an_8_bit_png_does() -> None:
    rng = np.random.default_rng(9)
    pixels = rng.integers(60, 180, (16, 16)).astype(np.uint8)
    for text in ("auto", "percentile", "range:-1000:400"):
        assert np.array_equal(_dicom_grey(dicom_bytes(pixels), text), pixels)
        assert np.array_equal(_dicom_grey(dicom_bytes(pixels, "MONOCHROME1"), text), 255 - pixels)
    windowed = _dicom_grey(dicom_bytes(pixels, WindowCenter=120, WindowWidth=40))
    assert windowed.min() == 0 and windowed.max() == 255  # a window is still applied


def test_a_voi_lut_maps_one_stored_value_to_one_byte_in_every_image() -> None:
    from test_dicom import _voi_lut

    rng = np.random.default_rng(10)
    bytes_of_1200 = set()
    for top in (1500, 4000):
        stored = rng.integers(0, top, (16, 16)).astype(np.uint16)
        stored[0, 0] = 1200
        raw = dicom_bytes(stored, BitsStored=12, VOILUTSequence=_voi_lut(0, 4096, 12))
        bytes_of_1200.add(int(_dicom_grey(raw)[0, 0]))
    want = round(np.sqrt(1200 / 4095) * 4095 * 255 / 4095)
    assert bytes_of_1200 == {want} or max(abs(b - want) for b in bytes_of_1200) <= 1
    assert len(bytes_of_1200) == 1


def test_padding_outside_the_field_of_view_is_no_part_of_the_scale() -> None:
    """CT corners padded at -3024 HU: min-max and percentiles are taken over the tissue,
    and the padding is background (0)."""
    stored = np.linspace(24, 4095, 400).round().astype(np.uint16).reshape(20, 20)
    stored[:6, :6] = 0  # PixelPaddingValue is in stored units: 0 is -1024 here
    raw = dicom_bytes(
        stored, BitsStored=12, RescaleSlope=1, RescaleIntercept=-1024, PixelPaddingValue=0
    )
    for text in ("auto", "percentile:0:100"):
        got = _dicom_grey(raw, text)
        assert (got[:6, :6] == 0).all()
        tissue = got[6:, 6:]
        assert tissue.max() == 255 and got[stored == stored[stored > 0].min()].min() == 0
    stored[:6, :6] = 4095  # padding at the top of the range (MONOCHROME1 exports)
    raw = dicom_bytes(stored, BitsStored=12, PixelPaddingValue=4095)
    got = _dicom_grey(raw)
    assert (got[:6, :6] == 0).all() and got[6:, 6:].max() == 255


def test_values_keep_every_digit_the_user_typed() -> None:
    assert RunOptions(intensity="range:0:1234567").intensity == "range:0:1234567"
    assert str(Intensity.parse("range:100000.1:100000.4")) == "range:100000.1:100000.4"
    assert str(Intensity.parse("percentile:0.25:99.75")) == "percentile:0.25:99.75"
    assert "percentiles 1 to 99" in Intensity.parse("percentile:1:99").describe()
    with pytest.raises(RaydxError, match=r"intensity must be one of 'auto', .* intensity=5"):
        RunOptions(intensity=5)  # type: ignore[arg-type]


def test_inf_clips_and_wide_integers_keep_their_precision() -> None:
    from raydx.data.intensity import scale_grey

    f = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    f[0, 0], f[0, 1] = np.inf, -np.inf
    got = scale_grey(f, Intensity.parse("range:0:1"))
    assert got[0, 0] == 255 and got[0, 1] == 0
    wide = (10**8 + np.arange(1024)).reshape(32, 32).astype(np.int64)
    assert len(np.unique(scale_grey(wide, Intensity()))) == 256


def test_an_npz_scales_every_split_by_one_rule(tmp_path: Path) -> None:
    from raydx.data.npz import load_npz

    rng = np.random.default_rng(11)
    train = rng.integers(16, 200, (6, 8, 8)).astype(np.uint16)
    val = train[:2].copy()
    val[0, 0, 0] = 300  # beyond 8 bits: the whole set is 16-bit data
    y = np.arange(6) % 2
    path = tmp_path / "s.npz"
    np.savez(path, train_images=train, train_labels=y, val_images=val, val_labels=y[:2])
    t = load_npz(path)
    assert t.info == {"array_modes": {"I;16": 8}}
    assert (t.images[:6].reshape(6, -1).max(1) == 255).all()  # train stretched too
    colour = rng.integers(0, 256, (4, 8, 8, 3)).astype(np.int64)
    np.savez(path, train_images=colour, train_labels=y[:4])
    c = load_npz(path, intensity="range:0:4095")
    assert np.array_equal(c.images, colour) and c.info == {}


def test_to_uint8_passes_8_bit_arrays_as_npz_loading_does(tmp_path: Path) -> None:
    from test_predict import SIZE, _model_dir

    from raydx.artifact import load_model

    model = load_model(_model_dir(tmp_path))
    rng = np.random.default_rng(12)
    eight = rng.integers(40, 200, (2, SIZE, SIZE)).astype(np.uint8)
    assert np.array_equal(model.to_uint8(eight), eight)
    assert np.array_equal(model.to_uint8(eight.astype(np.int64)), eight)


def _model_trained_on(tmp_path: Path, modes: dict[str, int] | None) -> Path:
    """test_predict's tiny model, saved with intensity ``auto`` and these training modes
    (None: saved before config.json recorded them)."""
    model_dir = _model_with_intensity(tmp_path, "auto")
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg.pop("input_modes", None)
    if modes is not None:
        cfg["input_modes"] = modes
    (model_dir / "config.json").write_text(json.dumps(cfg))
    return model_dir


def test_a_dim_16_bit_image_gets_one_set_of_bytes_alone_in_a_batch_and_at_training(
    tmp_path: Path,
) -> None:
    """A 12-bit image whose values all lie within 0-255: stretched when a 12-bit set is
    loaded (one image beyond 255 makes the set 16-bit data) and when its 16-bit PNG is
    decoded, so a model trained on either stretches it too, alone or beside a bright one,
    not cast as if 8-bit pixels."""
    from test_predict import SIZE

    from raydx.artifact import load_model
    from raydx.data.intensity import AUTO, modes_of, scale_images
    from raydx.data.npz import load_npz

    rng = np.random.default_rng(14)
    dim = rng.integers(50, 200, (SIZE, SIZE)).astype(np.uint16)
    bright = rng.integers(0, 4096, (SIZE, SIZE)).astype(np.uint16)
    loaded = load_npz(_npz(tmp_path / "12bit.npz", np.stack([dim, bright])))
    want = loaded.images[0, ..., 0]
    assert want.min() == 0 and want.max() == 255  # stretched at training
    assert np.array_equal(decode(png_bytes(dim), SIZE).image[..., 0], want)  # as a file

    # as final.py records them
    for modes in (modes_of(loaded.info), {"I;16": 40}):
        model = load_model(_model_trained_on(tmp_path / str(len(modes)), modes))
        assert np.array_equal(model.to_uint8(dim[None])[0], want)
        assert np.array_equal(model.to_uint8(np.stack([dim, bright]))[0], want)
        assert np.array_equal(model.to_uint8(np.stack([bright, dim]))[1], want)
        assert np.array_equal(model.to_uint8(dim[None].astype(np.int64))[0], want)

    alone, scaled = scale_images(dim[None, ..., None], AUTO, eight_bit=False)
    together, _ = scale_images(np.stack([dim, bright])[..., None], AUTO, eight_bit=False)
    assert scaled and np.array_equal(alone[0, ..., 0], want)
    assert np.array_equal(together[0, ..., 0], want)


def test_a_model_trained_on_8_bit_pixels_casts_each_wide_8_bit_image_beside_any_other(
    tmp_path: Path,
) -> None:
    """8-bit pixels stored wide stay as they were, whether or not a 16-bit image shares
    the batch; the 16-bit one is stretched as it would be alone."""
    from test_predict import SIZE

    from raydx.artifact import load_model
    from raydx.data.intensity import scale_grey

    rng = np.random.default_rng(15)
    eight = rng.integers(40, 200, (SIZE, SIZE)).astype(np.int64)
    bright = rng.integers(0, 4096, (SIZE, SIZE)).astype(np.int64)
    for i, modes in enumerate(({}, {"L": 10, "RGB": 2}, {"DICOM MONOCHROME2 8-bit": 3})):
        model = load_model(_model_trained_on(tmp_path / str(i), modes))
        got = model.to_uint8(np.stack([eight, bright]))
        assert np.array_equal(got[0], eight)
        assert np.array_equal(got[1], scale_grey(bright, Intensity()))
        assert np.array_equal(model.to_uint8(eight[None])[0], eight)


def test_float_pixel_data_dicom_is_read() -> None:
    import pydicom as pd_

    raw = dicom_bytes(np.zeros((8, 8), np.uint16))
    ds = pd_.dcmread(io.BytesIO(raw))
    del ds.PixelData
    del ds.PixelRepresentation, ds.BitsStored, ds.HighBit
    ds.BitsAllocated = 32
    values = np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)
    want = np.rint((values.astype(np.float64) + 1) * 255 / 4)
    for hole in (False, True):
        if hole:
            values[0, 1] = np.nan  # no data: the low end, not a failed image
        ds.FloatPixelData = values.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        got = _dicom_grey(buf.getvalue())
        assert np.abs(got - want).ravel()[2:].max() <= 1
        assert got[0, 1] == (0 if hole else want[0, 1])


def test_to_uint8_warns_for_a_model_trained_on_dicom_windows(tmp_path: Path) -> None:
    import warnings

    from raydx.artifact import load_model

    model_dir = _model_with_intensity(tmp_path, "auto")
    cfg = json.loads((model_dir / "config.json").read_text())
    batch = np.random.default_rng(13).integers(0, 4096, (2, 16, 16)).astype(np.uint16)

    def warned(modes: dict[str, int], intensity: str = "auto") -> list[str]:
        cfg["input_modes"] = modes
        cfg["preprocessing"]["intensity"] = intensity
        (model_dir / "config.json").write_text(json.dumps(cfg))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_model(model_dir).to_uint8(batch)
        return [str(w.message) for w in caught]

    window = "trained on 40 DICOM files with a window or VOI LUT (or not recorded)"
    assert [window in w for w in warned({"DICOM MONOCHROME2 12-bit with a window": 40})] == [True]
    assert [window in w for w in warned({"DICOM MONOCHROME2 12-bit with a VOI LUT": 40})] == [True]
    # a mode recorded before modes named the mapping may have had a window
    assert [window in w for w in warned({"DICOM MONOCHROME2 12-bit": 40})] == [True]
    # min-max per image, as arrays are scaled; 8-bit files passed unchanged
    assert (
        warned({"DICOM MONOCHROME2 12-bit without a window": 40, "DICOM MONOCHROME2 8-bit": 3})
        == []
    )
    assert warned({"DICOM MONOCHROME2 12-bit with a window": 40}, "range:-1000:400") == []
    # MONOCHROME1 files were inverted when read, whatever the setting; arrays are not
    (inverted,) = warned({"DICOM MONOCHROME1 12-bit without a window": 7}, "range:0:4095")
    assert inverted.startswith("this model was trained on 7 MONOCHROME1 DICOM files")


def test_infinite_bounds_are_refused_not_turned_into_a_constant_image() -> None:
    from raydx.data.intensity import to_byte

    with pytest.raises(
        ValueError, match=r"cannot map pixel values onto 0-255 between -inf and inf"
    ):
        to_byte(np.arange(4.0), -np.inf, np.inf)
