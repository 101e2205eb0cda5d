"""Near copies: most likely one picture saved twice with small changes (re-encoded,
resized, its brightness or contrast changed), which the exact-duplicate check
(``raydx.data.duplicates``) cannot see. (A shift by a pixel or a caliper's mark on a small
image may take a pair below the threshold.) Split apart, a near copy trained on flatters its
twin's score as an exact copy does.

Found by the correlation of small grey thumbnails (16 x 16, each centred and scaled):
every pair compared up to ``DENSE`` images; above, the pairs within reach in an index
of the thumbnails' first principal components (``indexed_pairs``, no pair missed),
each then compared. The threshold, 0.985, comes from BreastMNIST (780 images, from the
BUSI ultrasound set): the pairs above it each looked like one picture, by eye, and so
did those down to about 0.95; between 0.91 and 0.93 they were other images, and their
count grows fast below that (26 pairs in 0.93-0.95, 139 in 0.91-0.93, 599 in
0.89-0.91), where other images of a modality that all look alike begin. Reported, and
joined into groups only on request (``--join-near-copies``): what counts as a copy below
the threshold depends on the modality, and patients, which the folds keep whole, are
the user's to name. A set with more such
pairs than images is taken for one whose images all look alike at this size, and its
pairs are not listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.data.folds import Splits
from raydx.data.table import ImageTable
from raydx.errors import count

CORRELATION = 0.985  # thumbnails this alike or more are a near copy
SIDE = 16  # thumbnail side, in pixels
DENSE = 20_000  # up to this, every pair is compared (20,000 images: 2.9 s, bench/near_copies.py)
MAX_IMAGES = 200_000  # thumbnails of 200,000 images: 205 MB; the index took 52.5 s on them
COMPONENTS = 24  # principal components that index the thumbnails above DENSE
CANDIDATES_PER_IMAGE = 50  # more candidate pairs than this per image: a look-alike set
FILE = "near_copies.csv"
CHUNK = 256  # images made thumbnails at once (224-px colour: 150 MB of floats)


def thumbnails(images: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, SIDE * SIDE) float32 rows, centred, of unit length (a
    flat image's row is zero, alike to nothing), so that a row product is the
    thumbnails' correlation. ``rows``: of those images only, taken a chunk at a time (an
    index of the whole stack would copy it)."""
    import torch

    n = len(images) if rows is None else len(rows)
    out = np.zeros((n, SIDE * SIDE), np.float32)
    for start in range(0, n, CHUNK):  # a float copy of a chunk at a time
        part = (
            images[start : start + CHUNK] if rows is None else images[rows[start : start + CHUNK]]
        )
        grey = torch.from_numpy(np.ascontiguousarray(part)).float().mean(dim=3)[:, None]
        small = torch.nn.functional.adaptive_avg_pool2d(grey, SIDE).flatten(1)
        small = small - small.mean(dim=1, keepdim=True)
        norm = small.norm(dim=1, keepdim=True)
        unit = torch.where(norm > 1e-3, small / norm.clamp_min(1e-3), torch.zeros_like(small))
        out[start : start + len(unit)] = unit.numpy()
    return out


class LookAlike(Exception):
    """Too many candidate pairs to list: a set whose images look alike at 16 x 16."""


def near_pairs(
    images: np.ndarray, threshold: float = CORRELATION, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j), in order, whose thumbnails correlate at ``threshold`` or more,
    and their correlations: every pair compared (a block of rows at a time) up to
    ``DENSE`` images, ``indexed_pairs`` above."""
    t = thumbnails(images)
    if len(t) > DENSE:
        return indexed_pairs(t, threshold)
    found: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for start in range(0, len(t), block):
        sims = t[start : start + block] @ t.T
        i, j = np.nonzero(sims >= threshold)
        i = i + start
        keep = j > i
        found.append(np.stack([i[keep], j[keep]], axis=1))
        values.append(sims[i[keep] - start, j[keep]])
    if not found:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    return np.concatenate(found).astype(np.int64), np.concatenate(values)


def indexed_pairs(t: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``near_pairs`` of thumbnail rows ``t`` without comparing every pair. Rows of unit
    length that correlate >= ``threshold`` lie within ``sqrt(2 - 2 * threshold)`` of
    each other, and so do their projections on any orthonormal basis: the pairs within
    that radius in a k-d tree of ``COMPONENTS`` principal components (of a sample)
    hold every near pair, and are then compared. Raises ``LookAlike`` where a sample's
    neighbours foretell more than ``CANDIDATES_PER_IMAGE`` candidates per image."""
    from scipy.spatial import cKDTree

    live = np.flatnonzero(np.abs(t).sum(axis=1) > 0)  # a flat image is alike to nothing
    if len(live) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)
    rng = np.random.default_rng(0)
    sample = t[rng.choice(live, min(len(live), 4000), replace=False)]
    basis = np.linalg.svd(sample, full_matrices=False)[2][:COMPONENTS]
    tree = cKDTree(t[live] @ basis.T)
    radius = float(np.sqrt(max(0.0, 2 - 2 * threshold))) * 1.001 + 1e-6  # float32 rounding
    probe = rng.choice(len(live), min(len(live), 2000), replace=False)
    within = tree.query_ball_point(tree.data[probe], radius, return_length=True)
    foretold = (np.sum(within) - len(probe)) / max(len(probe), 1) * len(live) / 2
    if foretold > CANDIDATES_PER_IMAGE * len(live):
        raise LookAlike(f"{foretold:,.0f}")
    pairs = live[tree.query_pairs(radius, output_type="ndarray")]
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    corr = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), 1 << 20):  # a million pairs at a time
        a, b = pairs[start : start + (1 << 20), 0], pairs[start : start + (1 << 20), 1]
        corr[start : start + len(a)] = np.einsum("ij,ij->i", t[a], t[b])
    keep = corr >= threshold
    return pairs[keep].astype(np.int64), corr[keep]


