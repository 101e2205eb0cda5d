"""Users' image sets: folders, manifests, Parquet bytes; bad files; duplicates; patient folds.

The image sets are real files written to a temporary directory from BreastMNIST arrays
(or from generated arrays where BreastMNIST is not needed), including broken files.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from image_files import dicom_bytes, ingest_here, png_bytes
from PIL import Image

from raydx.data.decode import content_hash, decode
from raydx.data.duplicates import duplicate_notes, duplicate_sets, merged_groups
from raydx.data.files import FOLDER_GROUP, Columns, list_folder, load_files, read_manifest
from raydx.data.folds import make_splits
from raydx.data.sources import load_source
from raydx.data.table import ImageTable
from raydx.errors import DataError, RaydxError
from raydx.metrics import auc

NAMES = {0: "malignant", 1: "benign"}


def _png(a: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _breast_rows(breastmnist: Path, per_split: int) -> list[tuple[str, int, np.ndarray, str]]:
    z = np.load(breastmnist)
    rows = []
    for split in ("train", "val", "test"):
        x, y = z[f"{split}_images"], z[f"{split}_labels"].ravel()
        rows += [(split, i, x[i], int(y[i])) for i in range(min(per_split, len(x)))]
    return rows


def _patients(n: int, seed: int = 0) -> np.ndarray:
    """Made-up patient ids: runs of 1-4 consecutive images share one patient."""
    rng = np.random.default_rng(seed)
    ids, p = [], 0
    while len(ids) < n:
        ids += [f"patient-{p:03d}"] * int(rng.integers(1, 5))
        p += 1
    return np.array(ids[:n], dtype=object)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory, breastmnist: Path) -> Path:
    """BreastMNIST PNGs in benign/ and malignant/, plus a manifest with patients."""
    root = tmp_path_factory.mktemp("images")
    records = []
    for split, i, img, label in _breast_rows(breastmnist, 60):
        rel = Path(NAMES[label]) / f"{split}_{i:03d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel)
        records.append({"path": rel.as_posix(), "label": NAMES[label], "source_split": split})
    frame = pd.DataFrame(records)
    # one label per patient (patients = runs of same-label rows), split by patient
    frame = frame.sort_values(["label", "path"]).reset_index(drop=True)
    frame["patient_id"] = [
        f"{lab}-{p}" for lab, p in zip(frame["label"], _patients(len(frame)), strict=True)
    ]
    test_patients = set(frame["patient_id"].drop_duplicates().sample(frac=0.2, random_state=0))
    frame["split"] = np.where(frame["patient_id"].isin(test_patients), "test", "train")
    frame.drop(columns="source_split").to_csv(root / "manifest.csv", index=False)
    return root


# --- decoding ----------------------------------------------------------------------------------


def test_decode_grey_png_is_exact() -> None:
    a = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    d = decode(_png(a), 28)
    assert d.grey and d.mode == "L" and (d.width, d.height) == (28, 28)
    assert d.image.shape == (28, 28, 1) and np.array_equal(d.image[:, :, 0], a)


def test_decode_converts_modes_and_resizes() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((40, 30), 128, np.uint8)])
    grey16 = (np.arange(50 * 20).reshape(50, 20) * 4).astype(np.uint16)  # 12-bit range
    for raw, mode, grey in [
        (_png(rgb), "RGB", False),
        (_png(rgba), "RGBA", False),
        (_png(grey16), "I;16", True),
    ]:
        d = decode(raw, 16)
        assert d.image.shape == (16, 16, 1 if grey else 3) and d.image.dtype == np.uint8
        assert d.mode.startswith(mode[:3]) and d.grey is grey
    d16 = decode(_png(grey16), 16)
    assert d16.image.min() <= 10 and d16.image.max() >= 245  # stretched: /257 gives <= 16


def test_decode_rgb_holding_grey_counts_as_grey() -> None:
    a = np.random.default_rng(2).integers(0, 256, (20, 20), dtype=np.uint8)
    assert decode(_png(np.dstack([a, a, a])), 20).grey


def test_same_pixels_same_hash_across_formats() -> None:
    a = np.random.default_rng(3).integers(0, 256, (28, 28), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF")
    assert decode(buf.getvalue(), 28).hash == decode(_png(a), 28).hash == content_hash(a)
    assert decode(_png(255 - a), 28).hash != content_hash(a)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"", "not an image file (neither a format Pillow reads nor DICOM)"),
        (b"not an image", "not an image file (neither a format Pillow reads nor DICOM)"),
        (_png(np.zeros((64, 64), np.uint8))[:60], "OSError: image file is truncated"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_decode_refuses_broken_data_with_a_reason(raw: bytes, said: str) -> None:
    """Ingestion turns the error into the reason bad_images.csv and the message give."""
    from raydx.data.decode import reason

    with pytest.raises(OSError) as info:
        decode(raw, 28)
    assert reason(info.value) == said


def _tiff(frames: list[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    first, *rest = [Image.fromarray(f) for f in frames]
    first.save(buf, format="TIFF", save_all=True, append_images=rest)
    return buf.getvalue()


def test_exif_orientation_is_applied_as_a_viewer_shows_the_photo() -> None:
    """Orientation 6: the stored pixels are rotated; the photo is upright on screen."""
    upright = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    stored = np.rot90(upright)  # 90 degrees the other way, undone by the tag
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buf, format="PNG", exif=exif)
    d = decode(buf.getvalue(), 16)
    np.testing.assert_array_equal(d.image, upright)
    assert d.hash == content_hash(upright)  # a duplicate of the same photo saved upright


def test_a_colour_profile_is_converted_to_srgb_as_a_viewer_shows_the_photo() -> None:
    """Adobe RGB's (40, 200, 60) is a more saturated green than sRGB's; read as sRGB it
    would be another colour than the one photographed."""
    from image_files import icc_profile, photo_bytes
    from PIL import ImageCms

    adobe = icc_profile()
    a = np.random.default_rng(6).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a[:20] = (40, 200, 60)
    want = ImageCms.profileToProfile(
        Image.fromarray(a).resize((20, 20), Image.Resampling.BILINEAR),
        ImageCms.ImageCmsProfile(io.BytesIO(adobe)),
        ImageCms.createProfile("sRGB"),
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )
    plain = decode(png_bytes(a), 20)
    for fmt in ("PNG", "TIFF", "WEBP"):
        d = decode(photo_bytes(a, fmt, adobe, **({"lossless": True} if fmt == "WEBP" else {})), 20)
        assert d.mode == "RGB with ICC profile 'Adobe RGB (1998)'", fmt
        np.testing.assert_array_equal(d.image, np.asarray(want))
        assert d.hash == plain.hash  # the same stored numbers: the duplicate check's key
    assert tuple(decode(photo_bytes(a, "PNG", adobe), 20).image[3, 3]) == (0, 201, 37)
    assert tuple(plain.image[3, 3]) == (40, 200, 60)
    # RGBA: alpha dropped, then converted
    rgba = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    d = decode(photo_bytes(rgba, "PNG", adobe), 20)
    assert d.mode == "RGBA with ICC profile 'Adobe RGB (1998)'"
    np.testing.assert_array_equal(d.image, np.asarray(want))
    # grey stays grey
    d = decode(photo_bytes(np.full((8, 8, 3), 90, np.uint8), "PNG", adobe), 8)
    assert d.grey  # R == G == B after the conversion too


@pytest.mark.parametrize(
    "icc",
    [
        None,
        "srgb",  # the common case: already what raydx uses
        b"not a profile at all",  # unreadable: taken as sRGB, as browsers do
        "lab",  # not an RGB profile
    ],
)
def test_images_without_a_foreign_rgb_profile_are_taken_as_they_are(icc) -> None:
    from image_files import photo_bytes
    from PIL import ImageCms

    if icc in ("srgb", "lab"):
        made = ImageCms.createProfile({"srgb": "sRGB", "lab": "LAB"}[icc])
        icc = ImageCms.ImageCmsProfile(made).tobytes()
    a = np.random.default_rng(7).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    d = decode(photo_bytes(a, "PNG", icc), 12)
    assert d.mode == "RGB"
    np.testing.assert_array_equal(d.image, a)


def test_a_stack_or_an_animation_is_refused_but_a_pyramid_reads_its_first_page() -> None:
    a = np.random.default_rng(5).integers(0, 256, (32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match="a file of 3 frames or pages"):
        decode(_tiff([a, a, a]), 32)
    pyramid = decode(_tiff([a, a[::2, ::2], a[::4, ::4]]), 32)
    np.testing.assert_array_equal(pyramid.image[..., 0], a)


def test_nan_in_a_float_image_does_not_blacken_it() -> None:
    f = np.linspace(0.0, 1.0, 16 * 16, dtype=np.float32).reshape(16, 16)
    f[0, :4] = np.nan
    buf = io.BytesIO()
    Image.fromarray(f, mode="F").save(buf, format="TIFF")
    got = decode(buf.getvalue(), 16).image[..., 0]
    finite = np.isfinite(f)
    lo, hi = f[finite].min(), f[finite].max()
    want = np.rint((np.where(finite, f, lo) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    np.testing.assert_array_equal(got, want)
    assert got.max() == 255 and (got[0, :4] == 0).all()
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), np.nan, np.float32), mode="F").save(buf, format="TIFF")
    with pytest.raises(ValueError, match="every pixel is NaN"):
        decode(buf.getvalue(), 8)


def _png48(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    h, w, _ = rgb16.shape
    rows = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_16_bit_colour_is_refused_not_read_nearly_black() -> None:
    """Pillow keeps the top 8 bits: 12-bit data would be 0-15 of 255."""
    rgb12 = np.random.default_rng(6).integers(0, 4096, (8, 8, 3)).astype(np.uint16)
    with Image.open(io.BytesIO(_png48(rgb12))) as im:
        assert im.mode == "RGB" and np.asarray(im).max() <= 16  # what it used to train on
    with pytest.raises(ValueError, match="a 16-bit RGB image, which Pillow reads as its top 8"):
        decode(_png48(rgb12), 8)


# --- folder and manifest listings (no Ray) -----------------------------------------------------


def _write(path: Path, a: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def test_list_folder_classes_and_ignored_files(tmp_path: Path) -> None:
    img = np.zeros((8, 8), np.uint8)
    _write(tmp_path / "benign" / "a.png", img)
    _write(tmp_path / "benign" / "sub" / "b.jpg", img)
    _write(tmp_path / "malignant" / "c.tif", img)
    (tmp_path / "malignant" / "notes.txt").write_text("x")
    (tmp_path / "malignant" / ".DS_Store").write_text("x")
    listing, notes = list_folder(tmp_path)
    assert sorted(listing["sample_id"]) == ["benign/a.png", "benign/sub/b.jpg", "malignant/c.tif"]
    assert (
        dict(zip(listing["sample_id"], listing["label"], strict=True))["malignant/c.tif"]
        == "malignant"
    )
    assert "files that are not images ignored: 1 (.txt 1)" in notes


def test_list_folder_skips_thumbnails_and_follows_linked_folders(tmp_path: Path) -> None:
    """Thumbnail caches would be resized near-copies of the images (a leak the exact
    duplicate check cannot see); linked patient folders are part of the class; a DICOM
    file needs no suffix."""
    img = np.zeros((8, 8), np.uint8)
    root = tmp_path / "data"
    _write(root / "benign" / "a.png", img)
    _write(root / "benign" / ".thumbnails" / "a.png", img)
    _write(root / "benign" / "@eaDir" / "a.png" / "SYNOPHOTO_THUMB_S.jpg", img)
    _write(root / "__MACOSX" / "benign" / "._a.png", img)  # not a class
    (root / "malignant").mkdir(parents=True)
    (root / "malignant" / "IM000001").write_bytes(dicom_bytes(np.zeros((8, 8), np.uint16)))
    _write(tmp_path / "elsewhere" / "p7" / "x.png", img)
    (root / "malignant" / "p7").symlink_to(tmp_path / "elsewhere" / "p7")
    (root / "malignant" / "loop").symlink_to(root / "malignant")  # a cycle, walked once
    (root / "malignant" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    listing, notes = list_folder(root)
    assert sorted(listing["sample_id"]) == [
        "benign/a.png",
        "malignant/IM000001",
        "malignant/p7/x.png",
    ]
    assert "WARNING: 1 link leading nowhere ignored" in notes


def test_raydx_run_folders_in_the_data_folder_are_passed_over(tmp_path: Path) -> None:
    """``cd data; raydx tune --data .`` writes ./runs/<time>: the next search of ``.``
    took its plots for a third class 'runs'. A run folder given as a class, or deeper in
    a class folder, is passed over too; a folder of runs alone is refused."""
    img = np.zeros((8, 8), np.uint8)
    root = tmp_path / "data"
    for name in ("benign/p1/a.png", "benign/p2/a.png", "malignant/p3/b.png", "malignant/p4/b.png"):
        _write(root / name, img)
    for run in (root / "runs" / "20261207-190000", root / "mine", root / "benign" / "r"):
        _write(run / "trials.png", img)
        (run / "run.json").write_text('{"options": {}}')
    listing, notes = list_folder(root)
    assert sorted(listing[FOLDER_GROUP]) == ["p1", "p2", "p3", "p4"]  # not benign/r
    assert (
        "raydx run folders in "
        f"'{root}' passed over (mine, benign/r, runs/20261207-190000): their plots are not "
        "images of the set; keep runs outside the data folder (--output)"
    ) in notes
    with pytest.raises(DataError, match=r"holds raydx run folders \(20261207-190000\) and no"):
        list_folder(root / "runs")


def test_segmentation_masks_beside_their_images_are_passed_over(tmp_path: Path) -> None:
    """BUSI, the common breast ultrasound set, keeps each image's mask beside it
    ('benign (1)_mask.png', a second lesion's '_mask_1'): taken as images, they were
    half the set, and a normal image's empty mask gives its class away. A file so
    named without its image is an image."""
    img = np.zeros((8, 8), np.uint8)
    root = tmp_path / "Dataset_BUSI_with_GT"
    for c in ("benign", "malignant", "normal"):
        for stem in (f"{c} (1)", f"{c} (1)_mask", f"{c} (1)_mask_1", f"{c} (2)", f"{c} (2)_mask"):
            _write(root / c / f"{stem}.png", img)
    _write(root / "benign" / "p9" / "scan.png", img)
    _write(root / "benign" / "p9" / "scan-Segmentation.png", img)
    _write(root / "malignant" / "lone_mask.png", img)  # no 'lone.png' beside it
    listing, notes = list_folder(root)
    assert sorted(listing["sample_id"]) == [
        "benign/benign (1).png",
        "benign/benign (2).png",
        "benign/p9/scan.png",
        "malignant/lone_mask.png",
        "malignant/malignant (1).png",
        "malignant/malignant (2).png",
        "normal/normal (1).png",
        "normal/normal (2).png",
    ]
    assert notes[0] == (
        "10 segmentation masks passed over (named as an image beside them plus _mask, _seg "
        "or _gt, or in a masks/ folder beside their images: 'benign/benign (1)_mask.png'): a "
        "mask is the answer drawn, not an image to diagnose; to train on masks, list them in "
        "a manifest"
    )
    assert notes[1] == (
        "1 file named or placed as segmentation masks, with no image of their name beside "
        "them, kept as images (e.g. 'malignant/lone_mask.png'); if they are masks, move them "
        "out of the data folder"
    )


def test_masks_in_a_folder_beside_the_images_are_passed_over(tmp_path: Path) -> None:
    """class/images/x.png with class/masks/x_mask.png (or x.png): the masks were trained
    on, and the folders 'images' and 'masks' taken for two patients."""
    img = np.zeros((8, 8), np.uint8)
    root = tmp_path / "data"
    for c in ("benign", "malignant"):
        for k in range(3):
            _write(root / c / "images" / f"{c}{k}.png", img)
            _write(root / c / "masks" / (f"{c}{k}_mask.png" if k else f"{c}{k}.png"), img)
        _write(root / c / "masks" / "other.png", img)  # no image of that name: kept
    listing, notes = list_folder(root)
    assert sorted(listing["sample_id"]) == [
        "benign/images/benign0.png",
        "benign/images/benign1.png",
        "benign/images/benign2.png",
        "benign/masks/other.png",
        "malignant/images/malignant0.png",
        "malignant/images/malignant1.png",
        "malignant/images/malignant2.png",
        "malignant/masks/other.png",
    ]
    assert notes[0].startswith("6 segmentation masks passed over (")
    assert notes[1].startswith("2 files named or placed as segmentation masks, with no image")
    # images directly in the class folder, masks in class/masks/; a class named 'masks'
    root = tmp_path / "flat"
    for c in ("benign", "malignant", "masks"):
        for k in range(3):
            _write(root / c / f"{k}.png", img)
            if c != "masks":
                _write(root / c / "masks" / f"{k}.png", img)
    listing, notes = list_folder(root)
    assert sorted(listing["sample_id"]) == [
        f"{c}/{k}.png" for c in ("benign", "malignant", "masks") for k in range(3)
    ]
    assert notes[0].startswith("6 segmentation masks passed over (")


def test_folder_with_one_class_refused(tmp_path: Path) -> None:
    _write(tmp_path / "benign" / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"has one class \('benign', 1 image\)"):
        list_folder(tmp_path)


def test_an_unzipped_archives_top_folder_is_pointed_at(tmp_path: Path) -> None:
    """``unzip data.zip`` gives data/<top>/{benign,malignant} and data/__MACOSX: the
    error names the folder that holds the classes."""
    img = np.zeros((8, 8), np.uint8)
    _write(tmp_path / "data" / "BUSI" / "benign" / "a.png", img)
    _write(tmp_path / "data" / "BUSI" / "malignant" / "b.png", img)
    _write(tmp_path / "data" / "__MACOSX" / "BUSI" / "benign" / "._a.png", img)
    with pytest.raises(DataError) as e:
        list_folder(tmp_path / "data")
    assert "has one class ('BUSI', 2 images)" in str(e.value)
    assert "subfolders benign, malignant: if those are the classes" in str(e.value)
    assert f"pass --data '{tmp_path / 'data' / 'BUSI'}'" in str(e.value)
    listing, _ = list_folder(tmp_path / "data" / "BUSI")
    assert sorted(listing["label"]) == ["benign", "malignant"]
    _write(tmp_path / "mac" / "__MACOSX" / "benign" / "a.png", img)
    with pytest.raises(DataError, match=r"holds only folders raydx skips \(__MACOSX: hidden"):
        list_folder(tmp_path / "mac")


def test_other_suffixes_pillow_reads_are_listed_and_decoded(tmp_path: Path) -> None:
    """JFIF/JPE (JPEG), JPEG 2000, PGM (the mini-MIAS mammograms) and TGA."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (12, 10), dtype=np.uint8)
    names = ["a.jfif", "b.jpe", "c.jp2", "d.j2k", "e.pgm", "f.tga"]
    for n in names:
        _write(tmp_path / "benign" / n, grey)
        _write(tmp_path / "malignant" / n, grey)
    listing, notes = list_folder(tmp_path)
    assert len(listing) == 12 and not any("ignored" in n for n in notes)
    for n in names:
        d = decode((tmp_path / "benign" / n).read_bytes(), 8)
        assert (d.width, d.height) == (10, 12) and d.grey
    exact = decode((tmp_path / "benign" / "e.pgm").read_bytes(), 12).hash
    assert exact == decode(_png(grey), 12).hash  # lossless: the same pixels


def test_folder_with_empty_class_refused(tmp_path: Path) -> None:
    _write(tmp_path / "benign" / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "malignant").mkdir()
    with pytest.raises(DataError, match=r"class folder '.*malignant' holds no images"):
        list_folder(tmp_path)


def test_folder_without_class_subfolders_refused(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match=r"needs one subfolder per class .* holds 1 loose images"):
        list_folder(tmp_path)


def test_manifest_columns_and_relative_paths(tmp_path: Path) -> None:
    pd.DataFrame(
        {"file": ["x/a.png", "b.png"], "dx": ["m", "b"], "pid": ["p1", "p2"], "part": ["", "TEST"]}
    ).to_csv(tmp_path / "m.csv", index=False)
    cols = Columns(path="file", label="dx", group="pid", split="part")
    listing, image_column, _ = read_manifest(tmp_path / "m.csv", cols)
    assert image_column is None
    assert listing["path"].tolist() == [str(tmp_path / "x/a.png"), str(tmp_path / "b.png")]
    assert listing["group"].tolist() == ["p1", "p2"]
    assert listing["split"].tolist() == ["", "test"]


def test_manifest_defaults_group_and_split_only_if_present(tmp_path: Path) -> None:
    pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    listing, _, notes = read_manifest(tmp_path / "m.csv", Columns())
    assert "group" not in listing and "split" not in listing
    assert listing["label"].tolist() == ["0", "1"]
    assert "no group column" in notes[0]


@pytest.mark.parametrize(
    ("cols", "match"),
    [
        (
            Columns(label="lable"),
            r"no column 'lable' \(--label-column\)\. Did you mean 'label'",
        ),
        (Columns(group="patient"), r"has no column 'patient' \(--group-column\)"),
        (Columns(path="file"), r"has no column 'file' \(--path-column\)\. .*columns are: path, la"),
    ],
)
def test_manifest_missing_column_named(tmp_path: Path, cols: Columns, match: str) -> None:
    pd.DataFrame({"path": ["a.png"], "label": ["b"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=match):
        read_manifest(tmp_path / "m.csv", cols)


def test_manifest_missing_label_refused_with_row(tmp_path: Path) -> None:
    pd.DataFrame({"path": ["a.png", "b.png", "c.png"], "label": ["b", "", "m"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    with pytest.raises(DataError, match=r"1 row without a 'label' value \(first at row 3"):
        read_manifest(tmp_path / "m.csv", Columns())


@pytest.mark.parametrize("kind", ["patients", "both sides", "folder"])
def test_too_few_patients_for_the_folds_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch, kind: str
) -> None:
    """The splits refused these only after Ray's start and the decoding of every image
    (minutes for a large set); the listing alone shows them."""
    import raydx.ray_env
    from raydx.run import tune

    started: list[object] = []
    monkeypatch.setattr(raydx.ray_env, "init_ray", lambda *a, **k: started.append(a))
    for i in range(12):
        _write(tmp_path / f"{i}.png", np.full((8, 8), i, np.uint8))
    label = ["malignant"] * 6 + ["benign"] * 6
    patient = [f"p{i // 2}" for i in range(12)]  # 3 patients a class, 2 images each
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(12)], "label": label})
    if kind == "patients":
        frame["patient_id"] = patient
        data, match = (
            tmp_path / "m.csv",
            (
                r"class 'benign' has 3 patients in '.*/m.csv', fewer than folds=5; use fewer "
                r"folds or add data\.$"
            ),
        )
    elif kind == "both sides":
        frame["patient_id"] = patient
        frame["split"] = ["train", "test"] * 6  # each patient's two images split apart
        data, match = tmp_path / "m.csv", "group 'p0' has samples both in the official test"
    else:
        for c, name in enumerate(("benign", "malignant")):
            for i in range(2 + c):
                _write(tmp_path / "data" / name / f"{i}.png", np.full((8, 8), i, np.uint8))
        data, match = (
            tmp_path / "data",
            r"class 'benign' has 2 images in 'data', fewer than folds=3",
        )
    if kind != "folder":
        frame.to_csv(data, index=False)
    folds = 3 if kind == "folder" else 5
    with pytest.raises(DataError, match=match):
        tune(data=str(data), folds=folds, output=tmp_path / "out", log=lambda *a: None)
    assert started == []
    assert not (tmp_path / "out").exists()


def test_the_listing_check_refuses_only_what_the_splits_refuse() -> None:
    """A listing's patients are the most its decoded table can have (DICOM ids, copies and
    bad files only merge or drop some): whatever the check before decoding refuses, the
    splits refuse too, for 100 random listings (about half of them refused)."""
    from raydx.data.files import _check_enough_for_folds

    verdicts = []
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n, folds = int(rng.integers(6, 40)), int(rng.integers(2, 6))
        listing = pd.DataFrame(
            {
                "sample_id": [f"s{i}" for i in range(n)],
                "label": rng.choice(["a", "b", "c"][: rng.integers(2, 4)], n),
                "group": rng.integers(0, max(2, n // 2), n).astype(str),
            }
        )
        if rng.random() < 0.5:
            listing["split"] = rng.choice(["train", "test"], n, p=[0.8, 0.2])
        if rng.random() < 0.3:
            listing = listing.drop(columns="group")
        try:
            _check_enough_for_folds(listing, "x", folds, exact_groups=True)
            refused = None
        except DataError as e:
            refused = str(e)
        names = sorted(listing["label"].unique())
        test = listing["split"].eq("test").to_numpy() if "split" in listing else None
        try:
            make_splits(
                listing["label"].map(names.index).to_numpy(),
                folds=folds,
                seed=seed,
                test_mask=test if test is not None and test.any() else None,
                groups=listing["group"].to_numpy() if "group" in listing else None,
                class_names=names,
            )
        except DataError:
            verdicts.append(refused is not None)
            continue
        assert refused is None, (seed, refused)
        verdicts.append(False)
    assert 30 <= sum(verdicts) <= 70  # the check was put to the test


@pytest.mark.parametrize("kind", ["folder", "manifest", "missing file"])
def test_listing_errors_come_before_ray_starts(tmp_path: Path, monkeypatch, kind: str) -> None:
    """A wrong folder or column fails at once, not after Ray's start, and claims nothing."""
    import raydx.ray_env
    from raydx.run import tune

    started: list[object] = []
    monkeypatch.setattr(raydx.ray_env, "init_ray", lambda *a, **k: started.append(a))
    if kind == "folder":
        _write(tmp_path / "data" / "a.png", np.zeros((8, 8), np.uint8))  # no class folders
        data, match = tmp_path / "data", "needs one subfolder per class"
    elif kind == "manifest":
        pd.DataFrame({"path": ["a.png"], "label": ["b"]}).to_csv(tmp_path / "m.csv", index=False)
        data, match = tmp_path / "m.csv", "no column 'lable'"
    else:
        _write(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
        frame = pd.DataFrame({"path": ["a.png", "gone.png"], "lable": ["b", "c"]})
        frame.to_csv(tmp_path / "m.csv", index=False)
        data, match = tmp_path / "m.csv", r"1 of 2 images cannot be used:\n  .*gone.png: file not"
    with pytest.raises(DataError, match=match):
        tune(data=str(data), label_column="lable", output=tmp_path / "out", log=lambda *a: None)
    assert started == []
    assert not (tmp_path / "out").exists()


# --- duplicates --------------------------------------------------------------------------------


def _dup_table(groups: list[str] | None = None) -> ImageTable:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 4, 4, 1), dtype=np.uint8)
    images[5] = images[1]  # same label: a plain duplicate
    images[6] = images[2]  # conflicting labels
    labels = np.array([0, 0, 0, 1, 1, 0, 1, 1])
    return ImageTable(
        images=images,
        labels=labels,
        sample_ids=np.array([f"s{i}" for i in range(8)], dtype=object),
        class_names=("benign", "malignant"),
        name="dups",
        groups=None if groups is None else np.array(groups, dtype=object),
    )


def test_duplicate_sets_flags_conflicts_and_test_copies() -> None:
    t = _dup_table()
    test = np.zeros(8, bool)
    test[6] = True
    d = duplicate_sets(t, test)
    assert sorted(d["sample_id"]) == ["s1", "s2", "s5", "s6"]
    by_id = d.set_index("sample_id")
    assert by_id.loc["s1", "set"] == by_id.loc["s5", "set"] != by_id.loc["s2", "set"]
    assert bool(by_id.loc["s2", "labels_conflict"]) and not bool(by_id.loc["s1", "labels_conflict"])
    assert bool(by_id.loc["s6", "across_test"]) and not bool(by_id.loc["s5", "across_test"])
    notes = " ".join(duplicate_notes(d))
    assert "2 sets of exact duplicate images" in notes
    assert "1 image of the given test split has an exact copy" in notes
    assert "conflicting labels" in notes
    assert "their labels conflict, so the test score is pessimistic for them" in notes
    test[6], test[5] = False, True  # a copy with the same label flatters the test score
    assert "the test score is optimistic for them" in " ".join(
        duplicate_notes(duplicate_sets(t, test))
    )
    test[6] = True
    both = " ".join(duplicate_notes(duplicate_sets(t, test)))
    assert "optimistic where the copies' labels agree, pessimistic where they conflict" in both


def test_merged_groups_join_copies_but_not_across_a_given_test_split() -> None:
    t = _dup_table()
    assert merged_groups(t.subset(np.array([0, 3, 4])), None) is None  # nothing to join
    g = merged_groups(t, None)
    assert g is not None and g[1] == g[5] and g[2] == g[6] and len(set(g)) == 6
    test = np.zeros(8, bool)
    test[6] = True
    g = merged_groups(t, test)
    assert g[1] == g[5] and g[2] != g[6]


def test_merged_groups_join_patients_through_a_shared_image() -> None:
    t = _dup_table(["a", "b", "c", "d", "e", "f", "g", "h"])
    g = merged_groups(t, None)
    assert g[1] == g[5] == "b" and g[2] == g[6] == "c" and g[0] == "a"


@pytest.mark.parametrize("seed", range(20))
def test_duplicates_and_patients_never_span_two_parts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    groups = _patients(n, seed)
    patient_label = {p: int(rng.random() < 0.35) for p in set(groups)}
    labels = np.array([patient_label[p] for p in groups])
    images = rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)
    for a, b in rng.integers(0, n, (15, 2)):  # copies across patients
        images[b] = images[a]
    t = ImageTable(
        images=images,
        labels=labels,
        sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        class_names=("benign", "malignant"),
        name="p",
        groups=groups,
    )
    s = make_splits(labels, folds=5, seed=seed, groups=merged_groups(t, None))
    part = np.where(s.fold < 0, 5, s.fold)
    assert (pd.Series(part).groupby(pd.Series(groups)).nunique() == 1).all()
    assert (pd.Series(part).groupby(pd.Series(t.content_hashes())).nunique() == 1).all()


# --- ingestion through Ray Data ----------------------------------------------------------------


@pytest.mark.ray
def test_folder_source_matches_the_arrays(ray_session, image_folder: Path, breastmnist) -> None:
    t = load_source(str(image_folder))
    assert t.class_names == ("benign", "malignant") and t.name == image_folder.name
    assert t.images.shape == (len(t), 28, 28, 1)  # all grey, native size kept
    assert t.info["modes"] == {"L": len(t)} and t.info["unreadable"] == 0
    z = np.load(breastmnist)
    i = list(t.sample_ids).index("benign/test_001.png")
    assert np.array_equal(t.images[i, :, :, 0], z["test_images"][1])  # PNG is lossless
    assert t.class_names[t.labels[i]] == NAMES[int(z["test_labels"].ravel()[1])]


@pytest.mark.ray
def test_manifest_source_with_patients_and_split(ray_session, image_folder: Path) -> None:
    t = load_source(str(image_folder / "manifest.csv"), image_size=16)
    m = pd.read_csv(image_folder / "manifest.csv")
    assert len(t) == len(m) and t.images.shape[1:] == (16, 16, 1)
    assert list(t.sample_ids) == m["path"].tolist()
    assert list(t.groups) == m["patient_id"].tolist()
    assert list(t.official_split) == m["split"].tolist()
    # named with its folder: "manifest" alone says nothing on a card or a report
    assert t.name == f"{image_folder.name}/manifest.csv"


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """Mixed sizes and modes, one truncated file, one non-image with an image name."""
    rng = np.random.default_rng(5)
    for i in range(6):
        _write(tmp_path / "benign" / f"g{i}.png", rng.integers(0, 256, (30, 30), dtype=np.uint8))
        _write(
            tmp_path / "malignant" / f"c{i}.png",
            rng.integers(0, 256, (50, 40, 3), dtype=np.uint8),
        )
    _write(tmp_path / "malignant" / "a.png", rng.integers(0, 256, (20, 20, 4), dtype=np.uint8))
    big = (rng.integers(0, 4096, (64, 64))).astype(np.uint16)
    Image.fromarray(big).save(tmp_path / "benign" / "deep.png")
    good = _png(rng.integers(0, 256, (30, 30), dtype=np.uint8))
    (tmp_path / "benign" / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "malignant" / "fake.jpg").write_text("this is not a JPEG")
    return tmp_path


@pytest.mark.ray
def test_bad_images_stop_the_load_and_are_all_listed(ray_session, messy_folder: Path) -> None:
    with pytest.raises(DataError) as err:
        load_source(str(messy_folder))
    msg = str(err.value)
    assert msg.startswith("2 of 16 images cannot be used:")
    assert (
        "truncated.png: " in msg
        and "fake.jpg: not an image file (neither a format Pillow reads nor DICOM)" in msg
    )
    assert "--skip-bad-images" in msg


@pytest.mark.ray
def test_skip_bad_images_leaves_them_out_and_lists_them(ray_session, messy_folder: Path) -> None:
    t = load_source(str(messy_folder), skip_bad=True, image_size=24)
    assert len(t) == 14 and t.images.shape == (14, 24, 24, 3)  # colour present -> RGB
    bad = t.info["bad"]
    assert sorted(Path(p).name for p in bad["path"]) == ["fake.jpg", "truncated.png"]
    assert (bad["reason"].str.len() > 0).all()
    assert t.info["modes"] == {"RGB": 6, "L": 6, "RGBA": 1, "I;16": 1}
    assert t.info["grey_images"] == 7  # a mode says how a file was stored; this, what it was
    assert t.info["sizes"]["30x30"] == 6 and t.info["sizes"]["64x64"] == 1
    i = list(t.sample_ids).index("benign/g0.png")
    assert (t.images[i, :, :, 0] == t.images[i, :, :, 1]).all()  # grey replicated


@pytest.mark.ray
def test_missing_manifest_file_is_a_bad_image(ray_session, image_folder: Path, tmp_path) -> None:
    m = pd.read_csv(image_folder / "manifest.csv")
    m["path"] = [str(image_folder / p) for p in m["path"]]
    m.loc[3, "path"] = str(tmp_path / "gone.png")
    m.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"1 of \d+ images cannot be used:\n  .*gone.png: file not"):
        load_source(str(tmp_path / "m.csv"))
    t = load_source(str(tmp_path / "m.csv"), skip_bad=True)
    assert len(t) == len(m) - 1


@pytest.mark.ray
@pytest.mark.parametrize("layout", ["hf_struct", "binary"])
def test_parquet_with_encoded_images(ray_session, image_folder: Path, tmp_path, layout) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = pd.read_csv(image_folder / "manifest.csv")
    raw = [(image_folder / p).read_bytes() for p in m["path"]]
    if layout == "hf_struct":  # as Hugging Face datasets write an Image feature
        image = pa.array(
            [{"bytes": b, "path": p} for b, p in zip(raw, m["path"], strict=True)],
            type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
    else:
        image = pa.array(raw, type=pa.binary())
    table = pa.table({"image": image, "label": m["label"], "patient_id": m["patient_id"]})
    pq.write_table(table, tmp_path / "set.parquet", row_group_size=50)
    t = load_source(str(tmp_path / "set.parquet"))  # size probed: 28, as the files
    ref = load_source(str(image_folder / "manifest.csv"))
    assert np.array_equal(t.images, ref.images) and np.array_equal(t.labels, ref.labels)
    assert list(t.groups) == m["patient_id"].tolist()
    assert t.sample_ids[0] == "row-000000"


# --- raydx tune end to end on users' files ----------------------------------------------------

TINY_SPACE = "run: {scheduler: none}\nparams:\n  model: cnn_tiny\n  lr: 0.003\n"


def _tune_args(data: Path, out: Path, space: Path, *extra: str) -> list[str]:
    return [
        "tune",
        "--space",
        str(space),
        "--data",
        str(data),
        "--trials",
        "1",
        "--folds",
        "3",
        "--epochs",
        "1",
        "--output",
        str(out),
        *extra,
    ]


@pytest.mark.slow
@pytest.mark.ray
def test_tune_on_a_manifest_keeps_patients_whole(ray_session, image_folder: Path, tmp_path, capsys):
    from raydx.cli import main

    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "out"
    assert main(_tune_args(image_folder / "manifest.csv", out, space)) == 0
    splits = pd.read_parquet(out / "splits.parquet")
    manifest = pd.read_csv(image_folder / "manifest.csv")
    assert splits["group"].tolist() == manifest["patient_id"].tolist()
    part = splits["fold"].astype("Float64").fillna(-1)
    assert (part.groupby(splits["group"]).nunique() == 1).all()  # no patient in two parts
    assert (splits.loc[manifest["split"] == "test", "split"] == "test").all()
    summary = pd.read_csv(out / "split_summary.csv")
    assert set(summary.columns) >= {"split", "fold", "n", "n_groups", "benign", "malignant"}
    assert summary["n"].sum() == len(manifest)
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["ingest"]["modes"] == {"L": len(manifest)}
    # how many were grey as read: predict's warning of grey images reads it
    assert run["data"]["ingest"]["grey_images"] == len(manifest)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["input_grey_images"] == len(manifest)
    assert len(run["data"]["fingerprint"]) == 64
    # Patient-level test AUC beside the image level, from the same predictions.
    test = json.loads((out / "test_metrics.json").read_text())
    pred = pd.read_parquet(out / "predictions.parquet")
    on_test = pred[pred["split"] == "test"]
    assert (
        test["n_patients"]
        == on_test["group"].nunique()
        == splits.loc[splits["split"] == "test", "group"].nunique()
    )
    per = on_test.groupby("group").agg(p=("prob", "mean"), pos=("is_positive", "any"))
    assert test["patient_auc"] == pytest.approx(auc(per["pos"].astype(int), per["p"]))
    # ... and out of fold, over the CV pool's patients, in best.yaml.
    oof = yaml.safe_load((out / "best.yaml").read_text())["oof"]
    on_cv = pred[pred["split"] == "cv"]
    assert oof["n_patients"] == on_cv["group"].nunique()
    # ranked with one positive share for every fold, not by the per-fold intercepts
    from raydx.fold_calibration import aligned_to_share

    share = float(on_cv["is_positive"].mean())
    on_cv = on_cv.assign(prob=aligned_to_share(on_cv["prob"], on_cv["fold"], share))
    per_cv = on_cv.groupby("group").agg(p=("prob", "mean"), pos=("is_positive", "any"))
    assert oof["patient_auc"] == pytest.approx(auc(per_cv["pos"].astype(int), per_cv["p"]))
    assert "per patient" in (out / "report.html").read_text()
    assert (
        "Per patient, `malignant` against the rest (" in (out / "model" / "README.md").read_text()
    )
    said = capsys.readouterr().out
    assert f"per patient AUC {test['patient_auc']:.3f}" in said
    assert f"model card: {out / 'model' / 'README.md'}" in said
    # the size the files were resized to, and why (an audit asked where 64 came from)
    assert re.search(r"resized to (\d+)x\1 \(by default the median shorter side, at most 64; "
                     r"--image-size sets it\), 1 channel", said)  # fmt: skip
    assert "raydx: an epoch of trial 1 took " in said  # the pace line


@pytest.mark.slow
@pytest.mark.ray
def test_tune_on_a_folder_with_a_broken_file(ray_session, image_folder: Path, tmp_path):
    from raydx.cli import main

    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder, ignore=shutil.ignore_patterns("*.csv"))
    # ten images under both labels: splitting keeps each pair of copies on one side
    copied = sorted((folder / "benign").glob("*.png"))[:10]
    for i, f in enumerate(copied):
        shutil.copy(f, folder / "malignant" / f"copy{i}.png")
    (folder / "benign" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    out = tmp_path / "out"
    # stops before training, and before the output folder is claimed ...
    assert main(_tune_args(folder, out, space)) == 2
    assert not (out / "run.json").exists() and not (out / ".raydx.lock").exists()
    # ... so the retry with --skip-bad-images into the same --output works
    assert main(_tune_args(folder, out, space, "--skip-bad-images")) == 0
    bad = pd.read_csv(out / "bad_images.csv")
    assert bad["sample_id"].tolist() == ["benign/broken.png"]
    splits = pd.read_parquet(out / "splits.parquet")
    assert "benign/broken.png" not in set(splits["sample_id"])
    assert len(splits) == sum(1 for _ in image_folder.rglob("*.png")) + 10  # and the copies
    # BreastMNIST's one duplicate (train 115 = test 76) is not in this subset of 60 per
    # split; the copies made above are, each on the side the drawn split gave it.
    dups = pd.read_csv(out / "duplicates.csv")
    assert len(dups) == 20 and dups["labels_conflict"].all() and not dups["across_test"].any()
    side = splits.set_index("sample_id").loc[dups["sample_id"], "split"]
    assert dups["side"].tolist() == side.tolist()
    in_test = dups.loc[dups["side"] == "test", "set"].nunique()
    assert 0 < in_test < 10  # both sides occur, so a side taken before the split would show
    card = (out / "model" / "README.md").read_text()
    assert (
        f"- 10 sets of exact copies carry conflicting labels, {in_test} of them with a copy "
        "in the test split (`duplicates.csv`)"
    ) in card
    test_metrics = json.loads((out / "test_metrics.json").read_text())
    assert test_metrics["n"] == (splits.split == "test").sum()


def test_decoding_into_more_than_half_the_memory_is_refused() -> None:
    from raydx.data.ingest import check_memory

    check_memory(1000, 64, memory=2**30)  # 12 MiB of 1 GiB: fine
    with pytest.raises(DataError) as info:
        check_memory(120, 2048, memory=2**30)
    msg = str(info.value)
    assert "120 images at image_size=2048 take 1.4 GiB" in msg
    assert "this machine's 1.0 GiB" in msg and "--image-size" in msg


@pytest.mark.parametrize("size", [7, 2049, 100000])
def test_image_size_outside_its_range_is_refused(size: int) -> None:
    from raydx.config import RunOptions
    from raydx.errors import RaydxError

    with pytest.raises(RaydxError, match=rf"between 8 and 2048, but got image_size={size}\."):
        RunOptions(image_size=size)


# ------------------------------------------------- a user's own manifest: silent traps


def _manifest(tmp_path: Path, n: int = 12, **columns: list) -> Path:
    """A CSV of ``n`` real PNGs (two classes) plus the given extra columns."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        _write(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8), np.uint8))
        paths.append(f"{i}.png")
    frame = pd.DataFrame({"path": paths, "label": ["benign", "malignant"] * (n // 2)})
    for name, values in columns.items():
        frame[name] = values
    frame.to_csv(tmp_path / "m.csv", index=False)
    return tmp_path / "m.csv"


@pytest.mark.parametrize(
    "name", ["patient", "PatientID", "subject_id", "Slide No", "case", "Patient ID"]
)
def test_a_patient_like_column_that_is_not_used_is_refused(tmp_path, name) -> None:
    """Folds by image on data that has patient ids leak patients across folds and into the
    test split: a column named like patient ids but not ``patient_id`` stops the run
    until the user says which it is."""
    ids = [f"p{i // 3}" for i in range(12)]
    path = _manifest(tmp_path, **{name: ids})
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    msg = str(info.value)
    assert f"has no column 'patient_id', but column {name!r} looks like patient ids" in msg
    flag = f"'{name}'" if " " in name else name  # as pasted into a shell
    assert f"pass --group-column {flag} to keep each patient whole, or --group-column none" in msg
    listing, _, notes = read_manifest(path, Columns(group=name))
    assert listing["group"].tolist() == ids
    listing, _, notes = read_manifest(path, Columns(group="none"))  # on purpose
    assert "group" not in listing and "no group column: folds by image" in notes


@pytest.mark.parametrize("name", ["age", "site_path", "notes", "showcase"])
def test_other_columns_are_not_taken_for_patient_ids(tmp_path, name) -> None:
    listing, _, notes = read_manifest(_manifest(tmp_path, **{name: ["x"] * 12}), Columns())
    assert "group" not in listing and not [n for n in notes if n.startswith("WARNING:")]


def test_no_warning_when_the_patient_column_is_used(tmp_path) -> None:
    ids = [f"p{i // 3}" for i in range(12)]
    path = _manifest(tmp_path, patient_id=ids, subject=ids)
    listing, _, notes = read_manifest(path, Columns())
    assert listing["group"].tolist() == ids
    assert not [n for n in notes if n.startswith("WARNING:")]


@pytest.mark.parametrize("held", ["holdout", "Testing", "held-out"])
def test_a_split_column_whose_test_rows_are_named_otherwise_is_refused(tmp_path, held) -> None:
    """Rows a user held out would silently join the CV pool (raydx draws its own test)."""
    path = _manifest(tmp_path, split=["train"] * 8 + [held] * 4)
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    msg = str(info.value)
    assert "split column 'split' has no 'test' row" in msg
    assert f"Did you mean {held.lower()!r} as 'test'?" in msg


def test_a_named_split_column_without_test_rows_is_refused(tmp_path) -> None:
    path = _manifest(tmp_path, part=["train"] * 8 + ["val"] * 4)
    with pytest.raises(DataError, match=r"split column 'part' has no 'test' row \(its values: "):
        read_manifest(path, Columns(split="part"))


def test_a_default_split_column_of_train_and_val_joins_the_pool(tmp_path) -> None:
    """MedMNIST-style train/val without test: one pool, raydx holds out the test split."""
    listing, _, _ = read_manifest(_manifest(tmp_path, split=["train"] * 8 + ["val"] * 4), Columns())
    assert set(listing["split"]) == {"train", "val"}


def test_paths_written_relative_to_the_working_directory_are_explained(
    tmp_path, monkeypatch
) -> None:
    (tmp_path / "data").mkdir()
    _manifest(tmp_path / "data")  # the images, next to where the user stands
    sub = tmp_path / "manifests"
    sub.mkdir()
    frame = pd.read_csv(tmp_path / "data" / "m.csv")
    frame["path"] = "data/" + frame["path"]
    frame.to_csv(sub / "m.csv", index=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        read_manifest(sub / "m.csv", Columns())
    msg = str(info.value)
    assert f"relative to the manifest's folder '{sub}'" in msg
    assert "they do relative to the working directory (e.g. 'data/0.png')" in msg


def test_a_path_listed_twice_is_warned_about(tmp_path) -> None:
    path = _manifest(tmp_path)
    frame = pd.read_csv(path)
    pd.concat([frame, frame.iloc[[3, 3]]]).to_csv(path, index=False)
    listing, _, notes = read_manifest(path, Columns())
    assert listing["sample_id"].tolist()[-2:] == ["3.png#1", "3.png#2"]
    assert [n for n in notes if n.startswith("WARNING:")] == [
        "WARNING: 1 image listed more than once in column 'path' (e.g. '3.png', 3 times); "
        "each row is used as an image of its own (the copies are kept in one fold, see "
        "duplicates.csv)"
    ]


@pytest.mark.parametrize("variant", ["Malignant", "MALIGNANT", "malig nant", "malignant_"])
def test_labels_that_differ_only_in_case_or_spacing_are_refused(tmp_path, variant) -> None:
    path = _manifest(tmp_path)
    frame = pd.read_csv(path)
    frame.loc[[1, 3], "label"] = variant
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_source(str(path), image_size=8)
    first, second = sorted([variant, "malignant"])
    n = {variant: 2, "malignant": 4}
    assert str(info.value) == (
        f"labels {first!r} ({n[first]} images) and {second!r} ({n[second]} images) differ "
        "only in case, spaces or punctuation, so they would be two classes; write each "
        "class one way."
    )


def test_a_manifest_of_one_class_is_refused_before_ray_starts(tmp_path) -> None:
    path = _manifest(tmp_path)
    frame = pd.read_csv(path)
    frame["label"] = "benign"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"has one class \('benign', 12 images\); a diagnosis"):
        load_source(str(path), image_size=8)  # without the ray marker: Ray never starts


def test_patients_with_images_of_two_classes_are_noted(tmp_path, no_ray) -> None:
    ids = [f"p{i // 2}" for i in range(12)]  # labels alternate: every patient has both
    table = load_source(str(_manifest(tmp_path, patient_id=ids)), image_size=8)
    assert (
        "6 patients (group) with images of more than one class (e.g. 'p0': 'benign', "
        "'malignant'); each stays whole in one fold" in table.info["notes"]
    )


def test_duplicate_sides_follow_the_test_split_raydx_draws() -> None:
    """Without a given test split the sides in duplicates.csv come from the drawn one
    (they all read 'cv' when taken before the split was drawn)."""
    from raydx.prepare import split_table

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (40, 8, 8, 1), np.uint8)
    images[1] = images[0]  # one image under two labels
    labels = np.array([0, 1] * 20)
    t = ImageTable(
        images=images,
        labels=labels,
        sample_ids=np.array([f"s{i}" for i in range(40)], dtype=object),
        class_names=("benign", "malignant"),
        name="dups",
    )
    for seed in range(6):
        splits = split_table(t, folds=3, seed=seed, test_fraction=0.25)
        d = duplicate_sets(t, splits.split == "test").set_index("sample_id")
        for sid in d.index:
            assert d.loc[sid, "side"] == splits.split[list(t.sample_ids).index(sid)]
        assert not d["across_test"].any()  # raydx keeps the copies on one side


def test_a_large_image_is_read_and_a_gigantic_one_refused_in_raydx_words(monkeypatch) -> None:
    """Pillow warns above 89 Mpx and refuses above 179 Mpx; raydx reads up to its own
    limit (shrunk here, so the test stays small), without Pillow's 'DOS attack' words."""
    import warnings

    from raydx.data import decode as dec

    a = np.random.default_rng(7).integers(0, 256, (64, 64), dtype=np.uint8)
    monkeypatch.setattr(dec, "MAX_PIXELS", 64 * 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        assert decode(_png(a), 64).image.shape == (64, 64, 1)
    big = np.zeros((65, 64), np.uint8)
    with pytest.raises(ValueError, match="more than 4,096 pixels, beyond what raydx reads"):
        decode(_png(big), 64)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own limit is left as it was


def test_a_rare_label_spelt_like_a_common_one_is_refused_with_its_rows(tmp_path) -> None:
    """Stopped before Ray starts, with the row and patient to fix: a typo on one row
    would otherwise become a class of one image (or split a patient over two classes)."""
    labels = ["benign", "malignant"] * 10 + ["benign", "malignnat"]
    path = _manifest(tmp_path, n=22, label=labels, patient_id=[f"p{i // 3}" for i in range(22)])
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    assert str(info.value).startswith(
        f"label 'malignnat' of manifest '{path}' is on 1 row (row 23: 21.png, patient 'p7'), "
        "and 'malignant' on 10: is it a misspelling of 'malignant'?"
    )
    # a small class of its own, or a typo of a label that is itself rare: not refused
    read_manifest(_manifest(tmp_path, n=22, label=[*labels[:-1], "nevus"]), Columns())
    rare = ["benign"] * 19 + ["malignant"] * 2 + ["malignnat"]
    read_manifest(_manifest(tmp_path, n=22, label=rare), Columns())


# ------------------------------------------------- listing rules, decoded without Ray


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_files`` decoding on this process (the same map as Ray Data runs)."""
    import raydx.data.files as files

    monkeypatch.setattr(files, "ingest_paths", ingest_here)
    monkeypatch.setattr(files, "decode_placement", lambda spec, paths: ({}, None))


def _patient_folders(root: Path) -> None:
    """benign/{p01,p02,p03}, malignant/{p01,p04,p05}: three images each; one loose image."""
    rng = np.random.default_rng(0)
    for cls, patients in (("benign", ["p01", "p02", "p03"]), ("malignant", ["p01", "p04", "p05"])):
        for p in patients:
            for k in range(3):
                _write(
                    root / cls / p / "scan" / f"img{k}.png", rng.integers(0, 256, (8, 8), np.uint8)
                )
    _write(root / "benign" / "loose.png", rng.integers(0, 256, (8, 8), np.uint8))


def test_patient_subfolders_of_a_class_folder_are_kept_whole(tmp_path, no_ray) -> None:
    """``benign/patient01/img0.png`` is the common layout: split image by image, one
    patient's images would land on both sides of a fold. Each first-level subfolder is a
    group, by its name, so one patient filed under two classes is one group too."""
    _patient_folders(tmp_path)
    table = load_files(str(tmp_path), image_size=8)
    groups = dict(zip(table.sample_ids, table.groups, strict=True))
    assert groups["benign/p02/scan/img0.png"] == groups["benign/p02/scan/img2.png"] == "p02"
    assert groups["benign/p01/scan/img0.png"] == groups["malignant/p01/scan/img1.png"] == "p01"
    assert groups["benign/loose.png"] == "benign/loose.png"  # a group of its own
    assert len(set(table.groups)) == 6
    notes = table.info["notes"]
    assert (  # 5 names: fewer than 10 groups is a warning
        "WARNING: folds and the test split grouped by the class folders' subfolders, each "
        "taken whole by its name: only 5 subfolder names found (5 groups, e.g. 'p01'; the "
        "same name under two classes is one group); 1 image directly in a class folder each "
        "a group of its own; if they are coarser than patients, grouping by patient needs a "
        "manifest with a patient column, or pass --group-column none to split image by image"
    ) in notes
    assert any(n.startswith("1 patient (group) with images of more than one class") for n in notes)
    splits = make_splits(table.labels, folds=2, groups=table.groups, test_fraction=0.3)
    for g in set(table.groups):  # a patient on one side of the test split and of each fold
        rows = table.groups == g
        assert len(set(splits.split[rows])) == 1 and len(set(splits.fold[rows])) == 1


def test_ten_patient_subfolders_or_more_are_noted_as_patients(tmp_path) -> None:
    for i in range(12):
        label = ("benign", "malignant")[i % 2]
        _write(tmp_path / label / f"p{i:02d}" / "a.png", np.zeros((8, 8), np.uint8))
    listing, notes = list_folder(tmp_path)
    assert listing["folder_group"].nunique() == 12
    assert notes == [
        "folds and the test split grouped by the class folders' subfolders, each taken whole "
        "as one patient by its name (12 subfolder names, e.g. 'p00'; the same name under two "
        "classes is one patient); pass --group-column none to split image by image"
    ]


def test_a_wrapper_folder_that_every_class_holds_is_passed_over_to_the_tumour_types(
    tmp_path,
) -> None:
    """BreakHis: ``benign/SOB/<tumour type>/<patient>/40X/``. 'SOB' is every class
    folder's single subfolder, a wrapper (taken for a patient, all images would be one
    group), and every image lies below it: the groups are read one level down, the
    tumour types. Coarser than patients, they leak nothing, but they are few: the note
    says only 4 names were found (4 groups), a WARNING below 10, and that grouping by
    patient needs a manifest with a patient column (or --group-column none)."""
    for label, kinds in (("benign", ("A", "F")), ("malignant", ("DC", "LC"))):
        for kind in kinds:
            for n in range(2):
                _write(tmp_path / label / "SOB" / kind / f"{kind}-{n}" / "40X" / "a.png",
                       np.zeros((8, 8), np.uint8))  # fmt: skip
    listing, notes = list_folder(tmp_path)
    by_id = dict(zip(listing["sample_id"], listing["folder_group"], strict=True))
    assert by_id["benign/SOB/A/A-0/40X/a.png"] == by_id["benign/SOB/A/A-1/40X/a.png"] == "A"
    assert set(by_id.values()) == {"A", "F", "DC", "LC"}  # coarser than patients: no leak
    assert notes == [
        "WARNING: folds and the test split grouped by the class folders' subfolders 2 levels "
        "below the class folders, each taken whole by its name: only 4 subfolder names found "
        "(4 groups, e.g. 'A'; the same name under two classes is one group); if they are "
        "coarser than patients, grouping by patient needs a manifest with a patient column, "
        "or pass --group-column none to split image by image"
    ]


def _breakhis(root: Path, patients_per_type: int) -> None:
    """``<class>/SOB/<tumour type>/<patient>/40X/<image>``, two images a patient."""
    for label, kinds in (("benign", ("A", "F")), ("malignant", ("DC", "LC"))):
        for kind in kinds:
            for n in range(patients_per_type):
                for i in range(2):
                    _write(root / label / "SOB" / kind / f"SOB_{kind}_{n}" / "40X" / f"{i}.png",
                           np.full((8, 8), n, np.uint8))  # fmt: skip


def test_few_coarse_groups_with_patients_below_them_offer_the_level_of_the_patients(
    tmp_path,
) -> None:
    """BreakHis with 12 patients: the tumour types are few (4), and one level down 12
    names each lie inside one type. Grouping by them unasked could split a patient
    (were they lesions or studies), so the note offers the flag instead."""
    _breakhis(tmp_path, 3)
    listing, notes = list_folder(tmp_path)
    assert set(listing["folder_group"]) == {"A", "F", "DC", "LC"}
    assert len(notes) == 1 and notes[0].startswith("WARNING: ")
    assert (
        "; one level down, 12 subfolder names (e.g. 'SOB_A_0') each lie inside one of them: "
        "if those are the patients, pass --group-column folder:3;" in notes[0]
    )


def test_group_column_folder_n_groups_a_folder_by_that_level(tmp_path, no_ray) -> None:
    _breakhis(tmp_path, 3)
    (tmp_path / "benign" / "SOB" / "shallow.png").write_bytes(
        (tmp_path / "benign" / "SOB" / "A" / "SOB_A_0" / "40X" / "0.png").read_bytes()
    )
    listing, notes = list_folder(tmp_path, level=3)
    by_id = dict(zip(listing["sample_id"], listing["group"], strict=True))  # as a column's
    assert by_id["benign/SOB/A/SOB_A_1/40X/0.png"] == by_id["benign/SOB/A/SOB_A_1/40X/1.png"]
    assert by_id["benign/SOB/A/SOB_A_1/40X/0.png"] == "SOB_A_1"
    assert by_id["benign/SOB/shallow.png"] == "benign/SOB/shallow.png"  # not that deep
    assert len(set(by_id.values())) == 13
    assert notes == [
        "folds and the test split grouped by the class folders' subfolders at level 3 "
        "(--group-column folder:3), each taken whole as one patient by its name (12 subfolder "
        "names, e.g. 'SOB_A_0'; the same name under two classes is one patient); 1 image not "
        "that deep each a group of its own"
    ]
    table = load_files(str(tmp_path), image_size=8, columns=Columns(group="folder:3"))
    assert table.groups is not None and len(set(table.groups)) == 13


@pytest.mark.parametrize(
    ("group", "match"),
    [
        ("folder:0", r"must name a level N >= 1 .* but got --group-column 'folder:0'"),
        ("folder:x", r"must name a level N >= 1"),
        ("patient_id", r"'patient_id' names a manifest column, but .* is an image folder"),
    ],
)
def test_a_folders_group_column_is_none_or_a_level(tmp_path, no_ray, group, match) -> None:
    _breakhis(tmp_path, 1)
    with pytest.raises(DataError, match=match):
        load_files(str(tmp_path), image_size=8, columns=Columns(group=group))


def test_a_subfolder_level_deeper_than_any_image_is_refused(tmp_path, no_ray) -> None:
    _breakhis(tmp_path, 1)  # images 4 levels deep: SOB/type/patient/40X
    with pytest.raises(DataError, match=r"at most 4 level\(s\) of subfolders deep, so no image"):
        load_files(str(tmp_path), image_size=8, columns=Columns(group="folder:5"))


def test_a_subfolder_level_asked_for_is_kept_over_dicom_patient_ids(tmp_path, no_ray) -> None:
    """PatientIDs group a DICOM folder unasked; --group-column folder:N is the user's word,
    as a manifest's column is, and PatientIDs spread over its groups are warned about."""
    for label in ("benign", "malignant"):
        for n in range(3):
            for i in range(2):
                raw = dicom_bytes(np.full((8, 8), 40 * n + i, np.uint16), PatientID="SAME")
                path = tmp_path / label / f"{label[0]}{n}" / f"{i}.dcm"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(raw)
    table = load_files(str(tmp_path), image_size=8, columns=Columns(group="folder:1"))
    assert table.groups is not None
    assert sorted(set(table.groups)) == ["b0", "b1", "b2", "m0", "m1", "m2"]
    notes = table.info["notes"]
    assert any("(--group-column folder:1)" in n for n in notes), notes
    assert any("DICOM PatientID spread over several groups" in n for n in notes), notes


def test_a_subfolder_level_is_refused_where_there_are_no_subfolders(tmp_path, no_ray) -> None:
    _write(tmp_path / "flat" / "benign" / "a.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "flat" / "malignant" / "b.png", np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="hold their images directly, in no subfolders"):
        load_files(str(tmp_path / "flat"), image_size=8, columns=Columns(group="folder:1"))
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nflat/benign/a.png,benign\nflat/malignant/b.png,malignant\n")
    with pytest.raises(DataError, match="names a subfolder level of an image folder, but"):
        load_files(str(manifest), image_size=8, columns=Columns(group="folder:2"))


@pytest.mark.parametrize("inner", ["images", "same as the class"])
def test_a_single_subfolder_in_every_class_folder_is_a_wrapper_not_a_patient(
    tmp_path, no_ray, inner
) -> None:
    """``benign/images/*.png`` + ``malignant/images/*.png`` (one name across classes: one
    group of every image) and an unzip's ``benign/benign/*.png`` (one group per class):
    either way no split could be made. The images lie directly in the wrapper, so no
    level names patients: folds by image, and the note says the subfolders were not
    taken for patients."""
    rng = np.random.default_rng(1)
    for label in ("benign", "malignant"):
        for i in range(10):
            sub = "images" if inner == "images" else label
            _write(tmp_path / label / sub / f"{i}.png", rng.integers(0, 256, (8, 8), np.uint8))
    listing, notes = list_folder(tmp_path)
    assert "folder_group" not in listing
    shown = "'images'" if inner == "images" else "'benign', 'malignant'"
    assert notes == [
        "subfolders of the class folders not taken for patients (20 images in them): each "
        f"class folder holds a single subfolder ({shown}), a wrapper rather than a patient, "
        "and not every image lies in a folder below it; folds by image (to keep patients "
        "whole, pass a manifest with a patient column)"
    ]
    table = load_files(str(tmp_path), image_size=8)
    assert table.groups is None
    splits = make_splits(table.labels, folds=3, groups=table.groups, test_fraction=0.2)
    assert (splits.split == "test").sum() == 4


def test_patients_below_an_unzipped_archives_doubled_class_folder_are_kept_whole(
    tmp_path,
) -> None:
    """``benign/benign/p01/*.png``: the doubled folder is passed over, the patients below
    it are the groups (by name, across classes, as directly under a class folder)."""
    for label in ("benign", "malignant"):
        for p in ("p01", "p02", f"{label}-only"):
            _write(tmp_path / label / label / p / "a.png", np.zeros((8, 8), np.uint8))
    listing, notes = list_folder(tmp_path)
    assert sorted(set(listing["folder_group"])) == ["benign-only", "malignant-only", "p01", "p02"]
    assert "2 levels below the class folders" in notes[0]


def test_group_column_none_splits_a_folder_image_by_image(tmp_path, no_ray) -> None:
    _patient_folders(tmp_path)
    table = load_files(str(tmp_path), image_size=8, columns=Columns(group="none"))
    assert table.groups is None
    assert (
        "18 images in subfolders of the class folders not grouped by subfolder "
        "(--group-column none): folds by image"
    ) in table.info["notes"]
    flat = tmp_path / "flat"
    _write(flat / "benign" / "a.png", np.zeros((8, 8), np.uint8))
    _write(flat / "malignant" / "b.png", np.zeros((8, 8), np.uint8))
    listing, notes = list_folder(flat, groups=False)  # asked for: nothing to say
    assert "folder_group" not in listing and not notes
    listing, notes = list_folder(flat)  # no patients known: said, with how to name them
    assert "folder_group" not in listing
    assert notes == [
        "folds by image: the class folders hold their images directly, in no patient "
        "subfolders: where a patient has several images, put each patient's in a subfolder "
        "of its class folder (benign/p01/...) or pass a manifest with a patient column, so "
        "that they stay in one fold"
    ]


def test_a_dicom_folder_keeps_its_patient_ids_over_its_subfolders(tmp_path, no_ray) -> None:
    """PatientID names the patient where the files carry one; anonymised to blank, the
    subfolders do."""
    for cls, folders in (("benign", {"s1": "P1", "s2": "P1"}), ("malignant", {"s3": "P2"})):
        for folder, pid in folders.items():
            for k in range(2):
                raw = dicom_bytes(np.full((8, 8), k * 100 + 7, np.uint16), PatientID=pid)
                (tmp_path / "ids" / cls / folder).mkdir(parents=True, exist_ok=True)
                (tmp_path / "ids" / cls / folder / f"{k}.dcm").write_bytes(raw)
                raw = dicom_bytes(np.full((8, 8), k * 100 + 7, np.uint16))
                (tmp_path / "blank" / cls / folder).mkdir(parents=True, exist_ok=True)
                (tmp_path / "blank" / cls / folder / f"{k}.dcm").write_bytes(raw)
    table = load_files(str(tmp_path / "ids"), image_size=8)
    assert sorted(set(table.groups)) == ["P1", "P2"]
    assert not any(
        n.startswith("folds and the test split grouped by the class folders'")
        for n in table.info["notes"]
    )
    assert any("grouped by the DICOM files' PatientID" in n for n in table.info["notes"])
    table = load_files(str(tmp_path / "blank"), image_size=8)
    assert sorted(set(table.groups)) == ["s1", "s2", "s3"]


@pytest.mark.parametrize(
    "value",
    [
        "ANONYMOUS", "Anonymized", "anonymised", "ANON", "UNKNOWN", "NONE", "N/A", "n.a.",
        "NULL", "0", "00000000", "0000-0000", "PATIENT", "NONAME", "REMOVED", "De-Identified",
        "redacted", "xxx", "XXXXXXXX", "----", "-", "?", " Anonymous ",
    ],
)  # fmt: skip
def test_an_anonymisers_placeholder_names_no_patient(value: str) -> None:
    from raydx.data.files import placeholder_ids

    assert placeholder_ids([value, "P1", "P2"]) == {value}


@pytest.mark.parametrize(
    "value", ["P1", "Patient 1", "anonymous-17", "1", "11", "222", "007", "A", "xx", "AB12", ""]
)
def test_a_patients_id_is_no_placeholder(value: str) -> None:
    from raydx.data.files import placeholder_ids

    assert placeholder_ids([value, "P1"]) == set()


def test_zeros_are_a_patient_where_patients_are_numbered_from_0() -> None:
    from raydx.data.files import placeholder_ids

    assert placeholder_ids(["0", "2", "3"]) == {"0"}
    assert placeholder_ids(["0", "1", "2", "ANON"]) == {"ANON"}
    assert placeholder_ids(["000", "001", "002"]) == set()


def test_dicom_patients_takes_a_placeholder_for_no_patient_id() -> None:
    from raydx.data.files import dicom_patients

    got = dicom_patients(["P1", "ANONYMOUS", "", "P1", "Anonymized"], list("abcde"))
    assert list(got) == [
        "P1", "(no PatientID) b", "(no PatientID) c", "P1", "(no PatientID) e",
    ]  # fmt: skip


def _dicom_set(root: Path, ids: dict[str, list[tuple[str, str]]]) -> None:
    """root/<class>/<folder>/<i>.dcm, each file with its PatientID ("" leaves it out)."""
    rng = np.random.default_rng(0)
    for cls, files in ids.items():
        for i, (folder, pid) in enumerate(files):
            raw = dicom_bytes(
                rng.integers(0, 4096, (8, 8)).astype(np.uint16),
                **({"PatientID": pid} if pid else {}),
            )
            (root / cls / folder).mkdir(parents=True, exist_ok=True)
            (root / cls / folder / f"{i}.dcm").write_bytes(raw)


def test_a_placeholder_patient_id_is_no_patient_and_is_warned_about(tmp_path, no_ray) -> None:
    """An anonymiser's ANONYMOUS on most files was one "patient" holding nearly the whole
    set: no fold could split it, and nothing said so. Such an image is a group of its own,
    as one with a blank PatientID, with a warning that names the value."""
    _dicom_set(
        tmp_path,
        {
            "benign": [("", "P1"), ("", "P1"), ("", "ANONYMOUS"), ("", "ANONYMOUS")],
            "malignant": [("", "P2"), ("", "ANONYMOUS"), ("", "ANONYMOUS"), ("", "N/A")],
        },
    )
    table = load_files(str(tmp_path), image_size=8)
    groups = dict(zip(table.sample_ids, table.groups, strict=True))
    assert groups["benign/0.dcm"] == groups["benign/1.dcm"] == "P1"
    assert groups["malignant/1.dcm"] == "(no PatientID) malignant/1.dcm"
    assert len(set(table.groups)) == 2 + 5
    notes = table.info["notes"]
    assert (
        "folds and the test split grouped by the DICOM files' PatientID (0010,0020): "
        "2 patients; 5 images without one (not DICOM, or anonymised to blank or a "
        "placeholder) each a group of its own"
    ) in notes
    assert (
        "WARNING: DICOM PatientID 'ANONYMOUS' on 4 images, 'N/A' on 1 image are placeholders "
        "(an anonymiser's), not patients, so read as no PatientID: each of those images is a "
        "group of its own, and one patient's images may then fall on both sides of a fold "
        "(and of the test split); a manifest with a 'patient_id' column avoids that"
    ) in notes


def test_placeholder_patient_ids_alone_leave_the_patient_subfolders_to_group(
    tmp_path, no_ray
) -> None:
    """As with blank PatientIDs, patient subfolders of the class folders group instead."""
    _dicom_set(
        tmp_path,
        {
            "benign": [("s1", "ANONYMOUS"), ("s1", "ANONYMOUS"), ("s2", "ANONYMOUS")],
            "malignant": [("s3", "ANONYMOUS"), ("s3", "anonymous")],
        },
    )
    table = load_files(str(tmp_path), image_size=8)
    assert sorted(table.groups) == ["s1", "s1", "s2", "s3", "s3"]
    warning = [n for n in table.info["notes"] if "placeholder" in n]
    assert warning == [
        "WARNING: DICOM PatientID 'ANONYMOUS' on 4 images, 'anonymous' on 1 image are "
        "placeholders (an anonymiser's), not patients, so read as no PatientID: the images "
        "are grouped by the class folders' subfolders instead, and one patient's images may "
        "then fall on both sides of a fold (and of the test split); a manifest with a "
        "'patient_id' column avoids that"
    ]


def test_patient_subfolders_without_patient_ids_stay_whole_beside_one_with_them(
    tmp_path, no_ray
) -> None:
    """Once one patient's files carried a PatientID, every other image (a DICOM file
    anonymised to blank, a PNG) was a group of its own: 22 of 24 patient folders were
    spread over the folds and the test split. Such an image takes its subfolder."""
    rng = np.random.default_rng(0)
    for cls in ("benign", "malignant"):
        for p in range(12):
            folder = tmp_path / cls / f"p{cls[0]}{p:02d}"
            folder.mkdir(parents=True)
            for j in range(3):
                a = rng.integers(0, 4096, (8, 8)).astype(np.uint16)
                if folder.name == "pb00":
                    (folder / f"im{j}.dcm").write_bytes(dicom_bytes(a, PatientID="PAT-A"))
                elif p % 2:  # anonymised to blank
                    (folder / f"im{j}.dcm").write_bytes(dicom_bytes(a))
                else:
                    _write(folder / f"im{j}.png", (a >> 4).astype(np.uint8))
    _write(tmp_path / "benign" / "loose.png", rng.integers(0, 256, (8, 8), np.uint8))
    table = load_files(str(tmp_path), image_size=8)
    for seed in range(3):
        splits = make_splits(table.labels, folds=3, seed=seed, groups=table.groups)
        sides: dict[str, set[int]] = {}
        for sid, fold in zip(table.sample_ids, splits.fold, strict=True):
            sides.setdefault(sid.rsplit("/", 1)[0], set()).add(int(fold))  # -1: test
        assert {k: v for k, v in sides.items() if len(v) > 1} == {}
    groups = dict(zip(table.sample_ids, table.groups, strict=True))
    assert groups["benign/pb00/im0.dcm"] == "PAT-A"
    assert groups["benign/pb01/im2.dcm"] == "(subfolder) pb01"
    assert groups["malignant/pm02/im0.png"] == "(subfolder) pm02"
    assert groups["benign/loose.png"] == "(no PatientID) benign/loose.png"
    assert (
        "folds and the test split grouped by the DICOM files' PatientID (0010,0020): "
        "1 patient; 69 images without one (not DICOM, or anonymised to blank) grouped by "
        "the class folders' subfolders they lie in (23 subfolder names, e.g. 'pb01'), each "
        "subfolder taken whole with any PatientID in it; 1 image without one directly in a "
        "class folder each a group of its own"
    ) in table.info["notes"]


def test_an_image_without_a_patient_id_joins_the_patient_of_its_folder(tmp_path, no_ray) -> None:
    """A PNG beside a patient's DICOM files is that patient's; beside two patients' files
    it may be either's, so the two are one group, with a warning. A folder of two
    PatientIDs and no image without one keeps them apart."""
    rng = np.random.default_rng(0)

    def dcm(path: Path, pid: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            dicom_bytes(rng.integers(0, 4096, (8, 8)).astype(np.uint16), PatientID=pid)
        )

    def png(path: Path) -> None:
        _write(path, rng.integers(0, 256, (8, 8), np.uint8))

    dcm(tmp_path / "benign" / "s1" / "a.dcm", "P1")
    png(tmp_path / "benign" / "s1" / "b.png")
    dcm(tmp_path / "benign" / "s2" / "a.dcm", "P2")
    dcm(tmp_path / "benign" / "s2" / "b.dcm", "P3")
    png(tmp_path / "benign" / "s2" / "c.png")
    dcm(tmp_path / "malignant" / "s3" / "a.dcm", "P4")
    dcm(tmp_path / "malignant" / "s3" / "b.dcm", "P5")
    png(tmp_path / "malignant" / "s4" / "a.png")
    table = load_files(str(tmp_path), image_size=8)
    groups = dict(zip(table.sample_ids, table.groups, strict=True))
    assert groups == {
        "benign/s1/a.dcm": "P1",
        "benign/s1/b.png": "P1",
        "benign/s2/a.dcm": "P2",
        "benign/s2/b.dcm": "P2",
        "benign/s2/c.png": "P2",
        "malignant/s3/a.dcm": "P4",
        "malignant/s3/b.dcm": "P5",
        "malignant/s4/a.png": "(subfolder) s4",
    }
    assert (
        "WARNING: 2 DICOM PatientIDs joined into 1 group by subfolders that hold images "
        "without a PatientID beside them (e.g. 'P2', 'P3' with subfolder 's2'): such an "
        "image may be any of those patients', so they stay in one group; a manifest with a "
        "'patient_id' column names each image's patient"
    ) in table.info["notes"]


def test_a_placeholder_patient_id_in_a_patient_subfolder_takes_the_subfolder(
    tmp_path, no_ray
) -> None:
    """Where subfolders are patients, an ANONYMOUS file is its subfolder's, not a group of
    its own, and the warning says so."""
    _dicom_set(
        tmp_path,
        {
            "benign": [("s1", "P1"), ("s1", "ANONYMOUS"), ("s2", "ANONYMOUS")],
            "malignant": [("s3", "P2"), ("s3", "P2"), ("s4", "ANONYMOUS")],
        },
    )
    table = load_files(str(tmp_path), image_size=8)
    assert list(table.groups) == ["P1", "P1", "(subfolder) s2", "P2", "P2", "(subfolder) s4"]
    warning = [n for n in table.info["notes"] if "placeholder" in n and "WARNING" in n]
    assert warning == [
        "WARNING: DICOM PatientID 'ANONYMOUS' on 3 images is a placeholder (an anonymiser's), "
        "not a patient, so read as no PatientID: the images are grouped by the class "
        "folders' subfolders, with the PatientIDs beside them, and one patient's images may "
        "then fall on both sides of a fold (and of the test split); a manifest with a "
        "'patient_id' column avoids that"
    ]


def test_a_manifests_group_column_keeps_its_placeholder_with_a_warning(tmp_path) -> None:
    ids = ["UNKNOWN"] * 6 + ["p1", "p1", "p2", "p3", "0", "0"]
    listing, _, notes = read_manifest(_manifest(tmp_path, patient_id=ids), Columns())
    assert listing["group"].tolist() == ids  # the user's groups, as given
    assert (
        "WARNING: group column 'patient_id' holds placeholders rather than patient ids on "
        "several images ('UNKNOWN' on 6 images, '0' on 2 images): the images of each are "
        "kept whole in one fold as if one patient, which makes folds uneven, or impossible; "
        "give them their patients' ids"
    ) in notes
    numbered = [str(i // 2) for i in range(12)]  # patients 0 to 5: 0 is a patient
    _, _, notes = read_manifest(_manifest(tmp_path, patient_id=numbered), Columns())
    assert not any("placeholder" in n for n in notes)
    once = ["UNKNOWN"] + [f"p{i}" for i in range(11)]  # on one image it groups nothing
    _, _, notes = read_manifest(_manifest(tmp_path, patient_id=once), Columns())
    assert not any("placeholder" in n for n in notes)


@pytest.mark.parametrize(
    "name",
    [
        "lesion_id",  # HAM10000, ISIC
        "patientid",
        "subjectid",
        "caseid",
        "exam_id",
        "SeriesInstanceUID",
        "mouse_id",
        "eye_id",
        "visit_id",
        "PatientName",
        "Patient Number",
    ],
)
def test_more_patient_like_column_names_are_refused(tmp_path, name) -> None:
    path = _manifest(tmp_path, **{name: [f"p{i // 3}" for i in range(12)]})
    with pytest.raises(DataError, match=f"but column {name!r} looks like patient ids"):
        read_manifest(path, Columns())


@pytest.mark.parametrize(
    "name",
    ["patient_age", "Patient Gender", "PatientSex", "study_date", "image_id", "SeriesNumber",
     "case_description", "specimen_type", "StudyDescription"],
)  # fmt: skip
def test_attributes_of_a_patient_are_not_taken_for_patient_ids(tmp_path, name) -> None:
    listing, _, _ = read_manifest(_manifest(tmp_path, **{name: ["x"] * 12}), Columns())
    assert "group" not in listing


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("Lung Lesion", ["1.0", "0.0", "-1.0", ""]),  # CheXpert: a finding
        ("eye", ["left", "right", "both", "left"]),  # laterality
        ("left_eye", ["a", "b", "c", "a"]),
        ("right eye", ["a", "b", "c", "a"]),
        ("num_lesions", ["1", "2", "3", "1"]),
        ("visit", ["1", "2", "3", "1"]),
        ("series", ["1", "2", "3", "1"]),
        ("exam", ["x1", "x2", "x3", "x1"]),
    ],
)
def test_findings_and_attributes_named_like_a_unit_are_not_patient_ids(
    tmp_path, name, values
) -> None:
    """Lesion, eye, exam, series, visit and mouse name a finding or an attribute as often
    as a unit: they count only with an id-ish word after them (``lesion_id``)."""
    listing, _, notes = read_manifest(_manifest(tmp_path, **{name: values * 3}), Columns())
    assert "group" not in listing and "no group column: folds by image" in notes


@pytest.mark.parametrize("name", ["lesion_id", "PatientID"])
def test_an_id_column_stops_the_run_only_where_its_values_could_be_patients(tmp_path, name) -> None:
    """Some value on two rows or more, and more than 2 values: patients whose images must
    stay whole. All-unique ids group nothing; 2 values are an attribute."""
    repeating = [f"p{i // 3}" for i in range(12)]
    with pytest.raises(DataError, match=f"but column {name!r} looks like patient ids"):
        read_manifest(_manifest(tmp_path, **{name: repeating}), Columns())
    for values in ([f"p{i}" for i in range(12)], ["a", "b"] * 6):
        listing, _, _ = read_manifest(_manifest(tmp_path, **{name: values}), Columns())
        assert "group" not in listing


def test_an_all_unique_patient_column_does_not_stop_the_run(tmp_path) -> None:
    path = _manifest(tmp_path, patient=[f"p{i}" for i in range(12)])
    listing, _, notes = read_manifest(path, Columns())
    assert "group" not in listing and "no group column: folds by image" in notes


@pytest.mark.parametrize("name", ["Data Set", "data_set", "image_set", "Set"])
def test_a_split_like_column_of_source_names_is_not_a_split(tmp_path, name) -> None:
    """HAM10000's ``dataset`` style: which archive an image came from, not held-out rows.
    Only a column holding 'test' or a held-out-like value stops the run."""
    sources = ["HAM10000", "BCN20000", "MSK-1"] * 4
    listing, _, _ = read_manifest(_manifest(tmp_path, **{name: sources}), Columns())
    assert "split" not in listing
    held = ["train"] * 8 + ["holdout"] * 4
    with pytest.raises(DataError, match=f"has column {name!r}, which looks like a train/test"):
        read_manifest(_manifest(tmp_path, **{name: held}), Columns())


@pytest.mark.parametrize(
    "values",
    [
        ["train", "valid", "internal_test"] * 4,
        ["training", "validation", "evaluation"] * 4,
        ["0", "1", "2"] * 4,  # a split coded as numbers
    ],
)
def test_a_split_like_column_of_split_words_or_codes_is_refused(tmp_path, values) -> None:
    # Left unread, its held-out rows would be trained on: raydx would draw its own split.
    with pytest.raises(DataError, match="has column 'partition', which looks like a train/test"):
        read_manifest(_manifest(tmp_path, partition=values), Columns())


def test_every_patient_like_column_is_named(tmp_path) -> None:
    ids = [f"p{i // 3}" for i in range(12)]
    path = _manifest(tmp_path, lesion_id=ids, patient_age=[50] * 12, PatientName=ids)
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    msg = str(info.value)
    assert "but columns 'lesion_id', 'PatientName' look like patient ids" in msg
    assert "pass --group-column NAME (one of lesion_id, PatientName) to keep each" in msg
    assert "--group-column none if none of them holds patients (folds by image)." in msg


@pytest.mark.parametrize("name", ["Split", "subset", "partition", "set", "data_split"])
def test_a_split_column_under_another_name_is_refused(tmp_path, name) -> None:
    """Ignored, its test rows would be trained on (raydx draws its own test split)."""
    path = _manifest(tmp_path, **{name: ["train"] * 8 + ["test"] * 4})
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    msg = str(info.value)
    assert f"has column {name!r}, which looks like a train/test split but is not read" in msg
    assert f"Pass --split-column {name} to hold out its 'test' rows, or --split-column none" in msg
    listing, _, _ = read_manifest(path, Columns(split=name))
    assert listing["split"].tolist() == ["train"] * 8 + ["test"] * 4
    listing, _, _ = read_manifest(path, Columns(split="none"))  # on purpose
    assert "split" not in listing


def test_a_second_split_like_column_beside_split_is_refused(tmp_path) -> None:
    path = _manifest(tmp_path, split=["train"] * 12, subset=["train"] * 8 + ["test"] * 4)
    with pytest.raises(DataError, match=r"has a split column 'split', and also column 'subset'"):
        read_manifest(path, Columns())
    assert "split" in read_manifest(path, Columns(split="subset"))[0]


@pytest.mark.parametrize("held", ["holdout", "external", "Hidden", "test_2"])
def test_held_out_rows_beside_test_rows_are_refused(tmp_path, held) -> None:
    """With 'test' rows present, rows marked 'external' would still join the pool."""
    path = _manifest(tmp_path, split=["train"] * 6 + ["test"] * 4 + [held] * 2)
    with pytest.raises(DataError) as info:
        read_manifest(path, Columns())
    assert (
        f"split column 'split' has 'test' rows, and 2 rows marked {held.lower()!r}, which "
        "would join the cross-validation pool"
    ) in str(info.value)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HER2+", "HER2-"),
        ("ER+", "ER-"),
        ("ER +", "ER"),
        ("-1", "1"),
        ("1.5", "15"),  # a decimal point between digits counts too
        ("BI-RADS 4", "BI-RADS 5"),
        ("Grade 2", "Grade 3"),
    ],
)
def test_labels_that_differ_in_a_sign_or_digit_are_two_classes(tmp_path, no_ray, a, b) -> None:
    """A sign at an edge (``-1``, ``HER2+``) or a digit names another class: both ways round."""
    for first, second in ((a, b), (b, a)):
        path = _manifest(tmp_path, label=[first, second] * 6)
        table = load_files(str(path), image_size=8)
        assert sorted(table.class_names) == sorted([a, b])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("COVID-19", "COVID19"),
        ("COVID-19", "covid 19"),
        ("Grade-2", "Grade 2"),
        ("BI-RADS-4", "BI-RADS 4"),
        ("Benign.", "Benign"),
        ("T1", "T-1"),  # a hyphen inside a label is punctuation, not a sign
        ("HER2+", "her2 +"),
    ],
)
def test_labels_that_differ_only_in_punctuation_between_letters_and_digits_are_refused(
    tmp_path, no_ray, a, b
) -> None:
    """Compared by their lower-cased letters and digits, as before the sign rule: one
    class written two ways, which would train as two classes."""
    for first, second in ((a, b), (b, a)):
        path = _manifest(tmp_path, label=[first, second] * 6)
        x, y = sorted([first, second])
        with pytest.raises(DataError) as info:
            load_files(str(path), image_size=8)
        assert str(info.value) == (
            f"labels {x!r} (6 images) and {y!r} (6 images) differ only in case, spaces or "
            "punctuation, so they would be two classes; write each class one way."
        )


