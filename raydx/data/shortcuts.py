"""Warnings for what tells the classes apart besides the images' content.

When one class's files were collected differently from the other's (another scanner,
site or export: JPEG against PNG, colour against grey, 512 px against 256 px), a network
learns that difference instead of the disease and still scores well on folds drawn from
the same collection (shortcut learning; Geirhos et al., 2020; DeGrave et al., 2021 on
COVID-19 radiographs). An audit of raydx found CV and test AUC 1.000 after one epoch on
images with no signal but the file format, and again with the colour mode. These checks
look at the files' recorded properties only, never at the pixels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

MIN_PER_CLASS = 5  # fewer images per class say nothing either way
SEPARATES = 0.9  # balanced accuracy (or one-vs-rest AUC) that the property alone reaches
MAX_VALUES = 12  # more distinct values than this: a size is compared as a number


def shortcut_notes(labels: np.ndarray, properties: Mapping[str, np.ndarray]) -> list[str]:
    """WARNING notes for each property (name -> one value per image) that alone tells the
    classes (``labels``, names) apart."""
    labels = np.asarray(labels).astype(str)
    counts = pd.Series(labels).value_counts()
    if len(counts) < 2 or counts.min() < MIN_PER_CLASS:
        return []
    notes = []
    for name, values in properties.items():
        v = pd.Series(np.asarray(values).astype(str))
        if v.nunique() < 2:
            continue
        if v.nunique() <= MAX_VALUES:
            note = _by_value(name, labels, v)
        elif name == "size":
            note = _by_area(labels, v)
        else:
            note = None
        if note:
            notes.append(note)
    return notes


def _by_value(name: str, labels: np.ndarray, v: pd.Series) -> str | None:
    """Each value's commonest class as the guess; its balanced accuracy."""
    table = pd.crosstab(v, labels)
    guess = table.idxmax(axis=1)
    recall = [float(table.loc[guess == c, c].sum()) / float(table[c].sum()) for c in table.columns]
    score = float(np.mean(recall))
    if score < SEPARATES:
        return None
    mix = "; ".join(
        f"{c!r}: " + ", ".join(f"{val} {n}" for val, n in table[c][table[c] > 0].items())
        for c in table.columns
    )
    return (
        f"WARNING: the {_WORDS.get(name, name)} alone tells the classes apart (balanced "
        f"accuracy {score:.2f}; {mix}). A network can learn it instead of the disease, "
        "and folds drawn from these files will not show it; make every class's files "
        "alike (one format, mode and size), or validate on files made the same way"
    )


def _by_area(labels: np.ndarray, v: pd.Series) -> str | None:
    """Many sizes: the pixel count's one-vs-rest AUC for each class."""
    from sklearn.metrics import roc_auc_score

    wh = v.str.split("x", expand=True)
    area = pd.to_numeric(wh[0], errors="coerce") * pd.to_numeric(wh[1], errors="coerce")
    if area.isna().any():
        return None
    best, which = 0.5, ""
    for c in np.unique(labels):
        auc = float(roc_auc_score(labels == c, area))
        if abs(auc - 0.5) > abs(best - 0.5):
            best, which = auc, str(c)
    if abs(best - 0.5) < SEPARATES - 0.5:
        return None
    side = "larger" if best > 0.5 else "smaller"
    return (
        f"WARNING: the image size alone tells {which!r} apart from the rest (its images "
        f"are {side}: AUC {max(best, 1 - best):.2f} from the pixel count). A network can "
        "learn it instead of the disease (resizing keeps traces of it); make every "
        "class's images alike, or validate on images made the same way"
    )


_WORDS = {"format": "file format", "mode": "colour mode (with bit depth)", "size": "image size"}
