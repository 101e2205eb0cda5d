"""Shortcut warnings: a file property that alone tells the classes apart is named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raydx.data.shortcuts import fixed_place_notes, shortcut_notes
from raydx.data.sources import load_source

Y = np.array(["benign"] * 12 + ["malignant"] * 12)


def test_a_format_confined_to_one_class_is_warned_about() -> None:
    notes = shortcut_notes(Y, {"format": np.array(["PNG"] * 12 + ["JPEG"] * 12)})
    assert len(notes) == 1 and notes[0].startswith(
        "WARNING: the file format alone tells the classes apart (balanced accuracy 1.00; "
        "'benign': PNG 12; 'malignant': JPEG 12)"
    )


@pytest.mark.parametrize("seed", range(10))
def test_properties_mixed_across_classes_say_nothing(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mixed = {
        "format": rng.choice(["PNG", "JPEG"], 24),
        "mode": rng.choice(["L", "RGB", "I;16"], 24),
        "size": np.array([f"{w}x{h}" for w, h in rng.integers(200, 600, (24, 2))]),
        "one": np.array(["L"] * 24),
    }
    assert shortcut_notes(Y, mixed) == []


def test_many_sizes_are_compared_by_pixel_count() -> None:
    rng = np.random.default_rng(0)
    sides = np.r_[rng.integers(400, 600, 12), rng.integers(200, 300, 12)]
    (note,) = shortcut_notes(Y, {"size": np.array([f"{s}x{s}" for s in sides])})
    assert (
        "image size alone tells 'benign' apart from the rest (its images are larger: AUC 1.00"
        in note
    )


def test_too_few_images_per_class_say_nothing() -> None:
    y = np.array(["a"] * 4 + ["b"] * 4)
    assert shortcut_notes(y, {"format": np.array(["PNG"] * 4 + ["JPEG"] * 4)}) == []


@pytest.mark.ray
def test_a_folder_of_colour_against_grey_is_warned_about(ray_session, tmp_path) -> None:
    """The audit's case: the same texture in both classes, only the colour mode differs
    (it scored CV and test AUC 1.000 after one epoch)."""
    rng = np.random.default_rng(1)
    for cls, colour in (("benign", False), ("malignant", True)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(a if colour else a[..., 0]).save(tmp_path / cls / f"{i}.png")
    notes = load_source(str(tmp_path)).info["notes"]
    assert any(
        n.startswith(
            "WARNING: the colour mode (with bit depth and colour profile; for DICOM, the "
            "window it carries) alone tells the classes apart"
        )
        for n in notes
    ), notes


@pytest.mark.ray
def test_a_class_photographed_in_its_own_colour_space_is_warned_about(ray_session, tmp_path):
    """One class's photos carry an Adobe RGB profile, the other's none: converted to sRGB
    they differ in colour, and the profile itself is a mark of where they came from."""
    from image_files import icc_profile, photo_bytes

    rng = np.random.default_rng(2)
    for cls, icc in (("benign", None), ("malignant", icc_profile())):
        (tmp_path / cls).mkdir()
        for i in range(6):
            a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            (tmp_path / cls / f"{i}.jpg").write_bytes(photo_bytes(a, "JPEG", icc))
    info = load_source(str(tmp_path)).info
    assert info["modes"] == {"RGB": 6, "RGB with ICC profile 'Adobe RGB (1998)'": 6}
    (note,) = [n for n in info["notes"] if "colour mode" in n]
    assert "'malignant': RGB with ICC profile 'Adobe RGB (1998)' 6" in note, note


BREAST_NAMES = ("malignant", "normal, benign")


def _breast(path) -> tuple[np.ndarray, np.ndarray]:
    d = np.load(path)
    x = np.concatenate([d[f"{s}_images"] for s in ("train", "val", "test")])[..., None]
    y = np.concatenate([d[f"{s}_labels"] for s in ("train", "val", "test")]).ravel()
    return x, y.astype(np.int64)


def test_breastmnist_and_the_synthetic_set_have_no_fixed_place_shortcut(breastmnist) -> None:
    from raydx.data.synthetic import make_synthetic

    x, y = _breast(breastmnist)
    assert fixed_place_notes(x, y, BREAST_NAMES) == []
    for size in (28, 64):
        t = make_synthetic(600, image_size=size)
        assert fixed_place_notes(t.images, t.labels, t.class_names) == []


def test_text_burnt_into_one_classs_corner_is_found_and_placed(breastmnist) -> None:
    """Text that differs from image to image (random strokes) in the top-left corner of
    every malignant image: its patch's brightest pixel tells the classes apart."""
    x, y = _breast(breastmnist)
    rng = np.random.default_rng(0)
    for i in np.flatnonzero(y == 0):
        strokes = rng.random((4, 10)) < 0.4
        x[i, 1:5, 1:11, 0][strokes] = 230
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert note.startswith(
        "WARNING: one 4x4 px patch at the top-left corner of the 28 px images alone tells "
        "'normal, benign' from 'malignant' (its brightest pixel is lower in 'normal, benign': "
        "AUC 1.00, where the median patch's is 0."
    )
    assert "crop or mask it" in note


