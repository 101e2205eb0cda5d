"""Property tests for the test split and the k folds (scikit-learn's splitter tests, many seeds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raydx.data.folds import (
    Splits,
    absent_test_note,
    few_in_folds_note,
    make_splits,
    split_summary,
    splits_frame,
)
from raydx.data.labels import misspelling_of
from raydx.data.table import ImageTable
from raydx.errors import DataError

SEEDS = range(20)


def _labels(counts: list[int], seed: int = 123) -> np.ndarray:
    y = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(y)


def _patients(n_patients: int, pos_fraction: float, seed: int = 7, mixed: bool = False):
    """1-4 images per patient; one label per patient unless ``mixed``."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], sizes).astype(object)
    patient_label = (rng.random(n_patients) < pos_fraction).astype(np.int64)
    y = np.repeat(patient_label, sizes)
    if mixed:
        flip = rng.random(len(y)) < 0.15
        y = np.where(flip, 1 - y, y)
    return y, groups


CONFIGS = {
    "balanced": (_labels([100, 100]), None),
    "imbalanced": (_labels([210, 90]), None),
    "multiclass": (_labels([120, 60, 25]), None),
    "patients": _patients(150, 0.3),
    "patients_mixed": _patients(150, 0.4, mixed=True),
}


def _check_invariants(
    y: np.ndarray,
    s: Splits,
    k: int,
    groups: np.ndarray | None,
    test_mask: np.ndarray | None = None,
    test_fraction: float = 0.2,
) -> None:
    n = len(y)
    assert s.k == k
    assert s.split.shape == (n,) and s.fold.shape == (n,)
    assert s.fold.dtype == np.int64
    assert set(np.unique(s.split)) == {"cv", "test"}
    test = s.split == "test"
    # test rows have fold -1; every cv row is in exactly one fold 0..k-1
    assert (s.fold[test] == -1).all()
    assert set(np.unique(s.fold[~test])) == set(range(k))
    if test_mask is not None:
        assert np.array_equal(test, test_mask)
    pool_y = y[~test]
    classes = np.unique(y)
    fold_sizes = np.bincount(s.fold[~test], minlength=k)
    if groups is None:
        assert fold_sizes.max() - fold_sizes.min() <= 1
        for c in classes:
            per_fold = np.bincount(s.fold[~test][pool_y == c], minlength=k)
            assert np.all(np.abs(per_fold - (pool_y == c).sum() / k) <= 1)
        if test_mask is None:
            for c in classes:
                assert abs((y[test] == c).sum() - test_fraction * (y == c).sum()) <= 1.5
    else:
        # no group in two folds, or in a fold and the test split
        part = np.where(test, k, s.fold)
        per_group = pd.Series(part).groupby(pd.Series(groups)).nunique()
        assert (per_group == 1).all()
        mean = fold_sizes.mean()
        assert fold_sizes.min() >= 0.75 * mean and fold_sizes.max() <= 1.25 * mean
        for c in classes:
            pool_ratio = (pool_y == c).mean()
            for f in range(k):
                assert abs((pool_y[s.fold[~test] == f] == c).mean() - pool_ratio) < 0.12
        if test_mask is None:
            assert abs(test.mean() - test_fraction) < 0.06


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("k", [3, 5])
def test_properties_over_seeds(config: str, k: int) -> None:
    y, groups = CONFIGS[config]
    for seed in SEEDS:
        s = make_splits(y, folds=k, seed=seed, groups=groups)
        _check_invariants(y, s, k, groups)


