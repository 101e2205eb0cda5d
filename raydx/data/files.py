"""Users' own image sets: a folder of class subfolders, or a CSV/Parquet manifest.

Both become a *listing* (one row per image: id, file or bytes, label, patient, split),
which ``ingest.py`` decodes through Ray Data; this module turns the outcome into an
``ImageTable`` and stops with one clear message on anything it cannot use.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raydx.data.decode import IMAGE_SUFFIXES
from raydx.data.dicom import is_dicom
from raydx.data.ingest import (
    Ingested,
    ingest_parquet,
    ingest_paths,
    probe_parquet,
    probe_paths,
)
from raydx.data.intensity import AUTO, Intensity
from raydx.data.shortcuts import shortcut_notes
from raydx.data.table import ImageTable
from raydx.errors import DataError, count
from raydx.lookup import suggest
from raydx.shared_storage import decode_placement

MANIFEST_SUFFIXES = (".csv", ".parquet", ".pq")
MAX_LISTED = 50  # bad files spelled out in an error message (all go to the CSV)


@dataclass(frozen=True)
class Columns:
    """Manifest column names. ``group``/``split`` None: use the default name if present."""

    path: str = "path"
    label: str = "label"
    group: str | None = None
    split: str | None = None

    DEFAULT_GROUP = "patient_id"
    NO_GROUPS = "none"  # --group-column none: folds by image, on purpose
    DEFAULT_SPLIT = "split"


def load_files(
    spec: str,
    *,
    image_size: int | None = None,
    columns: Columns | None = None,
    skip_bad: bool = False,
    before_decode: Callable[[], None] | None = None,
    intensity: Intensity = AUTO,
) -> ImageTable:
    """A folder or manifest -> an ``ImageTable`` of images resized to ``image_size``, with
    16-bit, float and DICOM pixels brought to 0-255 as ``intensity`` says.

    ``before_decode`` runs after the listing is read and checked, before any image is.
    """
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        listing, notes = list_folder(path)
        image_column = None
        name = path.name
    else:
        listing, image_column, notes = read_manifest(path, columns or Columns())
        name = f"{path.parent.name}/{path.name}"  # "manifest" alone says nothing
    if image_column is None and not skip_bad:
        _check_files_exist(listing)  # a missing file stops the run before Ray starts
    if before_decode is not None:
        before_decode()
    if image_column is None:
        paths = listing["path"].tolist()
        size = image_size or probe_paths(paths)
        where, note = decode_placement(spec, _spread(paths))
        ing = ingest_paths(paths, size, intensity, where)
    else:
        size = image_size or probe_parquet(str(path), image_column)
        where, note = decode_placement(spec, [str(path)])
        ing = ingest_parquet(str(path), image_column, len(listing), size, intensity, where)
    if note:
        notes = [*notes, note]
    return _to_table(listing, ing, name, skip_bad, notes)


def _spread(paths: list[str], k: int = 3) -> list[str]:
    """A few of ``paths``, first to last: enough to tell whether a node has the files."""
    return [paths[i] for i in sorted({0, len(paths) // 2, len(paths) - 1})][:k] if paths else []


# Folders that hold no images of the set: macOS's zip leftovers, NAS thumbnail caches
# (Synology's @eaDir), hidden ones (.thumbnails, .git). Their resized near-copies would
# leak across folds, unseen by the exact-duplicate check.
def _skipped_dir(name: str) -> bool:
    return name.startswith((".", "@")) or name == "__MACOSX"


def walk_folder(top: Path) -> tuple[list[Path], int]:
    """Files under ``top``, following linked folders (a class assembled from links to
    patient folders) once each; also the number of links that lead nowhere."""
    found: list[Path] = []
    broken = 0
    seen: set[str] = set()
    for here, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(d))
        for f in files:
            p = Path(here) / f
            if f.startswith("."):  # .DS_Store, AppleDouble ._x files
                continue
            if p.is_file():
                found.append(p)
            elif p.is_symlink():
                broken += 1
    return sorted(found), broken


def is_image_file(p: Path) -> bool:
    """By name, or by content for DICOM, whose files often have no image suffix
    (``IM000001``, or a UID such as ``1.2.840....320``)."""
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            return is_dicom(f.read(132))
    except OSError:
        return False


def list_folder(root: Path) -> tuple[pd.DataFrame, list[str]]:
    """``root/<class>/**/<image>`` -> listing; class names are the subfolder names."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not _skipped_dir(p.name))
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not subdirs:
        skipped = sorted(p.name for p in root.iterdir() if p.is_dir())
        found = (
            f"{len(loose)} loose images"
            if loose
            else f"only folders raydx skips ({', '.join(skipped)}: hidden, thumbnail caches, "
            "macOS zip leftovers)"
            if skipped
            else "nothing"
        )
        raise DataError(
            f"image folder '{root}' needs one subfolder per class (e.g. benign/, "
            f"malignant/), but holds {found}; move the images into class subfolders or "
            f"pass a CSV manifest of paths and labels."
        )
    rows: list[dict[str, str]] = []
    ignored: Counter[str] = Counter()
    broken = 0
    for d in subdirs:
        files, dead = walk_folder(d)
        broken += dead
        images: list[Path] = []
        others: list[Path] = []
        for p in files:
            (images if is_image_file(p) else others).append(p)
        ignored.update(p.suffix.lower() or "(no suffix)" for p in others)
        if not images:
            raise DataError(
                f"class folder '{d}' holds no images (looked for "
                f"{', '.join(IMAGE_SUFFIXES)} and DICOM files of any name); add images or "
                "remove the folder."
            )
        rows += [
            {"sample_id": p.relative_to(root).as_posix(), "path": str(p), "label": d.name}
            for p in images
        ]
    if len(subdirs) < 2:
        only = subdirs[0]
        inner = sorted(p.name for p in only.iterdir() if p.is_dir() and not _skipped_dir(p.name))
        hint = (
            f" It holds the subfolders {', '.join(inner[:5])}: if those are the classes (an "
            f"unzipped archive's top folder), pass --data '{only}'."
            if len(inner) >= 2
            else ""
        )
        raise DataError(
            f"image folder '{root}' has one class ('{only.name}', {len(rows)} images); "
            f"a diagnosis needs at least 2 class subfolders.{hint}"
        )
    notes = []
    if loose:
        notes.append(f"{len(loose)} images directly in '{root}' (outside class folders) ignored")
    if ignored:
        kinds = ", ".join(f"{k} {n}" for k, n in ignored.most_common(5))
        notes.append(f"files that are not images ignored: {sum(ignored.values())} ({kinds})")
    if broken:
        notes.append(f"WARNING: {count(broken, 'link')} leading nowhere ignored")
    return pd.DataFrame(rows), notes