def test_a_rare_label_written_like_a_common_one_is_refused_as_a_misspelling(tmp_path) -> None:
    labels = ["COVID-19"] * 20 + ["normal"] * 21 + ["covid 19"]
    with pytest.raises(DataError, match="is it a misspelling of 'COVID-19'"):
        read_manifest(_manifest(tmp_path, n=42, label=labels), Columns())
    labels = ["ER+"] * 20 + ["normal"] * 21 + ["ER-"]
    read_manifest(_manifest(tmp_path, n=42, label=labels), Columns())  # a class of its own


def test_labels_that_differ_in_a_hyphen_between_letters_are_refused(tmp_path, no_ray) -> None:
    path = _manifest(tmp_path, label=["non-tumour", "tumour", "non tumour", "tumour"] * 3)
    with pytest.raises(DataError, match=r"'non tumour' .* and 'non-tumour' .* differ only in case"):
        load_files(str(path), image_size=8)


def test_a_rare_class_numbered_like_a_common_one_is_not_a_misspelling(tmp_path) -> None:
    """BI-RADS 5 on 2 rows beside BI-RADS 4 on 40 is a small class, not a typo."""
    labels = ["BI-RADS 4"] * 20 + ["BI-RADS 3"] * 20 + ["BI-RADS 5"] * 2
    read_manifest(_manifest(tmp_path, n=42, label=labels), Columns())
    labels = ["HER2-"] * 40 + ["HER2+"] * 2
    read_manifest(_manifest(tmp_path, n=42, label=labels), Columns())
    labels = ["BI-RADS 4"] * 40 + ["BI-RADS4"] * 1 + ["BI-RADS 3"]
    with pytest.raises(DataError, match="is it a misspelling of 'BI-RADS 4'"):
        read_manifest(_manifest(tmp_path, n=42, label=labels), Columns())


