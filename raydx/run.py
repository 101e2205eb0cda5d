"""``raydx tune`` as a library call: data -> folds -> trials -> winner -> test -> report."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydx.config import SPACE_RUN_KEYS, RunOptions
from raydx.data.folds import split_summary, splits_frame
from raydx.data.ingest import DEFAULT_MAX_SIZE
from raydx.data.intensity import intensity_note, modes_of
from raydx.data.near_copies import without_copies_text
from raydx.data.pipeline import Preprocessing, materialise
from raydx.data.sources import is_synthetic
from raydx.data.table import FINGERPRINT_VERSION, ImageTable
from raydx.errors import RaydxError, count
from raydx.lookup import lookup
from raydx.metrics import (
    ci_by_text,
    multi_class_positive,
    patient_auc_text,
    winner_warnings,
)
from raydx.operating_point import multi_class_note, threshold_text
from raydx.prepare import (
    Prepared,
    older_folder_group,
    prepare,
    split_patients,
    with_saved_splits,
    write_data_records,
)
from raydx.prior import anomaly_scores
from raydx.results import (
    FINAL,
    RESUMING,
    ResultsWriter,
    write_json,
    write_yaml,
)
from raydx.run_folder import (
    LOCK,
    absolute_data,
    check_output_free,
    check_output_location,
    check_output_not_data,
    check_saved_data,
    check_space_unchanged,
    check_writable,
    claim_output,
    is_finished,
    other_raydx,
    other_raydx_text,
    provenance,
    read_run_record,
    sha256_of,
    take_lock,
    with_run_positive,
)
from raydx.search import Resources
from raydx.space import SearchSpace, load_space

_SPACES = Path(__file__).resolve().parent.parent / "search_spaces"  # a checkout
_INSTALLED_SPACES = Path(sys.prefix) / "share" / "raydx" / "search_spaces"  # pip install .
DEFAULT_SPACE = next(
    (d / "cnn.yaml" for d in (_SPACES, _INSTALLED_SPACES) if (d / "cnn.yaml").is_file()),
    _SPACES / "cnn.yaml",
)
SPACE_COPY = "space.yaml"


class SearchInterrupted(RaydxError):
    """The search stopped before every trial finished (Ctrl-C, a killed driver)."""


@dataclass(frozen=True)
class RunResult:
    """What ``tune``, ``cross_validate`` and ``resume`` return; the files in ``output``
    hold the same and more (results.parquet, report.html, model/)."""

    output: Path  # the run folder
    trials: pd.DataFrame  # one row per trial, as trials.parquet
    best: dict[str, Any]  # the winner: trial_id, params and CV metrics, as best.yaml
    test_metrics: dict[str, Any] | None  # None: the test split was not scored (score_test)
    wall_time_s: float


def resolve_options(space: SearchSpace, overrides: dict[str, Any]) -> RunOptions:
    """Defaults <- the space file's ``run:`` section <- explicit overrides (CLI flags)."""
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    merged: dict[str, Any] = {k: v for k, v in space.run_defaults().items() if k in SPACE_RUN_KEYS}
    for k, v in overrides.items():
        lookup(k, fields, "run option")
        if v is not None:
            merged[k] = v
    if isinstance(merged.get("data"), (str, os.PathLike)):
        # run.json keeps a file source as an absolute path: cv and --resume read it anywhere
        merged["data"] = absolute_data(os.fspath(merged["data"]))
    return RunOptions(**merged)


def tune(
    space: str | Path | SearchSpace | None = None,
    *,
    log: Callable[[str], object] = print,
    **overrides: Any,
) -> RunResult:
    """Run a whole search. Keyword overrides are :class:`RunOptions` fields (the CLI's
    flags, with underscores); None leaves the space file's ``run:`` value or the default.
    ``log`` receives each console line.

    Example: ``tune("search_spaces/cnn.yaml", data="synthetic", trials=2, epochs=2)``.
    """
    t_start = time.perf_counter()
    if not isinstance(space, SearchSpace):
        space = load_space(space or DEFAULT_SPACE)
    opts = resolve_options(space, {**overrides, "space": Path(space.path) if space.path else None})
    space = space.with_default("family", opts.family)
    # Everything the user can get wrong is checked before the output folder is claimed.
    check_output_location(opts.output)
    check_output_not_data(opts.output, opts.data)
    check_output_free(opts.output)
    if opts.output is not None:  # made only after the data are prepared
        check_writable(opts.output, Path(opts.output).parent, Path(opts.output).name)
    prep = prepare(opts, space)
    out = claim_output(opts.output)
    opts = opts.replace(output=out)
    try:
        write_json(provenance(opts, space, prep.table, prep.positive), out / "run.json")
        write_yaml(space.to_dict(), out / SPACE_COPY)
        write_data_records(prep, out)
        return _run(opts, space, prep, out, log, t_start, resume=False)
    finally:
        (out / LOCK).unlink(missing_ok=True)


# What re-checking a run's winner keeps of that run: its data, split and schedule. Its
# search options (trials, scheduler, budget) and the machine's resources do not apply.
CV_KEPT_OPTIONS = (
    "data",
    "family",
    "folds",
    "epochs",
    "seed",
    "fold_seed",
    "test_fraction",
    "positive_class",
    "image_size",
    "intensity",
    "limit",
    "final",
    "operating_point",
    "path_column",
    "label_column",
    "group_column",
    "split_column",
    "skip_bad_images",
    "join_near_copies",
)
_SEARCH_ONLY = (
    "space",
    "trials",
    "scheduler",
    "sampler",
    "grace_period",
    "max_concurrent_trials",
    "time_budget_min",
)


