"""Which images a run's model has already seen: ``raydx predict``'s guard against an
"external" validation that scores the model on its own training or test images.

A team that exports its images again (another format, a new folder, a copy of the
MedMNIST arrays as PNGs) and validates on them would report the model's fit to its
training images as a generalisation estimate. The run folder keeps two hashes of every
cross-validation and test image: the file's pixels as stored (``Decoded.hash``: the
same in any lossless format) and the image as the network sees it (resized, with the
model's channels: an ``.npz`` array and a PNG written from it agree). They stay in the
run folder, not in the model folder, which travels: a hash tells anyone who holds an
image whether it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raydx.data.decode import content_hash
from raydx.data.folds import Splits
from raydx.data.table import ImageTable
from raydx.files_out import write_parquet

SEEN_FILE = "seen_images.parquet"
PARTS = {"cv": "training", "test": "test split"}  # a split -> what predict calls it


def seen_frame(table: ImageTable, splits: Splits) -> pd.DataFrame:
    """One row per image of the run: its two hashes and its part ("training" for the
    cross-validation pool, whose images the saved model was trained on; "test split")."""
    rows = np.flatnonzero(np.isin(splits.split, list(PARTS)))
    return pd.DataFrame(
        {
            "file_hash": pd.Series(table.content_hashes()[rows], dtype="str"),
            "view_hash": pd.Series([content_hash(table.images[i]) for i in rows], dtype="str"),
            "part": pd.Series([PARTS[s] for s in splits.split[rows]], dtype="str"),
            "view_size": np.full(len(rows), table.image_size, np.int64),
        }
    )


def write_seen(table: ImageTable, splits: Splits, out: Path) -> None:
    write_parquet(seen_frame(table, splits), Path(out) / SEEN_FILE)


class SeenImages:
    """A run's record, looked up by ``raydx predict`` image by image."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.by_file: dict[str, str] = {}
        self.by_view: dict[str, str] = {}
        for part in ("test split", "training"):  # training wins for an image in both
            rows = frame[frame["part"] == part]
            self.by_file.update(zip(rows["file_hash"], rows["part"], strict=True))
            self.by_view.update(zip(rows["view_hash"], rows["part"], strict=True))
        self.view_size = int(frame["view_size"].iloc[0]) if len(frame) else 0

    @classmethod
    def beside(cls, model_dir: Path) -> SeenImages | None:
        """The record of the run that ``model_dir`` (``RUN/model``) belongs to, or None
        for a model folder that travelled without its run, or a run from before it.
        Resolved first: ``raydx predict --model .`` inside ``RUN/model`` has ``.`` as its
        path, whose parent is ``.`` again, not ``RUN``."""
        path = Path(model_dir).resolve().parent / SEEN_FILE
        return cls(pd.read_parquet(path)) if path.is_file() else None

    def part(self, file_hash: str, view: np.ndarray) -> str:
        """ "training", "test split" or "" for one image: its file hash, and ``view``,
        the uint8 (S, S, C) image as the model takes it."""
        hit = self.by_file.get(file_hash)
        if hit is None and view.shape[0] == self.view_size:
            hit = self.by_view.get(content_hash(view))
        return hit or ""


def seen_note(parts: pd.Series) -> str:
    """The console's WARNING when some images are the run's own, or ""."""
    n_train, n_test = int((parts == "training").sum()), int((parts == "test split").sum())
    if not n_train and not n_test:
        return ""
    said = [
        f"{k} {'is' if k == 1 else 'are'} {what}"
        for k, what in (
            (n_train, "among the images this model was trained on"),
            (n_test, "from its run's test split"),
        )
        if k
    ]
    if len(parts) == 1:
        what = (
            "among the images this model was trained on" if n_train else "from its run's test split"
        )
        return (
            f"WARNING: this image is {what} (the same pixels; column 'seen'): its score is "
            "no external validation of the model"
        )
    return (
        f"WARNING: of these {len(parts)} images, " + " and ".join(said) + " (the same pixels; "
        "column 'seen'): scores on them are no external validation of the model; leave "
        "them out to validate it"
    )