COLUMNS = [
    "sample_id",
    "other",
    "label",
    "other_label",
    "side",
    "other_side",
    "fold",
    "other_fold",
    "correlation",
    "straddles",
]


@dataclass(frozen=True)
class Found:
    """The near copies of a table, before any split: row pairs (i < j) that are not
    exact copies, their correlations, and why none are listed where none are."""

    pairs: np.ndarray  # (k, 2) int64
    correlation: np.ndarray  # (k,)
    not_listed: str | None = None


def find_near_copies(table: ImageTable) -> Found:
    """The near pairs (``near_pairs``: every pair compared, or an index above ``DENSE``),
    exact copies left to ``duplicates.csv``. None are listed above ``MAX_IMAGES``
    images, or where there are more pairs than images, or the index foretells far more
    (``LookAlike``): a set whose images all look alike at this size."""
    n = len(table)
    none = np.zeros((0, 2), np.int64), np.zeros(0, np.float64)
    if n > MAX_IMAGES:
        return Found(
            *none,
            f"near copies not looked for: {n:,} images, above {MAX_IMAGES:,} (at 200,000 "
            "images of 28 px the search took 52.5 s and the process 3.6 GB, images included, "
            "on 2 cores, and both grow faster than the set)",
        )
    if n < 2:
        return Found(*none)
    try:
        pairs, corr = near_pairs(table.images)
    except LookAlike as e:
        return Found(
            *none,
            f"near copies not listed: about {e} pairs of the {n:,} images have thumbnails "
            f"within reach of a correlation >= {CORRELATION}, far more than there are "
            "images: this set's images look alike at 16 x 16, and most such pairs would be "
            "other pictures",
        )
    hashes = table.content_hashes()
    exact = hashes[pairs[:, 0]] == hashes[pairs[:, 1]]
    pairs, corr = pairs[~exact], corr[~exact]
    if len(pairs) > n:
        return Found(
            *none,
            f"near copies not listed: {len(pairs):,} pairs of the {n:,} images have thumbnails "
            f"that correlate >= {CORRELATION}, more than there are images: this set's images "
            "look alike at 16 x 16, and most such pairs would be other pictures",
        )
    return Found(pairs, corr.astype(np.float64))


def near_copy_pairs(
    table: ImageTable, splits: Splits, found: Found | None = None, *, joined: bool = False
) -> pd.DataFrame:
    """One row per pair of near copies (``find_near_copies``, unless ``found``), placed on
    ``splits`` (``on_splits``); ``attrs`` say why none are listed (``not_listed``),
    whether the test split came with the data (``given_test``) and whether the splits
    kept the pairs together (``joined``: ``--join-near-copies``)."""
    found = find_near_copies(table) if found is None else found
    a, b = found.pairs[:, 0], found.pairs[:, 1]
    names = np.asarray(table.class_names, dtype=object)
    frame = pd.DataFrame(
        {
            "sample_id": pd.Series(table.sample_ids[a], dtype="str"),
            "other": pd.Series(table.sample_ids[b], dtype="str"),
            "label": pd.Series(names[table.labels[a]], dtype="str"),
            "other_label": pd.Series(names[table.labels[b]], dtype="str"),
            "correlation": np.round(found.correlation, 5),
        }
    )
    frame = frame.sort_values("correlation", ascending=False, kind="stable")
    frame = on_splits(frame.reset_index(drop=True), table, splits)
    given = table.official_split is not None and bool((table.official_split == "test").any())
    frame.attrs = {"given_test": given, "joined": joined}
    if found.not_listed:
        frame.attrs["not_listed"] = found.not_listed
    return frame


def joined_key(found: Found, n: int) -> list[int | None]:
    """Each row's near-copy component (None for a row without a near copy), for the
    splits to keep whole as they keep patients and exact copies
    (``raydx.data.duplicates.merged_groups``)."""
    if not len(found.pairs):
        return [None] * n
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    a, b = found.pairs[:, 0], found.pairs[:, 1]
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    paired = np.zeros(n, dtype=bool)
    paired[found.pairs.ravel()] = True
    return [int(label[i]) if paired[i] else None for i in range(n)]


