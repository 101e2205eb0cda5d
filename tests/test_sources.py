"""Image sources: generated data, MedMNIST .npz files, the --data dispatcher, positive class."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raydx.data.npz import load_medmnist, load_npz
from raydx.data.sources import load_source, positive_class_reason, resolve_positive_class
from raydx.data.synthetic import make_synthetic
from raydx.data.table import ImageTable
from raydx.errors import DataError

BREASTMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "breastmnist.npz"
needs_breastmnist = pytest.mark.skipif(
    not BREASTMNIST.is_file(), reason=f"{BREASTMNIST} is not present"
)


@pytest.fixture(scope="module")
def synthetic() -> ImageTable:
    return make_synthetic(600, seed=0)


# --- synthetic ---------------------------------------------------------------------------


def test_synthetic_schema(synthetic: ImageTable) -> None:
    t = synthetic
    assert t.images.shape == (600, 28, 28, 1) and t.images.dtype == np.uint8
    assert t.labels.dtype == np.int64 and set(np.unique(t.labels)) == {0, 1}
    assert t.class_names == ("benign", "malignant")
    assert t.name == "synthetic"
    assert t.sample_ids[0] == "synthetic/0" and t.sample_ids[-1] == "synthetic/599"
    assert len(set(t.sample_ids)) == 600
    assert t.official_split is None and t.groups is None
    assert 0.27 <= t.labels.mean() <= 0.33
    # images use the grey range, not a constant or a saturated field
    assert t.images.std() > 10 and t.images.min() < 60 and t.images.max() > 200


def test_synthetic_is_deterministic_for_a_seed(synthetic: ImageTable) -> None:
    again = make_synthetic(600, seed=0)
    assert np.array_equal(again.images, synthetic.images)
    assert np.array_equal(again.labels, synthetic.labels)
    other = make_synthetic(600, seed=1)
    assert not np.array_equal(other.images, synthetic.images)


def test_synthetic_other_sizes() -> None:
    t = make_synthetic(12, image_size=64, seed=3)
    assert t.images.shape == (12, 64, 64, 1)
    assert t.labels.sum() == round(0.3 * 12)
    assert len(make_synthetic(1)) == 1


def test_synthetic_is_fast() -> None:
    times = []
    for seed in (5, 6):  # best of two: the CI machine may be busy
        start = time.perf_counter()
        make_synthetic(600, seed=seed)
        times.append(time.perf_counter() - start)
    assert min(times) < 2.0


def _image_stats(images: np.ndarray) -> np.ndarray:
    x = images[..., 0].astype(np.float64) / 255.0
    flat = x.reshape(len(x), -1)
    return np.stack(
        [
            flat.mean(1),
            flat.std(1),
            (flat < 0.5).mean(1),
            (flat < 0.35).mean(1),
            np.percentile(flat, 5, axis=1),
        ],
        axis=1,
    )


def test_synthetic_signal_is_real_but_imperfect(synthetic: ImageTable) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    auc = cross_val_score(
        model, _image_stats(synthetic.images), synthetic.labels, scoring="roc_auc", cv=cv
    ).mean()
    assert 0.65 < auc < 0.97


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_synthetic_bad_n_refused(n: object) -> None:
    with pytest.raises(DataError, match="n must be an int >= 1"):
        make_synthetic(n)  # type: ignore[arg-type]


def test_synthetic_bad_image_size_refused() -> None:
    with pytest.raises(DataError, match="image_size must be an int >= 8, but got image_size=4"):
        make_synthetic(10, image_size=4)


# --- npz -----------------------------------------------------------------------------------


@needs_breastmnist
def test_breastmnist_file() -> None:
    t = load_npz(BREASTMNIST)
    assert len(t) == 780
    assert t.images.shape == (780, 28, 28, 1) and t.images.dtype == np.uint8
    assert t.name == "breastmnist"
    assert t.class_names == ("malignant", "normal, benign")
    assert "train/115" in set(t.sample_ids) and "val/3" in set(t.sample_ids)
    assert "test/76" in set(t.sample_ids)
    splits, counts = np.unique(t.official_split, return_counts=True)
    assert dict(zip(splits, counts, strict=True)) == {"train": 546, "val": 78, "test": 156}
    assert t.sample_ids[546] == "val/0" and t.official_split[546] == "val"
    assert resolve_positive_class(t, None) == 0
    with np.load(BREASTMNIST) as raw:
        assert np.array_equal(t.images[546 + 78 + 76, ..., 0], raw["test_images"][76])
        assert t.labels[115] == int(np.ravel(raw["train_labels"])[115])


@needs_breastmnist
def test_load_source_npz_path() -> None:
    t = load_source(str(BREASTMNIST))
    assert len(t) == 780 and t.name == "breastmnist"


def _write(path: Path, *, rgb: bool = False, label_cols: int | None = 1, drop=(), n=(8, 4, 4)):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        shape = (k, 28, 28, 3) if rgb else (k, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        y = np.arange(k) % 2
        arrays[f"{split}_labels"] = (
            y if label_cols is None else np.tile(y[:, None], (1, label_cols))
        ).astype(np.uint8)
    for key in drop:
        del arrays[key]
    np.savez(path, **arrays)
    return path


def test_npz_grey_and_rgb(tmp_path: Path) -> None:
    grey = load_npz(_write(tmp_path / "myset.npz"))
    assert grey.images.shape == (16, 28, 28, 1) and grey.channels == 1
    assert grey.labels.dtype == np.int64 and grey.labels.shape == (16,)
    assert grey.name == "myset" and grey.class_names == ("0", "1")
    rgb = load_npz(_write(tmp_path / "pathmnist_64.npz", rgb=True, label_cols=None))
    assert rgb.images.shape == (16, 28, 28, 3) and rgb.channels == 3
    assert rgb.name == "pathmnist" and rgb.class_names[0] == "adipose"
    named = load_npz(tmp_path / "myset.npz", name="breastmnist")
    assert named.class_names == ("malignant", "normal, benign")


def test_npz_labels_with_gaps_are_numbered_and_keep_their_codes(tmp_path: Path) -> None:
    """Labels coded 1/2 would otherwise add an empty class "0": a 3-way softmax, and the
    binary-only steps (calibration, the operating point) skipped."""
    path = _write(tmp_path / "myset.npz")
    arrays = dict(np.load(path))
    for split in ("train", "val", "test"):
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"] + 1
    np.savez(path, **arrays)
    t = load_npz(path)
    assert t.class_names == ("1", "2")
    assert np.array_equal(
        t.labels,
        np.concatenate([arrays[f"{s}_labels"][:, 0] - 1 for s in ("train", "val", "test")]),
    )
    arrays["train_labels"][0] = 5  # 1, 2 and 5
    np.savez(path, **arrays)
    t = load_npz(path)
    assert t.class_names == ("1", "2", "5") and t.labels[0] == 2 and t.labels.max() == 2


def test_npz_multilabel_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "chestmnist.npz", label_cols=14)
    with pytest.raises(DataError, match="multi-label classification is not supported") as err:
        load_npz(path)
    assert "\n" not in str(err.value)


def test_npz_missing_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.npz", drop=("val_labels",))
    with pytest.raises(DataError, match=r"has no key 'val_labels'") as err:
        load_npz(path)
    assert "keys found: test_images, test_labels, train_images, train_labels, val_images" in str(
        err.value
    )


def test_npz_without_test_split_is_allowed(tmp_path: Path) -> None:
    t = load_npz(_write(tmp_path / "x.npz", drop=("test_images", "test_labels")))
    assert set(t.official_split) == {"train", "val"}


def test_npz_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npz"
    with pytest.raises(DataError, match=r"data path '.*nope.npz' does not exist\. Pass"):
        load_npz(missing)
    with pytest.raises(DataError, match=r"does not exist"):
        load_source(str(missing))


def test_npz_unreadable(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataError, match=r"cannot read .* as a \.npz file"):
        load_npz(bad)


def test_npz_label_beyond_known_classes(tmp_path: Path) -> None:
    path = _write(tmp_path / "breastmnist.npz")
    with np.load(path) as f:
        arrays = dict(f)
    arrays["train_labels"][0] = 5
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=r"has only 2 classes"):
        load_npz(path)


# --- medmnist --------------------------------------------------------------------------------


def test_medmnist_without_package_one_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "medmnist", None)  # makes `import medmnist` fail
    with pytest.raises(DataError) as err:
        load_medmnist("breastmnist", root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == (
        "Cannot download MedMNIST 'breastmnist': the 'medmnist' package is not installed "
        "(pip install medmnist) or there is no network. Pass a local file instead: "
        "--data path/to/breastmnist.npz."
    )


def test_medmnist_download_failure_one_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    class BreastMNIST:
        def __init__(self, **kwargs: object) -> None:
            raise RuntimeError("Automatic download failed!\n  1. Check your network\n  2. ...")

    fake = types.SimpleNamespace(
        INFO={"breastmnist": {"python_class": "BreastMNIST"}}, BreastMNIST=BreastMNIST
    )
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    with pytest.raises(DataError) as err:
        load_medmnist("breastmnist", root=tmp_path / "cache")
    msg = str(err.value)
    assert "\n" not in msg
    assert "RuntimeError: Automatic download failed!" in msg
    assert msg.endswith("Pass a local file instead: --data path/to/breastmnist.npz.")


def test_medmnist_reads_cached_file_without_package(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "medmnist", None)
    _write(tmp_path / "breastmnist.npz")
    t = load_medmnist("breastmnist", root=tmp_path)
    assert t.name == "breastmnist" and len(t) == 16


def test_medmnist_unknown_flag_did_you_mean() -> None:
    with pytest.raises(DataError, match=r"Unknown MedMNIST flag 'breastmnst'\. Did you mean "):
        load_source("medmnist:breastmnst")


@pytest.mark.parametrize(
    ("flag", "match"),
    [("nodulemnist3d", "is a 3D set"), ("chestmnist", "multi-label"), ("pathmnist_100", "size")],
)
def test_medmnist_refused_sets(flag: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_medmnist(flag)


# --- dispatcher ------------------------------------------------------------------------------


def test_load_source_synthetic() -> None:
    t = load_source("synthetic:40", seed=2)
    assert len(t) == 40 and t.name == "synthetic"
    assert np.array_equal(t.images, make_synthetic(40, seed=2).images)


@pytest.mark.parametrize("spec", ["synthetic:abc", "synthetic:0", "synthetic:-3"])
def test_load_source_bad_synthetic_count(spec: str) -> None:
    with pytest.raises(DataError, match=r"'synthetic:N' needs a whole number"):
        load_source(spec)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("synthetc", r"Unknown data source 'synthetc'\. Did you mean 'synthetic'\?"),
        ("foo", r"Unknown data source 'foo'\. --data accepts 'synthetic'"),
        ("manifest.csv", r"'manifest.csv' does not exist"),
        ("table.parquet", r"'table.parquet' does not exist"),
        ("", r"data must be a non-empty string"),
        ("some/dir/img.png", r"does not exist\. --data accepts"),
    ],
)
def test_load_source_refusals(spec: str, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_source(spec)


def test_load_source_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"needs one subfolder per class .* holds nothing"):
        load_source(str(tmp_path))


# --- positive class --------------------------------------------------------------------------


def _table(class_names: tuple[str, ...], counts: list[int]) -> ImageTable:
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    return ImageTable(
        images=np.zeros((len(y), 4, 4, 1), dtype=np.uint8),
        labels=y,
        sample_ids=np.array([f"s/{i}" for i in range(len(y))], dtype=object),
        class_names=class_names,
        name="toy",
    )


def test_positive_class_synthetic(synthetic: ImageTable) -> None:
    assert resolve_positive_class(synthetic, None) == 1
    assert resolve_positive_class(synthetic, "benign") == 0
    assert resolve_positive_class(synthetic, "Malignant") == 1
    assert resolve_positive_class(synthetic, "0") == 0


def test_positive_class_by_name_and_index() -> None:
    t = _table(("malignant", "normal, benign"), [3, 7])
    assert resolve_positive_class(t, None) == 0
    assert resolve_positive_class(t, "normal, benign") == 1
    assert resolve_positive_class(t, "1") == 1


@pytest.mark.parametrize(
    "names",
    [
        ("benign_tumor", "malignant_tumor"),
        ("cancer_negative", "cancer_positive"),
        ("disease_free", "diseased"),
        ("metastasis_absent", "metastasis_present"),
        ("non-malignant", "malignant"),
        ("normal", "abnormal"),
        ("healthy", "pneumonia"),
    ],
)
def test_a_class_named_as_the_negative_of_its_pair_is_not_the_positive(names) -> None:
    """Both names hold a disease word; the one that says 'not' is the negative class,
    whatever the class mix."""
    assert resolve_positive_class(_table(names, [5, 5]), None) == 1
    assert resolve_positive_class(_table(names, [2, 8]), None) == 1


def test_positive_class_unknown_did_you_mean() -> None:
    t = _table(("benign", "malignant"), [5, 5])
    with pytest.raises(DataError, match=r"Unknown positive class 'malignent'\. Did you mean "):
        resolve_positive_class(t, "malignent")
    with pytest.raises(DataError, match=r"An index 0-1 is also accepted"):
        resolve_positive_class(t, "2")


def test_positive_class_keywords_and_negations() -> None:
    assert resolve_positive_class(_table(("no tumor", "tumor"), [2, 8]), None) == 1
    assert resolve_positive_class(_table(("non-cancer", "cancer"), [2, 8]), None) == 1
    assert resolve_positive_class(_table(("normal", "pneumonia"), [2, 8]), None) == 1
    assert resolve_positive_class(_table(("Carcinoma", "healthy"), [8, 2]), None) == 0


@pytest.mark.parametrize(
    "names",
    [("NoTumor", "Tumor"), ("notumor", "tumor"), ("nocancer", "cancer"), ("TumorFree", "Tumor")],
)
def test_a_negation_written_onto_the_disease_word_is_not_the_positive(names) -> None:
    """Seen in an audit: 'NoTumor' sorts first and holds 'tumor', so it was the positive
    class, and sensitivity measured the finding of healthy images."""
    for mix in ([5, 5], [2, 8], [8, 2]):
        assert resolve_positive_class(_table(names, mix), None) == 1, mix


def test_the_minority_default_passes_over_a_class_that_says_no_finding() -> None:
    """Kaggle's brain-tumour MRI classes: no name says 'tumor' alone, and 'notumor' may
    be the smallest; it is never the positive class by default."""
    names = ("glioma", "meningioma", "notumor", "pituitary")
    assert resolve_positive_class(_table(names, [9, 8, 3, 7]), None) == 3
    t = _table(("a", "b"), [2, 8])
    assert positive_class_reason(t, None, 0).startswith("the smallest class, as no class name")
    t = _table(("benign", "malignant"), [8, 2])
    assert positive_class_reason(t, None, 1).startswith("its name says disease")
    assert positive_class_reason(t, "benign", 0) == "as set for this run"
    assert positive_class_reason(t, "benign", 0, resumed=True) == "the run's own"
    brain = _table(names, [9, 8, 3, 7])
    assert positive_class_reason(brain, None, 3).startswith(
        "the smallest class not named as no finding, as no class name says disease"
    )


def test_positive_class_minority_default() -> None:
    assert resolve_positive_class(_table(("0", "1", "2"), [5, 2, 9]), None) == 1
    assert resolve_positive_class(_table(("a", "b"), [4, 4]), None) == 1  # tie -> higher
    assert resolve_positive_class(_table(("a", "b", "c"), [3, 9, 3]), None) == 2


@pytest.mark.parametrize(
    ("sizes", "flag", "names", "positive"),
    [
        ((546, 78, 156), "breastmnist", ("malignant", "normal, benign"), "malignant"),
        ((4708, 524, 624), "pneumoniamnist", ("normal", "pneumonia"), "pneumonia"),
        ((546, 78, 155), None, ("0", "1"), "0"),  # no MedMNIST set's sizes: the minority
    ],
)
def test_a_renamed_medmnist_file_is_known_by_its_split_sizes(
    tmp_path: Path, sizes: tuple[int, int, int], flag: str | None, names: tuple, positive: str
) -> None:
    """A copy of breastmnist.npz saved as bm.npz kept '0'/'1' for class names; a renamed
    pneumoniamnist made its minority class, 'normal', the disease."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 4, 4), np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 1)) < 0.7).astype(np.int64)  # 0 fewer
    np.savez(tmp_path / "copy.npz", **arrays)
    table = load_npz(tmp_path / "copy.npz")
    assert table.class_names == names
    assert table.class_names[resolve_positive_class(table, None)] == positive
    said = (
        f"'copy.npz' has the split sizes of MedMNIST's {flag} ({'/'.join(map(str, sizes))}): "
        f"its class names are used; name the file {flag}.npz (or {flag}_<size>.npz) to say so"
    )
    assert table.info.get("notes", []) == ([said] if flag else [])
