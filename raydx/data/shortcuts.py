"""Warnings for what tells the classes apart besides the images' content.

When one class's files were collected differently from the other's (another scanner,
site or export: JPEG against PNG, colour against grey, 512 px against 256 px), a network
learns that difference instead of the disease and still scores well on folds drawn from
the same collection (shortcut learning; Geirhos et al., 2020; DeGrave et al., 2021 on
COVID-19 radiographs). An audit of raydx found CV and test AUC 1.000 after one epoch on
images with no signal but the file format, and again with the colour mode.
``shortcut_notes`` looks at the files' recorded properties only; ``fixed_place_notes``
looks at the pixels for one thing: a patch at a fixed place (burnt-in text, a marker, a
ruler) that alone tells a class apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

MIN_PER_CLASS = 5  # fewer images per class say nothing either way
SEPARATES = 0.9  # balanced accuracy (or one-vs-rest AUC) that the property alone reaches
MAX_VALUES = 12  # more distinct values than this: a size is compared as a number


# What a note asks for: before training, and on labelled images a model is scored on
_REMEDY = {
    "train": (
        "A network can learn it instead of the disease, and folds drawn from these files "
        "will not show it; make every class's files alike (one format, mode and size), or "
        "validate on files made the same way"
    ),
    "score": (
        "Where the model reads it, these scores measure it as well as the disease; "
        "validate on images of every class made alike (one format, mode and size)"
    ),
}


def shortcut_notes(
    labels: np.ndarray, properties: Mapping[str, np.ndarray], *, use: str = "train"
) -> list[str]:
    """WARNING notes for each property (name -> one value per image) that alone tells the
    classes (``labels``, names) apart; ``use`` "train" (a set to search on) or "score"
    (labelled images ``raydx predict`` scores a model on: an external test set whose
    classes come from two sources)."""
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
            note = _by_value(name, labels, v, _REMEDY[use])
        elif name == "size":
            note = _by_area(labels, v, _REMEDY[use])
        else:
            note = None
        if note:
            notes.append(note)
    return notes


def _by_value(name: str, labels: np.ndarray, v: pd.Series, remedy: str) -> str | None:
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
        f"accuracy {score:.2f}; {mix}). {remedy}"
    )


def _by_area(labels: np.ndarray, v: pd.Series, remedy: str) -> str | None:
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
        f"are {side}: AUC {max(best, 1 - best):.2f} from the pixel count; resizing keeps "
        f"traces of it). {remedy}"
    )


_WORDS = {
    "format": "file format",
    "mode": "colour mode (with bit depth and colour profile; for DICOM, the window it carries)",
    "size": "image size",
}


MIN_PER_CLASS_PIXELS = 20  # below this, one of ~500 patch AUCs reaches 0.9 by chance
LOCAL = 0.75  # the median patch stays below this: the difference sits in one place
MAX_PER_CLASS = 2000  # images looked at per class (a seeded sample beyond)


def fixed_place_notes(
    images: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], *, seed: int = 0
) -> list[str]:
    """A WARNING where one small patch of the images, at the same place in every image,
    alone tells a class apart from the rest, while the images as a whole do not.

    Each patch (about an eighth of the side, overlapping by half) is summarised by its
    brightest and its darkest pixel, and each class against the rest is scored by the
    AUC of that value. A lesion moves from image to image; burnt-in text, a scanner's
    marker or a ruler stays put, so its patch separates the classes nearly perfectly
    (AUC 1.00 on BreastMNIST with text drawn into one class's corner), where BreastMNIST
    itself reaches 0.72 and the synthetic images 0.67. At the centre, where images cropped
    around the lesion hold it, a patch that tells the classes apart is the lesion as
    often as a mark: a note without alarm (160 photos with a darker blob at the centre of
    one class's gave AUC 0.95 there).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=len(class_names))
    binary = len(class_names) == 2
    # a class against the rest: in a binary set, the second against the first
    checked = [
        c
        for c in range(len(class_names))
        if counts[c] >= MIN_PER_CLASS_PIXELS and len(labels) - counts[c] >= MIN_PER_CLASS_PIXELS
    ]
    checked = checked[1:] if binary else checked
    if (binary and len(checked) != 1) or not checked:
        return []
    rng = np.random.default_rng(seed)
    keep = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:MAX_PER_CLASS] for c in np.unique(labels)]
    )
    keep = np.sort(keep)
    y = labels[keep]
    stats, centres, patch = _patches(images, keep)
    side = images.shape[1]
    notes = []
    for c in checked:
        auc = _aucs(stats, y == c)
        separation = np.maximum(auc, 1 - auc)
        best = int(np.argmax(separation))
        if separation[best] < SEPARATES or np.median(separation) >= LOCAL:
            continue
        best = _where(separation, centres, side)
        which = "brightest" if best < len(centres) else "darkest"
        r, col = centres[best % len(centres)]
        who = (
            f"{class_names[c]!r} from {class_names[0]!r}"
            if binary
            else f"{class_names[c]!r} from the other classes"
        )
        place = _place(r, col, side)
        found = (
            f"one {patch}x{patch} px patch at the {place} of the {side} px images alone tells "
            f"{who} (its {which} pixel is {'higher' if auc[best] > 0.5 else 'lower'} in "
            f"{class_names[c]!r}: AUC {separation[best]:.2f}, where the median patch's is "
            f"{np.median(separation):.2f})"
        )
        if place == "centre":  # where a lesion-centred crop has its lesion: no alarm
            notes.append(
                f"{found}: in images centred on the lesion (dermoscopy, ultrasound regions "
                "of interest) that is the lesion itself; if a marker or text sits there "
                "instead, crop or mask it"
            )
            continue
        notes.append(
            f"WARNING: {found}. Burnt-in text, a marker or a ruler there is learnt instead "
            "of the disease, and folds of these images will not show it; crop or mask it, "
            "and look at the report's saliency maps"
        )
    return notes