def read_manifest(path: Path, cols: Columns) -> tuple[pd.DataFrame, str | None, list[str]]:
    """A CSV/Parquet manifest -> (listing, name of an encoded-image column or None, notes)."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"manifest '{path}' must end in .csv or .parquet, but got {suffix!r}.")
    if not path.is_file():
        raise DataError(f"manifest '{path}' does not exist.")
    image_column = None
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"manifest '{path}' is not a readable CSV file: {e}") from None
    else:
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as e:
            raise DataError(f"manifest '{path}' is not a readable Parquet file: {e}") from None
        image_column = image_column_of(schema)
        small = [n for n in schema.names if n != image_column]
        frame = pq.read_table(path, columns=small).to_pandas()
        frame = frame.astype({c: str for c in frame.columns if frame[c].dtype != object})
    available = list(frame.columns)
    label = manifest_column(cols.label, available, "label_column", path)
    no_groups = cols.group == Columns.NO_GROUPS and Columns.NO_GROUPS not in available
    group = (
        None
        if no_groups
        else optional_column(cols.group, Columns.DEFAULT_GROUP, available, "group_column", path)
    )
    split = optional_column(cols.split, Columns.DEFAULT_SPLIT, available, "split_column", path)
    pcol: str | None
    if image_column is None:
        pcol = manifest_column(cols.path, available, "path_column", path)
    else:
        pcol = cols.path if cols.path in available else None
    if frame.empty:
        raise DataError(f"manifest '{path}' has no rows.")

    out = pd.DataFrame(index=frame.index)
    out["label"] = _required(frame, label, path, "every image needs a label.")
    if pcol is not None:
        given = _required(frame, pcol, path, "every row needs its image.")
        out["sample_id"] = _unique(given)
        if image_column is None:
            out["path"] = [str(resolve_path(path.parent, p)) for p in given]
    else:
        out["sample_id"] = [f"row-{i:06d}" for i in range(len(frame))]
    if group is not None:
        why = "every image needs its patient (group), or drop the column."
        out["group"] = _required(frame, group, path, why)
    if split is not None:
        out["split"] = frame[split].map(cell_text).fillna("").str.strip().str.lower()
        _check_split_values(out["split"], split, explicit=cols.split is not None, path=path)
    _check_mistyped_labels(out, path)
    if image_column is None:
        _check_paths_found(given, out["path"], path)
    notes = [f"groups from column {group!r}" if group else "no group column: folds by image"]
    if group is None and not no_groups:
        like = [c for c in available if c not in (label, pcol, split) and _id_like(c)]
        if like:  # split image by image, one patient's images would leak between folds
            raise DataError(
                f"manifest '{path}' has no column {Columns.DEFAULT_GROUP!r}, but column "
                f"{like[0]!r} looks like patient ids. Split image by image, one patient's "
                "images would land in two folds, or in training and the test split, and the "
                f"scores would be optimistic: pass --group-column {like[0]} to keep each "
                f"patient whole, or --group-column {Columns.NO_GROUPS} if it holds no "
                "patients (folds by image)."
            )
    if pcol is not None:
        notes += _repeated_notes(given, pcol)
    return out.reset_index(drop=True), image_column, notes


# Words of a column name that mark the unit images must be split by (patient, slide, ...).
_ID_WORDS = {
    "patient", "patients", "subject", "subjects", "participant", "case", "slide", "person",
    "individual", "mrn", "pid", "donor", "study", "accession", "animal", "specimen",
}  # fmt: skip
_TEST_LIKE = {"testing", "holdout", "hold-out", "hold_out", "heldout", "held-out", "held_out"}


def _id_like(column: str) -> bool:
    """``PatientID``, ``patient``, ``subject_id``, ``slide-no``: one of ``_ID_WORDS``."""
    spaced = "".join(f" {ch}" if ch.isupper() else ch for ch in column)  # camelCase
    words = "".join(ch if ch.isalnum() else " " for ch in spaced.lower()).split()
    return bool(_ID_WORDS.intersection(words))


def _check_split_values(values: pd.Series, column: str, *, explicit: bool, path: Path) -> None:
    """A split column without a ``test`` row would silently pool the rows a user held
    out: stop where they were clearly meant as the test split (or the column was named
    on purpose)."""
    if (values == "test").any():
        return
    seen = sorted(set(values) - {""})
    meant = [v for v in seen if v in _TEST_LIKE]
    if meant or explicit:
        ask = f"Did you mean {meant[0]!r} as 'test'? " if meant else ""
        raise DataError(
            f"manifest '{path.name}': split column {column!r} has no 'test' row (its values: "
            f"{', '.join(map(repr, seen)) or 'none'}), so nothing would be held out. "
            f"{ask}Mark the held-out rows 'test', or drop the column to let raydx hold "
            "out a test split."
        )


def _check_paths_found(given: pd.Series, resolved: pd.Series, path: Path) -> None:
    """Relative paths are read against the manifest's folder; when none is found there
    but they are from the working directory, say so before anything is decoded."""
    sample = list(zip(given[:100], resolved[:100], strict=True))
    if any(Path(r).exists() for _, r in sample):
        return
    from_cwd = [g for g, _ in sample if not Path(g).is_absolute() and Path(g).exists()]
    if from_cwd:
        raise DataError(
            f"manifest '{path}': its paths are read relative to the manifest's folder "
            f"'{path.parent}', where none of the first {len(sample)} exists, though they do "
            f"relative to the working directory (e.g. {from_cwd[0]!r}); write them relative "
            "to the manifest's folder, or as absolute paths."
        )


def _repeated_notes(given: pd.Series, column: str) -> list[str]:
    times = given.value_counts()
    times = times[times > 1]
    if times.empty:
        return []
    return [
        f"WARNING: {count(len(times), 'image')} listed more than once in column {column!r} "
        f"(e.g. {times.index[0]!r}, {times.iloc[0]} times); each row is used as an image "
        "of its own (the copies are kept in one fold, see duplicates.csv)"
    ]


def list_bad_files(bad: list[tuple[str, str]], total: int) -> str:
    """ "N of M images cannot be used:" and the first ``MAX_LISTED`` (path, reason) lines."""
    lines = [f"  {path}: {why}" for path, why in bad[:MAX_LISTED]]
    more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
    return f"{len(bad)} of {total} images cannot be used:\n" + "\n".join(lines) + more


def _required(frame: pd.DataFrame, column: str, path: Path, why: str) -> pd.Series:
    """The column's cells as stripped strings; an empty one stops with its row number."""
    values = frame[column].map(cell_text)
    empty = values.isna()
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        where = f"row {first + 2} of the file" if path.suffix.lower() == ".csv" else f"row {first}"
        raise DataError(
            f"manifest '{path}': {count(int(empty.sum()), 'row')} without a {column!r} value "
            f"(first at {where}); {why}"
        )
    return values


