"""A saved model applied to new image files, and scored on them when their labels are known.

The last step of the data flow, for the images a search never saw: a hospital's next
cases, or an external test set. Files are decoded exactly as a search decodes them
(``raydx.data.decode``: the same conversion, squash-resize and checks), in this process
and without Ray, so a model folder needs nothing but raydx and PyTorch to be used.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shlex
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.artifact import DiagnosisModel, check_device, load_model, resolve_model
from raydx.data.decode import IMAGE_SUFFIXES, Decoded, aspect, decode, reason
from raydx.data.files import (
    BY_SUBFOLDERS_INSTEAD,
    MANIFEST_SUFFIXES,
    Columns,
    cell_text,
    dicom_patients,
    folder_level,
    image_column_of,
    is_image_file,
    kept_mask_note,
    level_folders,
    list_bad_files,
    manifest_column,
    mask_named,
    mask_note,
    optional_column,
    patient_folders,
    patient_subfolders,
    placeholder_fate,
    placeholder_note,
    plain_numbers,
    read_csv_manifest,
    resolve_path,
    segmentation_masks,
    walk_folder,
    without_placeholders,
)
from raydx.data.intensity import Intensity
from raydx.data.labels import label_number, misspelling_of
from raydx.data.shortcuts import shortcut_notes
from raydx.errors import DataError, RaydxError, count
from raydx.files_out import atomic_write, write_json
from raydx.lookup import suggest
from raydx.metrics import (
    ci_by_text,
    diagnosis_metrics,
    multi_class_positive,
    patient_auc_text,
    patient_metrics,
    scored_warnings,
)
from raydx.operating_point import (
    OperatingPoint,
    multi_class_note,
    threshold_source,
    threshold_text,
)
from raydx.run_folder import check_writable
from raydx.seen import NEAR, PARTS, SEEN_FILE, SeenImages, seen_note

BATCH = 256  # images decoded and predicted at a time: memory stays flat on any set size
# Columns the output table may have besides prob_<class>: a manifest column of one of
# these names (a previous output fed back in) is kept as input_<name>.
OUTPUT_COLUMNS = ("id", "path", "label", "prediction", "seen", "error")


@dataclass(frozen=True)
class Predictions:
    """One row per image (``table``), and the metrics when every image has a known label."""

    table: pd.DataFrame
    metrics: dict[str, Any] | None
    model: DiagnosisModel
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line per fact, for the command line."""
        t = self.table
        ok = t["error"].isna() if "error" in t else pd.Series(True, index=t.index)
        counts = t.loc[ok, "prediction"].value_counts()
        shown = ", ".join(f"{c!r} {int(counts.get(c, 0))}" for c in self.model.class_names)
        k = int(ok.sum())
        lines = [f"predicted {k} image{'s' * (k != 1)}: {shown}"]
        if len(self.model.class_names) == 2:
            name = self.model.class_names[self.model.positive_class]
            lines[0] += (
                f" ({name} at probability >= {threshold_text(self.model.threshold, 4)}: "
                f"{self.model.threshold_rule} on out-of-fold predictions)"
            )
        if not ok.all():
            lines.append(f"{int((~ok).sum())} unreadable left out (see the 'error' column)")
        recalibrated = ("class_mix", "member_calibration")
        if self.model.prevalence is not None and any(map(self.model.config.get, recalibrated)):
            lines.append(
                f"probabilities are for a prevalence of {self.model.prevalence:.1%} "
                f"{self.model.class_names[self.model.positive_class]!r}"
            )
        lines += self.notes
        if self.metrics is not None:
            m = self.metrics
            lo, hi = m["auc_ci95"]
            by = ci_by_text(m)
            against = multi_class_positive(m)
            if m["auc"] is None or math.isnan(m["auc"]):
                lines.append(
                    f"on their labels: AUC undefined: the {m['n']} labelled images are of one "
                    f"class; accuracy {_num(m['accuracy'])}, sensitivity "
                    f"{_num(m['sensitivity'])}, specificity {_num(m['specificity'])}"
                )
            else:
                lines.append(
                    f"on their labels: AUC {_num(m['auc'])} (95% CI {_num(lo)}-{_num(hi)}{by}), "
                    f"accuracy {_num(m['accuracy'])}, sensitivity {_num(m['sensitivity'])}, "
                    f"specificity {_num(m['specificity'])} (n={m['n']})"
                    if against is None
                    else f"on their labels: AUC {_num(m['auc'])} (macro one-vs-rest; 95% CI "
                    f"{_num(lo)}-{_num(hi)}{by}), accuracy {_num(m['accuracy'])} of the most "
                    f"probable class; {against!r} against the rest at probability >= "
                    f"{threshold_text(self.model.threshold, 4)}: sensitivity "
                    f"{_num(m['sensitivity'])}, "
                    f"specificity {_num(m['specificity'])} (n={m['n']})"
                )
            lines.append(
                f"calibration: Brier {_num(m['brier'])}, intercept "
                f"{_num(m['calibration_intercept'])} (0 is ideal), slope "
                f"{_num(m['calibration_slope'])} (1 is ideal)"
            )
            if "patient_auc" in m:
                lines.append(f"per patient: {patient_auc_text(m, against=against)}")
        return "\n".join(lines)


