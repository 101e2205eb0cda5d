"""What a run trains on, decided once on the driver before the run folder is claimed:
the images (loaded, limited), the positive class, the test split and the folds, checked
against Ray's object store; ``load_pool`` gives the same to benchmarks without a search."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.config import RunOptions, TrialConfig
from raydx.data.duplicates import duplicate_notes, duplicate_sets, merged_groups
from raydx.data.files import Columns, names_a_column
from raydx.data.folds import (
    Splits,
    absent_test_note,
    few_in_folds_note,
    make_splits,
    split_summary,
    splits_frame,
)
from raydx.data.near_copies import FILE as NEAR_COPIES_FILE
from raydx.data.near_copies import (
    find_near_copies,
    joined_key,
    near_copy_notes,
    near_copy_pairs,
    on_splits,
)
from raydx.data.pipeline import Preprocessing
from raydx.data.shortcuts import fixed_place_notes
from raydx.data.sources import load_source, resolve_positive_class
from raydx.data.subset import limit_index
from raydx.data.table import ImageTable
from raydx.errors import RaydxError
from raydx.results import write_parquet
from raydx.run_folder import default_output, read_run_record, with_run_positive
from raydx.search import Resources, plan_on_cluster
from raydx.shared_storage import check_shared_output
from raydx.space import SearchSpace


def limit_rows(table: ImageTable, limit: int | None, seed: int) -> ImageTable:
    """A stratified subset (by official split and label), for quick runs and tests
    (``raydx.data.subset``; a folder or manifest was cut so before decoding)."""
    if limit is None or limit >= len(table):
        return table
    return table.subset(limit_index(table.labels, table.official_split, limit, seed, table.name))


@dataclass(frozen=True)
class Prepared:
    """Everything checked before the output folder is claimed."""

    table: ImageTable
    positive: int
    splits: Splits
    duplicates: pd.DataFrame  # sets of byte-identical images (see raydx.data.duplicates)
    resources: Resources  # what a trial holds, planned for the cluster (a refusal comes first)
    near_copies: pd.DataFrame = field(default_factory=pd.DataFrame)  # data.near_copies

    @property
    def notes(self) -> list[str]:
        """What the user should read before the search starts (loader, duplicates)."""
        return [
            *self.table.info.get("notes", []),
            *duplicate_notes(self.duplicates),
            *near_copy_notes(self.near_copies),
        ]


def prepare(opts: RunOptions, space: SearchSpace) -> Prepared:
    from raydx.ray_env import init_ray

    checked: list[bool] = []

    def start_ray() -> None:
        init_ray(opts.ray_address, log_to_driver=opts.verbose)
        if not checked:  # before decoding, which may take a while
            check_shared_output(opts.output or default_output())
            checked.append(True)

    columns = Columns(
        path=opts.path_column,
        label=opts.label_column,
        group=opts.group_column,
        split=opts.split_column,
    )
    # Image files are decoded by Ray Data: Ray starts once the listing has been read
    # and checked, so a wrong folder or column fails in a moment, not after Ray's start.
    source = load_source(
        opts.data,
        seed=opts.seed,
        image_size=opts.image_size,
        columns=columns,
        skip_bad=opts.skip_bad_images,
        before_decode=start_ray,
        intensity=opts.intensity,
        folds=opts.folds,
        limit=opts.limit,
    )
    table = with_fixed_place_notes(limit_rows(source, opts.limit, opts.seed), opts.seed)
    positive = resolve_positive_class(table, opts.positive_class)
    found = find_near_copies(table)
    splits = split_table(
        table,
        folds=opts.folds,
        seed=opts.seed,
        fold_seed=opts.fold_seed,
        test_fraction=opts.test_fraction,
        near=joined_key(found, len(table)) if opts.join_near_copies else None,
    )
    absent = absent_test_note(table.labels, splits, table.class_names)
    if absent:
        table = _with_notes(table, absent)
    few = few_in_folds_note(table, splits)
    if few:
        table = _with_notes(table, few)
    dups = duplicate_sets(table, splits.split == "test")  # each copy's side as drawn
    table = _checked_against_space(space, table)
    start_ray()
    check_fits(table, opts)
    plan = plan_on_cluster(opts, image_size=opts.image_size or table.image_size)
    near = near_copy_pairs(table, splits, found, joined=opts.join_near_copies)
    return Prepared(table, positive, splits, dups, plan, near)


def with_saved_splits(prep: Prepared, saved: pd.DataFrame, folds: int) -> Prepared | None:
    """``prep`` with a run's own splits (its ``splits.parquet``) in place of those drawn
    now: for ``--resume`` on the same images and labels where an older raydx drew its
    splits by other rules (a test split without a small class; patients grouped
    otherwise), so that the run's trials stay comparable. None where the saved rows are
    not this table's."""
    table = prep.table
    same_rows = len(saved) == len(table) and (
        saved["sample_id"].astype(str).tolist() == [str(i) for i in table.sample_ids]
        and np.array_equal(saved["label"].to_numpy(np.int64), table.labels)
    )
    if not same_rows:
        return None
    split = saved["split"].astype(str).to_numpy(object)
    fold = saved["fold"].fillna(-1).to_numpy(np.int64)
    if set(split) - {"cv", "test"} or set(fold[split == "cv"]) != set(range(folds)):
        return None
    if (fold[split == "test"] != -1).any():
        return None
    column = next((c for c in ("split_group", "group") if c in saved), None)
    groups = None if column is None else saved[column].astype(str).to_numpy(object)
    splits = Splits(split=split, fold=fold, k=folds, groups=groups)
    drawn = few_in_folds_note(table, prep.splits)  # said of the folds drawn now: not these
    if drawn:
        kept = [n for n in table.info.get("notes", []) if n != drawn]
        table = dataclasses.replace(table, info={**table.info, "notes": kept})
    absent = absent_test_note(table.labels, splits, table.class_names)  # an older draw's
    few = few_in_folds_note(table, splits)
    notes = [n for n in (absent, few) if n]
    return dataclasses.replace(
        prep,
        table=_with_notes(table, *notes) if notes else table,
        splits=splits,
        duplicates=duplicate_sets(table, split == "test"),
        near_copies=on_splits(prep.near_copies, table, splits),  # found once
    )