def image_column_of(schema: object) -> str | None:
    """The column of encoded images: binary, or a struct with a ``bytes`` field (HF)."""
    import pyarrow as pa

    found = []
    for f in schema:  # type: ignore[attr-defined]
        t = f.type
        binary = pa.types.is_binary(t) or pa.types.is_large_binary(t)
        if binary or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0):
            found.append(f.name)
    for preferred in ("image", "bytes", "image_bytes"):
        if preferred in found:
            return preferred
    return found[0] if found else None


def cell_text(v: object) -> str | None:
    """A cell as a stripped string; None for empty, None, NaN and pandas' NA (nullable
    Parquet columns)."""
    if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
        return None
    s = str(v).strip()
    return s or None


def manifest_column(name: str, available: list[str], option: str, path: Path) -> str:
    """``name`` if the manifest has it; else a DataError naming the flag and the near miss."""
    if name in available:
        return name
    msg = f"manifest '{path.name}' has no column {name!r} (--{option.replace('_', '-')})."
    close = suggest(name, available, cutoff=0.5)
    if close:
        msg += f" Did you mean {close!r}?"
    raise DataError(f"{msg} Its columns are: {', '.join(available)}.")


def optional_column(
    name: str | None, default: str, available: list[str], option: str, path: Path
) -> str | None:
    """A column the user may name: the default only if present, a named one must exist."""
    if name is None:
        return default if default in available else None
    return manifest_column(name, available, option, path)