def _num(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3f}"


@dataclass(frozen=True)
class Inputs:
    """What ``data`` names: one row per image, in a fixed internal layout.

    ``rows`` has ``id``, ``path`` (None for encoded images), ``label`` and ``group``
    (None where unknown) and, for a Parquet of encoded images, ``bytes``. ``extra``
    holds a manifest's other columns, carried through to the output unchanged.
    """

    rows: pd.DataFrame
    extra: pd.DataFrame
    labels_from: str | None  # "folder", "manifest" or None
    label_column: str | None = None  # the manifest column the labels came from
    note: str | None = None  # why a manifest that may hold labels gave none
    passed_over: str | None = None  # a folder's segmentation masks (data.files.mask_note)


def list_inputs(
    spec: str | Path,
    *,
    path_column: str = "path",
    label_column: str | None = None,
    group_column: str | None = None,
) -> Inputs:
    """An image file, a folder of images (class subfolders are labels), or a CSV/Parquet
    manifest (``path`` or encoded images; optional ``label`` and ``patient_id``)."""
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        files = [p for p in walk_folder(path)[0] if is_image_file(p)]  # as a search lists
        # (a run folder below it, the model's own included, is passed over), masks too
        # per class folder, as a search lists them (files directly in the folder: one)
        by_top: dict[Path, list[Path]] = {}
        for p in files:
            rel_parts = p.relative_to(path).parts
            by_top.setdefault(path / rel_parts[0] if len(rel_parts) > 1 else path, []).append(p)
        masks = set().union(*(segmentation_masks(fs, top) for top, fs in by_top.items()))
        kept = [q for top, fs in by_top.items() for q in mask_named(fs, top) if q not in masks]
        files = [p for p in files if p not in masks]
        if not files:
            raise DataError(
                f"folder '{path}' holds no images (looked for {', '.join(IMAGE_SUFFIXES)}, "
                f"in subfolders too)."
            )
        rel = [p.relative_to(path) for p in files]
        # as a search groups a folder: patient subfolders of the class folders, or the
        # level --group-column folder:N names (none: no patients)
        level = folder_level(group_column, path)
        below = pd.Series(["/".join(r.parts[1:-1]) for r in rel])
        if level is not None:
            folder = level_folders(below, level, path)
        else:
            folder, _, _ = patient_folders(below, pd.Series([r.parts[0] for r in rel]))
        ids = [r.as_posix() for r in rel]
        nested = folder != ""
        grouped = nested.any() and group_column != Columns.NO_GROUPS
        group = folder.where(nested, pd.Series(ids)) if grouped else None
        rows = pd.DataFrame(
            {
                "id": ids,
                "path": [str(p) for p in files],
                "label": [r.parts[0] if len(r.parts) > 1 else None for r in rel],
                "group": group,
            }
        )
        said = ([mask_note(sorted(masks), path)] if masks else []) + (
            [kept_mask_note(kept, path)] if kept else []
        )
        passed = "; ".join(said) or None
        return Inputs(rows, pd.DataFrame(index=rows.index), "folder", passed_over=passed)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return _read_manifest(path, path_column, label_column, group_column)
    if path.suffix.lower() in IMAGE_SUFFIXES or (path.is_file() and is_image_file(path)):
        if not path.is_file():
            raise DataError(f"image '{path}' does not exist.")
        rows = pd.DataFrame({"id": [path.name], "path": [str(path)], "label": None, "group": None})
        return Inputs(rows, pd.DataFrame(index=rows.index), None)
    if not path.exists():
        raise DataError(f"data '{spec}' does not exist.")
    raise DataError(
        f"data '{spec}' must be an image file ({', '.join(IMAGE_SUFFIXES)}), a folder of "
        f"images, or a .csv/.parquet manifest with a {path_column!r} column."
    )