def _small_mixed_cohort(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """12-30 patients of 2-11 images; about 30% of them have images of both classes."""
    rng = np.random.default_rng(seed)
    labels: list[int] = []
    groups: list[str] = []
    for p in range(int(rng.integers(12, 30))):
        mixed, base = rng.random() < 0.3, int(rng.random() < 0.35)
        for _ in range(int(rng.integers(2, 12))):
            labels.append(int(rng.random() < 0.5) if mixed else base)
            groups.append(f"p{p}")
    return np.array(labels), np.array(groups, dtype=object)


def test_every_fold_validates_on_every_class_in_small_mixed_cohorts() -> None:
    """StratifiedGroupKFold alone left a fold without a class in 17 of 288 such cohorts
    (its AUC undefined, the CV mean resting on the other folds); raydx moves whole
    patients to fill the gap, and leaves sklearn's folds as they are where none is."""
    from sklearn.model_selection import StratifiedGroupKFold

    checked = mended = 0
    for seed in range(300):
        y, groups = _small_mixed_cohort(seed)
        try:
            s = make_splits(y, folds=5, seed=seed, groups=groups)
        except DataError:
            continue  # too few patients of a class for 5 folds or a test split
        checked += 1
        test = s.split == "test"
        part = np.where(test, 5, s.fold)
        assert (pd.Series(part).groupby(pd.Series(groups)).nunique() == 1).all()
        for f in range(5):
            assert set(y[s.fold == f]) == {0, 1}, (seed, f)
        pool = np.flatnonzero(~test)
        sklearn_folds = np.full(len(pool), -1)
        splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
        for f, (_, val) in enumerate(splitter.split(pool, y[pool], groups[pool])):
            sklearn_folds[val] = f
        had_gap = any(len(set(y[pool][sklearn_folds == f])) < 2 for f in range(5))
        mended += had_gap
        if not had_gap:
            assert np.array_equal(s.fold[pool], sklearn_folds), seed
    assert checked > 250 and mended >= 10


def test_a_gap_no_move_can_fill_is_named() -> None:
    from raydx.data.folds import _fill_gaps

    # class 1 lives in two patients only, so one of three folds must lack it
    y = np.array([0, 0, 0, 0, 1, 1, 0, 0])
    groups = np.array(["a", "b", "c", "c", "d", "e", "f", "f"], dtype=object)
    fold = np.array([0, 1, 2, 2, 0, 1, 2, 2])
    assert _fill_gaps(y, groups, fold, 3) == (2, 1)
    # class 1 in three patients: patient 4 can move to fold 2 (fold 1 keeps patient 5)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    as_ints = np.array([0, 1, 2, 2, 3, 4, 5, 5])  # groups of any type, not only str
    fold = np.array([0, 1, 2, 2, 0, 1, 1, 1])
    assert _fill_gaps(y, as_ints, fold, 3) is None
    assert fold.tolist() == [0, 1, 2, 2, 0, 2, 1, 1]


def test_a_gap_no_move_can_fill_stops_the_run_naming_fold_and_class(monkeypatch) -> None:
    import raydx.data.folds as folds

    monkeypatch.setattr(folds, "_fill_gaps", lambda y, g, fold, k: (2, 1))
    y, groups = CONFIGS["patients"]
    with pytest.raises(DataError, match=r"^fold 2 would validate on no 'malignant' sample"):
        make_splits(y, folds=3, groups=groups, class_names=["benign", "malignant"])


@pytest.mark.parametrize("config", CONFIGS)
def test_official_test_mask_is_respected_exactly(config: str) -> None:
    y, groups = CONFIGS[config]
    if groups is None:
        mask = np.random.default_rng(0).random(len(y)) < 0.25
    else:  # whole patients, as an official split would be
        test_patients = {f"p{i}" for i in range(0, 150, 4)}
        mask = np.array([g in test_patients for g in groups])
    for seed in SEEDS:
        s = make_splits(y, folds=5, seed=seed, groups=groups, test_mask=mask)
        _check_invariants(y, s, 5, groups, test_mask=mask)


@pytest.mark.parametrize("config", CONFIGS)
def test_same_seed_same_splits_different_seed_different(config: str) -> None:
    y, groups = CONFIGS[config]
    a = make_splits(y, seed=3, groups=groups)
    b = make_splits(y, seed=3, groups=groups)
    assert np.array_equal(a.fold, b.fold) and np.array_equal(a.split, b.split)
    others = [make_splits(y, seed=seed, groups=groups) for seed in (4, 5, 6)]
    for o in others:
        assert not np.array_equal(a.fold, o.fold)


@pytest.mark.parametrize("config", CONFIGS)
def test_fold_seed_redraws_the_folds_and_keeps_the_test_split(config: str) -> None:
    """A configuration re-checked on other folds must never meet the test split it skipped."""
    y, groups = CONFIGS[config]
    base = make_splits(y, seed=3, groups=groups)
    assert np.array_equal(make_splits(y, seed=3, fold_seed=3, groups=groups).fold, base.fold)
    for fold_seed in SEEDS:
        s = make_splits(y, seed=3, fold_seed=fold_seed, groups=groups)
        assert np.array_equal(s.split, base.split)
        _check_invariants(y, s, 5, groups)
        if fold_seed != 3:
            assert not np.array_equal(s.fold, base.fold)


@pytest.mark.parametrize("fold_seed", [-1, 2**32, 1.5, True, "1"])
def test_bad_fold_seed_refused(fold_seed: object) -> None:
    with pytest.raises(DataError, match=r"fold_seed must be an int in \[0, 2\*\*32 - 1\], but got"):
        make_splits(_labels([50, 50]), fold_seed=fold_seed)  # type: ignore[arg-type]


def test_test_fraction_is_honoured() -> None:
    y = _labels([300, 100])
    for fraction in (0.1, 0.25, 0.5):
        s = make_splits(y, test_fraction=fraction)
        assert (s.split == "test").sum() == int(np.ceil(fraction * len(y)))


@pytest.mark.parametrize("config", ["patients", "patients_mixed"])
def test_test_fraction_with_groups_is_honoured(config: str) -> None:
    """Group-whole parts: 0.3 is 3 of 10 (one part of round(1 / 0.3) = 3 held out a
    third), 0.4 is 2 of 5 (it was one of round(2.5) = 2: half)."""
    y, groups = CONFIGS[config]
    for fraction in (0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.8):
        for seed in range(5):
            s = make_splits(y, folds=3, seed=seed, groups=groups, test_fraction=fraction)
            _check_invariants(y, s, 3, groups, test_fraction=fraction)


def test_train_val_indices_partition_the_pool() -> None:
    y = _labels([60, 40])
    s = make_splits(y, folds=4)
    for f in range(4):
        train, val = s.train_val_indices(f)
        assert not set(train) & set(val)
        assert np.array_equal(np.sort(np.concatenate([train, val])), s.cv_indices)
        assert (s.fold[val] == f).all()
    assert np.array_equal(s.test_indices, np.flatnonzero(s.split == "test"))
    with pytest.raises(DataError, match=r"^fold must be in \[0, 3\], but got fold=4\.$"):
        s.train_val_indices(4)


@pytest.mark.parametrize("folds", [1, 0, -2, True, 2.5])
def test_folds_below_two_refused(folds: object) -> None:
    with pytest.raises(DataError) as err:
        make_splits(_labels([50, 50]), folds=folds)  # type: ignore[arg-type]
    assert str(err.value) == f"folds must be >= 2, but got folds={folds}."


def test_small_class_in_pool_refused_with_its_name() -> None:
    y = _labels([40, 4])
    mask = np.zeros(len(y), dtype=bool)
    mask[np.flatnonzero(y == 0)[:8]] = True
    mask[np.flatnonzero(y == 1)[0]] = True
    with pytest.raises(DataError) as err:
        make_splits(y, folds=5, test_mask=mask, class_names=("benign", "malignant"))
    assert str(err.value) == (
        "class 'malignant' has 3 samples in the cross-validation pool, fewer than folds=5; "
        "use fewer folds or add data."
    )


def test_small_class_after_own_test_split_refused() -> None:
    with pytest.raises(DataError, match=r"class '1' has 4 samples .* fewer than folds=5"):
        make_splits(_labels([60, 5]), folds=5)


def test_class_only_in_official_test_refused() -> None:
    y = _labels([40, 30, 10])
    mask = (y == 2) | (np.arange(len(y)) < 10)
    with pytest.raises(DataError, match=r"class 'c' occurs only in the test split"):
        make_splits(y, test_mask=mask, class_names=("a", "b", "c"))


def test_single_class_official_test_refused() -> None:
    y = _labels([40, 30])
    mask = np.isin(np.arange(70), np.flatnonzero(y == 0)[:5])
    with pytest.raises(DataError, match=r"given test split holds a single class \('a', 5 samples"):
        make_splits(y, test_mask=mask, class_names="ab")


def test_too_few_groups_per_class_refused() -> None:
    y = np.array([0] * 40 + [1] * 12)
    groups = np.array([f"a{i}" for i in range(40)] + ["b0"] * 4 + ["b1"] * 4 + ["b2"] * 4)
    mask = np.zeros(len(y), dtype=bool)
    mask[:8] = True
    with pytest.raises(DataError, match=r"class '1' has 3 groups in the cross-validation pool"):
        make_splits(y, folds=5, groups=groups, test_mask=mask)


def test_fewer_than_two_classes_refused() -> None:
    with pytest.raises(DataError, match=r"at least 2 classes, but got only class 'benign'"):
        make_splits(np.zeros(30, dtype=np.int64), class_names=("benign", "malignant"))


def test_single_class_pool_refused() -> None:
    y = _labels([40, 10])
    with pytest.raises(DataError, match=r"cross-validation pool .* at least 2 classes"):
        make_splits(y, test_mask=y == 0)


def test_own_test_split_too_small_refused() -> None:
    with pytest.raises(DataError, match=r"test_fraction=0.01 holds out 1 of 60 samples"):
        make_splits(_labels([40, 20]), test_fraction=0.01, folds=2)


def test_own_test_split_single_class_refused() -> None:
    # Four patients; the held-out quarter is one single-class patient, and the other
    # class's two patients are both needed by the 2 folds.
    y = np.array([0] * 20 + [1] * 20)
    groups = np.repeat(["a", "b", "c", "d"], 10)
    with pytest.raises(DataError, match=r"has 2 groups \(20 samples\), too few for both"):
        make_splits(y, folds=2, groups=groups, test_fraction=0.25)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_out_of_range_refused(fraction: float) -> None:
    with pytest.raises(DataError, match=r"test_fraction must be in \(0, 1\), but got"):
        make_splits(_labels([50, 50]), test_fraction=fraction)


def test_empty_official_test_mask_refused() -> None:
    y = _labels([50, 50])
    with pytest.raises(DataError, match="test_mask selects no rows"):
        make_splits(y, test_mask=np.zeros(len(y), dtype=bool))


def test_bad_test_mask_refused() -> None:
    y = _labels([50, 50])
    with pytest.raises(
        DataError, match=r"test_mask must be a boolean array .* but got dtype=float64"
    ):
        make_splits(y, test_mask=np.zeros(len(y)))


def test_group_across_official_test_refused() -> None:
    y, groups = CONFIGS["patients"]
    big = pd.Series(groups).value_counts().index[0]
    first = np.flatnonzero(groups == big)[0]
    mask = np.zeros(len(y), dtype=bool)
    mask[first] = True
    with pytest.raises(DataError, match=rf"group '{big}' has samples both in the official test"):
        make_splits(y, groups=groups, test_mask=mask)


def test_too_few_groups_for_test_fraction_refused() -> None:
    y = np.array([0, 1] * 6)
    groups = np.repeat(["a", "b", "c"], 4)
    with pytest.raises(DataError, match=r"needs at least 5 groups, but got 3"):
        make_splits(y, groups=groups, folds=2)


def _table(y: np.ndarray, groups: np.ndarray | None = None) -> ImageTable:
    return ImageTable(
        images=np.zeros((len(y), 4, 4, 1), dtype=np.uint8),
        labels=y.astype(np.int64),
        sample_ids=np.array([f"s/{i}" for i in range(len(y))], dtype=object),
        class_names=("benign", "malignant"),
        name="toy",
        groups=groups,
    )


def test_splits_frame_schema() -> None:
    y = _labels([70, 30])
    table = _table(y)
    s = make_splits(y, folds=4, seed=1)
    frame = splits_frame(table, s)
    assert list(frame.columns) == ["sample_id", "label", "label_name", "split", "fold"]
    assert frame["label"].dtype == np.int64
    assert frame["fold"].dtype == "Int64"
    assert pd.api.types.is_string_dtype(frame["sample_id"])
    assert frame.loc[frame["split"] == "test", "fold"].isna().all()
    assert frame.loc[frame["split"] == "cv", "fold"].notna().all()
    assert (frame["label_name"] == np.where(y == 1, "malignant", "benign")).all()
    assert frame["sample_id"].iloc[3] == "s/3"


def test_splits_frame_and_summary_with_groups() -> None:
    y, groups = CONFIGS["patients"]
    table = _table(y, groups)
    s = make_splits(y, folds=3, groups=groups, class_names=table.class_names)
    frame = splits_frame(table, s)
    assert list(frame.columns)[-1] == "group"
    summary = split_summary(table, s)
    assert list(summary.columns) == ["split", "fold", "n", "n_groups", "benign", "malignant"]
    assert list(summary["split"]) == ["cv", "cv", "cv", "test"]
    assert summary["n"].sum() == len(y)
    assert summary["n_groups"].sum() == len(set(groups))
    assert (summary["benign"] + summary["malignant"] == summary["n"]).all()


def test_split_summary_without_groups() -> None:
    y = _labels([70, 30])
    summary = split_summary(_table(y), make_splits(y, folds=4))
    assert "n_groups" not in summary.columns
    assert summary["fold"].iloc[-1] is pd.NA
    assert summary["malignant"].sum() == 30


def test_a_class_of_one_patient_is_named_as_too_small_not_blamed_on_the_test_split() -> None:
    """Grouped data: a class with images of a single patient cannot reach both sides."""
    y = np.array([0] * 20 + [1] * 20 + [2] * 2)
    g = np.array([f"p{i // 2}" for i in range(40)] + ["q", "q"])
    with pytest.raises(DataError) as info:
        make_splits(y, folds=3, groups=g, class_names=["benign", "malignant", "malignnat"])
    assert str(info.value) == (
        "class 'malignnat' has 1 group (2 samples), too few to split into test and "
        "cross-validation; add data or remove the class. Is 'malignnat' a misspelling of "
        "'malignant'?"
    )


def test_a_rare_class_named_like_another_gets_a_hint() -> None:
    y = np.array([0] * 20 + [1] * 20 + [2] * 3)
    with pytest.raises(DataError) as info:
        make_splits(y, folds=5, class_names=["benign", "malignant", "Malignant "])
    assert "has 2 samples in the cross-validation pool, fewer than folds=5" in str(info.value)
    assert str(info.value).endswith("Is 'Malignant ' a misspelling of 'malignant'?")
    with pytest.raises(DataError) as info:
        make_splits(y, folds=5, class_names=["benign", "malignant", "normal"])
    assert "misspelling" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "others", "expected"),
    [
        ("malignnat", ["benign", "malignant"], "malignant"),
        ("Benign", ["benign", "malignant"], "benign"),
        ("in_situ", ["in situ", "invasive"], "in situ"),
        ("normal", ["benign", "malignant"], None),
        ("cat", ["bat", "dog"], None),
        ("HER2+", ["HER2-", "HER2 low"], None),  # a sign names another class
        ("BI-RADS 5", ["BI-RADS 4", "benign"], None),  # so does a digit
        ("melanomma", ["melanoma", "nevus"], "melanoma"),
        ("COVID19", ["COVID-19", "normal"], "COVID-19"),  # punctuation does not count
        ("covid 19", ["COVID-19", "normal"], "COVID-19"),
        ("Grade 2", ["Grade-2", "Grade-3"], "Grade-2"),
        ("BI-RADS 4", ["BI-RADS-4", "BI-RADS-5"], "BI-RADS-4"),
        ("Benign", ["Benign.", "Malignant."], "Benign."),
        ("T-1", ["T1", "T2"], "T1"),
        ("-1", ["1", "0"], None),  # a leading sign before a digit does
        ("ER-", ["ER+", "PR+"], None),  # and a trailing one
        ("BI-RADS-5", ["BI-RADS 4"], None),
        ("HER2 (+)", ["HER2 (-)", "HER2 low"], None),  # a sign counts wherever it stands
        ("HER2 (+)", ["HER2+", "HER2-"], "HER2+"),  # brackets do not
        ("ER+/PR-", ["ER-/PR-", "ER+/PR+"], None),
        ("<50%", [">=50%"], None),  # nor do comparisons
        ("Ki67 <14%", ["Ki67 >=14%"], None),
    ],
)
def test_misspelling_of(name: str, others: list[str], expected: str | None) -> None:
    assert misspelling_of(name, others) == expected