def cross_validate(
    config: str | Path | dict[str, Any], *, log: Callable[[str], object] = print, **overrides: Any
) -> RunResult:
    """Cross-validate one fixed configuration (``raydx cv --config RUN/best.yaml``).

    A run of one trial whose every parameter is fixed, with the folds, workers, results,
    test scoring and report of ``tune``. Given a run's ``best.yaml``, that run's data,
    split and schedule are the defaults, so ``fold_seed=1`` re-checks its winner on
    folds it was not chosen on while the test split stays the run's own, and
    ``score_test=False`` leaves that test split unlooked at. ``config`` may also be a
    YAML file or a mapping of parameter values.
    """
    for k in overrides:  # before anything is logged
        lookup(k, [f.name for f in dataclasses.fields(RunOptions)], "run option")
    for k in _SEARCH_ONLY:
        if overrides.get(k) is not None:
            raise RaydxError(
                f"cross_validate runs one fixed configuration; {k}={overrides[k]!r} is a "
                f"search option. Drop it, or use tune."
            )
    src = "<dict>"
    defaults: dict[str, Any] = {}
    defaults_run = False  # the config is a run's (run.json beside it)
    if isinstance(config, dict):
        doc: Any = config
    else:
        path = Path(config)
        if path.is_dir() and (path / "best.yaml").is_file():  # a run folder: its winner
            path = path / "best.yaml"
        src = str(path)
        if path.is_dir():
            raise RaydxError(
                f"config '{path}' is a folder without a best.yaml; give a run's best.yaml "
                "(or its run folder)."
            )
        if not path.is_file():
            raise RaydxError(f"config '{path}' does not exist (give a run's best.yaml).")
        from raydx.space import read_yaml

        doc = read_yaml(path, f"config {src!r}")
        saved_run = path.parent / "run.json"
        if saved_run.is_file():
            # a run's own best.yaml, as written; another file beside it is the user's
            defaults_run = path.name == "best.yaml"
            record = read_run_record(saved_run, "the run record beside this config")
            other = other_raydx_text(record) if defaults_run else None
            if other:
                log(f"raydx: warning: {other}")
            saved = older_folder_group(record["options"], log)
            if overrides.get("data") is None:  # other data may have other class names
                saved = with_run_positive(saved, record)
            defaults = {k: saved[k] for k in CV_KEPT_OPTIONS if saved.get(k) is not None}
        elif isinstance(doc, dict) and "trial_id" in doc and overrides.get("data") is None:
            # a run's best.yaml copied away from its run: 'synthetic' is not its data
            raise RaydxError(
                f"config '{src}' is a run's best.yaml (trial {doc['trial_id']}), but no "
                "run.json lies beside it to give the run's data, split and schedule; give "
                "the run folder, or pass --data (and the run's --folds and --epochs)."
            )
    params = doc.get("params", doc) if isinstance(doc, dict) else doc
    if not isinstance(params, dict) or not params:
        got = (
            "an empty file"
            if params is None
            else f"params={params!r}"
            if isinstance(params, dict)
            else f"a {type(params).__name__} ({str(params)[:60]!r})"
        )
        raise RaydxError(
            f"config '{src}' must map parameter names to values (a run's best.yaml has them "
            f"under 'params'), but got {got}."
        )
    ranged = [k for k, v in params.items() if isinstance(v, dict)]
    if ranged:
        raise RaydxError(
            f"config '{src}' holds a search space (parameter {ranged[0]!r} is a range or a "
            f"choice); give fixed values, such as a run's best.yaml, or use tune."
        )
    from raydx.space import parse_space

    run: dict[str, Any] = {"trials": 1, "scheduler": "none"}
    if isinstance(params.get("family"), str):  # another is refused as params.family
        run["family"] = params["family"]
    # The path is recorded (run.json's space), so that the model card can tell a search's
    # winner re-checked on its own folds from one re-checked on others.
    where = None if src == "<dict>" else str(Path(src).resolve())
    # A run's own best.yaml (run.json beside it) is a record that an older raydx may have
    # accepted: the branch check warns instead of refusing (raydx.space.parse_space).
    space = parse_space(
        {"run": run, "params": params}, source=src, path=where, strict=not defaults_run
    )
    given = {k: v for k, v in overrides.items() if v is not None}
    if defaults:
        log(f"raydx: data, split and schedule of the run in {Path(src).parent} (flags override)")
        seed = given.get("seed", defaults.get("seed"))
        if seed != defaults.get("seed"):
            log(f"raydx: warning: {_other_seed_text(seed, defaults.get('seed'), defaults | given)}")
    if "data" not in given:
        check_saved_data(defaults.get("data"), Path(src).parent / "run.json", ", or pass --data")
    merged = {k: v for k, v in defaults.items() if k != "family" or "family" not in params}
    merged.update(given)
    log(f"raydx: cross-validating the configuration in {src}")
    return tune(space, log=log, **merged)


def _other_seed_text(seed: int | None, run_seed: int | None, options: dict[str, Any]) -> str:
    """What a re-check's other seed draws anew besides the training: the seed draws a
    ``--limit`` subset and generated images too, so most images may not be the run's
    (an audit: 47 of 200 in common, 11 of 40 test images, with an official test split)."""
    drawn = []
    if options.get("limit") is not None:
        drawn.append(f"the --limit subset of {options['limit']} images")
    if is_synthetic(options.get("data")):
        drawn.append("the generated images themselves")
    if drawn:
        return (
            f"seed={seed} differs from the run's seed={run_seed}; it draws anew "
            f"{' and '.join(drawn)}, so most images, the test split's included, are not "
            "those the configuration was chosen and scored on: this run's figures do not "
            "compare with the run's. fold_seed re-draws only the folds."
        )
    return (
        f"seed={seed} differs from the run's seed={run_seed}; unless the data "
        "has an official test split, the test split is drawn anew and may hold images "
        "this configuration was chosen on. fold_seed re-draws only the folds."
    )