def _checked_against_space(space: SearchSpace, table: ImageTable) -> ImageTable:
    """The space's enqueued points built as their trials get them (with its constants),
    and the table with a note where the space offers what these data cannot train."""
    for i, point in enumerate(space.enqueue_points()):
        full = space.with_constants(point)
        ignored = sorted(set(point) - set(full))
        if ignored:  # a constant's when: or unless: leaves them out of this point's trial
            warnings.warn(
                f"enqueue[{i}]: {', '.join(ignored)} {'is' if len(ignored) == 1 else 'are'} "
                "not suggested for this point (a condition on the space's constants leaves "
                f"{'it' if len(ignored) == 1 else 'them'} out); its trial runs without.",
                UserWarning,
                stacklevel=2,
            )
        TrialConfig.from_params(full)
    anomaly = next((p for p in space.params if p.name == "ae_mode"), None)
    if (
        table.n_classes > 2
        and anomaly is not None
        and "anomaly" in (*anomaly.choices, anomaly.value)
    ):
        return _with_notes(table, _ANOMALY_NOTE)
    return table


# The anomaly-scoring autoencoder scores one class against the rest (a binary task).
_ANOMALY_NOTE = (
    "WARNING: the space offers ae_mode 'anomaly', which needs a binary task, and these data "
    "have more classes: each trial that draws it fails at once (before its fold workers "
    "start), and takes a place among --trials; for these data, search ae_mode over "
    "[classifier] alone."
)


def split_patients(table: ImageTable, splits: Splits) -> int:
    """How many of the table's patients lie in more than one fold, or in a fold and the
    test split (0 without patients)."""
    if table.groups is None:
        return 0
    place = pd.Series(splits.fold).where(splits.split == "cv", -1)
    return int((place.groupby([str(g) for g in table.groups]).nunique() > 1).sum())


def with_fixed_place_notes(table: ImageTable, seed: int) -> ImageTable:
    """The table, its notes joined by a warning for a patch at a fixed place (burnt-in
    text, a marker) that alone tells a class apart: in every source, on the images as the
    networks see them. Recorded in run.json, so the model card says it too."""
    found = fixed_place_notes(table.images, table.labels, table.class_names, seed=seed)
    if not found:
        return table
    return _with_notes(table, *found)


def _with_notes(table: ImageTable, *notes: str) -> ImageTable:
    """The table with ``notes`` after its own (recorded in run.json; the card says them)."""
    info = {**table.info, "notes": [*table.info.get("notes", []), *notes]}
    return dataclasses.replace(table, info=info)


def _official_test(table: ImageTable) -> np.ndarray | None:
    if table.official_split is not None and (table.official_split == "test").any():
        return table.official_split == "test"
    return None


def split_table(
    table: ImageTable,
    *,
    folds: int,
    seed: int = 0,
    fold_seed: int | None = None,
    test_fraction: float = 0.2,
    near: list[int | None] | None = None,
) -> Splits:
    """The test split and folds a run with these options draws for ``table``.

    The source's official test rows when it has them, else ``test_fraction`` held out;
    patients and exact copies (``merged_groups``) are kept whole, and near copies where
    ``near`` gives their components (``--join-near-copies``).
    """
    test_mask = _official_test(table)
    try:
        return make_splits(
            table.labels,
            folds=folds,
            seed=seed,
            test_mask=test_mask,
            test_fraction=test_fraction,
            groups=merged_groups(table, test_mask, near),
            class_names=table.class_names,
            fold_seed=fold_seed,
        )
    except RaydxError as e:
        if near is None or not any(k is not None for k in near):
            raise
        raise type(e)(
            f"{e} (near copies are joined into groups by --join-near-copies: drop it, or "
            "use fewer folds)"
        ) from None


