"""Users' own image sets: a folder of class subfolders, or a CSV/Parquet manifest.

Both become a *listing* (one row per image: id, file or bytes, label, patient, split),
which ``ingest.py`` decodes through Ray Data; this module turns the outcome into an
``ImageTable`` and stops with one clear message on anything it cannot use.
"""

from __future__ import annotations

import os
import re
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from raydx.data.components import row_components
from raydx.data.decode import IMAGE_SUFFIXES
from raydx.data.dicom import headerless_dicom, is_dicom
from raydx.data.folds import check_one_side
from raydx.data.ingest import (
    Ingested,
    ingest_parquet,
    ingest_paths,
    probe_parquet,
    probe_paths,
)
from raydx.data.intensity import AUTO, Intensity
from raydx.data.labels import label_key, label_number, misspelling_of
from raydx.data.shortcuts import shortcut_notes
from raydx.data.subset import limit_index
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
    FOLDER_LEVEL = "folder:"  # --group-column folder:N: an image folder's Nth subfolder level
    DEFAULT_SPLIT = "split"
    NO_SPLIT = "none"  # --split-column none: raydx draws the test split, on purpose


def load_files(
    spec: str,
    *,
    image_size: int | None = None,
    columns: Columns | None = None,
    skip_bad: bool = False,
    before_decode: Callable[[], None] | None = None,
    intensity: Intensity = AUTO,
    folds: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> ImageTable:
    """A folder or manifest -> an ``ImageTable`` of images resized to ``image_size``, with
    16-bit, float and DICOM pixels brought to 0-255 as ``intensity`` says.

    ``before_decode`` runs after the listing is read and checked (against ``folds`` too,
    where given), before any image is. ``limit`` (with ``seed``) cuts the listing to the
    stratified subset ``prepare.limit_rows`` would keep of the decoded table, so that a
    quick run on a large set decodes only its images (not where bad files may be left
    out, which would change the subset, or for images inside a Parquet manifest).
    """
    path = Path(spec).expanduser().resolve()
    group = (columns or Columns()).group
    if path.is_dir():
        level = folder_level(group, path)
        listing, notes = list_folder(path, groups=group != Columns.NO_GROUPS, level=level)
        image_column = None
        name = path.name
    else:
        if group is not None and group.startswith(Columns.FOLDER_LEVEL):
            raise DataError(
                f"--group-column {group} names a subfolder level of an image folder, but "
                f"'{path}' is a manifest: name its patient column instead."
            )
        listing, image_column, notes = read_manifest(path, columns or Columns())
        name = f"{path.parent.name}/{path.name}"  # "manifest" alone says nothing
    _check_classes(listing["label"], name)  # a label typo stops the run before Ray starts
    if image_column is None and not skip_bad:
        _check_files_exist(listing)  # a missing file stops the run before Ray starts
    limited = limit is not None and limit < len(listing)
    cut = limited and image_column is None and not skip_bad and not _may_group_by_dicom(listing)
    if cut:
        assert limit is not None
        listing = _limited(listing, limit, seed, name)
    if folds is not None:
        # the listing holds the table's rows: no bad file left out, no limit still to come
        exact = not skip_bad and (cut or not limited)
        _check_enough_for_folds(
            listing, name, folds, exact_groups=exact, limit=limit if cut else None
        )
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


def is_run_folder(path: Path) -> bool:
    """A raydx run folder (it holds the run's record): a search started in the data
    folder (``--data .``, whose default output is ``./runs/<time>``) leaves one there,
    and its plots are PNGs that the next search would take for a class of images."""
    return (path / "run.json").is_file()


# A segmentation mask saved beside its image (BUSI: 'benign (1)_mask.png', a second
# lesion's '..._mask_1.png'; ISIC: '..._segmentation.png'; '..._gt.png').
_MASK_NAME = re.compile(
    r"^(?P<image>.+)[ _-](?:mask|seg|segmentation|gt|ground[ _-]?truth)(?:[ _-]?\d+)?$", re.I
)


# Folders that hold the masks of images in a sibling folder (class/images/x.png beside
# class/masks/x.png or class/masks/x_mask.png).
_MASK_FOLDERS = {
    "mask",
    "masks",
    "gt",
    "groundtruth",
    "ground_truth",
    "segmentation",
    "segmentations",
    "annotation",
    "annotations",
}


def segmentation_masks(images: list[Path], top: Path) -> set[Path]:
    """The files of ``images`` (a class folder ``top``'s) that are segmentation masks of
    another of them: named as an image in the same folder plus ``_mask`` (``_mask_1``,
    ``_seg``, ``_segmentation``, ``_gt``), or kept in a ``masks/`` folder (``gt/``,
    ``annotations/``...) beside an image of that name or its folder. A mask is the
    answer drawn by hand, not an image to diagnose: trained on, it teaches the lesion's
    outline (and an empty mask the healthy class), and scored, it inflates the AUC. A
    file so named, or so placed, without its image is kept (``mask_named``)."""
    names = {(p.parent, p.stem.lower()) for p in images}
    beside: set[tuple[Path, str]] = set()
    for p in images:
        if not _in_mask_folder(p, top):  # class/x.png, class/images/x.png
            beside |= {(p.parent, p.stem.lower()), (p.parent.parent, p.stem.lower())}
    found = set()
    for p in images:
        m = _MASK_NAME.match(p.stem)
        base = m["image"].lower() if m is not None else None
        named = base is not None and (p.parent, base) in names
        placed = _in_mask_folder(p, top) and (p.parent.parent, base or p.stem.lower()) in beside
        if named or placed:
            found.add(p)
    return found


def _in_mask_folder(p: Path, top: Path) -> bool:
    """In a masks/ (gt/, annotations/...) folder below the class folder ``top`` (a class
    folder named so is a class)."""
    return p.parent != top and p.parent.name.lower() in _MASK_FOLDERS


def mask_named(images: list[Path], top: Path) -> list[Path]:
    """Files named like masks (``x_mask.png``), or kept in a masks/ folder, that
    ``segmentation_masks`` kept: no image of that name lies beside them."""
    return [p for p in images if _MASK_NAME.match(p.stem) or _in_mask_folder(p, top)]


def mask_note(masks: list[Path], root: Path) -> str:
    return (
        f"{count(len(masks), 'segmentation mask')} passed over (named as an image beside "
        f"them plus _mask, _seg or _gt, or in a masks/ folder beside their images: "
        f"'{masks[0].relative_to(root).as_posix()}'): a mask is the answer drawn, not an "
        "image to diagnose; to train on masks, list them in a manifest"
    )


def kept_mask_note(kept: list[Path], root: Path) -> str:
    return (
        f"{count(len(kept), 'file')} named or placed as segmentation masks, with no image "
        f"of their name beside them, kept as images (e.g. "
        f"'{kept[0].relative_to(root).as_posix()}'); if they are masks, move them out of "
        "the data folder"
    )


def _run_names(runs: list[Path], root: Path) -> str:
    names = [p.relative_to(root).as_posix() for p in runs]
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def walk_folder(top: Path) -> tuple[list[Path], int, list[Path]]:
    """Files under ``top``, following linked folders (a class assembled from links to
    patient folders) once each; also the number of links that lead nowhere, and the
    raydx run folders passed over (``is_run_folder``)."""
    found: list[Path] = []
    broken = 0
    runs: list[Path] = []
    seen: set[str] = set()
    for here, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        runs += [Path(here) / d for d in dirs if is_run_folder(Path(here) / d)]
        dirs[:] = sorted(
            d for d in dirs if not _skipped_dir(d) and not is_run_folder(Path(here) / d)
        )
        for f in files:
            p = Path(here) / f
            if f.startswith("."):  # .DS_Store, AppleDouble ._x files
                continue
            if p.is_file():
                found.append(p)
            elif p.is_symlink():
                broken += 1
    return sorted(found), broken, sorted(runs)


def is_image_file(p: Path) -> bool:
    """By name, or by content for DICOM, whose files often have no image suffix
    (``IM000001``, or a UID such as ``1.2.840....320``), and in older exports no Part 10
    header either: such a file without a suffix (or with a UID's number as one) is read
    as far as it parses as DICOM, up to its pixel data's tag and skipping long values
    (``dicom.headerless_dicom``), to see whether it is a data set with pixel data."""
    if p.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
            if is_dicom(head):
                return True
            if p.suffix and not p.suffix[1:].isdigit():
                return False
            return headerless_dicom(f)
    except OSError:
        return False


def names_a_column(group: object) -> bool:
    """Whether a ``--group-column`` value names a manifest column: not ``none``, not
    ``folder:N`` (what an image folder takes), not unset."""
    return (
        isinstance(group, str)
        and group != Columns.NO_GROUPS
        and not group.startswith(Columns.FOLDER_LEVEL)
    )


def folder_level(group: str | None, root: Path | None = None) -> int | None:
    """The subfolder level of ``--group-column folder:N`` (N >= 1, the class folders'
    own subfolders being 1), None for no such value. An image folder has no columns:
    another name than ``none`` or ``folder:N`` is an error, not ignored."""
    if group is None or group == Columns.NO_GROUPS:
        return None
    where = f" '{root}'" if root is not None else ""
    if names_a_column(group):
        raise DataError(
            f"--group-column {group!r} names a manifest column, but{where} is an image "
            f"folder, grouped by its patient subfolders (or DICOM PatientIDs); pass "
            f"--group-column {Columns.FOLDER_LEVEL}N to group by the Nth level of subfolders "
            f"below the class folders, or {Columns.NO_GROUPS} to split image by image."
        )
    n = group.removeprefix(Columns.FOLDER_LEVEL)
    if not n.isdecimal() or int(n) < 1:
        raise DataError(
            f"--group-column {Columns.FOLDER_LEVEL}N must name a level N >= 1 (1: the class "
            f"folders' own subfolders), but got --group-column {group!r}."
        )
    return int(n)


def level_folders(folders: pd.Series, level: int, root: Path) -> pd.Series:
    """Each image's subfolder name at ``level`` (``--group-column folder:N``; "" for an
    image not that deep), below its class folder; a DataError where no image is."""
    parts = folders.map(lambda f: f.split("/") if f else [])
    names = parts.map(lambda q: q[level - 1] if len(q) >= level else "")
    if (names != "").any():
        return names
    deepest = int(parts.map(len).max())
    held = (
        "hold their images directly, in no subfolders"
        if deepest == 0
        else f"hold images at most {deepest} level(s) of subfolders deep"
    )
    raise DataError(
        f"--group-column {Columns.FOLDER_LEVEL}{level}: the class folders of '{root}' "
        f"{held}, so no image lies in a subfolder at level {level} to group by."
    )


def list_folder(
    root: Path, *, groups: bool = True, level: int | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """``root/<class>/**/<image>`` -> listing; class names are the subfolder names.

    Images in subfolders of a class folder (``benign/patient01/img0.png``, the common
    layout) are grouped by the first-level subfolder's *name*, so that ``benign/p01``
    and ``malignant/p01`` are one patient and stay whole in one fold (``groups=False``,
    ``--group-column none``: folds by image; ``level``, ``--group-column folder:N``: by
    the Nth level's names). ``_to_table`` prefers DICOM PatientIDs."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not _skipped_dir(p.name))
    runs = [p for p in subdirs if is_run_folder(p)]
    subdirs = [p for p in subdirs if p not in runs]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not subdirs and runs and not loose:
        raise DataError(
            f"image folder '{root}' holds raydx run folders ({_run_names(runs, root)}) "
            "and no class folders of images; pass the folder of the images as --data."
        )
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
    classes: list[Path] = []
    masks: list[Path] = []
    kept_masks: list[Path] = []
    for d in subdirs:
        files, dead, inner_runs = walk_folder(d)
        broken += dead
        runs += inner_runs
        images: list[Path] = []
        others: list[Path] = []
        for p in files:
            (images if is_image_file(p) else others).append(p)
        if not images and inner_runs:  # runs/, holding run folders: no class
            continue
        drawn = segmentation_masks(images, d)
        masks += sorted(drawn)
        images = [p for p in images if p not in drawn]
        kept_masks += mask_named(images, d)
        ignored.update(p.suffix.lower() or "(no suffix)" for p in others)
        classes.append(d)
        if not images:
            raise DataError(
                f"class folder '{d}' holds no images (looked for "
                f"{', '.join(IMAGE_SUFFIXES)} and DICOM files of any name); add images or "
                "remove the folder."
            )
        rows += [
            {
                "sample_id": p.relative_to(root).as_posix(),
                "path": str(p),
                "label": d.name,
                "folder": "/".join(p.relative_to(d).parts[:-1]),
            }
            for p in images
        ]
    if len(classes) < 2:
        if not classes:
            raise DataError(
                f"image folder '{root}' holds raydx run folders ({_run_names(runs, root)}) "
                "and no class folders of images; pass the folder of the images as --data."
            )
        only = classes[0]
        inner = sorted(p.name for p in only.iterdir() if p.is_dir() and not _skipped_dir(p.name))
        hint = (
            f" It holds the subfolders {', '.join(inner[:5])}: if those are the classes (an "
            f"unzipped archive's top folder), pass --data '{only}'."
            if len(inner) >= 2
            else ""
        )
        raise DataError(
            f"image folder '{root}' has one class ('{only.name}', {count(len(rows), 'image')}); "
            f"a diagnosis needs at least 2 class subfolders.{hint}"
        )
    notes = []
    if masks:
        notes.append(mask_note(masks, root))
    if kept_masks:
        notes.append(kept_mask_note(kept_masks, root))
    if runs:
        notes.append(
            f"raydx run folders in '{root}' passed over ({_run_names(runs, root)}): their "
            "plots are not images of the set; keep runs outside the data folder (--output)"
        )
    if loose:
        notes.append(f"{len(loose)} images directly in '{root}' (outside class folders) ignored")
    if ignored:
        kinds = ", ".join(f"{k} {n}" for k, n in ignored.most_common(5))
        notes.append(f"files that are not images ignored: {sum(ignored.values())} ({kinds})")
    if broken:
        notes.append(f"WARNING: {count(broken, 'link')} leading nowhere ignored")
    listing = pd.DataFrame(rows)
    in_sub = int((listing["folder"] != "").sum())
    if in_sub and not groups:
        notes.append(
            f"{count(in_sub, 'image')} in subfolders of the class folders not grouped by "
            f"subfolder (--group-column {Columns.NO_GROUPS}): folds by image"
        )
    elif level is not None:  # asked for: the groups, as a manifest's group column's are
        listing["folder"] = level_folders(listing["folder"], level, root)
        nested = listing["folder"] != ""
        listing["group"] = listing["folder"].where(nested, listing["sample_id"])
        notes.append(_folder_group_note(listing, nested, level - 1, asked=True))
    elif not in_sub and groups:  # said, as a manifest without a group column is
        notes.append(
            f"{FOLDER_FLAT}, in no patient subfolders: where a patient has several images, "
            "put each patient's in a subfolder of its class folder (benign/p01/...) or pass "
            "a manifest with a patient column, so that they stay in one fold"
        )
    elif in_sub:
        folders = listing["folder"]
        listing["folder"], depth, wrappers = patient_folders(folders, listing["label"])
        nested = listing["folder"] != ""
        if wrappers:
            notes.append(_wrapper_note(in_sub, wrappers, depth))
        else:
            listing[FOLDER_GROUP] = listing["folder"].where(nested, listing["sample_id"])
            notes.append(
                _folder_group_note(listing, nested, depth, finer=_finer_level(folders, depth))
            )
    return listing.drop(columns="folder"), notes


def _finer_level(folders: pd.Series, depth: int) -> tuple[int, str] | None:
    """Where the names found at ``depth`` are few (fewer than ``FEW_FOLDER_GROUPS``, maybe
    coarser than patients) and every image lies deeper: the next level's number of names
    and one of them, if each of those lies inside one name above (a tree, as patients
    inside tumour types: BreakHis) and they are not few. The user decides whether they
    are patients (``--group-column folder:N``): grouping by them unasked could split a
    patient whose lesions or studies are those folders."""
    parts = [f.split("/") if f else [] for f in folders]
    held = [q for q in parts if len(q) > depth]
    if len({q[depth] for q in held}) >= FEW_FOLDER_GROUPS:
        return None
    if not held or not all(len(q) > depth + 1 for q in held):
        return None
    parents: dict[str, set[str]] = {}
    for q in held:
        parents.setdefault(q[depth + 1], set()).add(q[depth])
    if len(parents) < FEW_FOLDER_GROUPS or any(len(p) > 1 for p in parents.values()):
        return None
    return len(parents), sorted(parents)[0]


FOLDER_GROUP = "folder_group"  # a listing's column: groups from subfolders, below PatientID
FOLDER_GROUPS = "folds and the test split grouped by the class folders' subfolders"
FOLDER_WRAPPED = "subfolders of the class folders not taken for patients"
FOLDER_FLAT = "folds by image: the class folders hold their images directly"


FEW_FOLDER_GROUPS = 10  # fewer subfolder names than this: a WARNING, they may not be patients


def patient_folders(folders: pd.Series, classes: pd.Series) -> tuple[pd.Series, int, list[str]]:
    """Each image's patient folder name ("" for an image directly in its class folder), its
    depth below the class folders, and the wrapper folders' names where there is none.

    A depth at which every class folder (of those with subfolders) holds a single name,
    the same or not (``benign/images/``, ``malignant/images/``; an unzip's
    ``benign/benign/``), is a wrapper, not one patient holding a class or every image:
    the names are read one level down where every image there has a deeper folder
    (BreakHis: ``benign/SOB/<type>/<patient>/``), else nothing is grouped (all "", and the
    wrappers' names returned)."""
    parts = [f.split("/") if f else [] for f in folders]
    level = 0
    while True:
        held: dict[str, set[str]] = {}
        for c, q in zip(classes, parts, strict=True):
            if len(q) > level:
                held.setdefault(str(c), set()).add(q[level])
        if not held or any(len(names) != 1 for names in held.values()):
            break
        if not all(len(q) > level + 1 for q in parts if len(q) > level):
            empty = pd.Series([""] * len(parts), index=folders.index)
            return empty, level, sorted(set.union(*held.values()))
        level += 1
    names = [q[level] if len(q) > level else "" for q in parts]
    return pd.Series(names, index=folders.index), level, []


def _wrapper_note(n: int, wrappers: list[str], level: int) -> str:
    """Why the subfolders of the class folders were not taken for patients."""
    where = f" {level + 1} levels below the class folders" if level else ""
    shown = ", ".join(map(repr, wrappers[:4])) + (", ..." if len(wrappers) > 4 else "")
    return (
        f"{FOLDER_WRAPPED} ({count(n, 'image')} in them): each class folder holds a single "
        f"subfolder{where} ({shown}), a wrapper rather than a patient, and not every image "
        "lies in a folder below it; folds by image (to keep patients whole, pass a manifest "
        "with a patient column)"
    )


def _folder_group_note(
    listing: pd.DataFrame,
    nested: pd.Series,
    level: int = 0,
    *,
    asked: bool = False,
    finer: tuple[int, str] | None = None,
) -> str:
    """What ``list_folder`` took for patients, and how to say otherwise: where the names
    lie below a wrapper folder, or are few, they may be coarser than patients (BreakHis:
    tumour types), which leaks nothing but makes few, uneven folds; ``finer``: the next
    level's names (``_finer_level``), offered. ``asked``: the level the user named."""
    names = sorted(set(listing.loc[nested, "folder"]))
    where = f" {level + 1} levels below the class folders" if level else ""
    if asked:
        loose = nested.size - int(nested.sum())
        return (
            f"{'WARNING: ' if len(names) < FEW_FOLDER_GROUPS else ''}{FOLDER_GROUPS} at "
            f"level {level + 1} (--group-column {Columns.FOLDER_LEVEL}{level + 1}), each "
            f"taken whole as one patient by its name ({count(len(names), 'subfolder name')}"
            f", e.g. {names[0]!r}; the same name under two classes is one patient)"
            + (f"; {count(loose, 'image')} not that deep each a group of its own" if loose else "")
        )
    loose = (
        f"; {count(int((~nested).sum()), 'image')} directly in a class folder each a "
        "group of its own"
        if not nested.all()
        else ""
    )
    if not level and len(names) >= FEW_FOLDER_GROUPS:
        return (
            f"{FOLDER_GROUPS}, each taken whole as one patient by its name "
            f"({count(len(names), 'subfolder name')}, e.g. {names[0]!r}; the same name under "
            f"two classes is one patient){loose}; pass --group-column {Columns.NO_GROUPS} to "
            "split image by image"
        )
    warning = "WARNING: " if len(names) < FEW_FOLDER_GROUPS else ""
    offer = (
        f"; one level down, {count(finer[0], 'subfolder name')} (e.g. {finer[1]!r}) each lie "
        f"inside one of them: if those are the patients, pass --group-column "
        f"{Columns.FOLDER_LEVEL}{level + 2}"
        if finer
        else ""
    )
    return (
        f"{warning}{FOLDER_GROUPS}{where}, each taken whole by its name: only "
        f"{count(len(names), 'subfolder name')} found ({count(len(names), 'group')}, e.g. "
        f"{names[0]!r}; the same name under two classes is one group){loose}{offer}; if they "
        "are coarser than patients, grouping by patient needs a manifest with a patient "
        f"column{' or that flag' if finer else ''}, or pass --group-column "
        f"{Columns.NO_GROUPS} to split image by image"
    )


def read_manifest(path: Path, cols: Columns) -> tuple[pd.DataFrame, str | None, list[str]]:
    """A CSV/Parquet manifest -> (listing, name of an encoded-image column or None, notes)."""
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise DataError(f"manifest '{path}' must end in .csv or .parquet, but got {suffix!r}.")
    if not path.is_file():
        raise DataError(f"manifest '{path}' does not exist.")
    image_column = None
    notes_read: list[str] = []
    if suffix == ".csv":
        frame, sep_note = read_csv_manifest(path)
        notes_read = [sep_note] if sep_note else []
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
    no_split = cols.split == Columns.NO_SPLIT and Columns.NO_SPLIT not in available
    split = (
        None
        if no_split
        else optional_column(cols.split, Columns.DEFAULT_SPLIT, available, "split_column", path)
    )
    pcol: str | None
    if image_column is None:
        pcol = manifest_column(cols.path, available, "path_column", path)
    else:
        pcol = cols.path if cols.path in available else None
    if cols.split is None:
        _check_no_other_split(frame, split, (label, pcol, group), path)
    if frame.empty:
        raise DataError(f"manifest '{path}' has no rows.")

    out = pd.DataFrame(index=frame.index)
    out["label"], label_note = plain_numbers(
        _required(frame, label, path, "every image needs a label.")
    )
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
    notes += notes_read + ([label_note] if label_note else [])
    if group is None and not no_groups:
        like = [
            c
            for c in available
            if c not in (label, pcol, split) and _id_like(c) and _groups_images(frame[c])
        ]
        if like:  # split image by image, one patient's images would leak between folds
            which = (
                f"column {like[0]!r} looks"
                if len(like) == 1
                else f"columns {', '.join(map(repr, like))} look"
            )
            # quoted for the shell: 'Patient ID' pasted bare would be two words
            name = shlex.quote(like[0]) if len(like) == 1 else f"NAME (one of {', '.join(like)})"
            raise DataError(
                f"manifest '{path}' has no column {Columns.DEFAULT_GROUP!r}, but {which} "
                "like patient ids. Split image by image, one patient's images would land in "
                "two folds, or in training and the test split, and the scores would be "
                f"optimistic: pass --group-column {name} to keep each patient whole, or "
                f"--group-column {Columns.NO_GROUPS} if "
                f"{'it holds no' if len(like) == 1 else 'none of them holds'} patients (folds "
                "by image)."
            )
    if pcol is not None:
        notes += _repeated_notes(given, pcol)
    if group is not None:
        notes += _placeholder_group_notes(out["group"], group)
    return out.reset_index(drop=True), image_column, notes


def _placeholder_group_notes(groups: pd.Series, column: str) -> list[str]:
    """A group column's placeholder (``UNKNOWN``, ``0`` where 1 is no id: ``placeholder_ids``)
    on several images keeps them whole in one fold as if one patient: uneven folds, and
    patients that may not be one. The column is the user's word, so it stays; this warns."""
    times = groups.value_counts()
    times = times[times.index.isin(placeholder_ids(times.index)) & (times > 1)]
    if times.empty:
        return []
    shown = ", ".join(f"{v!r} on {count(int(n), 'image')}" for v, n in times.head(3).items())
    more = f" and {count(len(times) - 3, 'other')}" if len(times) > 3 else ""
    what = "a placeholder" if len(times) == 1 else "placeholders"
    return [
        f"WARNING: group column {column!r} holds {what} rather than patient ids on several "
        f"images ({shown}{more}): the images of each are kept whole in one fold as if one "
        "patient, which makes folds uneven, or impossible; give them their patients' ids"
    ]


# Words of a column name that mark the unit images must be split by (patient, slide,
# ...), alone or before an id-ish word: ``PatientID``, ``Slide No``, ``patientid``; not
# ``patient_age`` or ``image_id``. The weak words name a finding or an attribute as often
# (``Lung Lesion``, ``num_lesions``, ``left_eye``, ``visit`` 1, 2, 3) and count only with
# an id-ish word after them (``lesion_id``, ``eye_id``, ``exam_id``, ``SeriesInstanceUID``).
_ID_WORDS = {
    "patient", "subject", "participant", "case", "slide", "person", "individual", "mrn",
    "pid", "donor", "study", "accession", "animal", "specimen",
}  # fmt: skip
_WEAK_ID_WORDS = {"lesion", "exam", "series", "eye", "visit", "mouse"}
_ID_SUFFIXES = ("id", "no", "nr", "num", "number", "uid", "code", "name")
# numbered within a patient (SeriesNumber 1, 2, 3; visit 1, 2): an id only as a uid or id
_COUNTED = {"series", "visit"}
_ATTRIBUTES = {
    "age", "sex", "gender", "date", "time", "weight", "height", "size", "description",
    "type", "thickness", "status", "count", "comment", "comments", "notes", "site", "view",
    "side", "position", "modality", "path", "file", "label", "class", "diagnosis",
}  # fmt: skip
_SPLIT_WORDS = {"split", "subset", "partition", "set"}
_TEST_LIKE = {"testing", "holdout", "heldout", "external", "hidden", "unseen", "blind"}


def _words(column: str) -> list[str]:
    """``PatientID`` -> patient, id; ``Slide No`` -> slide, no; ``patientid`` -> patientid."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", column)]


def _id_word(word: str, suffix: str | None = None) -> bool:
    if word.endswith("s") and word[:-1] in _ID_WORDS | _WEAK_ID_WORDS:  # patients, lesions
        word = word[:-1]
    if word in _ID_WORDS:
        return True
    if word not in _WEAK_ID_WORDS or suffix is None:
        return False
    return word not in _COUNTED or suffix in ("id", "uid", "code")


def _id_like(column: str) -> bool:
    """A name for the unit images must be split by: one of ``_ID_WORDS``, alone or with an
    id-ish word after it (``subject_id``, ``patientid``), one of ``_WEAK_ID_WORDS`` with
    one (``lesion_id``, ``SeriesInstanceUID``), and no word of an attribute
    (``patient_age``, ``Patient Gender``, ``study_date``)."""
    words = _words(column)
    if _ATTRIBUTES.intersection(words):
        return False
    for i, w in enumerate(words):
        rest = [x for x in words[i + 1 :] if x != "instance"]  # SeriesInstanceUID
        if rest and not all(x in _ID_SUFFIXES for x in rest):
            continue
        if _id_word(w, rest[-1] if rest else None):
            return True
        glued = [x for x in _ID_SUFFIXES if w.endswith(x) and len(w) > len(x)]
        if not rest and any(_id_word(w[: -len(x)].removesuffix("instance"), x) for x in glued):
            return True
    return False


def _groups_images(values: pd.Series) -> bool:
    """Whether an id-like column's values could be patients whose images must stay whole:
    some value on two rows or more (all-unique ids group nothing), and more than 2
    values (``left``/``right``, ``1``/``2``: an attribute, not patients)."""
    times = values.map(cell_text).dropna().value_counts()
    return len(times) > 2 and int(times.max()) >= 2


def _split_like(column: str) -> bool:
    """``Split``, ``subset``, ``partition``, ``set``, ``data_split``: a train/test column."""
    words = _words(column)
    return bool(words) and words[-1] in _SPLIT_WORDS


def _held_out_like(value: str) -> bool:
    """A split value that means held out, but is not ``test``: ``holdout``, ``testing``,
    ``external``, ``hidden``, ``test_2``..."""
    key = "".join(ch for ch in value.lower() if ch.isalnum())
    if key == "test":
        return False
    return key in _TEST_LIKE or key.startswith(("test", "holdout", "heldout", "external"))


def _check_split_values(values: pd.Series, column: str, *, explicit: bool, path: Path) -> None:
    """Rows a user held out under another name (``holdout``, ``external``) would silently
    join the pool: stop, with ``test`` rows or without. A split column without a ``test``
    row also stops where it was named on purpose."""
    seen = sorted(set(values) - {""})
    meant = [v for v in seen if _held_out_like(v)]
    if (values == "test").any():
        if meant:
            n = int(values.isin(meant).sum())
            raise DataError(
                f"manifest '{path.name}': split column {column!r} has 'test' rows, and "
                f"{count(n, 'row')} marked {' or '.join(map(repr, meant))}, which would join "
                "the cross-validation pool and be trained on. Mark them 'test' to hold them "
                "out too, 'train' to train on them, or remove them from the manifest (an "
                "external set is scored with `raydx predict`)."
            )
        return
    if meant or explicit:
        ask = f"Did you mean {meant[0]!r} as 'test'? " if meant else ""
        raise DataError(
            f"manifest '{path.name}': split column {column!r} has no 'test' row (its values: "
            f"{', '.join(map(repr, seen)) or 'none'}), so nothing would be held out. "
            f"{ask}Mark the held-out rows 'test', or drop the column to let raydx hold "
            "out a test split."
        )


_SPLIT_WORDS_OF_VALUES = {
    "train", "training", "trn", "val", "valid", "validation", "dev", "development", "eval",
    "evaluation", "test", "testing", "tst", "holdout", "heldout",
}  # fmt: skip


def _holds_test(values: pd.Series) -> bool:
    """Whether a split-like column marks a split: a value of split vocabulary (``test``,
    ``holdout``, ``external``, ``train``/``valid``/``internal_test``, ``training``/
    ``evaluation``) or a few small whole numbers (``partition`` coded 0/1/2). Not a
    column of source names (``HAM10000``/``BCN20000``)."""
    seen = {v for v in values.map(cell_text).dropna().str.lower() if v}
    if any(
        _held_out_like(v) or _SPLIT_WORDS_OF_VALUES & set(re.findall("[a-z]+", v)) for v in seen
    ):
        return True
    codes = pd.to_numeric(pd.Series(sorted(seen)), errors="coerce")
    return bool(len(seen)) and codes.notna().all() and len(seen) <= 5 and (codes % 1 == 0).all()


def _check_no_other_split(
    frame: pd.DataFrame, split: str | None, used: tuple[str | None, ...], path: Path
) -> None:
    """A ``Split`` or ``subset`` column holding held-out rows is not read (only ``split``
    is by default): raydx would draw a test split of its own and train on the rows the
    user held out."""
    others = [
        c
        for c in frame.columns
        if c != split and c not in used and _split_like(c) and _holds_test(frame[c])
    ]
    if not others:
        return
    names = ([split] if split else []) + others
    shown = ", ".join(map(repr, others))
    has = f"a split column {split!r}, and also " if split else ""
    name = names[0] if len(names) == 1 else f"NAME (one of {', '.join(names)})"
    raise DataError(
        f"manifest '{path.name}' has {has}{'column' if len(others) == 1 else 'columns'} "
        f"{shown}, which {'looks' if len(others) == 1 else 'look'} like a train/test split but "
        f"{'is' if len(others) == 1 else 'are'} not read as one (only a column "
        f"{Columns.DEFAULT_SPLIT!r} is, unless named): raydx would hold out a test split of "
        "its own, and the rows held out there could be trained on. Pass --split-column "
        f"{name} to hold out its 'test' rows, or --split-column {Columns.NO_SPLIT} to let "
        "raydx draw the test split."
    )


def plain_numbers(labels: pd.Series) -> tuple[pd.Series, str]:
    """Numeric labels written two ways (``1`` and ``1.0``, ``01``) are one class each:
    where every label is a number, whole numbers take their plain form. A note says
    which labels were rewritten; other labels stay as they are. Numbers are read as
    ``raydx predict`` reads them (``labels.label_number``)."""
    numbers = [label_number(t) for t in labels]
    values = [v for v in numbers if v is not None]
    if len(values) < len(numbers):  # a word, an empty cell, inf: not all numbers
        return labels, ""

    def plain(text: str, value: float) -> str:
        try:
            return str(int(text))  # "01", "+1": exact, however long
        except ValueError:
            return str(int(value)) if value == np.round(value) else text

    out = pd.Series([plain(t, v) for t, v in zip(labels, values, strict=True)], index=labels.index)
    changed = sorted({(a, b) for a, b in zip(labels, out, strict=True) if a != b})
    if not changed:
        return labels, ""
    shown = ", ".join(f"{a!r} as {b!r}" for a, b in changed[:4])
    return out, f"numeric labels read as whole numbers, one class per number: {shown}"


def read_csv_manifest(path: Path) -> tuple[pd.DataFrame, str]:
    """A CSV manifest with its separator: a comma, or a semicolon (spreadsheets in much of
    Europe write ``path;label``), tab or bar where the header holds one and no comma."""
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except OSError as e:
        raise DataError(f"manifest '{path}' cannot be read: {e}") from None
    sep = ","
    if "," not in header:
        found = [c for c in (";", "\t", "|") if c in header]
        sep = found[0] if found else ","
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, sep=sep)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"manifest '{path}' is not a readable CSV file: {e}") from None
    named = {";": "semicolons", "\t": "tabs", "|": "bars"}
    return frame, (f"columns separated by {named[sep]}" if sep != "," else "")


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
    """A manifest's relative paths are relative to the manifest, not to the working dir.

    A path written on Windows (``images\\a0.png``) that is not there as written is read
    with ``/`` on Linux and macOS, where a backslash is part of a file's name."""
    q = _relative_to(root, p)
    if os.sep == "/" and "\\" in p and not q.exists():
        return _relative_to(root, p.replace("\\", "/"))
    return q


def _relative_to(root: Path, p: str) -> Path:
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


# What anonymisers (and hospital systems, for an unknown patient) write in place of a
# patient's id. Taken for one, it would gather every image that carries it into a single
# "patient", often the whole set, which no fold can split: it counts as no id instead.
# Compared as ``_id_key`` writes them (case, spaces and punctuation do not count: N/A,
# De-Identified); all zeros (0, 00000000) and one letter or mark repeated (xxx, ----)
# count too (``placeholder_ids``).
PLACEHOLDER_IDS = frozenset(
    {
        "anon", "anonymous", "anonymized", "anonymised", "deidentified", "removed",
        "redacted", "unknown", "none", "null", "na", "noname", "patient",
    }
)  # fmt: skip


def _id_key(value: str) -> str:
    return "".join(ch for ch in value.lower() if ch.isalnum())


def _placeholder(value: str) -> bool:
    text = "".join(value.split()).lower()
    if not text:
        return False  # blank: no id, and said so as such
    key = _id_key(text)
    if not key or key in PLACEHOLDER_IDS or set(key) == {"0"}:  # "-", "N/A", "0000"
        return True
    # xxx, ZZZZ; not 11 or 222, which may be a patient's number
    return len(text) >= 3 and len(set(text)) == 1 and not text.isdecimal()


def placeholder_ids(values: Iterable[str]) -> set[str]:
    """The values among patient ids that name no patient (``PLACEHOLDER_IDS``, all zeros,
    one character repeated). Zeros do name one where 1 is an id too: patients numbered
    from 0."""
    distinct = {str(v) for v in values}
    found = {v for v in distinct if _placeholder(v)}
    if any(v.strip().isdecimal() and int(v) == 1 for v in distinct):
        found = {v for v in found if set(_id_key(v)) != {"0"}}
    return found


def without_placeholders(patient_ids: Iterable[str]) -> tuple[np.ndarray, Counter[str]]:
    """DICOM PatientIDs with placeholders (``placeholder_ids``) made blank, as if the
    anonymiser had left them empty, and how many images carry each placeholder."""
    ids = np.asarray([str(i) for i in patient_ids], dtype=object)
    placeholders = placeholder_ids(ids)
    if not placeholders:
        return ids, Counter()
    blank = np.isin(ids, list(placeholders))
    return np.where(blank, "", ids), Counter(ids[blank])


def placeholder_note(found: Counter[str], then: str, risk: str | None) -> str:
    """The WARNING for DICOM PatientIDs that were placeholders: which, on how many
    images, what became of those images (``then``) and what that risks (``risk``)."""
    shown = ", ".join(f"{v!r} on {count(n, 'image')}" for v, n in found.most_common(3))
    more = f" and {count(len(found) - 3, 'other')}" if len(found) > 3 else ""
    one = len(found) == 1
    manifest = f"a manifest with a {Columns.DEFAULT_GROUP!r} column"
    tail = f", and {risk}; {manifest} avoids that" if risk else f"; {manifest} names the patients"
    return (
        f"WARNING: DICOM PatientID {shown}{more} {'is' if one else 'are'} "
        f"{'a placeholder' if one else 'placeholders'} (an anonymiser's), not "
        f"{'a patient' if one else 'patients'}, so read as no PatientID: {then}{tail}"
    )


def dicom_patients(
    patient_ids: Sequence[str], image_ids: Sequence[str], folders: Sequence[str] = ()
) -> np.ndarray:
    """Each image's patient: its PatientID, or for an image without one (blank, or a
    placeholder such as ``ANONYMOUS``: ``placeholder_ids``), a patient of its own (named
    by the image). Used by the search and by ``raydx predict`` alike.

    ``folders``: each image's patient subfolder ("" or none given: none). An image without a
    PatientID there is its subfolder's, and the subfolder one patient with every
    PatientID beside it (it may be any of theirs): were it a patient of its own, a
    PNG beside a patient's DICOM files, or a patient folder whose files carry no
    PatientID, would be spread over the folds and the test split."""
    ids, _ = without_placeholders(patient_ids)
    own = np.array([f"(no PatientID) {i}" for i in image_ids], dtype=object)
    folder = np.asarray([str(f) for f in folders] or [""] * len(ids), dtype=object)
    open_ = set(folder[(ids == "") & (folder != "")])  # subfolders of an image without one
    roots = row_components(
        [pid or None for pid in ids], [f if f in open_ else None for f in folder]
    )
    names: dict[int, str] = {}
    for r, pid in zip(roots, ids, strict=True):
        if pid:
            names.setdefault(int(r), pid)  # a group is named after its first PatientID
    # a subfolder without a PatientID: by its name, which no PatientID can take
    alone = np.where(folder != "", "(subfolder) " + folder.astype(str), own.astype(str))
    return np.array([names.get(int(r), alone[i]) for i, r in enumerate(roots)], dtype=object)


def patient_subfolders(groups: pd.Series | None, ids: pd.Series) -> np.ndarray:
    """Each image's patient subfolder ("" for none) from a folder listing's groups (search:
    ``FOLDER_GROUP``; predict: its ``group`` column), where an image directly in its class
    folder is a group of its own, named by its id."""
    if groups is None:
        return np.full(len(ids), "", dtype=object)
    sub = groups.notna().to_numpy() & (groups.astype(str).to_numpy() != ids.astype(str).to_numpy())
    return np.where(sub, groups.astype(str).to_numpy(), "").astype(object)


def _dicom_groups(
    kept: pd.DataFrame, patients: np.ndarray, folders: np.ndarray, placeholders: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Groups from the DICOM files' PatientID, where the listing names no patients.

    A mammography exam is four images of one patient, a CT series hundreds: folds by image
    would put one patient on both sides of a fold (and of the test split). An image
    without a PatientID (blank, or a placeholder made blank) takes its patient subfolder
    (``dicom_patients``), else is a group of its own."""
    has = patients != ""
    groups = dicom_patients(list(patients), list(kept["sample_id"].to_numpy(str)), list(folders))
    note = (
        f"folds and the test split grouped by the DICOM files' PatientID (0010,0020): "
        f"{count(len(set(patients[has])), 'patient')}"
    )
    how = "to blank or a placeholder" if placeholders else "to blank"
    joined, alone = ~has & (folders != ""), ~has & (folders == "")
    if joined.any():
        names = sorted(set(folders[joined]))
        note += (
            f"; {count(int(joined.sum()), 'image')} without one (not DICOM, or anonymised "
            f"{how}) grouped by the class folders' subfolders they lie in "
            f"({count(len(names), 'subfolder name')}, e.g. {names[0]!r}), each subfolder taken "
            "whole with any PatientID in it"
        )
    if alone.any():
        why = "directly in a class folder" if joined.any() else f"(not DICOM, or anonymised {how})"
        note += f"; {count(int(alone.sum()), 'image')} without one {why} each a group of its own"
    return groups, [note, *_joined_patients_notes(groups, patients, folders)]


def _joined_patients_notes(
    groups: np.ndarray, patients: np.ndarray, folders: np.ndarray
) -> list[str]:
    """Several PatientIDs made one group by a subfolder that also holds images without
    one: safe, but fewer, larger groups than the files' patients."""
    has = patients != ""
    pairs = pd.DataFrame({"group": groups[has], "dicom": patients[has]})
    ids = pairs.groupby("group")["dicom"].unique()
    ids = ids[ids.map(len) > 1]
    if ids.empty:
        return []
    shown = sorted(map(str, ids.iloc[0]))
    where = sorted(set(folders[(groups == ids.index[0]) & ~has & (folders != "")]))
    return [
        f"WARNING: {count(int(ids.map(len).sum()), 'DICOM PatientID')} joined into "
        f"{count(len(ids), 'group')} by subfolders that hold images without a PatientID "
        f"beside them (e.g. {', '.join(map(repr, shown[:3]))} with subfolder {where[0]!r}): "
        "such an image may be any of those patients', so they stay in one group; "
        f"a manifest with a {Columns.DEFAULT_GROUP!r} column names each image's patient"
    ]


# What a placeholder PatientID risks in a search: said by ``placeholder_note``.
_FOLD_RISK = "one patient's images may then fall on both sides of a fold (and of the test split)"
# what became of images with a placeholder PatientID where subfolders group them (search
# and predict)
BY_SUBFOLDERS_INSTEAD = "the images are grouped by the class folders' subfolders instead"


def placeholder_fate(in_subfolder: np.ndarray, alone: str = "group") -> str:
    """What became of the DICOM images with a placeholder PatientID (``dicom_patients``),
    for ``placeholder_note``: ``in_subfolder``, each one's lying in a patient subfolder;
    ``alone``, what one that does not is (a fold's "group", predict's "patient")."""
    if not in_subfolder.any():
        return f"each of those images is a {alone} of its own"
    beside = "grouped by the class folders' subfolders, with the PatientIDs beside them"
    if in_subfolder.all():
        return f"the images are {beside}"
    return f"those in subfolders are {beside}, the others each a {alone} of its own"


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


def _check_classes(labels: pd.Series, name: str) -> None:
    """At least two classes, each written one way."""
    class_names = _class_names(labels)
    _check_distinct_names(labels, class_names)
    if len(class_names) < 2:
        raise DataError(
            f"'{name}' has one class ({class_names[0]!r}, {count(len(labels), 'image')}); a "
            f"diagnosis needs at least 2."
        )


def _may_group_by_dicom(listing: pd.DataFrame) -> bool:
    """Whether the table's patients may come from DICOM PatientIDs (no group column, and
    a file that may be DICOM): those rules look at every image (a placeholder id, an
    image without one joining its subfolder's), so a cut listing could group otherwise."""
    if "group" in listing:
        return False
    plain = set(IMAGE_SUFFIXES) - {".dcm", ".dicom"}  # a file without a suffix may be DICOM
    return not listing["path"].map(lambda p: Path(p).suffix.lower() in plain).all()


def _limited(listing: pd.DataFrame, limit: int, seed: int, name: str) -> pd.DataFrame:
    """The rows ``limit_rows`` keeps of the table this listing decodes to (its class
    indices and official split, in its order)."""
    index = {c: i for i, c in enumerate(_class_names(listing["label"]))}
    labels = listing["label"].map(index).to_numpy(np.int64)
    official = listing["split"].to_numpy(object) if "split" in listing else None
    keep = limit_index(labels, official, limit, seed, name)
    return listing.iloc[keep].reset_index(drop=True)


def _check_enough_for_folds(
    listing: pd.DataFrame, name: str, folds: int, *, exact_groups: bool, limit: int | None = None
) -> None:
    """What the splits (``make_splits``) would refuse after Ray's start and the decoding
    of every image, refused from the listing alone. Its patients are the most a class can
    have: the images' DICOM PatientIDs, exact copies and left-out bad files only merge or
    remove some, so a class short here is short there. ``exact_groups``: no image will
    be left out, and no ``--limit`` will cut it after decoding, so a patient on both sides
    of a given test split is one there too. ``limit``: the listing is that cut already."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        return  # make_splits says what folds must be
    grouped = "group" in listing  # a group column, or a folder level asked for
    units = listing["group"].astype(str) if grouped else listing["sample_id"].astype(str)
    test = listing["split"].eq("test") if "split" in listing else pd.Series(False, listing.index)
    official = bool(test.any())
    if official and grouped and exact_groups:
        check_one_side(units[test].unique(), units[~test].unique())
    pool = listing.loc[~test]
    per_class = units[~test].groupby(pool["label"]).nunique()
    where = f"'{name}'" if limit is None else f"the --limit {limit} subset of '{name}'"
    where = f"outside the test split of {where}" if official else f"in {where}"
    fix = "use fewer folds or add data" if limit is None else "use fewer folds or a larger --limit"
    for label, n in per_class.items():
        if n < folds:
            others = [str(c) for c in per_class.index if c != label]
            close = misspelling_of(str(label), others)
            raise DataError(
                f"class '{label}' has {count(int(n), 'patient' if grouped else 'image')} "
                f"{where}, fewer than folds={folds}; {fix}."
                + (f" Is '{label}' a misspelling of '{close}'?" if close else "")
            )


def _check_distinct_names(labels: pd.Series, class_names: tuple[str, ...]) -> None:
    """``Malignant`` and ``malignant``, ``COVID-19`` and ``covid 19`` would train as two
    classes (``labels.label_key``: a sign at an edge, ``HER2+``/``HER2-``, counts)."""
    seen: dict[str, str] = {}
    for c in class_names:
        key = label_key(c)
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
    windows = [s for s in listing.get("sample_id", []) if "\\" in s]
    if missing and windows and os.sep == "/":  # not a cluster's mount: a Windows manifest
        raise DataError(
            f"none of the {count(len(listing), 'image')} of the manifest is found on this "
            f"machine, and {count(len(windows), 'path')} {'is' if len(windows) == 1 else 'are'} "
            f"written with Windows backslashes (e.g. {windows[0]!r}, looked for as "
            f"{missing[0]!r}); write the paths with '/', relative to the manifest's folder "
            "or absolute on this machine."
        )


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
    class_names = _class_names(kept["label"])  # the listing's, checked before decoding
    lost = sorted(set(listing["label"]) - set(class_names))
    if lost:
        raise DataError(
            f"class {lost[0]!r} has no readable image left after leaving out bad files; "
            f"fix its images or remove the class."
        )
    index = {c: i for i, c in enumerate(class_names)}
    given = ing.patients[keep] if ing.patients is not None else np.full(len(kept), "")
    patients, placeholders = without_placeholders(given)  # ANONYMOUS: as if blank
    then: str | None = None  # what became of images with a placeholder, where it matters
    if "group" in kept:
        notes = [*notes, *_dicom_group_notes(kept, patients)]
    elif (patients != "").any():  # a DICOM folder: its PatientIDs, then its subfolders
        folders = patient_subfolders(kept.get(FOLDER_GROUP), kept["sample_id"])
        kept["group"], said = _dicom_groups(kept, patients, folders, bool(placeholders))
        replaced = ("no group column", FOLDER_GROUPS, FOLDER_WRAPPED, FOLDER_FLAT)
        notes = [n for n in notes if not n.removeprefix("WARNING: ").startswith(replaced)]
        notes += said
        anonymised = np.isin([str(g) for g in given], list(placeholders))
        then = placeholder_fate(folders[anonymised] != "")
    elif FOLDER_GROUP in kept:
        kept["group"] = kept[FOLDER_GROUP]
        then = BY_SUBFOLDERS_INSTEAD
    else:
        then = "folds by image"
    if placeholders and then is not None:
        notes = [*notes, placeholder_note(placeholders, then, _FOLD_RISK)]
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
