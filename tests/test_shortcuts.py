"""Shortcut warnings: a file property that alone tells the classes apart is named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from raydx.data.shortcuts import shortcut_notes
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
        n.startswith("WARNING: the colour mode (with bit depth) alone tells the classes apart")
        for n in notes
    ), notes