def _read_manifest(
    path: Path, path_column: str, label_column: str | None, group_column: str | None
) -> Inputs:
    if not path.is_file():
        raise DataError(f"manifest '{path}' does not exist.")
    image_column = None
    try:
        if path.suffix.lower() == ".csv":
            frame, _ = read_csv_manifest(path)  # as a search reads it: , ; or tab
        else:
            import pyarrow.parquet as pq

            image_column = image_column_of(pq.read_schema(path))
            frame = pd.read_parquet(path)
    except Exception as e:
        raise DataError(f"manifest '{path}' cannot be read: {e}") from None
    if frame.empty:
        raise DataError(f"manifest '{path}' has no rows.")
    available = [c for c in frame.columns if c != image_column]
    rows = pd.DataFrame(index=frame.index)
    # As a search reads a manifest (raydx.data.files.read_manifest): the files at the
    # path column only when there are no encoded images; with them, it names each one.
    pcol: str | None
    if image_column is None:
        pcol = manifest_column(path_column, available, "path_column", path)
    else:
        pcol = path_column if path_column in available else None
    if pcol is not None:
        given = frame[pcol].map(cell_text)
        _no_missing(given, path, pcol, "every row needs its image")
        rows["id"] = given
    else:
        rows["id"] = [f"row-{i:06d}" for i in range(len(frame))]
    if image_column is None:
        rows["path"] = [str(resolve_path(path.parent, p)) for p in given]
    else:
        rows["path"] = None
        rows["bytes"] = frame[image_column].map(lambda v: v["bytes"] if isinstance(v, dict) else v)
    # Optional columns, unless named: then a typo must not pass for "no labels".
    lcol = optional_column(label_column, "label", available, "label_column", path)
    # as a search reads labels: 1 and 1.0 are one class where every label is a number
    rows["label"] = plain_numbers(frame[lcol].map(cell_text))[0] if lcol else None
    if label_column is not None:
        _no_missing(rows["label"], path, label_column, "every row needs its label")
    note = None
    near = None if lcol else suggest("label", [c for c in available if c not in (pcol,)], 0.6)
    if near:  # a typo must not pass silently for "no labels" either
        note = (
            f"no metrics: the manifest has no 'label' column; did you mean {near!r}? "
            f"(--label-column {shlex.quote(near)})"
        )
    if group_column is not None and group_column.startswith(Columns.FOLDER_LEVEL):
        raise DataError(
            f"--group-column {group_column} names a subfolder level of an image folder, but "
            f"'{path}' is a manifest: name its patient column instead."
        )
    if group_column == Columns.NO_GROUPS and Columns.NO_GROUPS not in available:
        gcol = None  # no patients, as a search reads it
    else:
        gcol = optional_column(group_column, "patient_id", available, "group_column", path)
    rows["group"] = frame[gcol].map(cell_text) if gcol else None
    used = {c for c in (pcol, lcol, image_column) if c}
    extra = frame[[c for c in frame.columns if c not in used]]
    return Inputs(
        rows.reset_index(drop=True), extra.reset_index(drop=True), "manifest", lcol or None, note
    )


def _no_missing(values: pd.Series, path: Path, column: str, why: str) -> None:
    if values.isna().any():
        first = int(np.flatnonzero(values.isna())[0])
        raise DataError(
            f"manifest '{path}': {count(int(values.isna().sum()), 'row')} without a "
            f"{column!r} value (first at data row {first + 1}); {why}."
        )


def _colour_notes(model: DiagnosisModel, grey: np.ndarray) -> list[str]:
    """A warning for images of another kind than the model trained on: colour ones made
    grey for a grey model, grey ones copied into three channels for a colour model whose
    training images held none (a model of colour photos, given grey copies of such
    photos, called every one of them the same class in an audit)."""
    from raydx.data.decode import is_grey_mode

    modes = model.config.get("input_modes") or {}

    def here(n: int, kind: str) -> str:
        return f"{count(n, 'image')} here {'is' if n == 1 else 'are'} {kind}"

    if model.preprocessing.channels == 1 and (~grey).any():
        return [
            "WARNING: the model was trained on grey images, and "
            f"{here(int((~grey).sum()), 'in colour')}: each was made grey (the mean of its "
            "channels), which its training images never needed; its scores on them may not "
            "hold."
        ]
    if model.preprocessing.channels == 3 and grey.any() and modes:
        saw = model.config.get("input_grey_images")
        if saw is None:  # saved before it was recorded: what the modes say
            saw = sum(n for m, n in modes.items() if is_grey_mode(m))
        if saw:
            return []
        return [
            f"WARNING: the model was trained on colour images alone ({', '.join(sorted(modes))}), "
            f"and {here(int(grey.sum()), 'grey')}: each was copied into three equal channels, "
            "a kind of image the model never saw; its scores on them may not hold."
        ]
    return []