def _patches(
    images: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, list[tuple[float, float]], int]:
    """(len(rows), 2P) brightest then darkest pixel of each patch of those images (grey,
    or the mean of the colour channels); the P patch centres (row, column, in pixels);
    the patch side. Patches are 2x2 blocks of a grid of side/16 px blocks, so that
    neighbours overlap by half. A few images at a time: 2000 images of 2048 px would
    take 67 GB as one float array."""
    side = images.shape[1]
    h = max(1, round(side / 16))
    g = side // h
    pairs = [(0, 0), (0, 1), (1, 0), (1, 1)]
    chunk = max(1, (1 << 24) // (side * side))
    parts = []
    for start in range(0, len(rows), chunk):
        x = np.asarray(images[rows[start : start + chunk]])
        grey = x[..., 0] if x.shape[-1] == 1 else x.mean(axis=-1, dtype=np.float32)
        blocks = grey[:, : g * h, : g * h].reshape(len(x), g, h, g, h)
        hi, lo = blocks.max(axis=(2, 4)), blocks.min(axis=(2, 4))
        top = np.max([hi[:, i : g - 1 + i, j : g - 1 + j] for i, j in pairs], axis=0)
        bottom = np.min([lo[:, i : g - 1 + i, j : g - 1 + j] for i, j in pairs], axis=0)
        parts.append(np.concatenate([top.reshape(len(x), -1), bottom.reshape(len(x), -1)], 1))
    centres = [(float((i + 1) * h), float((j + 1) * h)) for i in range(g - 1) for j in range(g - 1)]
    return np.concatenate(parts).astype(np.float32), centres, 2 * h


TIE = 0.01  # patches this close to the best separation are taken as separating as well


def _where(separation: np.ndarray, centres: list[tuple[float, float]], side: int) -> int:
    """The patch to name, among those that separate about as well as the best (``TIE``)
    and at least ``SEPARATES``. A mark is small: its patches form a blob of their own
    off the centre, named at their best. A large lesion at the centre ties many patches
    towards the edges, whose first, in reading order, lies in a corner (seen: a 16 px
    square at the centre of 28 px images was called a top-left corner mark); a blob of
    ties that reaches the centre is named at its patch nearest the centre. An off-centre
    blob wins: a mark apart from a lesion is still a mark; so are a central blob's
    patches in the outermost ring (a mark at the border joined to the lesion by the
    patches' overlap: a lesion that reaches the border ties nearly every patch, and the
    median patch stops the check before this)."""
    import math

    from scipy import ndimage

    n = len(centres)
    grid = math.isqrt(n)  # the patches are a square grid, in reading order
    near = separation >= max(float(separation.max()) - TIE, SEPARATES)
    ring = np.zeros((grid, grid), bool)
    ring[[0, -1], :] = ring[:, [0, -1]] = True
    ring_flat = ring.ravel()
    off: list[tuple[float, int]] = []  # (best separation, patch) of each off-centre blob
    central: list[int] = []  # the tied patches of blobs that reach the centre
    for offset in (0, n):  # brightest, then darkest pixel
        blobs, count = ndimage.label(near[offset : offset + n].reshape(grid, grid))
        for b in range(1, count + 1):
            cells = np.flatnonzero(blobs.ravel() == b)
            members = offset + cells
            if any(_place(*centres[c], side) == "centre" for c in cells):
                central.extend(int(m) for m in members[~ring_flat[cells]])
                members = members[ring_flat[cells]]  # the border's: a mark's place
                if not len(members):
                    continue
            top = int(members[np.argmax(separation[members])])
            off.append((float(separation[top]), top))
    if off:
        return max(off, key=lambda t: (t[0], -t[1]))[1]
    middle = side / 2
    return min(
        central,
        key=lambda m: (np.hypot(*(np.subtract(centres[m % n], middle))), -separation[m], m),
    )


def _aucs(values: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """The AUC of each column for ``positive`` (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(values, axis=0)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    return (ranks[positive].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _place(row: float, col: float, side: int) -> str:
    """Where in the image, in words: a corner, an edge or the centre (thirds)."""
    v = ("top", "", "bottom")[min(2, int(3 * row / side))]
    h = ("left", "", "right")[min(2, int(3 * col / side))]
    if v and h:
        return f"{v}-{h} corner"
    if v or h:
        return f"{v or h} edge"
    return "centre"
