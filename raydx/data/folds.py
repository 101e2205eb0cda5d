"""Test split and k folds: a pure function of (labels, groups, k, seed), run once on the driver.

Every trial of a search sees the same folds, so trials are compared on equal terms, and
the held-out test split is never touched by the search. Problems that would only show
up inside a fold worker (a class missing from a fold, a patient on both sides) are
raised here as one-line ``DataError``s before anything trains.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, StratifiedShuffleSplit

from raydx.data.labels import misspelling_of
from raydx.data.table import ImageTable
from raydx.errors import DataError, count


@dataclass(frozen=True, eq=False)
class Splits:
    """Per-row split ("cv" or "test") and fold (0..k-1, -1 for test rows)."""

    split: np.ndarray  # (N,) object: "cv" or "test"
    fold: np.ndarray  # (N,) int64: 0..k-1 for cv rows, -1 for test rows
    k: int
    groups: np.ndarray | None = None  # (N,) object: the groups the split kept whole

    def train_val_indices(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices trained on and validated on in ``fold``."""
        if not 0 <= fold < self.k:
            raise DataError(f"fold must be in [0, {self.k - 1}], but got fold={fold}.")
        cv = self.fold >= 0
        return np.flatnonzero(cv & (self.fold != fold)), np.flatnonzero(self.fold == fold)

    @property
    def cv_indices(self) -> np.ndarray:
        return np.flatnonzero(self.fold >= 0)

    @property
    def test_indices(self) -> np.ndarray:
        return np.flatnonzero(self.fold < 0)