def _intensity_notes(model: DiagnosisModel, modes: np.ndarray) -> list[str]:
    """A warning where images here are scaled otherwise than the training images were:
    16-bit copies of 8-bit training images were stretched image by image under
    ``--intensity auto`` while the training images passed unchanged (an audit: the
    decisions on six images turned from 5 malignant to none), or the reverse."""
    from raydx.data.intensity import Intensity, scaled_count

    trained = model.config.get("input_modes")
    if not trained or not len(modes):
        return []
    here = dict(Counter(str(m) for m in modes))
    scaled, n = scaled_count(here), len(modes)
    saw = scaled_count(trained)
    how = Intensity.parse(model.preprocessing.intensity).describe()
    names = ", ".join(sorted(trained))
    if scaled and not saw:
        kinds = ", ".join(sorted(m for m in here if scaled_count({m: 1})))
        return [
            f"WARNING: the model was trained on 8-bit images ({names}), and "
            f"{count(scaled, 'image')} here {'is' if scaled == 1 else 'are'} 16-bit, float or "
            f"DICOM greyscale ({kinds}): each was brought to 0-255 as intensity "
            f"{model.preprocessing.intensity!r} says ({how}), which its training images "
            "never were; its scores on them may not hold (8-bit files would be read as the "
            "training files were)."
        ]
    if saw == sum(trained.values()) and n - scaled:
        passed = n - scaled
        return [
            f"WARNING: the model was trained on 16-bit, float or DICOM greyscale images "
            f"({names}), each brought to 0-255 ({how}), and {count(passed, 'image')} here "
            f"{'is' if passed == 1 else 'are'} 8-bit, which pass unchanged; its scores on "
            "them may not hold (give the files in the training images' own format)."
        ]
    return []


def _size_notes(model: DiagnosisModel, sizes: np.ndarray) -> list[str]:
    """Images of other shapes than the training images: resizing to the model's square
    stretches each by its own width/height, and one stretched otherwise than the
    training images were shows the model shapes it never saw."""
    trained_aspect = model.config.get("input_aspect")
    if trained_aspect is None or not len(sizes):
        return []
    side = model.preprocessing.image_size
    here = Counter(str(s) for s in sizes)
    lo, hi = trained_aspect
    odd = {
        s: k for s, k in here.items() if not lo / 1.1 <= aspect(s) <= hi * 1.1
    }  # 10% slack: a crop a few pixels off is the same shape
    if odd:
        n = sum(odd.values())
        shown = ", ".join(f"{s} ({k})" for s, k in Counter(odd).most_common(3))
        trained = "1" if lo == hi == 1 else f"{lo:.2f}" if lo == hi else f"{lo:.2f}-{hi:.2f}"
        return [
            f"WARNING: {count(n, 'image')} here {'has' if n == 1 else 'have'} a width/height "
            f"ratio outside the training images' ({trained}): {shown}; each was resized to "
            f"{side}x{side} as they were, which stretches it otherwise; its scores on "
            "them may not hold (crop them to the training images' shape)."
        ]
    known = list(model.config.get("input_sizes") or {})  # the commonest first
    if known and not set(here) & set(known):
        shown = ", ".join(f"{s} ({k})" for s, k in here.most_common(3))
        return [
            f"images here are {shown}, the training images "
            f"{', '.join(known[:3])}: all resized to {side}x{side}"
        ]
    return []


def _to_model_channels(image: np.ndarray, grey: bool, channels: int) -> np.ndarray:
    """(S, S, c) uint8 -> (S, S, channels) as the model was trained (see ``ingest._run``)."""
    if image.shape[2] == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=2)
    if grey:  # grey stored as RGB: every channel is the same
        return image[:, :, :1]
    # A colour file for a model trained on grey images: its mean over channels.
    return np.rint(image.mean(axis=2, keepdims=True)).astype(np.uint8)