# --- every class in the test split raydx draws --------------------------------------


def _multiclass_patients(n_patients: int, p: list[float], seed: int = 11, mixed: float = 0.0):
    """1-4 images per patient, a class per patient drawn from ``p``; with ``mixed`` that
    share of images relabelled at random (patients with images of several classes)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=n_patients)
    groups = np.repeat([f"p{i}" for i in range(n_patients)], sizes).astype(object)
    y = np.repeat(rng.choice(len(p), size=n_patients, p=p), sizes)
    if mixed:
        flip = rng.random(len(y)) < mixed
        y = np.where(flip, rng.integers(len(p), size=len(y)), y)
    return y, groups


# (labels, groups, test_fraction): draws that leave a small class out of the test split
RARE = {
    # the reviewer's case: no class-3 test image in 20 seeds of 20
    "rare_class": (np.repeat(np.arange(4), [108, 58, 28, 6]), None, 0.1),
    "two_rare_classes": (_labels([300, 80, 6, 6]), None, 0.08),
    "four_rare_classes": (_labels([500, 6, 6, 6, 6]), None, 0.05),
    "rare_patients": (*_multiclass_patients(160, [0.5, 0.3, 0.15, 0.05]), 0.1),
    "rare_patients_mixed": (*_multiclass_patients(200, [0.6, 0.3, 0.07, 0.03], 6, 0.05), 0.1),
}


@pytest.mark.parametrize("config", RARE)
def test_own_test_split_holds_every_class_over_seeds(config: str) -> None:
    """The stratified draw rounds a small class's share to zero; raydx then moves one
    sample (one whole patient: the smallest) of it from the pool, and no more."""
    from raydx.data.folds import _draw_test, _units

    y, groups, fraction = RARE[config]
    classes = np.unique(y)
    g = None if groups is None else groups.astype(str)
    completed = 0
    for seed in range(40):
        s = make_splits(y, folds=5, seed=seed, groups=groups, test_fraction=fraction)
        _check_invariants(y, s, 5, groups, test_fraction=fraction)
        test = s.split == "test"
        assert set(y[test]) == set(classes), seed
        # the pool keeps every class, enough of it for the 5 folds
        assert (_units(y, g, ~test, classes) >= 5).all()
        for f in range(5):
            assert set(y[s.fold == f]) == set(classes), (seed, f)
        drawn = _draw_test(y, g, fraction, seed, str)
        assert not (drawn & ~test).any()  # nothing drawn is given back to the pool
        absent = [c for c in classes if c not in set(y[drawn])]
        moved = test & ~drawn
        completed += bool(absent)
        if g is None:  # one sample per absent class: the fewest that can fill the gaps
            assert sorted(y[moved]) == absent, seed
            continue
        assert not set(g[test]) & set(g[~test])  # patients stay whole
        moved_groups = np.unique(g[moved])
        assert len(moved_groups) <= len(absent), seed  # one patient may bring two
        assert set(absent) <= set(y[moved]), seed
        sizes = pd.Series(g).value_counts()
        pool_units = dict(zip(classes, _units(y, g, ~drawn, classes), strict=True))
        for c in absent:  # the patient moved for c is a smallest one that the pool can spare
            size = min(sizes[[grp for grp in moved_groups if c in set(y[g == grp])]])
            for grp in np.unique(g[~drawn & (y == c)]):
                if sizes[grp] < size:  # it holds a class the 5 folds need all of
                    assert min(pool_units[d] for d in set(y[g == grp])) <= 5, (seed, grp)
    assert completed >= 10  # the cases do exercise the moves


@pytest.mark.parametrize("config", RARE)
def test_completed_test_split_is_a_function_of_the_seed(config: str) -> None:
    y, groups, fraction = RARE[config]
    runs = [
        [make_splits(y, seed=seed, groups=groups, test_fraction=fraction).split for _ in (0, 1)]
        for seed in range(8)
    ]
    assert all(np.array_equal(a, b) for a, b in runs)
    assert len({tuple(a) for a, _ in runs}) == len(runs)  # seeds still differ


def test_the_moved_sample_is_drawn_from_the_seed() -> None:
    from raydx.data.folds import _draw_test

    y = np.repeat(np.arange(4), [108, 58, 28, 6])
    moved = set()
    for seed in range(20):
        test = make_splits(y, seed=seed, test_fraction=0.1).split == "test"
        rows = np.flatnonzero(test & ~_draw_test(y, None, 0.1, seed, str))
        assert y[rows].tolist() == [3]
        moved.add(int(rows[0]))
    assert len(moved) >= 4  # not always the first class-3 row


def _digest(s: Splits) -> str:
    import hashlib

    code = np.where(s.split == "test", -1, s.fold).astype(np.int64)
    return hashlib.sha256(code.tobytes()).hexdigest()[:16]


# Splits made by raydx before a drawn test split was completed with missing classes, for
# data whose draw holds every class already (folds=5, test_fraction=0.2, seeds 0-2):
# an earlier run resumes on the very same test split and folds.
BEFORE_COMPLETION = {
    "multiclass": ("f64ee29d2c92930f", "231b657a38759f93", "453989e2f1359ac7"),
    "rare_class": ("7fdb519b62f54b6e", "5d1aa4934138a9f8", "4189ea88288a59fa"),
    "patients": ("02dd7346a0b55288", "c3c5bf4987a5c286", "313456329cbd7007"),
    "patients_mixed": ("ec75aef64e60d8a0", "e99337e93829818e", "90e4e8da405f3bf5"),
    "multiclass_patients": ("60d11ff0c8ab5ee3", "6ef01c27d625e346", "70baacc3c9ba0c80"),
}


@pytest.mark.parametrize("config", BEFORE_COMPLETION)
def test_splits_that_hold_every_class_are_as_before(config: str) -> None:
    data = {
        **CONFIGS,
        "rare_class": (_labels([108, 58, 28, 6]), None),
        "multiclass_patients": _multiclass_patients(160, [0.5, 0.3, 0.15, 0.05]),
    }
    y, groups = data[config]
    for seed, expected in enumerate(BEFORE_COMPLETION[config]):
        s = make_splits(y, folds=5, seed=seed, groups=groups)
        assert set(y[s.split == "test"]) == set(y)
        assert _digest(s) == expected, (config, seed)


def test_a_class_too_small_for_test_split_and_folds_is_named() -> None:
    from raydx.data.folds import _complete_test

    y = np.repeat([0, 1, 2], [40, 30, 5])
    test = np.isin(np.arange(75), [0, 1, 2, 3, 40, 41, 42])  # no class 2
    with pytest.raises(DataError) as err:
        _complete_test(y, None, test, 5, 0, 0.1, ["benign", "malignant", "Malignant"].__getitem__)
    assert str(err.value) == (
        "class 'Malignant' has 5 samples, too few for both the held-out test split and "
        "folds=5 folds: it needs 6, one in the test split and one in each fold; use folds=4 "
        "or fewer, or add data."
    )
    # through make_splits, with the hint: every seed either draws class 2 into the test
    # split (the pool is then short of it) or cannot move one there
    for seed in range(10):
        with pytest.raises(DataError, match=r"class 'Malignant' has [45] samples") as err:
            make_splits(
                y,
                folds=5,
                seed=seed,
                test_fraction=0.1,
                class_names=["benign", "malignant", "Malignant"],
            )
        assert str(err.value).endswith("Is 'Malignant' a misspelling of 'malignant'?")


def test_a_class_of_two_patients_with_two_folds_is_named() -> None:
    from raydx.data.folds import _complete_test

    y = np.array([0] * 6 + [1] * 4)
    g = np.array(["a", "b", "c", "d", "e", "f", "q", "q", "r", "r"], dtype=object)
    test = np.zeros(10, dtype=bool)
    test[:2] = True
    with pytest.raises(DataError) as err:
        _complete_test(y, g, test, 2, 0, 0.2, str)
    assert str(err.value) == (
        "class '1' has 2 groups (4 samples), too few for both the held-out test split and "
        "folds=2 folds: it needs 3, one in the test split and one in each fold; add data."
    )


def _blocked_cohort() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 2's patients m0-m2 also hold class 1 or 3, whose other patients the 2 folds
    need; t0, t1, t3 are the test split as drawn."""
    rows = [
        ("t0", 0), ("t1", 1), ("t3", 3),
        ("m0", 1), ("m0", 2), ("m1", 1), ("m1", 2), ("m2", 3), ("m2", 2), ("q3", 3),
    ] + [(f"a{i}", 0) for i in range(6)]  # fmt: skip
    g = np.array([r[0] for r in rows], dtype=object)
    return np.array([r[1] for r in rows]), g, np.isin(g, ["t0", "t1", "t3"])


