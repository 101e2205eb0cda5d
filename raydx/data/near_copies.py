"""Near copies: one picture saved twice with small changes (re-encoded, resized, its
brightness or contrast changed), which the exact-duplicate check
(``raydx.data.duplicates``) cannot see. (A shift by a pixel or a caliper's mark on a small
image may take a pair below the threshold.) Split apart, a near copy trained on flatters its
twin's score as an exact copy does.

Found by the correlation of small grey thumbnails (16 x 16, each centred and scaled),
every pair compared. The threshold, 0.985, comes from BreastMNIST (780 images, from the
BUSI ultrasound set): the pairs above it each looked like one picture, by eye, and so
did those down to about 0.95; between 0.91 and 0.93 they were other images, and their
count grows fast below that (26 pairs in 0.93-0.95, 139 in 0.91-0.93, 599 in
0.89-0.91), where other images of a modality that all look alike begin. Reported, not
joined: what counts as a copy below the threshold depends on the modality, and
patients, which the folds keep whole, are the user's to name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.data.folds import Splits
from raydx.data.table import ImageTable
from raydx.errors import count

CORRELATION = 0.985  # thumbnails this alike or more are a near copy
SIDE = 16  # thumbnail side, in pixels
MAX_IMAGES = 20_000  # every pair is compared: 20,000 images took about 11 s here
FILE = "near_copies.csv"


def thumbnails(images: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, SIDE * SIDE) float32 rows, centred, of unit length (a
    flat image's row is zero, alike to nothing), so that a row product is the
    thumbnails' correlation."""
    import torch

    grey = torch.from_numpy(images).float().mean(dim=3)[:, None]
    small = torch.nn.functional.adaptive_avg_pool2d(grey, SIDE)[:, 0].reshape(len(images), -1)
    small = small - small.mean(dim=1, keepdim=True)
    norm = small.norm(dim=1, keepdim=True)
    rows = torch.where(norm > 1e-3, small / norm.clamp_min(1e-3), torch.zeros_like(small))
    return rows.numpy().astype(np.float32)


def near_pairs(
    images: np.ndarray, threshold: float = CORRELATION, block: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (i < j) whose thumbnails correlate at ``threshold`` or more, and their
    correlations; every pair is compared, a block of rows at a time."""
    t = thumbnails(images)
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


def near_copy_pairs(table: ImageTable, splits: Splits) -> pd.DataFrame:
    """One row per pair of near copies that are not exact copies (those are in
    ``duplicates.csv``), with each image's side and fold and whether the pair
    ``straddles`` the test split, two folds, or nothing."""
    columns = [
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
    if len(table) > MAX_IMAGES or len(table) < 2:
        return pd.DataFrame(columns=columns)
    pairs, corr = near_pairs(table.images)
    hashes = table.content_hashes()
    exact = hashes[pairs[:, 0]] == hashes[pairs[:, 1]]
    pairs, corr = pairs[~exact], corr[~exact]
    a, b = pairs[:, 0], pairs[:, 1]
    names = np.asarray(table.class_names, dtype=object)
    test_a, test_b = splits.split[a] == "test", splits.split[b] == "test"
    straddles = np.where(
        test_a != test_b,
        "test split",
        np.where(~test_a & (splits.fold[a] != splits.fold[b]), "folds", ""),
    )
    frame = pd.DataFrame(
        {
            "sample_id": pd.Series(table.sample_ids[a], dtype="str"),
            "other": pd.Series(table.sample_ids[b], dtype="str"),
            "label": pd.Series(names[table.labels[a]], dtype="str"),
            "other_label": pd.Series(names[table.labels[b]], dtype="str"),
            "side": pd.Series(splits.split[a], dtype="str"),
            "other_side": pd.Series(splits.split[b], dtype="str"),
            "fold": pd.Series(splits.fold[a], dtype="Int64").where(splits.fold[a] >= 0),
            "other_fold": pd.Series(splits.fold[b], dtype="Int64").where(splits.fold[b] >= 0),
            "correlation": np.round(corr.astype(np.float64), 5),
            "straddles": pd.Series(straddles, dtype="str"),
        }
    )
    return frame.sort_values("correlation", ascending=False, kind="stable").reset_index(drop=True)


def near_copy_notes(pairs: pd.DataFrame, n_images: int) -> list[str]:
    """What the console says (and the model card, from ``near_copies.csv``)."""
    if n_images > MAX_IMAGES:
        return [
            f"near copies not looked for: {n_images:,} images, above {MAX_IMAGES:,} (every "
            "pair is compared)"
        ]
    if pairs.empty:
        return []
    test = len(tested_with_copies(pairs))
    folds = int((pairs["straddles"] == "folds").sum())
    conflict = int((pairs["label"] != pairs["other_label"]).sum())
    what = (
        f"{count(len(pairs), 'pair')} of near copies (one picture saved twice with small "
        f"changes: thumbnail correlation >= {CORRELATION}; {FILE})"
    )
    if not test and not folds:
        return [f"{what}, each pair within one fold or the test split"]
    parts = []
    if test:
        parts.append(
            f"{count(test, 'test image')} with a near copy in the cross-validation pool "
            "(the test score is optimistic for them)"
        )
    if folds:
        parts.append(f"{count(folds, 'pair')} in two folds (the CV AUC is optimistic for them)")
    if conflict:
        parts.append(f"{count(conflict, 'pair')} with conflicting labels")
    return [
        f"WARNING: {what}: {', '.join(parts)}; where they are one patient's, name the "
        "patients (a manifest's patient column), and the folds keep them together"
    ]


def tested_with_copies(pairs: pd.DataFrame) -> set[str]:
    """The test split's images with a near copy in the cross-validation pool."""
    across = pairs[pairs["straddles"] == "test split"]
    return set(across["sample_id"][across["side"] == "test"]) | set(
        across["other"][across["other_side"] == "test"]
    )


def near_copy_free(out: Path, test_ids: np.ndarray) -> np.ndarray | None:
    """Which test images (by ``sample_id``) have no near copy in the cross-validation
    pool, from the run's ``near_copies.csv``; None where none has one (no file) or none
    would be left."""
    path = out / FILE
    if not path.is_file():
        return None
    pairs = pd.read_csv(path, keep_default_na=False, dtype={"sample_id": str, "other": str})
    copied = tested_with_copies(pairs)
    free = np.array([str(i) not in copied for i in test_ids], dtype=bool)
    return free if 0 < free.sum() < len(free) else None


def without_copies_text(test: dict[str, Any], bold: Callable[[str], str] = str) -> str:
    """The test AUC without the test images that have a near copy trained on."""
    kept = test.get("without_near_copies")
    if not kept:
        return ""
    auc = kept.get("auc")
    if auc is None or not np.isfinite(auc):
        return (
            f"; without the {count(kept['left_out'], 'test image')} with a near copy in the "
            f"pool, test AUC undefined (n={kept['n']})"
        )
    lo, hi = kept["auc_ci95"]
    return (
        f"; without the {count(kept['left_out'], 'test image')} with a near copy in the pool, "
        f"test AUC {bold(f'{auc:.3f}')} [95% CI {lo:.3f}-{hi:.3f}], accuracy "
        f"{kept['accuracy']:.3f} (n={kept['n']})"
    )