def predict_files(
    model: DiagnosisModel | str | Path,
    data: str | Path,
    *,
    skip_bad: bool = False,
    path_column: str = "path",
    label_column: str | None = None,
    group_column: str | None = None,
    device: str = "cpu",
    operating_point: str | None = None,
    prevalence: float | None = None,
) -> Predictions:
    """Probabilities and predicted classes for every image of ``data``.

    The predicted class of a binary model uses the threshold chosen on the search's
    out-of-fold predictions (as in ``test_metrics.json``), or, with ``operating_point``
    (``'youden'``, ``'sensitivity=0.95'``, ``'specificity=0.9'``), one re-chosen by that
    rule on the same out-of-fold predictions, which the model folder keeps; never on
    ``data``. ``prevalence`` (binary models): probabilities for a site where that share
    of the images is positive, with the threshold moved so that the decisions stay as
    they were (``DiagnosisModel.at_prevalence``). A multi-class model predicts its most
    probable class. When every image has
    a label among the model's classes (class subfolders, or a manifest's label column),
    the images are also scored as the test split is (``metrics``); ``notes`` say why they
    are not, or what to read them with (a class mix other than the probabilities').
    """
    point = None if operating_point is None else OperatingPoint.parse(operating_point)
    seen = None  # the run's own images, where the model folder sits in its run
    unseen_note = None
    if not isinstance(model, DiagnosisModel):
        check_device(device)  # the first mistake said first
        model_dir = resolve_model(model)
        seen = SeenImages.beside(model_dir)
        run_dir = model_dir.resolve().parent
        if seen is None and (run_dir / "run.json").is_file():  # a run from before the file
            unseen_note = (
                f"no 'seen' column: the run in {run_dir} has no {SEEN_FILE} (saved by a "
                "raydx from before the file, or stopped before it was written), so whether "
                "these images are among its own training or test images cannot be told"
            )
        model = load_model(model_dir, device=device)
    if prevalence is not None:
        model = model.at_prevalence(prevalence)
    if point is not None:
        model = model.at_operating_point(point)
    inputs = list_inputs(
        data, path_column=path_column, label_column=label_column, group_column=group_column
    )
    classes = model.class_names
    if inputs.labels_from is not None:
        labels = as_class_numbers(inputs.rows["label"], classes)
        inputs = dataclasses.replace(inputs, rows=inputs.rows.assign(label=labels))
    rows = inputs.rows
    if inputs.labels_from == "manifest":  # before any image is decoded: no work is lost
        _refuse_unknown_labels(rows["label"], inputs.label_column, classes)
    size = model.preprocessing.image_size
    channels = model.preprocessing.channels
    intensity = Intensity.parse(model.preprocessing.intensity)  # as the model was trained
    n = len(rows)
    probs = np.full((n, len(classes)), np.nan)
    errors: list[str | None] = [None] * n
    patients = [""] * n  # DICOM PatientIDs
    parts = [""] * n  # "training" or "test split": an image of the model's own run
    kinds = np.full((n, 3), "", dtype=object)  # format, mode, size: the shortcut check's
    grey = np.zeros(n, bool)  # the image as read was grey

    def load(i: int) -> Decoded | str:
        try:
            raw = rows.at[i, "bytes"] if "bytes" in rows else None
            if raw is None:
                raw = Path(rows.at[i, "path"]).read_bytes()
            return decode(bytes(raw), size, intensity)
        except Exception as e:  # one broken file never stops the others
            return reason(e)

    # Pillow releases the GIL while it decodes and resizes, so threads decode in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, n, BATCH):
            good, images = [], []
            batch = range(start, min(n, start + BATCH))
            for i, d in zip(batch, pool.map(load, batch), strict=True):
                if isinstance(d, str):
                    errors[i] = d
                    continue
                good.append(i)
                patients[i] = d.patient
                images.append(_to_model_channels(d.image, d.grey, channels))
                if seen is not None:
                    parts[i] = seen.part(d.hash, images[-1])
                kinds[i] = d.format, d.mode, d.size
                grey[i] = d.grey
            if not good:
                continue
            if seen is not None:  # a re-encoded or rescaled copy: no exact match
                unmatched = [k for k, i in enumerate(good) if not parts[i]]
                near = (
                    seen.near_parts(np.stack([images[k] for k in unmatched])) if unmatched else []
                )
                for k, part in zip(unmatched, near, strict=True):
                    parts[good[k]] = part
            # read as training read its files: none of predict_proba's array warnings
            p = model.predict_proba_tensor(model.prepare(np.stack(images)))
            if p.ndim == 1:  # binary: the positive class's probability
                pos = model.positive_class
                p = np.stack([1 - p, p] if pos == 1 else [p, 1 - p], axis=1)
            probs[good] = p
    bad = [i for i, e in enumerate(errors) if e is not None]
    if bad and not skip_bad:
        where = rows["path"].where(rows["path"].notna(), rows["id"])
        raise DataError(
            list_bad_files([(where[i], str(errors[i])) for i in bad], n)
            + "\nFix or remove them, or pass --skip-bad-images to predict the others (they "
            "are then kept with their reason in the 'error' column)."
        )
    if len(bad) == n:
        raise DataError(f"none of the {n} images of '{data}' could be read.")
    ok = np.array([e is None for e in errors])
    # as a search groups a DICOM folder: by PatientID, before any patient subfolders;
    # a placeholder (ANONYMOUS, 0) as a blank one
    ids, placeholders = without_placeholders([p or "" for p in patients])
    then: str | None = None  # what became of images with a placeholder, where it matters
    risk: str | None = "one patient's images may then count as several in the per-patient AUC"
    asked = (group_column or "").startswith(Columns.FOLDER_LEVEL)  # folder:N wins, as in a search
    if not asked and (rows["group"].isna().all() or inputs.labels_from == "folder"):
        if (ids != "").any():
            # an image without a PatientID in a patient subfolder is that subfolder's
            folders = patient_subfolders(rows["group"], rows["id"])
            groups = dicom_patients(list(ids), rows["id"].astype(str).tolist(), list(folders))
            inputs = dataclasses.replace(inputs, rows=rows.assign(group=groups))
            anonymised = np.isin([p or "" for p in patients], list(placeholders))
            then = placeholder_fate(folders[anonymised] != "", alone="patient")
        elif rows["group"].notna().any():
            then = BY_SUBFOLDERS_INSTEAD
        else:
            then, risk = "no per-patient AUC", None
    metrics, notes = _metrics(inputs, probs, ok, model)
    notes += _colour_notes(model, grey[ok])
    notes += _intensity_notes(model, kinds[ok, 1])
    notes += _size_notes(model, kinds[ok, 2])
    if metrics is not None and placeholders and then is not None:
        notes.append(placeholder_note(placeholders, then, risk))
    if metrics is not None:  # two sources, one per class, would score the source
        labels = inputs.rows["label"][ok].to_numpy(str)
        props = dict(zip(("format", "mode", "size"), kinds[ok].T, strict=True))
        notes += shortcut_notes(labels, props, use="score")
    if point is not None and len(classes) == 2:
        notes = [_rule_rates(model, point), *notes]
    elif point is not None:
        notes = [multi_class_note(len(classes), point), *notes]
    table = _table(inputs, probs, errors, model)
    if seen is not None:
        table.insert(table.columns.get_loc("prediction") + 1, "seen", parts)
        warning = seen_note(table.loc[ok, "seen"])
        notes = [warning, *notes] if warning else notes
        if metrics is not None:
            looked_for = [*PARTS.values(), *(kind + NEAR for kind in PARTS.values())]
            metrics["seen"] = {  # None: near copies not looked for (an older record)
                kind: None
                if kind.endswith(NEAR) and seen.thumbs is None
                else int((table.loc[ok, "seen"] == kind).sum())
                for kind in looked_for
            }
        if seen.thumbs is None:
            notes.append(
                "near copies of the run's images not looked for: its "
                f"{SEEN_FILE} was saved by a raydx from before their thumbnails, so column "
                "'seen' marks exact copies only"
            )
    if unseen_note:
        notes.append(unseen_note)
    if inputs.passed_over:
        notes.append(inputs.passed_over)
    return Predictions(table, metrics, model, notes)