def resume(
    run_dir: str | Path, *, verbose: bool | None = None, log: Callable[[str], object] = print
) -> RunResult:
    """Continue an interrupted search where it stopped (``raydx tune --resume RUN_DIR``).

    Finished trials stay as they are, unfinished ones continue from their last
    checkpoints, and the Optuna study (in ``study.db``) keeps its history. The run's
    saved options are used; ``verbose`` (the workers' logs on the console) changes only
    what is printed.
    """
    t_start = time.perf_counter()
    out = Path(run_dir).resolve()
    if not out.exists():
        raise RaydxError(f"resume path '{out}' does not exist (give a run folder).")
    if not out.is_dir():
        raise RaydxError(f"resume path '{out}' is a file; give its run folder ('{out.parent}').")
    if not (out / "run.json").is_file():
        raise RaydxError(f"resume path '{out}' holds no raydx run (no run.json).")
    run = read_run_record(out / "run.json", "the run's record that --resume continues from")
    # what a finished run's driver did not write before it died (built from its files)
    missing = None
    if is_finished(out, run):
        missing = [f for f in ("report.html", "model/README.md") if not (out / f).is_file()]
        if not missing:  # nothing to write: no lock either (a read-only copy)
            log(f"raydx: the run in {out} is finished; nothing to resume.")
            return _finished(out)
    take_lock(out)  # before the minutes of prepare(): a second resume is refused at once
    try:
        return _resume(out, run, missing, log, t_start, verbose)
    finally:
        (out / LOCK).unlink(missing_ok=True)


def _resume(
    out: Path,
    run: dict[str, Any],
    missing: list[str] | None,
    log: Callable[[str], object],
    t_start: float,
    verbose: bool | None,
) -> RunResult:
    if missing:  # finished, but the driver died after the test scoring
        from raydx.model_card import write_model_card
        from raydx.report import write_report

        write_report(out)
        write_model_card(out)
        log(
            f"raydx: the run in {out} is finished; wrote what its driver left out: "
            + ", ".join(missing)
        )
        return _finished(out)
    space = load_space(out / SPACE_COPY, strict=False)  # what this run searched
    check_space_unchanged(space, run.get("space") or {}, out / SPACE_COPY)
    other = other_raydx(run)
    if other:  # its winner is chosen across the trials of both
        log(
            f"raydx: warning: the search was started by {other[0]}, and this is {other[1]}: "
            "training may have changed between them, so the trials it adds may be trained "
            "otherwise than those it has; resume with the raydx that started it to keep "
            "one recipe."
        )
    fields = {f.name for f in dataclasses.fields(RunOptions)}
    saved = {k: v for k, v in older_folder_group(run["options"], log).items() if k in fields}
    saved = with_run_positive(saved, run)
    check_saved_data(saved.get("data"), out / "run.json")
    saved["space"] = out / SPACE_COPY
    saved["output"] = out
    if verbose is not None:
        saved["verbose"] = verbose
    opts = RunOptions(**saved)
    prep = prepare(opts, space)
    table, splits = prep.table, prep.splits
    digest = sha256_of(opts.data)
    if digest != run["data"]["sha256"]:
        raise RaydxError(
            f"data '{opts.data}' changed since the run started (sha256 {digest} != "
            f"{run['data']['sha256']}); a resumed search must see the same images."
        )
    compared = check_fingerprint(run["data"], table, opts.data, log)
    saved_splits = pd.read_parquet(out / "splits.parquet")
    now = splits_frame(table, splits)
    if not now[["sample_id", "fold"]].equals(saved_splits[["sample_id", "fold"]]):
        # kept only where the images were compared: else the folds are the only check
        kept = with_saved_splits(prep, saved_splits, opts.folds) if compared else None
        if kept is None:
            raise RaydxError(f"the folds of '{opts.data}' differ from those saved in {out}.")
        split = split_patients(kept.table, kept.splits)
        log(
            "raydx: warning: this raydx draws another test split or other folds for these "
            "images than the raydx that began the run (its rules changed: a test split "
            "holds every class; images without a DICOM PatientID join their patient "
            "subfolder); the run's own, in splits.parquet, are kept, so that its trials "
            "stay comparable"
            + (
                f"; by today's rules {count(split, 'patient')} of them lie on both sides of "
                "a fold or of the test split: a new run would keep them whole"
                if split
                else ""
            )
        )
        prep = kept
    log(f"raydx: resuming the search in {out}")
    return _run(opts, space, prep, out, log, t_start, resume=True)


def check_fingerprint(
    saved: Mapping[str, Any], table: ImageTable, data: str, log: Callable[[str], object]
) -> bool:
    """Refuse to resume on other images or labels than the run's (``saved``: run.json's
    data block); whether they were compared. A fingerprint made by an older raydx
    (another ``FINGERPRINT_VERSION``), or none, cannot be: a warning says so, and the run
    goes on, its folds then the only check."""
    fp = saved.get("fingerprint")
    if fp is None:
        return False
    if fp == table.fingerprint():  # the same data (most images hash alike)
        return True
    if saved.get("fingerprint_version", 1) != FINGERPRINT_VERSION:
        log(
            f"raydx: warning: the images of '{data}' cannot be checked against the run's: "
            "its fingerprint was made by an older raydx, which read some images (or "
            "labels) into other values. Going on without that check (the folds are "
            "still compared)."
        )
        return False
    passed = [n for n in table.info.get("notes", []) if " passed over " in n]
    if passed:  # raydx.data.files: masks and run folders an older raydx took for images
        raise RaydxError(
            f"the images of '{data}' are not the run's: this raydx passes over what an "
            f"older one took for images ({'; '.join(n.split(' (')[0] for n in passed)}), "
            "so the run cannot be resumed on them; start a new run."
        )
    raise RaydxError(
        f"the images or labels of '{data}' changed since the run started; a resumed "
        "search must see the same data."
    )


def _finished(out: Path) -> RunResult:
    best = yaml.safe_load((out / "best.yaml").read_text())
    scores = out / "test_metrics.json"
    test = json.loads(scores.read_text()) if scores.is_file() else None
    return RunResult(out, pd.read_parquet(out / "trials.parquet"), best, test, 0.0)