def test_a_move_that_would_leave_another_class_short_is_refused() -> None:
    from raydx.data.folds import _complete_test

    y, g, test = _blocked_cohort()
    with pytest.raises(DataError) as err:
        _complete_test(y, g, test, 2, 0, 0.2, "abcd".__getitem__)
    assert str(err.value) == (
        "the held-out test split (test_fraction=0.2) would hold no 'c' sample, and no "
        "patient (group) with one can move there: each also has 'b' samples, and the "
        "cross-validation pool keeps only 2 groups of 'b', which folds=2 need; use fewer "
        "folds, another test_fraction, or add data."
    )


def test_the_smallest_patient_that_leaves_the_pool_whole_is_moved() -> None:
    """m0 (2 images) is smaller, but takes one of the pool's last two class-1 patients;
    the larger p9, of class 2 alone, moves instead, and nothing else does."""
    from raydx.data.folds import _complete_test

    y, g, test = _blocked_cohort()
    y = np.concatenate([y, [2, 2, 2]])
    g = np.concatenate([g, ["p9"] * 3])
    test = np.concatenate([test, [False] * 3])
    for seed in range(5):
        t = test.copy()
        _complete_test(y, g, t, 2, seed, 0.2, str)
        assert sorted(set(g[t])) == ["p9", "t0", "t1", "t3"]
    # with 4 folds, no patient of class 2 can be spared at all
    with pytest.raises(DataError, match=r"class '2' has 4 groups \(6 samples\), too few"):
        _complete_test(y, g, test.copy(), 4, 0, 0.2, str)