def _rule_rates(model: DiagnosisModel, point: OperatingPoint) -> str:
    """What a rule re-chosen at predict time gives out of fold: on the rows it was chosen
    on (where its target holds exactly) and, where the model folder keeps the recipe,
    cross-fitted (``raydx.cross_fit``), the estimate for images it was not chosen on."""
    from raydx.cross_fit import cross_fitted_scores
    from raydx.metrics import rates

    oof = model.oof
    assert oof is not None  # at_operating_point needs it
    y, p = oof["is_positive"].to_numpy(bool), oof["prob"].to_numpy(float)
    sens, spec = rates(y, p, model.threshold)
    line = f"{point} out of fold: sensitivity {_num(sens)}, specificity {_num(spec)}"
    params = model.config.get("params")
    if params is None or oof["fold"].nunique() < 2:  # hand-made folders
        return line
    per_fold = (model.config.get("member_calibration") or {}).get("method")
    c = cross_fitted_scores(params, y, p, oof["fold"].to_numpy(), point, per_fold=per_fold)
    return (
        f"{line}; cross-fitted (chosen on the other folds): sensitivity "
        f"{_num(c['sensitivity'])}, specificity {_num(c['specificity'])}"
    )


def _table(
    inputs: Inputs, probs: np.ndarray, errors: list[str | None], model: DiagnosisModel
) -> pd.DataFrame:
    classes = model.class_names
    rows = inputs.rows
    out = rows[["id"]].copy()
    if rows["path"].notna().any():
        out["path"] = rows["path"]
    if rows["label"].notna().any():
        out["label"] = rows["label"]
    for c, name in enumerate(classes):
        out[f"prob_{name}"] = probs[:, c]
    ok = ~np.isnan(probs[:, 0])
    if len(classes) == 2:
        pos = model.positive_class
        hit = probs[:, pos] >= model.threshold
        pred = np.where(hit, pos, 1 - pos)
    else:
        pred = np.nan_to_num(probs, nan=-1.0).argmax(1)
    out["prediction"] = [classes[k] if good else None for k, good in zip(pred, ok, strict=True)]
    if not ok.all():
        out["error"] = errors
    # A manifest's own columns keep their values; one whose name the output uses (a
    # previous output fed back in, say) is kept as input_<name>.
    taken = set(out.columns) | set(OUTPUT_COLUMNS)
    extra = inputs.extra.rename(
        columns=lambda c: f"input_{c}" if c in taken or str(c).startswith("prob_") else c
    )
    return pd.concat([out, extra], axis=1)