def on_splits(pairs: pd.DataFrame, table: ImageTable, splits: Splits) -> pd.DataFrame:
    """``pairs`` with each image's side and fold on ``splits``, and whether the pair
    ``straddles`` the test split, two folds, or nothing (a resume that keeps a run's
    own splits places the pairs found again on them)."""
    if pairs.empty:
        return pairs
    row = {str(sid): i for i, sid in enumerate(table.sample_ids)}
    a = np.array([row[str(v)] for v in pairs["sample_id"]], dtype=np.int64)
    b = np.array([row[str(v)] for v in pairs["other"]], dtype=np.int64)
    test_a, test_b = splits.split[a] == "test", splits.split[b] == "test"
    straddles = np.where(
        test_a != test_b,
        "test split",
        np.where(~test_a & (splits.fold[a] != splits.fold[b]), "folds", ""),
    )
    placed = pairs.assign(
        side=pd.Series(splits.split[a], dtype="str", index=pairs.index),
        other_side=pd.Series(splits.split[b], dtype="str", index=pairs.index),
        fold=pd.Series(splits.fold[a], dtype="Int64", index=pairs.index).where(splits.fold[a] >= 0),
        other_fold=pd.Series(splits.fold[b], dtype="Int64", index=pairs.index).where(
            splits.fold[b] >= 0
        ),
        straddles=pd.Series(straddles, dtype="str", index=pairs.index),
    )[COLUMNS]
    placed.attrs = dict(pairs.attrs)
    return placed


def near_copy_notes(pairs: pd.DataFrame) -> list[str]:
    """What the console says (the model card and the report read ``near_copies.csv``)."""
    if pairs.attrs.get("not_listed"):
        return [pairs.attrs["not_listed"]]
    if pairs.empty:
        return []
    test = len(tested_with_copies(pairs))
    folds = int((pairs["straddles"] == "folds").sum())
    conflict = int((pairs["label"] != pairs["other_label"]).sum())
    what = (
        f"{count(len(pairs), 'pair')} of near copies (most likely one picture saved twice "
        f"with small changes: their 16 x 16 thumbnails correlate >= {CORRELATION}; {FILE})"
    )
    labels = f"{count(conflict, 'pair')} with conflicting labels (check them)"
    joined = bool(pairs.attrs.get("joined"))
    if not test and not folds:
        where = (
            "kept in one fold or the test split each (--join-near-copies)"
            if joined
            else "each pair within one fold or the test split"
        )
        return [f"{what}, {where}" + (f"; {labels}" if conflict else "")]
    parts = []
    if test:
        parts.append(
            f"{count(test, 'test image')} with a near copy in the cross-validation pool "
            "(the test score is optimistic for those whose labels agree)"
        )
    if folds:
        parts.append(f"{count(folds, 'pair')} in two folds (so is the CV AUC)")
    if conflict:
        parts.append(labels)
    if joined:  # only a test split the data came with is left to straddle
        advice = "the folds keep them together (--join-near-copies), but not across that split"
    else:
        advice = (
            "where they are one patient's, name the patients (a manifest's patient column) "
            "or pass --join-near-copies, and the folds keep them together"
        )
        if test and pairs.attrs.get("given_test"):
            advice += "; the test split the data came with cannot be mended so"
    return [f"WARNING: {what}: {', '.join(parts)}; {advice}"]


def tested_with_copies(pairs: pd.DataFrame) -> set[str]:
    """The test split's images with a near copy in the cross-validation pool."""
    across = pairs[pairs["straddles"] == "test split"]
    return set(across["sample_id"][across["side"] == "test"]) | set(
        across["other"][across["other_side"] == "test"]
    )


def copy_free(out: Path, test_ids: np.ndarray) -> np.ndarray | None:
    """Which test images (by ``sample_id``) have no copy, near (``near_copies.csv``) or
    exact (``duplicates.csv``), in the cross-validation pool; None where none has one or
    none would be left."""
    from raydx.data.duplicates import copies_across_test

    copied: set[str] = set()
    near = out / FILE
    if near.is_file():
        pairs = pd.read_csv(near, keep_default_na=False, dtype={"sample_id": str, "other": str})
        copied |= tested_with_copies(pairs)
    exact = out / "duplicates.csv"
    if exact.is_file():
        across, _ = copies_across_test(pd.read_csv(exact, dtype={"sample_id": str}))
        copied |= set(across["sample_id"][across["side"] == "test"].astype(str))
    free = np.array([str(i) not in copied for i in test_ids], dtype=bool)
    return free if 0 < free.sum() < len(free) else None


def without_copies_text(test: dict[str, Any], bold: Callable[[str], str] = str) -> str:
    """The test AUC without the test images that have a copy trained on."""
    kept = test.get("without_copies")
    if not kept:
        return ""
    left = f"; without the {count(kept['left_out'], 'test image')} with a copy in the pool"
    auc = kept.get("auc")
    if auc is None or not np.isfinite(auc):
        return f"{left}, test AUC undefined (n={kept['n']})"
    lo, hi = kept["auc_ci95"]
    return (
        f"{left}, test AUC {bold(f'{auc:.3f}')} [95% CI {lo:.3f}-{hi:.3f}], accuracy "
        f"{kept['accuracy']:.3f} (n={kept['n']})"
    )
