"""Exact duplicate images: kept on one side of every split, and reported.

Two copies of one image in a training fold and its validation fold inflate CV; in the
pool and the test split they inflate the test score. Copies that raydx splits itself
are joined into one group (with the patients they belong to), so they can never be
separated; copies across a test split the source fixed, and copies whose labels
disagree, cannot be mended by splitting, so they are warned about and listed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raydx.data.components import row_components
from raydx.data.table import ImageTable
from raydx.errors import count


def duplicate_sets(table: ImageTable, test_mask: np.ndarray | None) -> pd.DataFrame:
    """One row per image that has an exact copy: its set, side, label and group."""
    hashes = table.content_hashes()
    codes, counts = np.unique(hashes, return_inverse=True, return_counts=True)[1:]
    rows = np.flatnonzero(counts[codes] > 1)
    frame = pd.DataFrame(
        {
            "set": pd.Series(codes[rows], dtype="int64"),
            "sample_id": pd.Series(table.sample_ids[rows], dtype="str"),
            "label": pd.Series(np.asarray(table.class_names, object)[table.labels[rows]]),
            "side": np.where(
                test_mask[rows] if test_mask is not None else np.zeros(len(rows), bool),
                "test",
                "cv",
            ),
            "hash": pd.Series(hashes[rows], dtype="str"),
        }
    )
    if table.groups is not None:
        frame["group"] = pd.Series([str(g) for g in table.groups[rows]], dtype="str")
    if frame.empty:
        empty = pd.Series(dtype=bool)
        return frame.assign(labels_conflict=empty, across_test=empty)
    frame["set"] = frame.groupby("set", sort=True).ngroup()
    per_set = frame.groupby("set")
    frame["labels_conflict"] = per_set["label"].transform("nunique") > 1
    frame["across_test"] = per_set["side"].transform("nunique") > 1
    return frame.sort_values(["set", "sample_id"]).reset_index(drop=True)


def merged_groups(
    table: ImageTable, test_mask: np.ndarray | None, near: list[int | None] | None = None
) -> np.ndarray | None:
    """Patient groups with exact copies on the same side joined, and near copies too
    where ``near`` gives each row's near-copy component (``--join-near-copies``:
    ``raydx.data.near_copies.joined_key``); None if none of these exists.

    Copies are joined only within one side of a given test split: joining across it
    would put a group on both sides, which splitting cannot honour.
    """
    n = len(table)
    hashes = table.content_hashes()
    side = test_mask if test_mask is not None else np.zeros(n, bool)
    copies = [(h, bool(s)) for h, s in zip(hashes, side, strict=True)]
    near_side = [
        None if c is None else (c, bool(s)) for c, s in zip(near or [None] * n, side, strict=True)
    ]
    if table.groups is None and len(set(copies)) == n and all(k is None for k in near_side):
        return None
    patients = [None] * n if table.groups is None else [str(g) for g in table.groups]
    roots = row_components(copies, patients, near_side)
    if table.groups is not None:
        names = np.array([str(g) for g in table.groups], dtype=object)
        return names[roots]  # a group is named after its first patient
    return np.array([f"image-{r}" for r in roots], dtype=object)


def duplicate_notes(dups: pd.DataFrame) -> list[str]:
    """Warnings for what splitting cannot fix."""
    if dups.empty:
        return []
    notes = [
        f"{count(dups['set'].nunique(), 'set')} of exact duplicate images ({len(dups)} "
        "images); copies raydx splits are kept in one fold (duplicates.csv)"
    ]
    across, n = copies_across_test(dups)
    if n:
        copies = "has an exact copy" if n == 1 else "have exact copies"
        notes.append(
            f"WARNING: {count(n, 'image')} of the given test split {copies} in the "
            f"cross-validation pool (e.g. {_example(across)}); {bias_of_copies(across)}"
        )
    conflict = dups[dups["labels_conflict"]]
    if len(conflict):
        n = conflict["set"].nunique()
        notes.append(
            f"WARNING: {count(n, 'set')} of exact duplicates "
            f"{'carries' if n == 1 else 'carry'} conflicting labels (e.g. "
            f"{_example(conflict)}); check the labels"
        )
    return notes


def copies_across_test(dups: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of ``duplicate_sets`` (or ``duplicates.csv`` read back) whose copies lie on
    both sides of the test split, and how many of them are test split images (the count
    the notes and the model card give: images, not sets)."""
    if "across_test" not in dups or dups.empty:
        return dups[:0], 0
    across = dups[dups["across_test"].astype(bool)]
    return across, int((across["side"] == "test").sum())


def bias_of_copies(across: pd.DataFrame) -> str:
    """Which way copies of test images in the training pool push the test score: a copy
    trained on with the same label flatters it, one with the other label penalises it."""
    conflicting = across.groupby("set")["labels_conflict"].any()
    if not conflicting.any():
        return "the test score is optimistic for them"
    if conflicting.all():
        return "their labels conflict, so the test score is pessimistic for them"
    return (
        "the test score is optimistic where the copies' labels agree, pessimistic where "
        "they conflict"
    )


def _example(frame: pd.DataFrame) -> str:
    first = frame[frame["set"] == frame["set"].iloc[0]]
    # quoted, so that raydx.model_card.without_examples can tell a name's brackets apart
    return " = ".join(f"{str(r.sample_id)!r} ({r.label}, {r.side})" for r in first.itertuples())