@dataclass(frozen=True)
class CvPool:
    """A data source as a run's trials see it, for experiments outside a search."""

    table: ImageTable
    images: np.ndarray  # every row (test rows too), normalised as trials get them
    positive: int
    splits: Splits


def load_pool(
    data: str,
    *,
    folds: int = 5,
    seed: int = 0,
    fold_seed: int | None = None,
    test_fraction: float = 0.2,
    positive_class: str | None = None,
    image_size: int | None = None,
    limit: int | None = None,
    columns: Columns | None = None,
    skip_bad: bool = False,
    intensity: str = "auto",
    join_near_copies: bool = False,
) -> CvPool:
    """Load ``data`` and draw the splits as ``raydx tune`` with the same options would
    (``bench/`` uses it to re-train configurations as plain fold loops, without Ray;
    ``pool_options`` gives a run's own). Image folders and manifests are decoded by
    Ray Data, which starts a local Ray if none is running."""
    from raydx.data.pipeline import normalise_batch

    source = load_source(
        data,
        seed=seed,
        image_size=image_size,
        columns=columns,
        skip_bad=skip_bad,
        intensity=intensity,
    )
    table = limit_rows(source, limit, seed)
    near = joined_key(find_near_copies(table), len(table)) if join_near_copies else None
    splits = split_table(
        table,
        folds=folds,
        seed=seed,
        fold_seed=fold_seed,
        test_fraction=test_fraction,
        near=near,
    )
    prep = Preprocessing(image_size or table.image_size, table.channels)
    return CvPool(
        table=table,
        images=normalise_batch(table.images, prep),
        positive=resolve_positive_class(table, positive_class),
        splits=splits,
    )


def older_folder_group(options: dict[str, Any], log: Callable[[str], object]) -> dict[str, Any]:
    """A run's saved options, with a manifest column name given as ``--group-column`` for
    an image folder dropped: raydx ignored it there before December 2026 (the folder's
    patient subfolders grouped the folds), and refuses it now; the run is re-made as it
    was."""
    group, data = options.get("group_column"), options.get("data")
    if not names_a_column(group) or not isinstance(data, str):
        return options
    if not Path(data).expanduser().is_dir():
        return options
    log(
        f"raydx: warning: the run's --group-column {group!r} names a manifest column, which "
        f"an image folder does not have; an older raydx ignored it (the folder's patient "
        "subfolders grouped the folds), and so does this run"
    )
    return {**options, "group_column": None}


def pool_options(run_dir: str | Path) -> dict[str, Any]:
    """``load_pool``'s arguments for the images and folds a run trained on, from its
    ``run.json`` (a relative ``data`` path is relative to where the run was started)."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RaydxError(f"run_dir must be a raydx run folder with run.json, but got {path}.")
    defaults = {f.name: f.default for f in dataclasses.fields(RunOptions)}
    run = read_run_record(path, "the run record of run_dir")
    o = defaults | run["options"]  # older runs lack newer options
    o = with_run_positive(older_folder_group(o, lambda line: None), run)
    columns = Columns(
        path=o["path_column"],
        label=o["label_column"],
        group=o["group_column"],
        split=o["split_column"],
    )
    keys = ("data", "folds", "seed", "fold_seed", "test_fraction", "positive_class")
    return {k: o[k] for k in keys} | {
        "image_size": o["image_size"],
        "limit": o["limit"],
        "columns": columns,
        "skip_bad": o["skip_bad_images"],
        "intensity": o["intensity"],
        "join_near_copies": o["join_near_copies"],
    }


def check_fits(table: ImageTable, opts: RunOptions) -> None:
    """The normalised CV pool lives in Ray's object store; say so if it cannot fit."""
    import ray

    side = opts.image_size or table.image_size
    need = len(table) * table.channels * side * side * 4
    store = ray.cluster_resources().get("object_store_memory", 0.0)
    if store and need > 0.5 * store:
        raise RaydxError(
            f"the normalised images need {_gib(need)} GiB, more than half of Ray's object "
            f"store ({_gib(store)} GiB); lower --image-size (now {side}), use --limit, or "
            "start Ray with a larger object store (`ray start --head --object-store-memory "
            "BYTES`) and join it (--ray-address auto)."
        )


def _gib(n: float) -> str:
    return f"{n / 2**30:.3g}"


def write_data_records(prep: Prepared, out: Path) -> None:
    """splits.parquet, split_summary.csv, and the lists of bad files and duplicates."""
    table, splits = prep.table, prep.splits
    write_parquet(splits_frame(table, splits), out / "splits.parquet")
    split_summary(table, splits).to_csv(out / "split_summary.csv", index=False)
    bad = table.info.get("bad")
    if bad is not None and len(bad):
        bad.to_csv(out / "bad_images.csv", index=False)
    if len(prep.duplicates):
        prep.duplicates.to_csv(out / "duplicates.csv", index=False)
    if len(prep.near_copies):
        prep.near_copies.to_csv(out / NEAR_COPIES_FILE, index=False)
