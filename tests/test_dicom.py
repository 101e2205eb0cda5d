"""DICOM files: the picture a viewer shows (modality LUT, window, MONOCHROME1), one frame
per file, compressed syntaxes, and a class folder of .dcm files through the loader."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from image_files import bare_dicom_bytes, dicom_bytes
from pydicom.dataset import Dataset

from raydx.data.decode import decode, probe_size, reason
from raydx.data.dicom import is_dicom
from raydx.data.files import list_folder
from raydx.data.sources import load_source

TEST_FILES = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


def _ramp(shape: tuple[int, int] = (12, 16), hi: int = 4095) -> np.ndarray:
    return np.linspace(0, hi, shape[0] * shape[1]).round().astype(np.uint16).reshape(shape)


def test_a_dicom_file_is_told_by_its_header_not_its_name() -> None:
    raw = dicom_bytes(_ramp())
    assert raw[:128] == bytes(128) and is_dicom(raw)
    png = io.BytesIO()
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png, format="PNG")
    assert not is_dicom(png.getvalue())


def test_without_a_window_12_bits_are_stretched_min_max() -> None:
    """As a 16-bit PNG is: the image's own range onto 0-255."""
    a = _ramp()
    a[0, 0] = 100  # the minimum is not 0
    d = decode(dicom_bytes(a, BitsStored=12), 16)  # no resize along the columns
    assert d.image.shape == (16, 16, 1) and d.grey
    assert (d.width, d.height) == (16, 12)
    assert d.mode == "DICOM MONOCHROME2 12-bit without a window"
    exact = decode(dicom_bytes(a[:, :12], BitsStored=12), 12).image[..., 0]
    lo, hi = a[:, :12].min(), a[:, :12].max()
    want = np.rint((a[:, :12] - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    np.testing.assert_array_equal(exact, want)


def test_the_files_window_is_applied_after_the_rescale() -> None:
    """CT-like: stored values -> Hounsfield units (slope, intercept) -> the window, whose
    full range maps onto 0-255 (DICOM PS3.3 C.11.2.1.2.1, LINEAR), clipped outside it."""
    stored = _ramp((12, 12), 3000)
    raw = dicom_bytes(
        stored,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    got = decode(raw, 12).image[..., 0].astype(float)
    hu = stored.astype(float) - 1024
    c, w = 40 - 0.5, 400 - 1
    want = np.clip(((hu - c) / w + 0.5) * 255, 0, 255)
    want[hu <= c - w / 2] = 0
    want[hu > c + w / 2] = 255
    np.testing.assert_allclose(got, np.rint(want), atol=1)
    assert (got == 0).sum() > 10 and (got == 255).sum() > 10  # air and bone clipped


def test_a_greyscale_files_mode_names_the_mapping_it_carries() -> None:
    """What --intensity auto uses, so that the summary, the intensity count and
    to_uint8's warning can tell; an 8-bit file without one passes unchanged."""
    from raydx.data.dicom import read_dicom
    from raydx.data.intensity import scaled_count

    wide, narrow = _ramp((8, 8), 3000), _ramp((8, 8), 200).astype(np.uint8)
    modes = {
        "DICOM MONOCHROME2 12-bit without a window": dicom_bytes(wide, BitsStored=12),
        "DICOM MONOCHROME2 12-bit with a window": dicom_bytes(
            wide, BitsStored=12, WindowCenter=1500, WindowWidth=1000
        ),
        "DICOM MONOCHROME2 12-bit with a VOI LUT": dicom_bytes(
            wide, BitsStored=12, VOILUTSequence=_voi_lut(0, 4096, 12)
        ),
        "DICOM MONOCHROME2 8-bit": dicom_bytes(narrow),
        "DICOM MONOCHROME1 8-bit with a window": dicom_bytes(
            narrow, "MONOCHROME1", WindowCenter=100, WindowWidth=50
        ),
        "DICOM MONOCHROME2 8-bit without a window": dicom_bytes(narrow, RescaleIntercept=-10),
    }
    for want, raw in modes.items():
        assert read_dicom(raw).mode == want
    assert scaled_count(dict.fromkeys(modes, 1)) == 5  # all but the unchanged 8-bit file


def test_monochrome1_is_inverted_so_white_means_dense() -> None:
    a = _ramp(hi=1023)
    one = decode(dicom_bytes(a, "MONOCHROME1", BitsStored=10), 16).image
    two = decode(dicom_bytes(a, "MONOCHROME2", BitsStored=10), 16).image
    np.testing.assert_array_equal(one, 255 - two)


def test_rgb_is_read_as_stored() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    d = decode(dicom_bytes(a), 10)
    assert not d.grey and d.mode == "DICOM RGB 8-bit"
    np.testing.assert_array_equal(d.image, a)


def test_monochrome1_and_monochrome2_of_the_same_values_are_two_pictures() -> None:
    """Equal stored values, inverted on the screen: not duplicates of each other."""
    a = _ramp(hi=1023)
    one = decode(dicom_bytes(a, "MONOCHROME1", BitsStored=10), 16)
    two = decode(dicom_bytes(a, "MONOCHROME2", BitsStored=10), 16)
    assert one.hash != two.hash
    assert two.hash == decode(dicom_bytes(a, "MONOCHROME2", BitsStored=12), 16).hash


def test_grey_stored_as_rgb_is_the_grey_file_it_equals() -> None:
    """An 8-bit picture has one key as DICOM grey, DICOM RGB and PNG: a copy exported
    twice is found across folds."""
    from image_files import png_bytes

    a = np.random.default_rng(2).integers(0, 256, (10, 12), dtype=np.uint8)
    keys = {
        decode(dicom_bytes(a), 8).hash,
        decode(dicom_bytes(np.dstack([a, a, a])), 8).hash,
        decode(png_bytes(a), 8).hash,
    }
    assert len(keys) == 1


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"]
)
def test_lossless_compressed_files_decode_to_the_uncompressed_pixels(name: str) -> None:
    """pydicom's RLE and the pinned GDCM (JPEG-LS, JPEG 2000)."""
    plain = decode((TEST_FILES / "MR_small.dcm").read_bytes(), 32)
    packed = decode((TEST_FILES / name).read_bytes(), 32)
    assert packed.hash == plain.hash  # the same stored pixels: a duplicate across syntaxes
    np.testing.assert_array_equal(packed.image, plain.image)


def test_jpeg_lossless_the_common_pacs_export_decodes_exactly() -> None:
    """Process 14 (1.2.840.10008.1.2.4.70), against the same picture stored as RLE."""
    rle = decode((TEST_FILES / "SC_rgb_rle.dcm").read_bytes(), 32)
    jpeg = decode((TEST_FILES / "SC_rgb_jpeg_gdcm.dcm").read_bytes(), 32)
    assert jpeg.hash == rle.hash and jpeg.mode == "DICOM RGB 8-bit"
    np.testing.assert_array_equal(jpeg.image, rle.image)


def test_what_is_not_one_2d_image_is_refused_with_why() -> None:
    raw = dicom_bytes(_ramp(), NumberOfFrames=2)  # refused on the header, before the pixels
    with pytest.raises(ValueError, match=r"2 frames .* export one frame per file"):
        decode(raw, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = (TEST_FILES / "reportsi.dcm").read_bytes()
    with pytest.raises(ValueError, match=r"without pixel data \(SR\)"):
        decode(report, 16)
    broken = (TEST_FILES / "JPEG-lossy.dcm").read_bytes()
    with pytest.raises(ValueError) as e:
        decode(broken, 16)
    assert reason(e.value).startswith(
        "ValueError: cannot decode its DICOM pixel data (JPEG Extended (Process 2 and 4)): "
    )
    assert "\n" not in reason(e.value)


@pytest.mark.parametrize("implicit", [True, False])
def test_a_dicom_data_set_without_the_file_header_is_read(implicit: bool) -> None:
    """Older exports write the data set alone: no preamble, no "DICM", no file meta."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    raw = dicom_bytes(_ramp(), BitsStored=12)
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, implicit
    write_dataset(buf, pydicom.dcmread(io.BytesIO(raw)))
    bare = buf.getvalue()
    assert not is_dicom(bare)
    got, want = decode(bare, 16), decode(raw, 16)
    assert got.mode == "DICOM MONOCHROME2 12-bit without a window" and got.hash == want.hash
    np.testing.assert_array_equal(got.image, want.image)


def test_a_bare_data_set_without_a_suffix_is_listed_as_an_image(tmp_path: Path) -> None:
    # IM000001 of an older export: no suffix, no preamble, no "DICM".
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from raydx.data.files import is_image_file

    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, pydicom.dcmread(io.BytesIO(dicom_bytes(_ramp()))))
    for name in ("IM000001", "1.2.840.10008.320"):
        (tmp_path / name).write_bytes(buf.getvalue())
        assert is_image_file(tmp_path / name)
    (tmp_path / "README").write_text("not an image\n")
    (tmp_path / "notes.txt").write_bytes(buf.getvalue())  # a suffix of its own: not read
    assert not is_image_file(tmp_path / "README")
    assert not is_image_file(tmp_path / "notes.txt")


class _CountingFile:
    """A file opened for reading that counts the bytes read from it."""

    def __init__(self, f: Any, read: list[int]) -> None:
        self.f, self.read_sizes = f, read

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.read_sizes.append(len(data))
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def test_a_large_file_without_a_suffix_is_read_only_as_far_as_it_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing a folder looks into every file without a suffix for a bare DICOM data set:
    a 4 MiB export log or archive among the images must cost a few bytes, not its size;
    a bare data set is read to its pixel data's tag, long values before it skipped, and
    found however far its pixel data lies (a 200 KiB ICC profile before it)."""
    import builtins

    import raydx.data.files as files

    read: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> _CountingFile:
        return _CountingFile(builtins.open(*args, **kwargs), read)  # closed on exit

    monkeypatch.setattr(files, "open", counted, raising=False)  # files.py's own open
    rng = np.random.default_rng(0)
    (tmp_path / "ARCHIVE").write_bytes(rng.integers(0, 256, 4 << 20, np.uint8).tobytes())
    (tmp_path / "EXPORTLOG").write_text("2024-01-01 export of study 1.2.3 done\n" * 100_000)
    (tmp_path / "IM000001").write_bytes(bare_dicom_bytes(_ramp((1024, 1024))))  # 2 MiB
    profiled = bare_dicom_bytes(_ramp((64, 64)), ICCProfile=b"\0" * (200 << 10))
    assert profiled.index(b"\xe0\x7f\x10\x00") > 200 << 10  # PixelData's tag after it
    (tmp_path / "IM000002").write_bytes(profiled)
    for name, want in (
        ("ARCHIVE", False),
        ("EXPORTLOG", False),
        ("IM000001", True),
        ("IM000002", True),
    ):
        read.clear()
        assert files.is_image_file(tmp_path / name) is want, name
        assert 0 < sum(read) <= 8192, (name, sum(read))


def test_a_bare_data_set_is_told_by_the_elements_before_its_pixels() -> None:
    """The elements before the pixel data decide: a head cut inside the pixels is a data
    set with pixel data; one without pixel data, or without Rows, is not an image."""
    from raydx.data.dicom import headerless_dicom

    big = bare_dicom_bytes(_ramp((512, 512)))
    assert headerless_dicom(big) and headerless_dicom(io.BytesIO(big))
    assert headerless_dicom(big[:4096])  # the header alone, the pixel data's tag in it
    ds = pydicom.dcmread(io.BytesIO(big), force=True)
    del ds.PixelData
    no_pixels = io.BytesIO()
    ds.save_as(no_pixels, implicit_vr=True, little_endian=True)  # no preamble, no meta
    assert not headerless_dicom(no_pixels.getvalue())
    del ds.Rows
    ds.PixelData = b"\0" * 16
    no_rows = io.BytesIO()
    ds.save_as(no_rows, implicit_vr=True, little_endian=True)
    assert not headerless_dicom(no_rows.getvalue())
    assert not headerless_dicom(b"path,label\na.png,benign\n" * 5000)


def test_the_size_comes_from_the_header_alone() -> None:
    raw = dicom_bytes(_ramp((300, 200)))
    assert probe_size(raw[:2048]) == (200, 300)


def test_a_class_folder_lists_dcm_files(tmp_path: Path) -> None:
    for cls in ("benign", "malignant"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.dcm").write_bytes(dicom_bytes(_ramp()))
    rows, _ = list_folder(tmp_path)
    assert sorted(rows["sample_id"]) == [
        "benign/0.dcm",
        "benign/1.dcm",
        "malignant/0.dcm",
        "malignant/1.dcm",
    ]


@pytest.mark.ray
def test_a_folder_of_dicom_files_loads_as_a_viewer_shows_them(ray_session, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    want = {}
    for cls, photometric in (("benign", "MONOCHROME2"), ("malignant", "MONOCHROME1")):
        (tmp_path / cls).mkdir()
        for i in range(3):
            a = rng.integers(0, 4096, size=(20, 20), dtype=np.uint16)
            raw = dicom_bytes(a, photometric, BitsStored=12)
            (tmp_path / cls / f"img{i}.dcm").write_bytes(raw)
            want[f"{cls}/img{i}.dcm"] = decode(raw, 20).image
    table = load_source(str(tmp_path))  # the native 20 px
    assert table.info["modes"] == {
        "DICOM MONOCHROME2 12-bit without a window": 3,
        "DICOM MONOCHROME1 12-bit without a window": 3,
    }
    assert table.images.shape == (6, 20, 20, 1)
    for sample_id, image in zip(table.sample_ids, table.images, strict=True):
        np.testing.assert_array_equal(image, want[sample_id])


def _patient_folder(root: Path, patients: dict[str, list[str]]) -> None:
    """root/<class>/<i>.dcm with the given PatientIDs ("" leaves the element out)."""
    for cls, ids in patients.items():
        (root / cls).mkdir(parents=True)
        for i, pid in enumerate(ids):
            extra = {"PatientID": pid} if pid else {}
            (root / cls / f"{i}.dcm").write_bytes(dicom_bytes(_ramp(), **extra))


@pytest.mark.ray
def test_a_dicom_folder_is_grouped_by_its_patient_ids(ray_session, tmp_path: Path) -> None:
    """Four views of one exam must not be split across folds: PatientID groups them."""
    _patient_folder(tmp_path, {"benign": ["P1", "P1", "P2", ""], "malignant": ["P3", "P3"]})
    table = load_source(str(tmp_path))
    groups = dict(zip(table.sample_ids, table.groups, strict=True))
    assert groups["benign/0.dcm"] == groups["benign/1.dcm"] == "P1"
    assert groups["malignant/0.dcm"] == groups["malignant/1.dcm"] == "P3"
    assert groups["benign/3.dcm"] == "(no PatientID) benign/3.dcm"
    notes = table.info["notes"]
    assert (
        "folds and the test split grouped by the DICOM files' PatientID (0010,0020): "
        "3 patients; 1 image without one (not DICOM, or anonymised to blank) each a group "
        "of its own"
    ) in notes


@pytest.mark.ray
def test_a_group_column_that_splits_a_dicom_patient_is_warned_about(
    ray_session, tmp_path: Path
) -> None:
    _patient_folder(tmp_path, {"benign": ["P1", "P1", "P2"], "malignant": ["P3", "P4"]})
    rows = [
        ("benign/0.dcm", "benign", "a"),
        ("benign/1.dcm", "benign", "b"),  # P1 again, another group
        ("benign/2.dcm", "benign", "c"),
        ("malignant/0.dcm", "malignant", "d"),
        ("malignant/1.dcm", "malignant", "e"),
    ]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,patient_id\n" + "".join(f"{p},{c},{g}\n" for p, c, g in rows))
    table = load_source(str(manifest))
    assert list(table.groups) == ["a", "b", "c", "d", "e"]  # the column stays the groups
    assert any(
        n.startswith(
            "WARNING: 1 DICOM PatientID spread over several groups of the group "
            "column (e.g. PatientID 'P1' in 'a', 'b')"
        )
        for n in table.info["notes"]
    ), table.info["notes"]


def _voi_lut(first: int, n: int, bits: int = 8) -> Any:
    """A VOI LUT Sequence item: input values first..first+n-1 -> a curve of ``bits`` bits."""
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [n, first, bits]
    curve = np.sqrt(np.linspace(0, 1, n)) * (2**bits - 1)
    item.add_new(0x00283006, "US", curve.round().astype(np.uint16).tolist())  # LUTData
    return Sequence([item])


@pytest.mark.parametrize("seed", range(12))
def test_the_table_of_stored_values_gives_the_whole_image_arithmetics_bytes(seed: int) -> None:
    """Integer files go through a table of their distinct stored values; every window,
    rescale, VOI LUT and intensity setting gives the bytes of the whole-image path."""
    from pydicom.pixels import apply_modality_lut

    from raydx.data.dicom import _grey, _picture
    from raydx.data.intensity import Intensity

    rng = np.random.default_rng(seed)
    signed = (seed // 4) % 2 == 1
    dtype = np.int16 if signed else np.uint16
    lo, hi = (-2000, 3000) if signed else (0, 4095)
    pixels = rng.integers(lo, hi, (24, 20)).astype(dtype)
    pixels[0, 0] = pixels[0, 1]  # repeated values, as real images have
    attrs: dict[str, Any] = {"BitsStored": 16 if signed else 12}
    if seed % 3 != 0:
        attrs |= {"RescaleSlope": float(rng.choice([1.0, 0.5, 2.0])), "RescaleIntercept": -1024}
    kind = seed % 4
    if kind == 1:
        attrs |= {"WindowCenter": 40, "WindowWidth": 400}
    elif kind == 2:
        attrs |= {"WindowCenter": [300, 40], "WindowWidth": [1500, 80]}
    elif kind == 3 and not signed:
        attrs["VOILUTSequence"] = _voi_lut(0, 3000)
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels, **attrs)))
    stored = ds.pixel_array
    dense = apply_modality_lut(stored, ds).astype(np.float64)
    for text in ("auto", "percentile", "percentile:2:97.3", "range:-1000:400"):
        intensity = Intensity.parse(text)
        want = _picture(dense, None, ds, intensity)
        got = _grey(stored, ds, intensity)
        assert np.array_equal(got, want), (text, attrs)
        assert got.max() > got.min()  # a picture, not a flat image