def resolve_path(root: Path, p: str) -> Path:
    """A manifest's relative paths are relative to the manifest, not to the working dir."""
    q = Path(p).expanduser()
    return q if q.is_absolute() else root / q


def _unique(ids: pd.Series) -> list[str]:
    """Ids as given; a repeated one gets ``#k`` so every row keeps its own id."""
    seen: dict[str, int] = {}
    out = []
    for s in ids:
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.append(s if k == 0 else f"{s}#{k}")
    return out


def _class_names(labels: pd.Series) -> tuple[str, ...]:
    values = sorted(set(labels))
    try:  # numeric labels in numeric order (2 before 10)
        return tuple(sorted(values, key=float))
    except ValueError:
        return tuple(values)


def _mixed_group_notes(kept: pd.DataFrame) -> list[str]:
    """Patients whose images carry different classes: legitimate (a benign and a
    malignant lesion), but worth a look, and the per-patient score counts them once."""
    classes = kept.groupby("group")["label"].unique()
    mixed = classes[classes.map(len) > 1]
    if mixed.empty:
        return []
    first = f"{mixed.index[0]!r}: {', '.join(repr(str(c)) for c in sorted(mixed.iloc[0]))}"
    return [
        f"{count(len(mixed), 'patient')} (group) with images of more than one class (e.g. "
        f"{first}); each stays whole in one fold"
    ]