def _run(
    opts: RunOptions,
    space: SearchSpace,
    prep: Prepared,
    out: Path,
    log: Callable[[str], object],
    t_start: float,
    *,
    resume: bool,
) -> RunResult:
    import ray
    from ray import tune as rtune

    from raydx.data.sources import positive_class_reason
    from raydx.ray_env import init_ray
    from raydx.search import milestone_epochs
    from raydx.shared_storage import mark_run_folder
    from raydx.study import close_stale_trials

    table, splits, positive = prep.table, prep.splits, prep.positive
    summary = split_summary(table, splits)
    log(
        f"raydx: {table.name}: {len(table)} images, classes {list(table.class_names)}, "
        f"positive class {table.class_names[positive]!r} "
        f"({positive_class_reason(table, opts.positive_class, positive, resume)}); "
        f"{opts.folds} folds"
    )
    log(summary.astype({"fold": object}).fillna({"fold": "-"}).to_string(index=False))
    if table.info.get("modes"):
        info = table.info
        modes = ", ".join(f"{n} {m}" for m, n in info["modes"].items())
        sizes = ", ".join(f"{n} of {wh}" for wh, n in list(info["sizes"].items())[:5])
        more = f" and {len(info['sizes']) - 5} other sizes" if len(info["sizes"]) > 5 else ""
        side = info["image_size"]
        why = (
            f" (by default the median shorter side, at most {DEFAULT_MAX_SIZE}; "
            "--image-size sets it)"
            if opts.image_size is None
            else ""
        )
        log(
            f"raydx: decoded {info['images']} images in {info['seconds']:.1f} s: modes {modes}; "
            f"sizes {sizes}{more}; resized to {side}x{side}{why}, "
            f"{info['channels']} channel(s)"
        )
    scaling = intensity_note(opts.intensity, modes_of(table.info))
    if scaling:
        log(f"raydx: {scaling}")
    for note in prep.notes:
        log(f"raydx: {note}")

    # Tune snapshots its experiment (trials, searcher) at most this often; a killed
    # driver resumes from the last snapshot, so keep it fresh.
    set_snapshot_interval(opts.trials)
    ctx = init_ray(opts.ray_address, log_to_driver=opts.verbose)
    if ctx is not None and getattr(ctx, "dashboard_url", None):
        log(f"raydx: Ray dashboard at http://{ctx.dashboard_url}")
    res = prep.resources

    shape = Preprocessing(image_size=opts.image_size or table.image_size, channels=table.channels)
    x = materialise(table.images, shape)  # Ray Data: decode/normalise/shape
    cv_rows = np.flatnonzero(splits.split == "cv")
    pool = {
        "x": x[cv_rows],
        "y": table.labels[cv_rows].astype(np.int64),
        "fold": splits.fold[cv_rows].astype(np.int64),
        "row": cv_rows.astype(np.int64),
    }
    data_ref = ray.put(pool)
    del pool  # the object store holds it now; the driver keeps x for the final scoring
    spec = {
        "data_ref": data_ref,
        "folds": opts.folds,
        "epochs": opts.epochs,
        "seed": opts.seed,
        "n_classes": table.n_classes,
        "shape": (shape.channels, shape.image_size),  # for trial_fn's check of the network
        "positive": positive,
        "workers": res.workers,
        "cpus_per_worker": res.cpus_per_worker,
        "gpus_per_worker": res.gpus_per_worker,
        "threads": res.threads,
        "storage_path": str(out / "ray" / "train"),
        "run_marker": mark_run_folder(out),
        "checkpoint_every": opts.checkpoint_every,
        "report_interval_s": opts.report_interval_s,
        "report_epochs": milestone_epochs(opts),
        "max_failures": opts.max_failures,
    }
    writer = ResultsWriter(
        out,
        folds=opts.folds,
        epochs=opts.epochs,
        param_names=space.param_names(),
        param_values=space.param_values(),
        log=log,
    )
    if resume:
        writer.replay()
        # Tune's snapshot lags the record by up to TUNE_GLOBAL_CHECKPOINT_S: a trial that
        # ended (stopped by ASHA, say) just before the driver died is running there, and
        # would be trained on; trial_fn ends these at once.
        spec["finished"] = writer.finished()
    trainable = tune_trainable(spec)
    from raydx.resumable_search import limit_new_trials

    cap: int | None = None  # new trials a restored search may start (resumable_search)
    if resume:
        # The search algorithm (Optuna, its study in study.db), the scheduler and the
        # trials come back from the experiment folder; the writer from events.jsonl.
        RESUMING[:] = [(out, log)]
        experiments = _experiments(out)
        latest = out / "ray" / experiments[-1] if experiments else None
        snapshot = _snapshot(latest) if latest is not None else {}
        held = {tid for tid, status in snapshot.items() if status not in FINAL}
        gone = writer.abandon(held)
        if gone:
            log(
                f"raydx: {len(gone)} trial(s) had begun when the driver died, before Tune's "
                f"record of the search held them ({', '.join(gone)}); they cannot be "
                "continued, and others take their places"
            )
        missing = opts.trials - writer.counted()
        restoring = latest is not None and (bool(snapshot) or missing <= 0)
        resumed = {tid for tid in held if not writer.ended(tid)} if restoring else set()
        closed = close_stale_trials(out, resumed=resumed)
        if closed:
            log(
                f"raydx: closed {len(closed)} trial(s) of the Optuna study that the driver "
                "left running and no resumed trial continues (as failed)"
            )
        if restoring:
            # New trials: those the record lacks, less the snapshot's trials that had not
            # started (restored, they run without being new).
            cap = max(0, missing - sum(tid not in writer.trials for tid in held))
            tuner = rtune.Tuner.restore(
                str(latest),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        else:
            # Tune cannot restore an experiment in which no trial began (it logs an
            # IndexError and starts over): its trials go to a new experiment whose
            # searcher loads the same study, enqueued points included. With no
            # experiment at all, the driver died before the search began (preparing
            # the data, say): the search starts as a new one would.
            name = f"tune-{len(experiments) + 1}" if experiments else "tune"
            tuner = _new_tuner(trainable, space, opts, res, out, writer, name, missing)
    else:
        tuner = _new_tuner(trainable, space, opts, res, out, writer, "tune", opts.trials)
    log(
        f"raydx: {count(opts.trials, 'trial')} x {opts.folds} folds x "
        f"{count(opts.epochs, 'epoch')}; "
        f"{res.workers} worker(s) per trial with {res.cpus_per_worker:g} CPU"
        + (f" and {res.gpus_per_worker:g} GPU" if res.gpus_per_worker else "")
        + " each, "
        f"up to {res.max_concurrent_trials} trial(s) at once"
        + _waiting_text(res)
        + _memory_text(res)
        + (
            f"; time budget {opts.time_budget_min:g} min for the search (the winner's scoring "
            "and the report follow)"
            if opts.time_budget_min
            else ""
        )
        + scheduler_text(opts)
    )
    from raydx import budget
    from raydx.cleanup import free_search_placement_groups, job_placement_groups

    budget.arm(
        None if opts.time_budget_min is None else 60 * opts.time_budget_min, t_start, log=log
    )
    hide_tune_restore_hint()
    reserved_before, known_before = job_placement_groups(), job_placement_groups(False)
    ctrl_c = CtrlC()
    try:
        limit_new_trials(cap)
        with ctrl_c:
            tuner.fit()
        limit_new_trials(None)
        # The events log is the record (after a restore, Tune runs its own copy of the
        # writer): rebuild the tables from it.
        writer.replay()
        missing = opts.trials - writer.counted()
        if resume and _top_up_due(
            missing, bool(writer.unfinished()), budget.ended_search(), ctrl_c.caught
        ):
            # The driver died after Optuna was asked for a trial but before Tune's
            # snapshot held it: start the trials that never began, in a new experiment
            # whose searcher loads the same study (so TPE sees every finished trial).
            log(f"raydx: starting the {missing} trial(s) that had not begun")
            name = f"tune-{len(_experiments(out)) + 1}"
            tuner = _new_tuner(trainable, space, opts, res, out, writer, name, missing)
            with ctrl_c:
                tuner.fit()
            writer.replay()
    except KeyboardInterrupt:  # a second Ctrl-C cut Tune's own wind-down short
        writer.replay()
        writer.recover_unreported(out / "ray" / "train")
        writer.mark_unfinished()
        raise SearchInterrupted(
            _interrupted_text(
                writer.trial_rows(), opts.trials, out, space.fixed and opts.trials == 1
            )
        ) from None
    except RuntimeError as e:
        if not _killed_for_memory(e):
            raise
        # Ray's memory monitor killed a trial's own process in the middle of a call,
        # which Tune does not expect: it ends the search (an audit, at 25% of memory)
        writer.replay()
        writer.recover_unreported(out / "ray" / "train")
        writer.mark_unfinished()
        raise SearchInterrupted(
            _memory_killed_text(e, res)
            + _interrupted_text(
                writer.trial_rows(), opts.trials, out, space.fixed and opts.trials == 1
            )
        ) from None
    finally:  # normal end, error or Ctrl-C: free what the search's trials reserved
        RESUMING.clear()
        limit_new_trials(None)
        freed = free_search_placement_groups(reserved_before, known_before)
        if freed:
            log(f"raydx: freed {len(freed)} placement group(s) left by stopped trials")
    late = writer.recover_unreported(out / "ray" / "train")
    if late:
        log(
            f"raydx: {len(late)} trial(s) saved a checkpoint just before the interruption, "
            "too late to report it; nothing is lost: the record now names that checkpoint "
            "and the epochs it holds"
        )
    unfinished = writer.mark_unfinished()
    trials = writer.trial_rows()
    if _interrupted(
        bool(unfinished), ctrl_c.caught, opts.trials - writer.counted(), budget.ended_search()
    ):
        raise SearchInterrupted(
            _interrupted_text(trials, opts.trials, out, space.fixed and opts.trials == 1)
        )
    writer.prune_checkpoints(out / "ray" / "train")

    if budget.ended_search():
        silent = budget.silenced_trials()
        cut = budget.stopped_trials() - set(silent)
        quiet = (
            f"{len(silent)} had reported nothing for {min(silent.values()):.0f} s or more "
            "and were stopped, as happens when fold workers wait for resources that do not "
            f"come free: each trial asks for {res.workers} worker(s) of "
            f"{res.cpus_per_worker:g} CPU"
            + (f" and {res.gpus_per_worker:g} GPU" if res.gpus_per_worker else "")
            + ", and on a cluster `ray status` shows the demands that wait"
            if silent
            else ""
        )
        log(
            f"raydx: the time budget of {opts.time_budget_min:g} min ended the search after "
            f"{len(trials)} of {count(opts.trials, 'trial')}"
            + (
                f"; {len(cut)} stopped at the deadline, ranked on the epochs they finished"
                if cut
                else ""
            )
            + (f"; {quiet}" if quiet else "")
        )
        if not _scorable(trials):
            raise RaydxError(
                f"the time budget of {opts.time_budget_min:g} min ended the search before "
                f"any trial reported a CV AUC ({len(trials)} of {count(opts.trials, 'trial')} "
                "started); " + (f"{quiet}. There" if quiet else "there") + " is no winner "
                "to score, and the test split was not touched. "
                + ("Start a new run with " if resume else "Give the search ")
                + "more time (--time-budget-min), or fewer folds, epochs or images (a "
                "smaller --image-size shortens each epoch)."
            )
    try:
        return _results(opts, space, prep, x, trials, writer, out, log, t_start)
    except KeyboardInterrupt:  # the search is over; a resume scores and writes the rest
        raise SearchInterrupted(
            (
                "interrupted after the cross-validation, while its results were written (its "
                "one scoring on the test split, the report). Finish "
                if space.fixed and opts.trials == 1
                else "interrupted after the search, while its results were written (parameter "
                "importance, the winner's one scoring on the test split, the report); the "
                "winner is the one the search chose on the folds alone, whatever was scored. "
                "Finish "
            )
            + f"with: raydx tune --resume {shlex.quote(str(out))}"
        ) from None


def _results(
    opts: RunOptions,
    space: SearchSpace,
    prep: Prepared,
    x: np.ndarray,
    trials: pd.DataFrame,
    writer: Any,
    out: Path,
    log: Callable[[str], object],
    t_start: float,
) -> RunResult:
    """After the search: parameter importance, the winner's one scoring on the test
    split, the report and the model card."""
    from raydx.search import refit_resources

    table, splits, positive, res = prep.table, prep.splits, prep.positive, prep.resources
    from raydx.importance import (
        importance_line,
        param_importances,
        too_few_line,
        write_importance,
    )

    # Before finish, whose last file (test_metrics.json) marks the run finished: a
    # resume then finds every file but the report and the model card.
    said: list[str] = []
    try:  # an extra: a failure here must not cost the report and the model card
        importance = param_importances(trials, writer.configs(), space, seed=opts.seed)
    except Exception as e:
        importance = None
        said.append(
            f"raydx: warning: parameter importance was not computed ({type(e).__name__}: {e})"
        )
    else:
        if importance is None and (why := too_few_line(trials, writer.configs(), space)):
            said.append(why)
    if importance is not None:
        write_importance(importance, out)
        said.append(importance_line(importance))
    from raydx.final import finish

    best, test_metrics = finish(
        opts,
        table,
        splits,
        positive,
        x,
        trials,
        writer.configs(),
        out,
        refit_resources=refit_resources(res),
    )
    for line in threshold_warnings(opts.operating_point, table.n_classes, best):
        log(line)
    for warning in winner_warnings(best, test_metrics, anomaly=anomaly_scores(best["params"])):
        log(f"raydx: warning: {warning}")
    for line in said:
        log(line)
    wall = time.perf_counter() - t_start
    from raydx.model_card import write_model_card
    from raydx.report import write_report

    write_report(out)
    write_model_card(out)
    log(summary_table(trials, best, test_metrics, out, wall))
    return RunResult(out, trials, best, test_metrics, wall)


class _NoTuneRestoreHint(logging.Filter):
    """Drops Ray Tune's "Resume experiment with: Tuner.restore(...)" on an interrupted
    search: raydx says how to go on (``raydx tune --resume RUN``), and Tune's call
    would restore without raydx's results writer, study and folds."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Resume experiment with:" not in record.getMessage()


def hide_tune_restore_hint() -> None:
    tune_log = logging.getLogger("ray.tune.tune")
    if not any(isinstance(f, _NoTuneRestoreHint) for f in tune_log.filters):
        tune_log.addFilter(_NoTuneRestoreHint())


def _scorable(trials: pd.DataFrame) -> bool:
    """Whether any trial has a CV AUC to rank (what ``pick_winner`` needs)."""
    return "cv_auc_mean" in trials and bool(trials["cv_auc_mean"].notna().any())


def scheduler_text(opts: RunOptions) -> str:
    """Which scheduler may stop trials; said, since a grace period as long as the epochs
    turns early stopping off (cnn.yaml's 10 with --epochs 10)."""
    if opts.scheduler == "none":
        return "; every trial runs all its epochs (scheduler none)"
    if opts.epochs <= opts.grace_period:
        return (
            f"; no trial is stopped early: epochs={opts.epochs} is not above "
            f"grace_period={opts.grace_period}, so the {opts.scheduler} scheduler is off"
        )
    return f"; the {opts.scheduler} scheduler may stop a trial after epoch {opts.grace_period}"


def threshold_warnings(operating_point: str, n_classes: int, best: dict[str, Any]) -> list[str]:
    """What a user should hear about the chosen threshold before trusting it."""
    lines = []
    if n_classes > 2 and operating_point != "youden":
        lines.append(f"raydx: {multi_class_note(n_classes, operating_point)}")
    oof = best.get("oof") or {}
    for rate, side in (("sensitivity", "positive"), ("specificity", "negative")):
        if oof.get(rate) == 0.0:
            lines.append(
                f"raydx: warning: the threshold {best['threshold']:.4g} classes every "
                f"out-of-fold {side} image wrongly ({rate} 0); check --operating-point"
            )
    return lines


def _experiments(out: Path) -> list[str]:
    """Tune experiment folders of a run, oldest first: ``tune``, then top-ups ``tune-2``..."""
    names = [p.name for p in (out / "ray").glob("tune*") if p.is_dir()]
    return sorted(names, key=lambda n: 1 if n == "tune" else int(n.rsplit("-", 1)[1]))


def _snapshot(experiment: Path) -> dict[str, str]:
    """The trials of Tune's latest snapshot of an experiment (what ``Tuner.restore``
    gets back), by trial id, with their status there; empty without a snapshot."""
    states = sorted(experiment.glob("experiment_state-*.json"))
    if not states:
        return {}
    held = {}
    for trial_state, _ in json.loads(states[-1].read_text()).get("trial_data", []):
        trial = json.loads(trial_state)
        held[trial["trial_id"]] = trial["status"]
    return held


def _killed_for_memory(e: BaseException) -> bool:
    from ray.exceptions import OutOfMemoryError

    return isinstance(e.__cause__, OutOfMemoryError) or "running low on memory" in str(e)


def _memory_killed_text(e: BaseException, res: Resources) -> str:
    """Why, and what to lower: Ray's own message is some 40 lines of its settings."""
    from raydx.search import memory_text

    said = str(e.__cause__ or e).strip()
    first = said.splitlines()[0] if said else type(e).__name__
    first = first.removeprefix("Caught unexpected exception: ").rstrip(".")
    fewer = (
        "fewer trials at once (--max-concurrent-trials 1), or a smaller --image-size"
        if res.max_concurrent_trials > 1
        else "a smaller --image-size or batch_size, or fewer --workers-per-trial"
    )
    return (
        f"Ray's memory monitor killed processes of this search ({first}). raydx planned "
        f"{res.max_concurrent_trials} trial(s) at once of {res.workers} fold worker(s), "
        f"{memory_text(res.image_size)}. Resume it where more memory is free, or start a "
        f"new run with {fewer}. "
    )


def _interrupted_text(trials: pd.DataFrame, wanted: int, out: Path, fixed: bool) -> str:
    """``fixed``: the run cross-validates one configuration (``raydx cv``); it resumes as a
    search of one trial does."""
    done = int(trials["status"].isin(FINAL).sum()) if len(trials) else 0
    what = (
        f"cross-validation interrupted before its folds finished; their epochs so far are "
        f"in {out / 'folds.parquet'}"
        if fixed
        else f"search interrupted after {done} of {count(wanted, 'trial')}; finished trials "
        f"are in {out / 'trials.parquet'}"
    )
    return (
        f"{what}. The test split was not touched. Continue with: raydx tune --resume "
        f"{shlex.quote(str(out))}"
    )


def _top_up_due(missing: int, unfinished: bool, budget_ended: bool, ctrl_c: bool) -> bool:
    """After a resumed experiment's fit: whether to start the ``missing`` trials that
    never began (the driver died after Optuna handed them out, before Tune's snapshot
    held them). Not while a trial is unfinished, past the time budget, or after a Ctrl-C
    (Tune takes it, and fit returns as after a finished search)."""
    return missing > 0 and not unfinished and not budget_ended and not ctrl_c


def _interrupted(unfinished: bool, ctrl_c: bool, missing: int, budget_ended: bool) -> bool:
    """Whether the search ends as interrupted (``--resume`` continues it), not finished."""
    return unfinished or ctrl_c or (missing > 0 and not budget_ended)


class CtrlC:
    """Whether a SIGINT (Ctrl-C) came while a search ran (``with ctrl_c: tuner.fit()``).

    Tune takes the first one itself: it ends the search, and ``fit`` returns as if the
    search were over. Its handler then puts back the one it found, this one, which is how
    that first Ctrl-C is seen here; one that reaches this handler (a second, or the first
    where Tune's handler is off) is counted, and passed on to the handler before.
    """

    def __init__(self) -> None:
        self.caught = False
        self._before: Any = None
        self._before_term: Any = None
        self._armed = False

    def _handle(self, sig: int, frame: Any) -> None:
        self.caught = True
        before = self._before
        if callable(before):
            before(sig, frame)
        elif before != signal.SIG_IGN:  # SIG_DFL, or one not set from Python
            signal.default_int_handler(sig, frame)

    def _terminate(self, sig: int, frame: Any) -> None:
        """SIGTERM to the driver (``kill PID``, Kubernetes' stop of its pod) ends the
        search as a Ctrl-C does, instead of Ray's driver handler's bare exit, which left
        the running trials marked RUNNING and said nothing of ``--resume``. Where SIGINT
        itself is ignored (a shell's background job) and Tune's handler is not there,
        it stops the driver as Python's Ctrl-C does: never ignored."""
        handler = signal.getsignal(signal.SIGINT)  # Tune's while it runs, else this one's
        if handler == self._handle and not callable(self._before):
            self.caught = True
            signal.default_int_handler(signal.SIGINT, frame)
        elif callable(handler):
            handler(signal.SIGINT, frame)
        else:
            signal.default_int_handler(signal.SIGINT, frame)

    def __enter__(self) -> CtrlC:
        try:
            self._before = signal.getsignal(signal.SIGINT)
            self._before_term = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGINT, self._handle)
            signal.signal(signal.SIGTERM, self._terminate)
            self._armed = True
        except ValueError:  # not the main thread: Tune does not take SIGINT either
            self._armed = False
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._armed:
            return
        now = signal.getsignal(signal.SIGINT)
        tune_takes_it = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") in ("", "0")
        if tune_takes_it and now == self._handle:  # Tune put it back: it took a Ctrl-C
            self.caught = True
        self._armed = False
        try:  # SIGTERM's first: no SIGTERM may find this one with SIGINT's put back
            if self._before_term is not None:  # None: set from C, not to be put back
                signal.signal(signal.SIGTERM, self._before_term)
        finally:
            if self._before is not None:
                signal.signal(signal.SIGINT, self._before)


def _new_tuner(
    trainable: Any,
    space: SearchSpace,
    opts: RunOptions,
    res: Any,
    out: Path,
    writer: Any,
    name: str,
    samples: int,
) -> Any:
    from ray import tune as rtune

    from raydx.search import make_scheduler, make_searcher, study_url
    from raydx.study import study_size

    searcher = make_searcher(
        space,
        # A top-up's sampler must not draw the configurations of the run's first
        # experiment again: its seed moves on by the study's trials (0 for a new run).
        seed=(opts.seed + study_size(out)) % 2**32,  # NumPy's RandomState takes < 2**32
        trials=opts.trials,
        storage_url=study_url(out),
        # A top-up must not evaluate the enqueued points again, nor a first experiment
        # whose study a killed driver already made (its points wait there).
        enqueue=name == "tune" and not (out / "study.db").exists(),
        sampler=opts.sampler,
    )
    from raydx.budget import BudgetStopper
    from raydx.cleanup import OrphanReaper
    from raydx.retry import NoRetryOfFailedConfigurations
    from raydx.stopper import remember_record

    scheduler = make_scheduler(opts)
    remember_record(scheduler, writer, writer.log)  # a resume's new experiment: its trials
    return rtune.Tuner(
        trainable,
        tune_config=rtune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=samples,
            max_concurrent_trials=res.max_concurrent_trials,
            # A reused trial actor keeps the previous trial's Train controller, and
            # with it that trial's worker placement group, alive: the next trial
            # then waits for resources that never come free.
            reuse_actors=False,
        ),
        run_config=rtune.RunConfig(
            name=name,
            storage_path=str(out / "ray"),
            callbacks=[writer, OrphanReaper(), NoRetryOfFailedConfigurations()],
            stop=BudgetStopper(),
            # Ray Train restarts the fold workers of a trial (raydx.cv.trial_fn); this
            # restarts the trial itself when its process or node is lost, and its Train
            # run, named by the trial id, resumes from its last checkpoint. A failed
            # configuration is not restarted (raydx.retry).
            failure_config=rtune.FailureConfig(max_failures=opts.max_failures),
            verbose=1,
        ),
    )