def _metrics(
    inputs: Inputs, probs: np.ndarray, ok: np.ndarray, model: DiagnosisModel
) -> tuple[dict[str, Any] | None, list[str]]:
    """The test-split summary on these images, if every readable one has a known class,
    and why not otherwise.

    A folder's subfolders that are not the model's classes (say, one folder per
    patient) are no labels; a manifest's labels must be the model's classes, or the
    user is told which label is not one.
    """
    labels = inputs.rows["label"][ok]
    classes = model.class_names
    if inputs.labels_from is None or labels.isna().all():
        return None, [inputs.note] if inputs.note else []
    if labels.isna().any():
        return None, [f"no metrics: images without a label: {int(labels.isna().sum())}"]
    unknown = sorted(set(labels) - set(classes))
    meant = misspelling_of(unknown[0], classes) if unknown else None
    ask = f" (did you mean {meant!r}?)" if meant else ""
    outside: list[str] = []
    if unknown and inputs.labels_from == "folder":
        known = labels.isin(classes)
        if meant or labels[known].nunique() < 2:
            return None, [
                f"no metrics: subfolder {unknown[0]!r} is not one of the model's classes "
                f"{classes}{ask}"
            ]
        # an external set with a class the model does not know: score the ones it does
        n_out = int((~known).sum())
        outside = [
            f"metrics on the {int(known.sum())} images of the model's classes; "
            f"{count(n_out, 'image')} in subfolder{'s' * (len(unknown) > 1)} "
            + ", ".join(repr(u) for u in unknown)
            + ", not a class of the model, predicted but not scored"
        ]
        ok = ok & inputs.rows["label"].isin(classes).to_numpy()
        labels = inputs.rows["label"][ok]
    elif unknown:  # checked before predicting; here for labels missing on unread rows only
        _refuse_unknown_labels(labels, inputs.label_column, classes)
    index = {c: i for i, c in enumerate(classes)}
    y = labels.map(index).to_numpy(np.int64)
    p = probs[ok]
    pos = model.positive_class
    prob = p[:, pos] if len(classes) == 2 else p
    groups = inputs.rows["group"][ok]
    # with a patient for every image, the AUC's interval resamples patients, not images
    patients = groups.to_numpy(str) if groups.notna().all() else None
    metrics = diagnosis_metrics(
        y, prob, positive=pos, threshold=model.threshold, groups=patients, class_names=classes
    )
    metrics["positive_class"] = classes[pos]
    refit = str(model.config.get("combine", "")).startswith("one model refit")
    metrics["threshold_source"] = threshold_source(model.threshold_rule, refit)
    notes: list[str] = []
    if model.prevalence is not None:  # what the probabilities (and calibration) assume
        metrics["prevalence"] = model.prevalence
        notes += _other_mix(y == pos, model.prevalence, classes[pos])
    if patients is not None:
        metrics |= patient_metrics(y, prob, patients, positive=pos)
    elif groups.notna().any():
        notes.append(f"no patient-level AUC: images without a patient: {int(groups.isna().sum())}")
    held = sorted(set(y.tolist()))
    if len(classes) > 2 and 2 <= len(held) < len(classes):  # the mean of the classes held
        missing = [classes[c] for c in range(len(classes)) if c not in held]
        notes.append(
            f"the AUC is the macro mean over the {len(held)} classes these labels hold, of "
            f"the model's {len(classes)}: no image is labelled "
            + ", ".join(repr(c) for c in missing)
        )
    warnings = [f"WARNING: {w}" for w in scored_warnings(metrics)]
    return metrics, outside + warnings + notes