def dicom_patients(patient_ids: Sequence[str], image_ids: Sequence[str]) -> np.ndarray:
    """Each image's patient: its PatientID, or for an image without one, a patient of
    its own (named by the image). Used by the search and by ``raydx predict`` alike."""
    ids = np.asarray(patient_ids, dtype=object)
    own = np.array([f"(no PatientID) {i}" for i in image_ids], dtype=object)
    return np.where(ids != "", ids, own)


def _dicom_groups(kept: pd.DataFrame, patients: np.ndarray) -> tuple[np.ndarray, str]:
    """Groups from the DICOM files' PatientID, where the listing names no patients.

    A mammography exam is four images of one patient, a CT series hundreds: folds by image
    would put one patient on both sides of a fold (and of the test split). An image
    without a PatientID is a group of its own."""
    has = patients != ""
    groups = dicom_patients(list(patients), list(kept["sample_id"].to_numpy(str)))
    note = (
        f"folds and the test split grouped by the DICOM files' PatientID (0010,0020): "
        f"{count(len(set(patients[has])), 'patient')}"
    )
    if not has.all():
        note += (
            f"; {count(int((~has).sum()), 'image')} without one (not DICOM, or anonymised "
            "to blank) each a group of its own"
        )
    return groups, note


def _dicom_group_notes(kept: pd.DataFrame, patients: np.ndarray) -> list[str]:
    """A DICOM PatientID in several groups of the manifest's group column: one patient's
    images could land on both sides of a fold."""
    has = patients != ""
    if not has.any():
        return []
    pairs = pd.DataFrame({"dicom": patients[has], "group": kept["group"].to_numpy()[has]})
    spread = pairs.groupby("dicom")["group"].unique()
    spread = spread[spread.map(len) > 1]
    if spread.empty:
        return []
    shown = ", ".join(repr(str(g)) for g in sorted(spread.iloc[0], key=str)[:3])
    return [
        f"WARNING: {count(len(spread), 'DICOM PatientID')} spread over several groups of "
        f"the group column (e.g. PatientID {spread.index[0]!r} in {shown}), so one "
        "patient's images may be on both sides of a fold; check that column"
    ]


def _check_mistyped_labels(rows: pd.DataFrame, path: Path) -> None:
    """A label on one or two rows spelt like a common one (``melanomma`` beside 80
    ``melanoma``) is a typo: stop before Ray starts, naming its rows (and patients, whose
    images it would split over two classes), not after the images are decoded."""
    from raydx.data.folds import misspelling_of

    counts = rows["label"].astype(str).value_counts()
    for name, k in counts.items():
        common = [str(c) for c, m in counts.items() if m >= max(10, 10 * k)]
        close = misspelling_of(str(name), common) if k <= 2 else None
        if close is None:
            continue
        where = rows[rows["label"].astype(str) == name]
        first = 2 if path.suffix.lower() == ".csv" else 0  # a CSV's line, as _required
        shown = "; ".join(
            f"row {i + first}: {sid}" + (f", patient {g!r}" if "group" in where else "")
            for i, sid, g in zip(
                where.index,
                where["sample_id"],
                where["group"] if "group" in where else where["sample_id"],
                strict=True,
            )
        )
        raise DataError(
            f"label {name!r} of manifest '{path}' is on {count(k, 'row')} ({shown}), and "
            f"{close!r} on {counts[close]}: is it a misspelling of {close!r}? Fix the label; "
            "a class of its own needs more images (at least one per fold)."
        )