def test_a_given_test_split_without_a_class_is_used_and_noted() -> None:
    y = _labels([60, 40, 12])
    mask = (y != 2) & (np.arange(len(y)) % 4 == 0)
    names = ["benign", "malignant", "other"]
    s = make_splits(y, folds=3, test_mask=mask, class_names=names)
    assert np.array_equal(s.split == "test", mask)
    assert absent_test_note(y, s, names) == (
        "WARNING: the test split holds no sample of class 'other', so its test metrics "
        "cannot measure it: a sensitivity for it is undefined and a macro AUC covers the "
        "other classes only; where the source gives the split, add such samples to it, or "
        "drop its split column to let raydx hold out one."
    )
    every = make_splits(y, folds=3, test_mask=np.arange(len(y)) % 4 == 0)
    assert absent_test_note(y, every, names) is None


def test_a_resume_keeps_the_runs_own_splits_on_the_same_images() -> None:
    """An older raydx drew other splits for the same images (another rule): the run's
    saved splits replace today's draw, and other images are refused (None)."""
    from raydx.data.synthetic import make_synthetic
    from raydx.prepare import Prepared, split_table, with_saved_splits

    table = make_synthetic(120, seed=0)
    now = split_table(table, folds=3, seed=0)
    prep = Prepared(table, 1, now, pd.DataFrame(), None)  # type: ignore[arg-type]
    older = split_table(table, folds=3, seed=1)  # what "the older rule" drew
    saved = splits_frame(table, older)
    kept = with_saved_splits(prep, saved, folds=3)
    assert kept is not None and kept.table is table
    assert splits_frame(table, kept.splits).equals(saved)
    assert with_saved_splits(prep, saved.iloc[1:], folds=3) is None
    relabelled = saved.assign(label=1 - saved["label"])
    assert with_saved_splits(prep, relabelled, folds=3) is None
    assert with_saved_splits(prep, saved, folds=5) is None
    trained = saved.assign(fold=saved["fold"].fillna(0))  # test rows with a fold
    assert with_saved_splits(prep, trained, folds=3) is None
    # patients: the saved patient groups come back; an older test split without a class
    # is noted, as a given one is
    import dataclasses

    grouped = dataclasses.replace(
        table, groups=np.array([f"p{i // 2}" for i in range(120)], object)
    )
    drawn = split_table(grouped, folds=3, seed=1)
    saved = splits_frame(grouped, drawn)
    no_pos = saved["label"] == 1
    saved.loc[no_pos & (saved["split"] == "test"), ["split", "fold"]] = ["cv", 0]
    kept = with_saved_splits(dataclasses.replace(prep, table=grouped), saved, folds=3)
    assert kept is not None and list(kept.splits.groups) == list(saved["group"])
    assert any("holds no sample of class" in n for n in kept.table.info["notes"])


