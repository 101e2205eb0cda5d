"""The one in-memory schema that every image source produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raydx.errors import DataError

# Version of ``ImageTable.fingerprint`` as run.json records it (``data.fingerprint_version``;
# absent: 1). A resumed run compares fingerprints only when made by the same version.
# 2: ``canonical_pixels`` hashes one form per picture (grey stored as RGB, RGBA, palette,
# 1-bit, LA and signed DICOM images hash otherwise than in 1), and labels written ``1.0``
# read as ``1``.
FINGERPRINT_VERSION = 2


@dataclass(frozen=True, eq=False)
class ImageTable:
    """A labelled image set as it comes from a source, before splitting.

    ``official_split`` holds the source's own split names (``train``/``val``/``test``)
    where it has one; rows named ``test`` form the held-out test split.
    """

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64 in [0, len(class_names))
    sample_ids: np.ndarray  # (N,) object (str), unique and stable
    class_names: tuple[str, ...]  # index -> name
    name: str  # short name of the set, e.g. "synthetic", "breastmnist"
    official_split: np.ndarray | None = None  # (N,) object (str)
    groups: np.ndarray | None = None  # (N,) object (str), patient ids
    hashes: np.ndarray | None = None  # (N,) object (str): equal for exact duplicates
    # What ingestion saw: counts of modes and sizes, unreadable files left out
    # (``bad``: sample_id, path, reason), and warnings to show the user.
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise DataError(
                f"images must be a uint8 array of shape (N, H, W, C), but got "
                f"dtype={self.images.dtype} shape={self.images.shape}."
            )
        if len(self.images) != n or len(self.sample_ids) != n:
            raise DataError(
                f"images, labels and sample_ids must have one row per sample, but got "
                f"{len(self.images)}, {n} and {len(self.sample_ids)} rows."
            )
        for col in ("official_split", "groups", "hashes"):
            v = getattr(self, col)
            if v is not None and len(v) != n:
                raise DataError(f"{col} must have {n} rows, but got {len(v)}.")
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise DataError(
                f"labels must lie in [0, {len(self.class_names) - 1}], but got values in "
                f"[{self.labels.min()}, {self.labels.max()}]."
            )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def label_map(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}

    def content_hashes(self) -> np.ndarray:
        """Per-row hash of the pixels (as loaded): exact duplicates share one."""
        if self.hashes is not None:
            return self.hashes
        from raydx.data.decode import content_hash

        return np.array([content_hash(im) for im in self.images], dtype=object)

    def fingerprint(self) -> str:
        """sha256 over ids, labels and pixels: any change to the data changes it (and
        a change to how raydx reads them: see ``FINGERPRINT_VERSION``)."""
        h = hashlib.sha256()
        for sid, label, digest in zip(
            self.sample_ids, self.labels, self.content_hashes(), strict=True
        ):
            h.update(f"{sid}\t{label}\t{digest}\n".encode())
        return h.hexdigest()

    def subset(self, idx: np.ndarray) -> ImageTable:
        """Rows ``idx`` of this table (for ``--limit`` and tests)."""
        return ImageTable(
            images=self.images[idx],
            labels=self.labels[idx],
            sample_ids=self.sample_ids[idx],
            class_names=self.class_names,
            name=self.name,
            official_split=None if self.official_split is None else self.official_split[idx],
            groups=None if self.groups is None else self.groups[idx],
            hashes=None if self.hashes is None else self.hashes[idx],
            info=self.info,
        )