def test_numeric_labels_written_two_ways_are_one_class(tmp_path, no_ray) -> None:
    path = _manifest(tmp_path, label=["0", "1", "0.0", "1.0"] * 3)
    table = load_files(str(path), image_size=8)
    assert table.class_names == ("0", "1") and list(table.labels) == [0, 1] * 6
    assert (
        "numeric labels read as whole numbers, one class per number: '0.0' as '0', "
        "'1.0' as '1'" in table.info["notes"]
    )
    listing, _, _ = read_manifest(_manifest(tmp_path, label=["0.5", "1", "2", "x"] * 3), Columns())
    assert sorted(set(listing["label"])) == ["0.5", "1", "2", "x"]  # not all numbers: as written


def test_windows_backslash_paths_are_read_with_slashes(tmp_path) -> None:
    _write(tmp_path / "images" / "a0.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "images" / "a1.png", np.zeros((8, 8), np.uint8))
    pd.DataFrame({"path": ["images\\a0.png", "images\\a1.png"], "label": ["b", "m"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    listing, _, _ = read_manifest(tmp_path / "m.csv", Columns())
    assert listing["path"].tolist() == [str(tmp_path / "images" / f"a{i}.png") for i in (0, 1)]
    assert listing["sample_id"].tolist() == ["images\\a0.png", "images\\a1.png"]


def test_windows_paths_found_nowhere_are_named_before_ray_starts(tmp_path) -> None:
    """All missing is otherwise left to the workers (a cluster that alone mounts the data)."""
    from raydx.data.files import _check_files_exist

    pd.DataFrame({"path": ["C:\\data\\a0.png", "C:\\data\\a1.png"], "label": ["b", "m"]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    listing, _, _ = read_manifest(tmp_path / "m.csv", Columns())
    with pytest.raises(DataError) as info:
        _check_files_exist(listing)
    msg = str(info.value)
    assert "none of the 2 images of the manifest is found on this machine" in msg
    assert "2 paths are written with Windows backslashes (e.g. 'C:\\\\data\\\\a0.png'" in msg
    ok = pd.DataFrame({"sample_id": ["a.png"], "path": [str(tmp_path / "a.png")]})
    _check_files_exist(ok)  # all missing without backslashes: the workers decide


@pytest.mark.parametrize("sep", [";", "\t"])
def test_a_semicolon_or_tab_separated_manifest_is_read(tmp_path, sep) -> None:
    _write(tmp_path / "0.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "1.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "m.csv").write_text(f"path{sep}label\n0.png{sep}a,b\n1.png{sep}c\n")
    listing, _, notes = read_manifest(tmp_path / "m.csv", Columns())
    assert listing["label"].tolist() == ["a,b", "c"]
    assert notes[1] == f"columns separated by {'semicolons' if sep == ';' else 'tabs'}"


# ------------------------------------------------- the duplicate key of a picture


def _encoded(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_the_same_picture_has_one_hash_in_any_mode() -> None:
    """Grey saved as L, as RGB, as LA and as a grey palette; colour as RGB, as opaque
    RGBA and as a palette: each one picture, one key (a copy in two folds is found)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 12), dtype=np.uint8)
    grey = Image.fromarray(a)
    ways = [grey, grey.convert("RGB"), grey.convert("LA"), grey.convert("RGBA")]
    assert len({decode(_encoded(im), 8).hash for im in ways}) == 1
    assert decode(_encoded(grey), 8).hash == content_hash(a)  # 8-bit grey: as before
    idx = rng.integers(0, 4, (16, 12), dtype=np.uint8)
    p = Image.fromarray(idx, mode="P")
    p.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200, 90, 90, 90])
    colour = p.convert("RGB")
    assert decode(_encoded(p), 8).hash == decode(_encoded(colour), 8).hash
    assert decode(_encoded(colour), 8).hash == content_hash(np.asarray(colour))  # as before
    assert decode(_encoded(p), 8).hash == decode(_encoded(p.convert("RGBA")), 8).hash
    bits = Image.fromarray(a > 127)
    assert decode(_encoded(bits), 8).hash == content_hash((a > 127).astype(np.uint8) * 255)


def test_other_pictures_have_other_hashes() -> None:
    """Equal palette indices under other palettes, and equal bytes as other numbers."""
    idx = np.random.default_rng(1).integers(0, 4, (16, 12), dtype=np.uint8)
    p1 = Image.fromarray(idx, mode="P")
    p1.putpalette([0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255])
    p2 = Image.fromarray(idx, mode="P")
    p2.putpalette([255, 255, 255, 170, 170, 170, 85, 85, 85, 0, 0, 0])
    assert decode(_encoded(p1), 8).hash != decode(_encoded(p2), 8).hash
    u = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    assert content_hash(u) != content_hash(u.view(np.int16))
    assert content_hash(u.astype(">u2")) == content_hash(u)  # byte order is not content


def test_an_older_runs_column_name_for_a_folder_is_dropped_with_a_warning(tmp_path) -> None:
    """Before December 2026 a folder ignored --group-column patient_id; a run saved so is
    resumed and re-checked as it ran (its subfolders grouped it), not refused."""
    from raydx.prepare import older_folder_group

    said: list[str] = []
    folder = {"data": str(tmp_path), "group_column": "patient_id", "folds": 5}
    assert older_folder_group(folder, said.append) == {**folder, "group_column": None}
    assert len(said) == 1 and "'patient_id' names a manifest column" in said[0]
    for kept in (
        {**folder, "group_column": "folder:2"},
        {**folder, "group_column": "none"},
        {**folder, "group_column": None},
        {**folder, "data": str(tmp_path / "m.csv")},
        {**folder, "data": "synthetic"},
    ):
        assert older_folder_group(kept, said.append) == kept
    assert len(said) == 1


def test_rows_sharing_any_key_are_one_component_named_by_its_first_row() -> None:
    from raydx.data.components import row_components

    #         rows: 0    1     2    3     4
    patient = ["a", None, "b", "a", None]
    folder = [None, "x", "x", None, None]
    assert row_components(patient, folder).tolist() == [0, 1, 1, 0, 4]
    # joined through a third row: 0-2 by patient, 2-4 by folder
    assert row_components(["a", None, "a", None, None], [None, None, "x", None, "x"]).tolist() == [
        0,
        1,
        0,
        3,
        0,
    ]
    assert row_components([], []).tolist() == []


@pytest.mark.parametrize("split", [False, True])
def test_a_limit_cuts_the_listing_to_the_rows_the_table_would_keep(
    tmp_path: Path, no_ray: None, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """--limit 100 on a large set decoded every image, then kept 100. The listing is now
    cut first, to exactly the rows that cutting the decoded table keeps (a run's subset
    stays the same), with 12 classes, whose index strings sort otherwise than their
    names ('10' < '2')."""
    import raydx.data.files as files
    from raydx.prepare import limit_rows

    rng = np.random.default_rng(0)
    labels = [f"c{i % 12:02d}" for i in range(90)]
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(90)], "label": labels})
    for i in range(90):
        _write(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8), np.uint8))
    if split:
        frame["split"] = rng.choice(["train", "val", "test"], 90, p=[0.6, 0.1, 0.3])
    frame.to_csv(tmp_path / "m.csv", index=False)
    decoded: list[int] = []
    monkeypatch.setattr(
        files,
        "ingest_paths",
        lambda paths, *a, **k: (decoded.append(len(paths)), ingest_here(paths, *a, **k))[1],
    )
    whole = load_files(str(tmp_path / "m.csv"))
    for limit, seed in ((30, 0), (41, 3), (89, 1)):
        cut = load_files(str(tmp_path / "m.csv"), limit=limit, seed=seed)
        assert decoded[-1] == limit  # only the subset's images were decoded
        kept = limit_rows(whole, limit, seed)
        assert cut.sample_ids.tolist() == kept.sample_ids.tolist()
        assert cut.class_names == whole.class_names
        np.testing.assert_array_equal(cut.images, kept.images)
    with pytest.raises(RaydxError, match=r"limit=5 is smaller than the [0-9]+ \(split, label\)"):
        load_files(str(tmp_path / "m.csv"), limit=5)


def test_a_limit_leaves_the_listing_whole_where_dicom_ids_may_group_it(
    tmp_path: Path, no_ray: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DICOM PatientIDs are grouped by rules that look at every image (a placeholder id
    '0' is a patient only beside a '1'; an image without an id joins its subfolder's):
    a listing cut before decoding could group otherwise than the whole set, so where
    patients may come from DICOM, the table is cut after decoding, as before."""
    import raydx.data.files as files
    from raydx.data.files import _may_group_by_dicom

    def listing(*paths: str, **more: list[str]) -> pd.DataFrame:
        return pd.DataFrame({"path": list(paths), **more})

    assert not _may_group_by_dicom(listing("/a/x.png", "/a/y.JPG"))
    assert _may_group_by_dicom(listing("/a/x.png", "/a/y.dcm"))
    assert _may_group_by_dicom(listing("/a/x.png", "/a/IM0001"))  # DICOM without a suffix
    assert not _may_group_by_dicom(listing("/a/y.dcm", group=["p1"]))  # the column's patients
    decoded: list[int] = []
    here = files.ingest_paths
    monkeypatch.setattr(
        files,
        "ingest_paths",
        lambda paths, *a, **k: (decoded.append(len(paths)), here(paths, *a, **k))[1],
    )
    rng = np.random.default_rng(1)
    rows = []
    for i in range(24):
        pid = str(i // 3)
        (tmp_path / f"{i}.dcm").write_bytes(
            dicom_bytes(rng.integers(0, 256, (8, 8), np.uint8), PatientID=pid)
        )
        rows.append({"path": f"{i}.dcm", "label": ["a", "b"][i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    table = load_files(str(tmp_path / "m.csv"), limit=10)
    assert decoded == [24] and len(table) == 24  # prepare.limit_rows cuts it after
    # A listing that is not cut is not the table's rows: a patient on both sides of the
    # given test split may be left out by the limit, so that is not refused from it.
    frame = pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(24)],
            "label": ["a", "b"] * 12,
            "patient_id": [f"p{i // 2}" for i in range(24)],
            "split": ["train", "test"] * 12,  # every patient on both sides
        }
    )
    for i in range(24):
        _write(tmp_path / f"{i}.png", rng.integers(0, 256, (8, 8), np.uint8))
    frame.to_csv(tmp_path / "both.csv", index=False)
    with pytest.raises(DataError, match="has samples both in the official test split"):
        load_files(str(tmp_path / "both.csv"), folds=2)
    with pytest.raises(DataError, match="has samples both in the official test split"):
        load_files(str(tmp_path / "both.csv"), folds=2, limit=12)  # cut first: still both
    monkeypatch.setattr(files, "_may_group_by_dicom", lambda listing: True)
    monkeypatch.setattr(
        files, "_check_enough_for_folds", _spy := _Calls(files._check_enough_for_folds)
    )
    load_files(str(tmp_path / "both.csv"), folds=2, limit=12)
    assert _spy.kwargs[-1]["exact_groups"] is False


class _Calls:
    def __init__(self, inner: Any) -> None:
        self.inner, self.kwargs = inner, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.kwargs.append(kwargs)
        return self.inner(*args, **kwargs)


def test_a_class_short_of_folds_in_a_limit_subset_names_the_limit(
    tmp_path: Path, no_ray: None
) -> None:
    rng = np.random.default_rng(2)
    for c in ("benign", "malignant"):
        for i in range(20):
            _write(tmp_path / "data" / c / f"{i}.png", rng.integers(0, 256, (8, 8), np.uint8))
    with pytest.raises(
        DataError,
        match=r"class 'benign' has 3 images in the --limit 6 subset of 'data', fewer than "
        r"folds=5; use fewer folds or a larger --limit\.",
    ):
        load_files(str(tmp_path / "data"), folds=5, limit=6)


def test_unreadable_manifests_are_refused_with_their_reason(tmp_path) -> None:
    with pytest.raises(DataError, match=r"must end in \.csv or \.parquet, but got '\.txt'\.$"):
        read_manifest(tmp_path / "m.txt", Columns())
    broken = tmp_path / "m.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"m\.parquet' is not a readable Parquet file: "):
        read_manifest(broken, Columns())
    latin = tmp_path / "m.csv"
    latin.write_bytes("path,label\na.png,b\xe9nin\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"m\.csv' is not a readable CSV file: "):
        read_manifest(latin, Columns())


def test_a_class_whose_images_are_all_bad_is_named(tmp_path, no_ray) -> None:
    """--skip-bad-images leaves bad files out, but not a whole class without a word."""
    path = _manifest(tmp_path)
    frame = pd.read_csv(path)
    for p in frame.loc[frame["label"] == "malignant", "path"]:
        (tmp_path / p).write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"^class 'malignant' has no readable image left after"):
        load_source(str(path), skip_bad=True, image_size=8)