def test_patients_on_both_sides_are_counted() -> None:
    import dataclasses

    from raydx.data.synthetic import make_synthetic
    from raydx.prepare import split_patients, split_table

    table = make_synthetic(60, seed=0)
    splits = split_table(table, folds=3, seed=0)
    assert split_patients(table, splits) == 0  # no patients
    own = dataclasses.replace(table, groups=np.array([f"p{i}" for i in range(60)], object))
    assert split_patients(own, splits) == 0
    place = np.where(splits.split == "cv", splits.fold, -1)
    a, b = np.flatnonzero(place == 0)[0], np.flatnonzero(place == -1)[0]
    joined = own.groups.copy()
    joined[b] = joined[a]  # one patient in fold 0 and the test split
    assert split_patients(dataclasses.replace(own, groups=joined), splits) == 1


def test_more_group_parts_than_any_class_has_samples_is_a_data_error() -> None:
    # 11 patients, class counts 5/8/8: test_fraction 0.1 is 1 of 10 parts
    y = np.repeat([0, 1, 2], [5, 8, 8])
    g = np.array([f"p{i}" for i in range(11)]).repeat([2] * 10 + [1])
    with pytest.raises(DataError, match=r"holds out 1 of 10 group-whole parts, but no class"):
        make_splits(y, folds=3, seed=0, groups=g, test_fraction=0.1)