_SNAPSHOT_SET: list[str | None] = [None]  # the interval raydx set, not the user


def set_snapshot_interval(trials: int) -> None:
    """Tune reads TUNE_GLOBAL_CHECKPOINT_S as each search starts: a user's value stays,
    raydx's own follows each search's trials (the Python API may run several)."""
    if os.environ.get("TUNE_GLOBAL_CHECKPOINT_S") in (None, _SNAPSHOT_SET[0]):
        every = f"{snapshot_interval_s(trials):g}"
        _SNAPSHOT_SET[0] = os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = every


def snapshot_interval_s(trials: int) -> float:
    """Seconds between Tune's snapshots: 2 up to 50 trials, then growing with them. The
    snapshot is rewritten whole, about 28 kB a trial (3.4 MB at 120 trials, 14 MB at 500,
    every 2 s: 7 MB/s onto a cluster's shared storage), so that its writes stay near
    0.7 MB/s; a resume catches up on a staler snapshot from raydx's own record."""
    return max(2.0, trials / 25)


# What Tune's box at each trial's end shows: all 30-40 keys a trial reports (5 folds:
# more) made 62 console lines a trial, 31,000 for 500 trials; the rest is in the tables.
# objective, not cv_auc_mean: the best epoch's CV AUC, which ranks the trial, not the last's.
PROGRESS_METRICS = ("epoch", "objective", "best_epoch", "time_total_s")