def as_class_numbers(labels: pd.Series, classes: Sequence[str]) -> pd.Series:
    """Labels that are numbers, read as the model's class of the same value where they
    are not written as its name: a model trained on ``0.0``/``1.0`` (runs before labels
    were read as whole numbers) scores labels ``0``/``1``, as read now, and the other
    way round. Numbers are read as the search reads labels (``labels.label_number``).
    Other labels stay as they are."""
    by_value: dict[float, list[str]] = {}
    for c in classes:
        v = label_number(c)
        if v is not None:
            by_value.setdefault(v, []).append(c)
    if not by_value:
        return labels
    known = set(classes)

    def match(label: object) -> object:
        if not isinstance(label, str) or label in known:
            return label
        v = label_number(label)
        same = by_value.get(v, []) if v is not None else []
        return same[0] if len(same) == 1 else label

    return labels.map(match)


def _refuse_unknown_labels(labels: pd.Series, column: str | None, classes: list[str]) -> None:
    """A manifest's labels, every one given, must be the model's classes: a typo is an
    error, not a reason to skip the metrics (labels with one missing give none anyway)."""
    if labels.isna().any():
        return
    unknown = sorted(set(labels) - set(classes))
    if not unknown:
        return
    meant = misspelling_of(unknown[0], classes)
    ask = f" (did you mean {meant!r}?)" if meant else ""
    raise DataError(
        f"label {unknown[0]!r} (column {column!r}) is not one of the model's classes "
        f"{classes}{ask}; fix the labels or pass --label-column for another column."
    )


def _other_mix(is_pos: np.ndarray, there: float, name: str) -> list[str]:
    """A note when labelled images are, beyond chance, another share of ``name`` than
    the ``there`` the probabilities are for: their calibration line then measures the mismatch (by
    design), not the model; the ranking, sensitivity and specificity are unaffected."""
    from scipy.stats import binomtest

    k, n = int(is_pos.sum()), len(is_pos)
    lo, hi = binomtest(k, n).proportion_ci(method="wilson")
    if lo <= there <= hi:
        return []
    # --prevalence takes a share strictly between 0 and 1: no mix of one class
    remedy = (
        f"--prevalence {k / n:.3g} maps them to these images' own mix"
        if 0 < k < n
        else "no --prevalence maps them to a set of one class"
    )
    return [
        f"these {n} labelled images are {k / n:.1%} {name!r} (95% CI {lo:.1%}-{hi:.1%}), "
        f"but the probabilities assume {there:.1%}: their calibration "
        f"line measures that difference too ({remedy})"
    ]


def check_output(output: str | Path, *, metrics: bool = True) -> list[Path]:
    """The files ``write_predictions`` would write (the metrics file only with
    ``metrics``), refused if one exists: checked before any image is read, and again
    before writing.

    Predictions are results: a second run into the same file must not quietly replace
    the first. A leftover ``<stem>.metrics.json`` is refused even for images without
    labels: beside the new table it would read as their scores.
    """
    out = Path(output).expanduser()
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise RaydxError(f"output must end in .csv or .parquet, but got output='{output}'.")
    scores = out.with_name(out.stem + ".metrics.json")
    check_writable(output, out.parent, "." + scores.name + ".tmp12345")
    for t in (out, scores):
        if t.exists():
            raise RaydxError(f"output '{t}' exists; pass another --output or remove it.")
    return [out, scores] if metrics else [out]


def write_predictions(pred: Predictions, output: str | Path) -> list[Path]:
    """``output`` (.csv or .parquet) and, with metrics, ``<stem>.metrics.json`` beside it,
    each written whole or not at all (a temporary file renamed over it): an interrupted
    write leaves no truncated table for the next run to refuse or a reader to trust."""
    targets = check_output(output, metrics=pred.metrics is not None)
    out, table = targets[0], pred.table
    if out.suffix.lower() == ".csv":
        atomic_write(out, lambda p: table.to_csv(p, index=False))
    else:
        atomic_write(out, lambda p: table.to_parquet(p, index=False))
    if pred.metrics is not None:
        write_json(pred.metrics, targets[1])
    return targets