def _check_distinct_names(labels: pd.Series, class_names: tuple[str, ...]) -> None:
    """``Malignant`` and ``malignant`` would train as two classes."""
    seen: dict[str, str] = {}
    for c in class_names:
        key = "".join(ch for ch in c.lower() if ch.isalnum())
        if key in seen:
            a, b = seen[key], c
            n_a, n_b = int((labels == a).sum()), int((labels == b).sum())
            raise DataError(
                f"labels {a!r} ({count(n_a, 'image')}) and {b!r} ({count(n_b, 'image')}) "
                "differ only in case, spaces or punctuation, so they would be two classes; "
                "write each class one way."
            )
        seen[key] = c


_FIX_BAD = (
    "\nFix or remove them, or pass --skip-bad-images to leave them out (they are then "
    "listed in bad_images.csv in the run folder)."
)


def _check_files_exist(listing: pd.DataFrame) -> None:
    """The check decoding would make, in a stat per file (0.03 s for 16,000 local files):
    a manifest naming files that are not there fails in seconds, not after Ray starts.
    Where this machine sees none of them (a cluster whose workers alone mount the
    data), the workers' decoding decides."""
    missing = [p for p in listing["path"] if not os.path.isfile(p)]
    if missing and len(missing) < len(listing):
        listed = [(p, "file not found") for p in missing]
        raise DataError(list_bad_files(listed, len(listing)) + _FIX_BAD)


def _to_table(
    listing: pd.DataFrame, ing: Ingested, name: str, skip_bad: bool, notes: list[str]
) -> ImageTable:
    bad = listing.loc[~ing.ok, ["sample_id"]].copy()
    bad["path"] = listing.loc[~ing.ok, "path"] if "path" in listing else bad["sample_id"]
    bad["reason"] = ing.reasons[~ing.ok]
    bad = bad.reset_index(drop=True)
    if len(bad) and not skip_bad:
        raise DataError(
            list_bad_files(list(zip(bad["path"], bad["reason"], strict=True)), len(listing))
            + _FIX_BAD
        )
    keep = np.flatnonzero(ing.ok)
    kept = listing.iloc[keep].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"none of the {len(listing)} images of '{name}' could be read.")
    class_names = _class_names(kept["label"])
    lost = sorted(set(listing["label"]) - set(class_names))
    if lost:
        raise DataError(
            f"class {lost[0]!r} has no readable image left after leaving out bad files; "
            f"fix its images or remove the class."
        )
    _check_distinct_names(kept["label"], class_names)
    if len(class_names) < 2:
        raise DataError(
            f"'{name}' has one class ({class_names[0]!r}, {len(kept)} images); a "
            f"diagnosis needs at least 2."
        )
    index = {c: i for i, c in enumerate(class_names)}
    patients = ing.patients[keep] if ing.patients is not None else np.full(len(kept), "")
    if "group" in kept:
        notes = [*notes, *_dicom_group_notes(kept, patients)]
    elif (patients != "").any():
        kept["group"], note = _dicom_groups(kept, patients)
        notes = [n for n in notes if not n.startswith("no group column")] + [note]
    notes = [
        *notes,
        *shortcut_notes(
            kept["label"].to_numpy(str),
            {
                "format": ing.formats[keep] if ing.formats is not None else np.full(len(kept), ""),
                "mode": ing.modes[keep],
                "size": ing.sizes[keep],
            },
        ),
    ]
    summary = ing.summary()
    if len(bad):
        notes = [*notes, f"{count(len(bad), 'unreadable image')} left out (bad_images.csv)"]
    if "group" in kept:
        notes = [*notes, *_mixed_group_notes(kept)]
    return ImageTable(
        images=ing.images[keep],
        labels=kept["label"].map(index).to_numpy(np.int64),
        sample_ids=kept["sample_id"].to_numpy(object),
        class_names=class_names,
        name=name,
        official_split=kept["split"].to_numpy(object) if "split" in kept else None,
        groups=kept["group"].to_numpy(object) if "group" in kept else None,
        hashes=ing.hashes[keep],
        info={**summary, "bad": bad, "notes": notes},
    )