def test_groups_of_another_length_are_refused() -> None:
    """A patient column out of step with the labels would group the wrong images."""
    y = _labels([30, 30])
    groups = np.arange(60) // 2
    with pytest.raises(
        DataError, match=r"^groups must have 60 rows \(one per label\), but got 59\.$"
    ):
        make_splits(y, folds=3, groups=groups[:-1])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros((4, 2), np.int64), r"labels must be 1-D .* but got shape \(4, 2\)\.$"),
        (np.array([0.0, 1.0, 0.0, 1.0]), r"labels must be integers >= 0, but got dtype=float64\.$"),
        (np.array([0, -1, 0, 1]), r"labels must be integers >= 0, but got dtype=int64\.$"),
    ],
)
def test_labels_that_are_not_class_indices_are_refused(labels: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make_splits(labels, folds=2)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"images": np.zeros((4, 8, 8), np.uint8)},
            r"uint8 array of shape \(N, H, W, C\), but got",
        ),
        ({"images": np.zeros((4, 8, 8, 1), np.float32)}, r"but got dtype=float32 shape"),
        ({"sample_ids": np.arange(3)}, r"one row per sample, but got 4, 4 and 3 rows\.$"),
        (
            {"official_split": np.array(["train"] * 5)},
            r"^official_split must have 4 rows, but got 5\.$",
        ),
        (
            {"labels": np.array([0, 1, 2, 1])},
            r"labels must lie in \[0, 1\], but got values in \[0, 2\]",
        ),
    ],
)
def test_an_image_table_out_of_shape_is_refused(changes: dict, message: str) -> None:
    table = {
        "images": np.zeros((4, 8, 8, 1), np.uint8),
        "labels": np.array([0, 1, 0, 1]),
        "sample_ids": np.arange(4),
        "class_names": ("benign", "malignant"),
        "name": "toy",
    }
    with pytest.raises(DataError, match=message):
        ImageTable(**{**table, **changes})
    assert len(ImageTable(**table)) == 4