def test_a_dark_marker_is_found_where_it_is(breastmnist) -> None:
    x, y = _breast(breastmnist)
    x[y == 1, 20:24, 22:26] = 0
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert "patch at the bottom-right corner" in note and "AUC 1.00" in note
    x, y = _breast(breastmnist)
    x[y == 1, 12:16, 12:16] = 255
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert "patch at the centre" in note and "brightest pixel is higher in 'normal, benign'" in note
    # where a lesion-centred crop has its lesion: said, without alarm or a call to mask it
    assert not note.startswith("WARNING") and "that is the lesion itself" in note


def test_a_large_lesion_at_the_centre_is_placed_at_the_centre_and_a_mark_beside_it_found(
    breastmnist,
) -> None:
    """A 16 px bright square at the centre of one class's 28 px images ties every patch it
    touches, as far as the corners' own; the first of them in reading order lay in the
    top-left corner, and the lesion was warned about as a corner mark (an audit). A
    dark mark in a corner beside it is still a mark."""
    x, y = _breast(breastmnist)
    x[y == 1, 6:22, 6:22] = 255
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert "patch at the centre" in note and not note.startswith("WARNING")
    x[y == 1, 0:3, 24:28] = 0
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert note.startswith("WARNING: one 4x4 px patch at the top-right corner")
    assert "darkest pixel is lower in 'normal, benign'" in note
    # a bright mark at the border, joined to the bright lesion by the patches' overlap
    x, y = _breast(breastmnist)
    x[y == 1, 6:22, 6:22] = 255
    x[y == 1, 0:3, 12:16] = 255
    (note,) = fixed_place_notes(x, y, BREAST_NAMES)
    assert note.startswith("WARNING: one 4x4 px patch at the top edge")


def test_a_patch_below_the_threshold_is_never_named_for_its_tie() -> None:
    """Ties are patches within 0.01 of the best, but never below 0.9: a corner patch at
    0.891 beside a centre patch at 0.9005 would have been warned about (a review)."""
    from raydx.data.shortcuts import _patches, _where

    images = np.zeros((2, 28, 28, 1), np.uint8)
    _, centres, _ = _patches(images, np.arange(2))
    separation = np.full(2 * len(centres), 0.6)
    middle = min(
        range(len(centres)), key=lambda i: abs(centres[i][0] - 14) + abs(centres[i][1] - 14)
    )
    separation[middle] = 0.9005
    separation[0] = 0.891  # the top-left corner, brightest pixel
    assert _where(separation, centres, 28) == middle
    separation[0] = 0.9001  # a tie at the threshold: the mark apart from the centre wins
    assert _where(separation, centres, 28) == 0


def test_a_whole_class_brighter_is_no_fixed_place(breastmnist) -> None:
    """Every patch separates: not a mark in one place (the median patch does too)."""
    x, y = _breast(breastmnist)
    x = np.clip(x.astype(int) + 80 * (y == 1)[:, None, None, None], 0, 255).astype(np.uint8)
    assert fixed_place_notes(x, y, BREAST_NAMES) == []


def test_a_marker_in_fewer_images_or_too_few_images_say_nothing() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 200, (200, 32, 32, 3), dtype=np.uint8)  # colour: its mean is looked at
    y = np.repeat([0, 1], 100)
    marked = x.copy()
    marked[:100, :4, -4:] = 255
    assert "top-right corner" in fixed_place_notes(marked, y, ("a", "b"))[0]
    # half of one class marked: AUC 0.75, not a class told apart
    half = x.copy()
    half[:50, :4, -4:] = 255
    assert fixed_place_notes(half, y, ("a", "b")) == []
    # 19 images of a class: one of hundreds of patch AUCs could reach 0.9 by chance
    few = np.concatenate([marked[:19], marked[100:]])
    assert fixed_place_notes(few, np.repeat([0, 1], [19, 100]), ("a", "b")) == []


def test_each_class_is_checked_against_the_rest_in_a_multi_class_set() -> None:
    rng = np.random.default_rng(4)
    x = rng.integers(0, 200, (300, 28, 28, 1), dtype=np.uint8)
    y = np.repeat([0, 1, 2], 100)
    x[y == 2, -3:, :5] = 255
    (note,) = fixed_place_notes(x, y, ("benign", "in situ", "invasive"))
    assert "bottom-left corner" in note and "tells 'invasive' from the other classes" in note


@pytest.mark.ray
def test_a_marked_set_is_warned_about_before_the_search_and_on_the_model_card(
    ray_session, tmp_path, breastmnist
) -> None:
    """prepare() checks every source (here an .npz) on the images as the networks see them."""
    from raydx.config import RunOptions
    from raydx.prepare import prepare
    from raydx.space import load_space

    d = dict(np.load(breastmnist))
    for split in ("train", "val", "test"):
        malignant = d[f"{split}_labels"].ravel() == 0
        d[f"{split}_images"][malignant, :3, :3] = 255
    path = tmp_path / "marked.npz"
    np.savez(path, **d)
    prep = prepare(RunOptions(data=str(path), folds=3), load_space("search_spaces/cnn.yaml"))
    found = [n for n in prep.notes if "patch at the top-left corner" in n]
    assert len(found) == 1 and found[0] in prep.table.info["notes"]  # into run.json