def make_splits(
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    test_mask: np.ndarray | None = None,
    test_fraction: float = 0.2,
    groups: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    fold_seed: int | None = None,
) -> Splits:
    """Hold out a test split, then stratify the rest into ``folds`` folds.

    The test split is ``test_mask`` (a source's official test rows) when given, else a
    stratified ``test_fraction`` of the rows, kept group-whole when ``groups`` are given
    (a of the b parts of ``StratifiedGroupKFold(b)``, a / b the closest fraction with
    b <= 20, so the fraction is approximate). A test split raydx draws holds every class
    (``_complete_test``); a given one without a class is used (``absent_test_note``).
    ``fold_seed`` (default: ``seed``) draws the folds alone, so a configuration can be
    cross-validated again on other folds while the test split, drawn from ``seed``,
    stays the one it was never chosen on.
    ``class_names`` only make the error messages readable.
    """
    y = _check_labels(labels)
    n = len(y)
    if isinstance(folds, bool) or not isinstance(folds, int | np.integer) or folds < 2:
        raise DataError(f"folds must be >= 2, but got folds={folds!r}.")
    folds = int(folds)
    seed = _check_seed("seed", seed)
    fold_seed = seed if fold_seed is None else _check_seed("fold_seed", fold_seed)
    names = list(class_names) if class_names is not None else []

    def cname(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    def hint(c: int) -> str:
        """A rare class named like another is usually a mistyped label."""
        close = misspelling_of(cname(c), [x for x in names if x != cname(c)])
        return f" Is '{cname(c)}' a misspelling of '{close}'?" if close else ""

    present = np.unique(y)
    if len(present) < 2:
        got = f"only class '{cname(int(present[0]))}'" if len(present) else "no samples"
        raise DataError(f"labels must contain at least 2 classes, but got {got}.")

    g = None
    if groups is not None:
        if len(groups) != n:
            raise DataError(f"groups must have {n} rows (one per label), but got {len(groups)}.")
        g = np.array([str(v) for v in groups], dtype=object)

    if test_mask is not None:
        test = _check_mask(test_mask, n)
        if g is not None:
            check_one_side(g[test], g[~test])
    else:
        if isinstance(test_fraction, bool) or not 0.0 < float(test_fraction) < 1.0:
            raise DataError(
                f"test_fraction must be in (0, 1), but got test_fraction={test_fraction!r}."
            )
        # raydx's own: drawn stratified (group-whole), then given every class it lacks
        test = _draw_test(y, g, float(test_fraction), seed, cname, hint)
        _complete_test(y, g, test, folds, seed, float(test_fraction), cname, hint)

    pool = np.flatnonzero(~test)
    y_pool = y[pool]
    pool_classes = np.unique(y_pool)
    if len(pool_classes) < 2:
        raise DataError(
            f"the cross-validation pool (all rows outside the test split) must contain at "
            f"least 2 classes, but got {len(pool_classes)}."
        )
    unit = "sample" if g is None else "group"
    for c, n_in in zip(present, _units(y, g, ~test, present), strict=True):
        if n_in == 0:
            raise DataError(
                f"class '{cname(int(c))}' occurs only in the test split; no model can learn "
                f"it. Add training samples of it or remove it from the test split." + hint(int(c))
            )
        if n_in < folds:
            raise DataError(
                f"class '{cname(int(c))}' has {count(n_in, unit)} in the cross-validation "
                f"pool, fewer than folds={folds}; use fewer folds or add data." + hint(int(c))
            )

    if test_mask is not None and len(np.unique(y[test])) < 2:
        raise DataError(
            f"the given test split holds a single class ('{cname(int(y[test][0]))}', "
            f"{int(test.sum())} samples), so its AUC is undefined; add samples of the "
            "other classes to it (for a MedMNIST-layout .npz, to its test_images and "
            "test_labels), or drop a manifest's split column (for an .npz, join its arrays "
            "into train_ ones) to let raydx hold out one."
        )
    fold = np.full(n, -1, dtype=np.int64)
    pool_fold = _folds(y_pool, None if g is None else g[pool], folds, fold_seed)
    if (pool_fold < 0).any() or len(np.unique(pool_fold)) != folds:
        raise DataError(
            f"could not form {folds} non-empty folds from {len(pool)} samples; "
            f"use fewer folds or add data."
        )
    fold[pool] = pool_fold
    if g is not None:
        missing = _fill_gaps(y_pool, g[pool], pool_fold, folds)
        fold[pool] = pool_fold
        if missing is not None:
            i, c = missing
            raise DataError(
                f"fold {i} would validate on no '{cname(c)}' sample, so its AUC would be "
                f"undefined, and no patient (group) can move there without leaving "
                f"another fold short of a class; use fewer folds or add data." + hint(c)
            )
    split = np.where(test, "test", "cv").astype(object)
    return Splits(split=split, fold=fold, k=folds, groups=g)


def _folds(y: np.ndarray, g: np.ndarray | None, k: int, seed: int) -> np.ndarray:
    fold = np.full(len(y), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # small classes were checked above
        if g is None:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = splitter.split(np.zeros(len(y)), y)
        else:
            group_splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            parts = group_splitter.split(np.zeros(len(y)), y, g)
        for i, (_, val) in enumerate(parts):
            fold[val] = i
    return fold


def _fill_gaps(y: np.ndarray, g: np.ndarray, fold: np.ndarray, k: int) -> tuple[int, int] | None:
    """Move whole groups (in place) until every fold validates on every class; the
    (fold, class) left short if no move can fill it.

    ``StratifiedGroupKFold`` does not promise every class in every fold (its greedy
    assignment balances counts, and a patient with images of both classes counts for
    both): in about one small cohort in 17 with such patients a fold lacked a class
    (random cohorts of 12-29 patients, 5 folds: tests/test_folds.py), and reshuffling
    does not mend it. A fold's AUC is then undefined and the CV mean would rest on k - 1 folds.
    Each move takes the smallest group of the missing class from a fold that keeps every
    class without it, so it fills a gap and opens none; sklearn's folds stay as they
    were where nothing is missing.
    """
    classes = np.unique(y)
    for _ in range(k * len(classes)):
        gap = next(
            ((i, int(c)) for i in range(k) for c in classes if not (y[fold == i] == c).any()),
            None,
        )
        if gap is None:
            return None
        i, c = gap
        moves = []
        for group in np.unique(g[(y == c) & (fold != i)]):
            rows = g == group
            j = int(fold[rows][0])
            rest = (fold == j) & ~rows
            if set(np.unique(y[rest])) == set(classes):
                moves.append((int(rows.sum()), -int((fold == j).sum()), str(group), group))
        if not moves:
            return gap
        fold[g == min(moves, key=lambda m: m[:3])[3]] = i
    return None


def _check_seed(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        raise DataError(f"{name} must be an int in [0, 2**32 - 1], but got {name}={value!r}.")
    return int(value)


def splits_frame(table: ImageTable, splits: Splits) -> pd.DataFrame:
    """One row per sample: the saved record of which fold every sample was in."""
    _check_same_length(table, splits)
    frame = pd.DataFrame(
        {
            "sample_id": pd.Series(table.sample_ids, dtype="str"),
            "label": pd.Series(table.labels, dtype="int64"),
            "label_name": pd.Series(
                np.asarray(table.class_names, dtype=object)[table.labels], dtype="str"
            ),
            "split": pd.Series(splits.split, dtype="str"),
            "fold": pd.Series(splits.fold, dtype="Int64").where(splits.fold >= 0),
        }
    )
    if table.groups is not None:
        frame["group"] = pd.Series([str(v) for v in table.groups], dtype="str")
    joined = splits.groups is not None and (
        table.groups is None or not np.array_equal(splits.groups, table.groups.astype(str))
    )
    if joined:  # patients, with exact duplicate images joined
        frame["split_group"] = pd.Series(splits.groups, dtype="str")
    return frame


def split_summary(table: ImageTable, splits: Splits) -> pd.DataFrame:
    """Per fold and for the test split: sample count, group count and count per class."""
    _check_same_length(table, splits)
    rows = []
    parts: list[tuple[str, int | None, np.ndarray]] = [
        ("cv", i, splits.fold == i) for i in range(splits.k)
    ]
    parts.append(("test", None, splits.fold < 0))
    for split, fold, mask in parts:
        row: dict[str, object] = {"split": split, "fold": fold, "n": int(mask.sum())}
        if table.groups is not None:
            row["n_groups"] = len({str(v) for v in table.groups[mask]})
        counts = np.bincount(table.labels[mask], minlength=table.n_classes)
        row.update({name: int(counts[i]) for i, name in enumerate(table.class_names)})
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame["fold"] = frame["fold"].astype("Int64")
    return frame


def _check_labels(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise DataError(f"labels must be 1-D (one class index per row), but got shape {y.shape}.")
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0):
        raise DataError(f"labels must be integers >= 0, but got dtype={y.dtype}.")
    return y.astype(np.int64)


def _check_mask(test_mask: np.ndarray, n: int) -> np.ndarray:
    mask = np.asarray(test_mask)
    if mask.dtype != bool or mask.shape != (n,):
        raise DataError(
            f"test_mask must be a boolean array of shape ({n},), but got "
            f"dtype={mask.dtype} shape={mask.shape}."
        )
    if not mask.any():
        raise DataError(
            "test_mask selects no rows; pass test_mask=None to hold out a stratified "
            "test_fraction instead."
        )
    return mask


def _draw_test(
    y: np.ndarray,
    g: np.ndarray | None,
    fraction: float,
    seed: int,
    cname: Callable[[int], str],
    hint: Callable[[int], str] = lambda c: "",
) -> np.ndarray:
    """The stratified (and group-whole) draw of the test split, as a boolean mask; a
    small class may be left out of it by rounding."""
    n = len(y)
    classes, counts = np.unique(y, return_counts=True)
    test = np.zeros(n, dtype=bool)
    if g is not None:  # a class must reach both sides: count its patients, not its images
        counts = _units(y, g, np.ones(n, bool), classes)
    if counts.min() < 2:
        c = int(classes[counts.argmin()])
        what = "sample" if g is None else f"group ({int((y == c).sum())} samples)"
        raise DataError(
            f"class '{cname(c)}' has 1 {what}, too few to split into test and "
            f"cross-validation; add data or remove the class." + hint(c)
        )
    if g is None:
        n_test = math.ceil(fraction * n)
        if n_test < len(classes) or n - n_test < len(classes):
            raise DataError(
                f"test_fraction={fraction} holds out {n_test} of {n} samples, which cannot "
                f"hold all {len(classes)} classes on both sides; change test_fraction or "
                f"add data."
            )
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, idx = next(splitter.split(np.zeros(n), y))
        test[idx] = True
    else:
        n_groups = len(np.unique(g))
        # a of b group-whole parts: 0.2 is 1 of 5, 0.3 is 3 of 10 (one part of
        # round(1 / 0.3) = 3 would hold out a third, and 0.4 became one of 2: half)
        share = Fraction(fraction).limit_denominator(min(20, max(n_groups, 2)))
        n_take, n_parts = share.numerator, share.denominator
        if n_take <= 1:
            n_take, n_parts = 1, max(2, round(1 / fraction))
        if n_groups < n_parts:
            raise DataError(
                f"test_fraction={fraction} with groups needs at least {n_parts} groups, "
                f"but got {n_groups}; add data or pass an explicit test split."
            )
        splitter = StratifiedGroupKFold(n_splits=n_parts, shuffle=True, random_state=seed)
        # scikit-learn's ValueError, said for raydx
        if (np.unique(y, return_counts=True)[1] < n_parts).all():
            raise DataError(
                f"test_fraction={fraction} with groups holds out {n_take} of {n_parts} "
                f"group-whole parts, but no class has {n_parts} samples to spread over them; "
                f"choose a test_fraction of fewer parts (0.2 is 1 of 5) or add data."
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            parts = [idx for _, idx in splitter.split(np.zeros(n), y, g)]
        # Which part becomes the test split is drawn from the seed too, so that seeds
        # differ even where the greedy group assignment leaves little to shuffle.
        rng = np.random.default_rng(seed)
        chosen = (
            [int(rng.integers(n_parts))]
            if n_take == 1
            else rng.choice(n_parts, n_take, replace=False)
        )
        for i in chosen:
            test[parts[i]] = True
    if not test.any():
        raise DataError(
            f"the held-out test split (test_fraction={fraction}) would be empty; "
            f"raise test_fraction or add data."
        )
    return test


def _units(
    y: np.ndarray, g: np.ndarray | None, rows: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Per class of ``classes``: its samples among ``rows`` (a mask), or with ``g`` its
    groups (patients) there: what a side of the split holds of it."""
    if g is None:
        return np.array([int((y[rows] == c).sum()) for c in classes], dtype=np.int64)
    return np.array([len(np.unique(g[rows & (y == c)])) for c in classes], dtype=np.int64)


def _complete_test(
    y: np.ndarray,
    g: np.ndarray | None,
    test: np.ndarray,
    folds: int,
    seed: int,
    fraction: float,
    cname: Callable[[int], str],
    hint: Callable[[int], str] = lambda c: "",
) -> None:
    """Move (in place) into ``test`` one pool sample, or with ``g`` the smallest group
    (whole), of each class the draw left out of it.

    A stratified draw rounds a small class's share, so it can leave the class out: 6 of
    200 samples at test_fraction=0.1 drew none in 20 seeds of 20. Its test sensitivity
    would be undefined and a macro AUC would silently cover the other classes only. A
    move never takes the cross-validation pool below ``folds`` samples (groups) of any
    class, which stratified folds need; where that leaves no move, the class is named.
    The choice among equal candidates is drawn from ``seed``, and a draw that holds
    every class is left as it is, so splits made before this existed are unchanged.
    """
    classes = np.unique(y)
    rng = np.random.default_rng(seed)
    for c in classes:  # in order; a group moved for one class may bring a later one too
        if (y[test] == c).any():
            continue
        in_pool = _units(y, g, ~test, classes)
        n_c = int(in_pool[np.searchsorted(classes, c)])
        if n_c <= folds:  # all of the class is in the pool, and the pool needs them all
            if g is None:
                what = count(n_c, "sample")
            else:
                what = f"{count(n_c, 'group')} ({count(int((y == c).sum()), 'sample')})"
            fix = (
                "add data"
                if n_c <= 2
                else "use folds=2, or add data"
                if n_c == 3
                else f"use folds={n_c - 1} or fewer, or add data"
            )
            raise DataError(
                f"class '{cname(int(c))}' has {what}, too few for both the held-out test "
                f"split and folds={folds} folds: it needs {folds + 1}, one in the test split "
                f"and one in each fold; {fix}." + hint(int(c))
            )
        rows = np.flatnonzero(~test & (y == c))
        if g is None:
            test[rows[rng.integers(len(rows))]] = True
            continue
        # the groups holding c, smallest first, ties in an order drawn from the seed;
        # a group may not hold a class whose pool has no group to spare
        held = np.unique(g[rows])
        held = held[rng.permutation(len(held))]
        sizes = pd.Series(g).value_counts().reindex(held).to_numpy()
        short = classes[in_pool <= folds]
        blocked = set(np.unique(g[~test & np.isin(y, short)]))
        free = [grp for grp in held[np.argsort(sizes, kind="stable")] if grp not in blocked]
        if not free:
            d = int(short[np.isin(short, y[np.isin(g, held)])][0])
            n_d = int(in_pool[np.searchsorted(classes, d)])
            raise DataError(
                f"the held-out test split (test_fraction={fraction}) would hold no "
                f"'{cname(int(c))}' sample, and no patient (group) with one can move there: "
                f"each also has '{cname(d)}' samples, and the cross-validation pool keeps "
                f"only {count(n_d, 'group')} of '{cname(d)}', which folds={folds} need; use "
                f"fewer folds, another test_fraction, or add data." + hint(int(c))
            )
        test[g == free[0]] = True


def absent_test_note(labels: np.ndarray, splits: Splits, class_names: Sequence[str]) -> str | None:
    """A warning for classes the test split lacks (a source's own split, used as given,
    or one an older raydx drew, kept on resume; raydx's own holds every class): recorded
    with the run, so the model card says it."""
    y = np.asarray(labels)
    absent = [int(c) for c in np.unique(y) if not (y[splits.split == "test"] == c).any()]
    if not absent or not (splits.split == "test").any():
        return None
    names = ", ".join(f"'{class_names[c]}'" for c in absent)
    one = len(absent) == 1
    return (
        f"WARNING: the test split holds no sample of {'class' if one else 'classes'} "
        f"{names}, so its test metrics cannot measure {'it' if one else 'them'}: a "
        f"sensitivity for {'it' if one else 'each'} is undefined and a macro AUC covers the "
        "other classes only; where the source gives the split, add such samples to it, or "
        "drop its split column to let raydx hold out one."
    )


FEW_IN_A_FOLD = 5  # fewer images (or patients) of a class in a fold: its AUC is noise


def few_in_folds_note(table: ImageTable, splits: Splits) -> str | None:
    """A warning where a fold validates on fewer than ``FEW_IN_A_FOLD`` images of a class
    (patients, where the folds keep patients whole): that fold's AUC is the rank of one
    or two images, and the CV AUC that the search maximises averages such ranks (an
    audit: one malignant image a fold gave fold AUCs 0.520, 0.974 and 0.888, CV AUC
    0.794 +- 0.197, unremarked). Recorded with the run, so the model card says it."""
    groups = table.groups
    by_patient = groups is not None
    fewest: tuple[int, int, int] | None = None  # (count, class, fold)
    for f in range(splits.k):
        here = splits.fold == f
        for c in range(table.n_classes):
            rows = here & (table.labels == c)
            n = len({str(g) for g in groups[rows]}) if groups is not None else int(rows.sum())
            if n and (fewest is None or n < fewest[0]):  # a class named, without images
                fewest = (n, c, f)
    if fewest is None or fewest[0] >= FEW_IN_A_FOLD:
        return None
    n, c, f = fewest
    unit = "patient" if by_patient else "image"
    return (
        f"WARNING: fold {f} validates on {n} {table.class_names[c]!r} "
        f"{unit}{'s' * (n != 1)} (the fewest of any fold and class; split_summary.csv): "
        f"each fold's AUC then rests on the ranks of a few {unit}s, and the CV AUC that "
        "the search maximises and reports is noisy; use fewer folds (--folds), or more "
        f"{table.class_names[c]!r} data"
    )


def _check_same_length(table: ImageTable, splits: Splits) -> None:
    if len(splits.fold) != len(table):
        raise DataError(
            f"splits have {len(splits.fold)} rows but the table has {len(table)}; "
            f"make the splits from this table's labels."
        )


def fold_grouping(splits: pd.DataFrame) -> str:
    """How a run's folds were formed, from its ``splits.parquet`` (model card, report)."""
    if "group" in splits:
        n = splits.loc[splits["split"] == "cv", "group"].nunique()  # the pool's, not the test's
        return f"grouped by patient ({n} patients), so no patient is in two folds"
    return "no patient ids, so images are split one by one"


def check_one_side(test_groups: np.ndarray, other_groups: np.ndarray) -> None:
    """A patient on both sides of a given test split (``make_splits``; the listing's
    check before decoding, ``raydx.data.files``)."""
    both = np.intersect1d(test_groups, other_groups)
    if len(both):
        raise DataError(
            f"group '{both[0]}' has samples both in the official test split and "
            f"outside it ({count(len(both), 'group')} in all); a patient must stay "
            "on one side."
        )