def test_no_samples_is_said_plainly() -> None:
    with pytest.raises(DataError, match=r"at least 2 classes, but got no samples\.$"):
        make_splits(np.array([], dtype=np.int64), folds=2)


@pytest.mark.parametrize("seed", range(5))
def test_a_fold_with_few_of_a_class_is_warned_of_in_images_or_patients(seed: int) -> None:
    """Screening data: 9 malignant images among 200, 3 folds: each fold validates on 2
    or 3 of them, and its AUC is their rank (an audit). Patients count as patients."""
    y = _labels([191, 9])
    s = make_splits(y, folds=3, seed=seed)
    note = few_in_folds_note(_table(y), s)
    assert note is not None and note.startswith("WARNING: fold ")
    fewest = min(int(((s.fold == f) & (y == 1)).sum()) for f in range(3))
    assert f" validates on {fewest} 'malignant' image" in note
    assert "use fewer folds (--folds), or more 'malignant' data" in note
    assert (
        few_in_folds_note(
            _table(_labels([150, 50])), make_splits(_labels([150, 50]), folds=3, seed=seed)
        )
        is None
    )
    # 40 malignant images of 5 patients, 3 folds and a test split: a fold holds one's
    yg = np.repeat([0, 1], [160, 40])
    groups = np.r_[np.arange(160).astype(str), np.repeat([f"p{i}" for i in range(5)], 8)]
    sg = make_splits(yg, folds=3, seed=seed, groups=groups)
    note = few_in_folds_note(_table(yg, groups), sg)
    assert note is not None and "'malignant' patient" in note


def test_too_few_for_a_test_split_and_three_folds_asks_for_two_folds() -> None:
    """An audit: 3 patients and folds=3 were told "use folds=2 or fewer", where 2 is the
    fewest folds there are."""
    from raydx.data.folds import _complete_test

    y = np.repeat([0, 1], [40, 3])
    test = np.isin(np.arange(43), [0, 1, 2, 3])  # no class 1
    with pytest.raises(DataError, match=r"; use folds=2, or add data\.$"):
        _complete_test(y, None, test, 3, 0, 0.1, ["benign", "malignant"].__getitem__)


def test_a_class_named_without_images_leaves_the_fold_warning_to_the_others() -> None:
    """A review: a class with no images counted 0 in every fold and silenced the
    warning for the rare class beside it."""
    y = _labels([191, 9])
    s = make_splits(y, folds=3, seed=0)
    table = ImageTable(
        images=np.zeros((200, 4, 4, 1), dtype=np.uint8),
        labels=y.astype(np.int64),
        sample_ids=np.array([f"s/{i}" for i in range(200)], dtype=object),
        class_names=("benign", "malignant", "other"),
        name="toy",
    )
    note = few_in_folds_note(table, s)
    assert note is not None and "'malignant' image" in note


def test_a_resume_on_its_saved_splits_warns_of_their_folds_not_todays() -> None:
    """A review: the few-in-a-fold note was said of the folds drawn now, which a resume
    replaces with the run's own."""
    import dataclasses

    from raydx.prepare import Prepared, with_saved_splits

    y = _labels([191, 9])
    table = _table(y)
    now, older = make_splits(y, folds=3, seed=0), make_splits(y, folds=3, seed=5)
    drawn, theirs = few_in_folds_note(table, now), few_in_folds_note(table, older)
    assert drawn and theirs
    noted = dataclasses.replace(table, info={**table.info, "notes": [drawn]})
    prep = Prepared(noted, 1, now, pd.DataFrame(), None)  # type: ignore[arg-type]
    kept = with_saved_splits(prep, splits_frame(table, older), folds=3)
    assert kept is not None
    folds_said = [n for n in kept.table.info["notes"] if n.startswith("WARNING: fold ")]
    assert folds_said == [theirs]
