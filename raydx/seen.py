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

A hash misses a re-encoded (lossy) or slightly rescaled copy, so the record also keeps
each image's near-copy thumbnail (``raydx.data.near_copies``, 16 x 16 grey, as float16):
an image without an exact match whose thumbnail correlates >= ``CORRELATION`` with one
of the run's is marked a near copy of its part. Thumbnails are no hash: small and
blurred, but pictures of the run's images all the same, and they stay in the run
folder too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from raydx.data.decode import content_hash
from raydx.data.folds import Splits
from raydx.data.near_copies import CORRELATION, SIDE, thumbnails
from raydx.data.table import ImageTable
from raydx.files_out import write_parquet

SEEN_FILE = "seen_images.parquet"
PARTS = {"cv": "training", "test": "test split"}  # a split -> what predict calls it
NEAR = " (near copy)"  # appended to a part: "training (near copy)"


def seen_frame(table: ImageTable, splits: Splits) -> pd.DataFrame:
    """One row per image of the run: its two hashes, its part ("training" for the
    cross-validation pool, whose images the saved model was trained on; "test split")
    and its near-copy thumbnail (float16 bytes)."""
    rows = np.flatnonzero(np.isin(splits.split, list(PARTS)))
    thumbs = thumbnails(table.images, rows).astype(np.float16)
    return pd.DataFrame(
        {
            "file_hash": pd.Series(table.content_hashes()[rows], dtype="str"),
            "view_hash": pd.Series([content_hash(table.images[i]) for i in rows], dtype="str"),
            "part": pd.Series([PARTS[s] for s in splits.split[rows]], dtype="str"),
            "view_size": np.full(len(rows), table.image_size, np.int64),
            "thumbnail": pd.Series([t.tobytes() for t in thumbs], dtype=object),
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
        # None: a record from before thumbnails, whose near copies cannot be looked for
        self.thumbs: np.ndarray | None = None
        self.is_training: np.ndarray | None = None
        if "thumbnail" in frame:
            flat = np.frombuffer(b"".join(frame["thumbnail"]), dtype=np.float16)
            self.thumbs = flat.reshape(len(frame), SIDE * SIDE).astype(np.float32)
            self.is_training = frame["part"].to_numpy(str) == PARTS["cv"]

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

    def near_parts(self, views: np.ndarray) -> list[str]:
        """ "training (near copy)", "test split (near copy)" or "" for each of ``views``
        ((N, S, S, C) uint8, as the model takes them, none an exact match): training wins
        where an image is near both. Views of another size than the record's (a model
        trained at ``--image-size`` on a set stored smaller) are first resized to it, as
        the record's images were stored: pooled from another size, a thumbnail differs
        enough to miss a copy."""
        if self.thumbs is None or self.is_training is None or not len(self.thumbs):
            return [""] * len(views)
        if views.shape[1] != self.view_size and self.view_size:
            views = _resized(views, self.view_size)
        near = thumbnails(views) @ self.thumbs.T >= CORRELATION
        training = (near & self.is_training).any(axis=1)
        test = (near & ~self.is_training).any(axis=1)
        return [
            PARTS["cv"] + NEAR if a else PARTS["test"] + NEAR if b else ""
            for a, b in zip(training, test, strict=True)
        ]


def _resized(views: np.ndarray, size: int) -> np.ndarray:
    """(N, S, S, C) uint8 -> (N, size, size, C) uint8, bilinear with antialiasing."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(views)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def seen_note(parts: pd.Series) -> str:
    """The console's WARNING when some images are the run's own or near copies of them,
    or ""."""
    kinds = (  # value, what one image is, what several are, how found
        (PARTS["cv"], "among the images this model was trained on", None, "exact"),
        (PARTS["test"], "from its run's test split", None, "exact"),
        (
            PARTS["cv"] + NEAR,
            "a near copy of an image this model was trained on",
            "near copies of images it was trained on",
            "near",
        ),
        (
            PARTS["test"] + NEAR,
            "a near copy of an image of its run's test split",
            "near copies of its run's test images",
            "near",
        ),
    )
    found = [(int((parts == v).sum()), one, many or one, how) for v, one, many, how in kinds]
    found = [f for f in found if f[0]]
    if not found:
        return ""
    hows = frozenset(how for *_, how in found)
    thumbs = "16 x 16 thumbnails correlate" if len(parts) > 1 else "16 x 16 thumbnail correlates"
    near = f"{thumbs} >= {CORRELATION}"
    why = {
        frozenset({"exact"}): "the same pixels",
        frozenset({"near"}): f"most likely the same picture saved again: {near}",
        frozenset({"exact", "near"}): f"the same pixels, or near copies whose {near}",
    }[hows]
    if len(parts) == 1:
        return (
            f"WARNING: this image is {found[0][1]} ({why}; column 'seen'): its score is "
            "no external validation of the model"
        )
    said = [f"{k} is {one}" if k == 1 else f"{k} are {many}" for k, one, many, _ in found]
    listed = ", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 else said[0]
    return (
        f"WARNING: of these {len(parts)} images, {listed} ({why}; column 'seen'): scores on "
        "them are no external validation of the model; leave them out to validate it"
    )