def tune_trainable(spec: dict[str, Any]) -> Any:
    """``trial_fn`` as Tune runs it: its resources, its spec, and what Tune prints of it."""
    from ray import tune as rtune

    from raydx.cv import trial_fn
    from raydx.search import TRIAL_CPU

    trainable = rtune.with_resources(rtune.with_parameters(trial_fn, spec=spec), {"cpu": TRIAL_CPU})
    # read by Tune's reporters (ray.tune.progress_reporter._detect_progress_metrics), as
    # Ray's own trainers set it
    setattr(trainable, "_progress_metrics", PROGRESS_METRICS)  # noqa: B010
    return trainable


def _memory_text(res: Resources) -> str:
    """The nodes' memory, not their cores, set how many trials run at once: said, since a
    search then runs slower than the cores would let it; or it holds not even one."""
    if res.memory_holds is None:
        return ""
    from raydx.search import TRIAL_MEMORY, memory_text

    each = f"{memory_text(res.image_size)} and {TRIAL_MEMORY / 1e9:g} GB a trial"
    if res.memory_holds == 0:
        return (
            f"; WARNING: the nodes' memory may not hold even one trial ({each}), and Ray "
            "kills workers past 95% of a node's memory: a smaller --image-size, or fewer "
            "--workers-per-trial"
        )
    return (
        f" (the nodes' memory holds {res.memory_holds}, at {each}; "
        "--max-concurrent-trials overrides it)"
    )


