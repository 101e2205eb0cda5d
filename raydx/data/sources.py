"""``--data`` strings -> an ``ImageTable``, and which class counts as "positive"."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from raydx.data.files import MANIFEST_SUFFIXES, Columns, load_files
from raydx.data.intensity import Intensity
from raydx.data.npz import load_medmnist, load_npz
from raydx.data.synthetic import make_synthetic
from raydx.data.table import ImageTable
from raydx.errors import DataError, RaydxError
from raydx.lookup import lookup, suggest

DATA_ACCEPTS = (
    "--data accepts 'synthetic' (or 'synthetic:N' for N generated images), "
    "'medmnist:<flag>' (e.g. medmnist:breastmnist, downloaded with the medmnist package), "
    "a MedMNIST-layout .npz file, a folder with one subfolder of images per class, or a "
    "CSV/Parquet manifest (columns path, label[, patient_id][, split])."
)
# Substrings of class names that mean "the disease we want to detect".
POSITIVE_HINTS = (
    "malignan",
    "tumor",
    "tumour",
    "cancer",
    "carcinoma",
    "melanoma",
    "metasta",
    "pneumonia",
    "abnormal",
    "positive",
    "disease",
)
# A word in a class name that says "not the finding": benign_tumor, cancer_negative,
# disease_free and metastasis_absent name the negative class of their pair.
_NEGATIONS = {
    "no",
    "non",
    "not",
    "without",
    "benign",
    "negative",
    "normal",
    "healthy",
    "free",
    "absent",
}


NAMED_SOURCES = ("synthetic", "medmnist")  # data that is named, not a path


def is_synthetic(spec: str | os.PathLike[str] | None) -> bool:
    """``synthetic`` or ``synthetic:N`` (no data given: the embedded default): images
    that the seed draws."""
    return spec is None or os.fspath(spec).strip().partition(":")[0].lower() == "synthetic"


def is_named_source(spec: str) -> bool:
    """``synthetic``, ``synthetic:N`` or ``medmnist:FLAG``: data no path leads to."""
    return spec.strip().partition(":")[0].lower() in NAMED_SOURCES


def load_source(
    spec: str,
    *,
    seed: int = 0,
    image_size: int | None = None,
    columns: Columns | None = None,
    skip_bad: bool = False,
    before_decode: Callable[[], None] | None = None,
    intensity: Intensity | str = "auto",
    folds: int | None = None,
    limit: int | None = None,
) -> ImageTable:
    """Load the image set named by ``spec``; ``seed`` draws generated data and a folder's
    or manifest's ``limit`` subset (before decoding, as ``prepare.limit_rows`` does
    after for the other sources).

    ``image_size``, ``columns``, ``skip_bad`` and ``intensity`` apply to image folders and
    manifests, which are decoded (and resized to ``image_size``) by Ray Data;
    ``before_decode`` is called once their listing is read and checked (raydx starts Ray
    there); a listing with fewer patients (or images) of a class than ``folds`` is
    refused before that.
    """
    scaling = Intensity.parse(intensity)
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"data must be a non-empty string, but got data={spec!r}. {DATA_ACCEPTS}")
    text = spec.strip()
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    if kind == "synthetic":
        if not arg:
            return make_synthetic(seed=seed)
        if not re.fullmatch(r"\d+", arg.strip()) or int(arg) < 1:
            raise DataError(
                f"'synthetic:N' needs a whole number of samples N >= 1, but got {text!r}."
            )
        return make_synthetic(int(arg), seed=seed)
    if kind == "medmnist":
        if not arg.strip():
            raise DataError(f"'medmnist:' needs a flag, e.g. medmnist:breastmnist; got {text!r}.")
        return load_medmnist(arg)

    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path, intensity=scaling)
    if path.is_dir() or (suffix in MANIFEST_SUFFIXES and path.exists()):
        return load_files(
            text,
            image_size=image_size,
            columns=columns,
            skip_bad=skip_bad,
            before_decode=before_decode,
            intensity=scaling,
            folds=folds,
            limit=limit,
            seed=seed,
        )
    if path.exists():
        raise DataError(f"data path {text!r} is not a source raydx reads. {DATA_ACCEPTS}")
    if "/" in text or "\\" in text or suffix:
        raise DataError(f"data path {text!r} does not exist. {DATA_ACCEPTS}")
    msg = f"Unknown data source {text!r}."
    close = suggest(text.lower(), ["synthetic", "medmnist"])
    if close:
        msg += f" Did you mean {close + (':<flag>' if close == 'medmnist' else '')!r}?"
    raise DataError(f"{msg} {DATA_ACCEPTS}")


def resolve_positive_class(table: ImageTable, requested: str | None) -> int:
    """Index of the class that AUC, sensitivity and the like treat as positive.

    ``requested`` is a class name (case-insensitive) or an index string. By default the
    first class whose name says disease (malignant, tumour, ...) wins, so breastmnist
    gets 0 ("malignant") although MedMNIST calls label 1 "positive"; failing that the
    minority class (ties -> the higher index), which is usually the finding of interest.
    """
    names = table.class_names
    if requested is not None:
        req = str(requested).strip()
        if req in names:
            return names.index(req)
        folded = [i for i, n in enumerate(names) if n.lower() == req.lower()]
        if len(folded) == 1:
            return folded[0]
        if re.fullmatch(r"\d+", req) and int(req) < len(names):
            return int(req)
        try:
            lookup(req, names, "positive class")
        except RaydxError as e:
            raise DataError(f"{e} An index 0-{len(names) - 1} is also accepted.") from None
    named = disease_class(names)
    if named is not None:
        return named
    counts = np.bincount(table.labels, minlength=len(names))
    present = np.flatnonzero(counts)
    if len(present) == 0:
        return len(names) - 1
    findings = [i for i in present if not says_absence(names[i])]  # notumor is no finding
    if findings:
        present = np.asarray(findings)
    smallest = counts[present].min()
    return int(present[counts[present] == smallest].max())


_HINT = "|".join(POSITIVE_HINTS)
# "notumor" (Kaggle's brain-tumour MRI), "nocancer", "nonmalignant", "tumorfree": a
# negation written onto the disease word, which splitting into words cannot see
_NEGATED = re.compile(rf"^(?:no|non|not|without)[^a-z]*(?:{_HINT})|(?:{_HINT})[a-z]*?[^a-z]*free$")


def disease_class(names: Sequence[str]) -> int | None:
    """The first class whose name says disease (malignant, tumour, ...) and not its
    absence (``benign``, ``no tumor``, ``NoTumor``, ``notumor``, ``tumor-free``)."""
    for i, name in enumerate(names):
        if not says_absence(name) and any(hint in str(name).lower() for hint in POSITIVE_HINTS):
            return i
    return None


def says_absence(name: str) -> bool:
    """``benign``, ``normal``, ``no tumor``, ``NoTumor``, ``notumor``, ``tumor-free``."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", str(name)).lower()  # NoTumor: no tumor
    return bool(set(re.split(r"[^a-z]+", words)) & _NEGATIONS or _NEGATED.search(words))


def positive_class_reason(
    table: ImageTable, requested: str | None, positive: int, resumed: bool = False
) -> str:
    """Why ``positive`` is the positive class, for the line that names it: a minority
    chosen by default may be the healthy class of some data sets. ``resumed``: the class
    is the run's own (``run_folder.with_run_positive``)."""
    if requested is not None:
        return "the run's own" if resumed else "as set for this run"
    if disease_class(table.class_names) == positive:
        return "its name says disease; --positive-class chooses another"
    absent = any(says_absence(n) for n in table.class_names)
    return (
        f"the smallest class{' not named as no finding' if absent else ''}, as no class name "
        "says disease; --positive-class chooses another"
    )