def _waiting_text(res: Resources) -> str:
    """--max-concurrent-trials above what the nodes present hold: the rest wait for nodes
    (Ray Train retries a waiting worker group's start every minute, so without new nodes
    they start as running trials end)."""
    if res.fit_now is None or res.max_concurrent_trials <= res.fit_now:
        return ""
    return (
        f" (the nodes present hold {res.fit_now} at once: the others wait for nodes that an "
        "autoscaler adds, or for a running trial to end)"
    )


def _trial_line(r: Any) -> str:
    if pd.isna(r.cv_auc_mean):  # a trial stopped before its first report has none either
        cv = "failed" if r.status == "ERROR" else "no CV AUC"
    else:
        cv = f"{r.cv_auc_mean:.3f} ± {r.cv_auc_std:.3f}"
    epoch = "" if pd.isna(r.best_epoch) else f"epoch {int(r.best_epoch):>3}"
    model = r.get("model")
    name = f"{r.family}/{model}" if isinstance(model, str) else str(r.family)
    return f"  {r.trial_id:<10} {name:<22} {r.status:<11} {epoch:<9}  {cv}"


def _threshold_line(best: dict[str, Any]) -> list[str]:
    """Binary winners: the out-of-fold rates at the threshold, as fitted on those rows and
    cross-fitted (the honest pair, and the only one with --no-test)."""
    oof = best.get("oof") or {}
    crossed = oof.get("cross_fitted") or {}
    rates = [oof.get(k) for k in ("sensitivity", "specificity")]
    rates += [crossed.get(k) for k in ("sensitivity", "specificity")]
    if any(r is None for r in rates):
        return []
    return [
        f"At the threshold {threshold_text(best['threshold'])}, out of fold: sensitivity "
        f"{rates[0]:.3f}, "
        f"specificity {rates[1]:.3f} (cross-fitted, with the threshold chosen on the other "
        f"folds: {rates[2]:.3f}, {rates[3]:.3f})"
    ]


def summary_table(
    trials: pd.DataFrame,
    best: dict[str, Any],
    test: dict[str, Any] | None,
    out: Path,
    wall: float,
) -> str:
    ranked = trials.sort_values("cv_auc_mean", ascending=False, na_position="last")
    lines = ["", "Top trials (cross-validated AUC, mean ± std over folds, at the best epoch):"]
    lines += [_trial_line(r) for _, r in ranked.head(5).iterrows()]
    if trials["family"].nunique() > 1:
        lines += ["", "Best trial of each family:"]
        lines += [_trial_line(r) for _, r in ranked.groupby("family", sort=True).head(1).iterrows()]
    if test is None:
        scored = "the test split was not scored (--no-test; score_test=False in Python)"
    else:
        lo, hi = test["auc_ci95"]
        against = multi_class_positive(test)
        if against:  # the prediction is the most probable class; no threshold moves it
            accuracy = f"accuracy {test['accuracy']:.3f} of the most probable class "
        else:
            accuracy = f"accuracy {test['accuracy']:.3f} at the threshold " + (
                f"({test['accuracy_at_0_5']:.3f} at 0.5) "
                if test.get("accuracy_at_0_5") is not None
                else ""
            )
        scored = (
            f"test AUC {test['auc']:.3f}{' (macro one-vs-rest)' if against else ''} "
            f"[95% CI {lo:.3f}-{hi:.3f}{ci_by_text(test)}], {accuracy}"
            f"(n={test['n']}, {test['model']})"
        )
        if "patient_auc" in test:
            scored += f"; per patient {patient_auc_text(test, against=against)}"
        scored += without_copies_text(test)
    lines += [
        "",
        f"Winner {best['trial_id']}: CV AUC {best['cv_auc_mean']:.3f} ± {best['cv_auc_std']:.3f}; "
        + scored,
        *_threshold_line(best),
        f"Results: {out}  (report: {out / 'report.html'}; model card: "
        f"{out / 'model' / 'README.md'})",
        f"Wall time: {wall:.1f} s",
    ]
    return "\n".join(lines)
