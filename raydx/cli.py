"""Command line: parse, build options, call the library. No logic lives here."""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from raydx.errors import RaydxError


def _parser() -> argparse.ArgumentParser:
    # No abbreviated flags: "--time-budget 5" must not quietly mean --time-budget-min,
    # nor may an abbreviation change meaning when a flag is added.
    p = argparse.ArgumentParser(
        prog="raydx",
        allow_abbrev=False,
        description="Hyperparameter search with fold-parallel cross-validation on Ray.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser(
        "tune",
        help="search a space, cross-validate every trial, score the winner on the test split",
        description="Flags override the defaults in the space file's 'run:' section.",
        allow_abbrev=False,
    )
    _run_flags(t, search=True)
    c = sub.add_parser(
        "cv",
        help="cross-validate one fixed configuration (a run's best.yaml), score it on the "
        "test split (unless --no-test)",
        description="Given a run's best.yaml, that run's data, split and schedule are the "
        "defaults; flags override them. --fold-seed N re-checks the configuration on folds "
        "it was not chosen on, with the same test split.",
        allow_abbrev=False,
    )
    c.add_argument(
        "--config",
        type=Path,
        required=True,
        help="a run's best.yaml (or its run folder), or a YAML mapping of parameter values",
    )
    c.add_argument(
        "--no-test",
        dest="score_test",
        action="store_const",
        const=False,
        default=None,
        help="do not score the configuration on the test split (it is not looked at): for "
        "a re-check on other folds of a winner that was already scored",
    )
    _run_flags(c, search=False)
    pr = sub.add_parser(
        "predict",
        help="apply a run's model to image files; score it on them when they have labels",
        description="Images are decoded and resized as in the search. With labels (class "
        "subfolders named as the model's classes, or a manifest's label column) the images "
        "are also scored as the test split is, into OUTPUT's .metrics.json.",
        allow_abbrev=False,
    )
    pr.add_argument("--model", type=Path, required=True, help="a run folder, or its 'model' folder")
    pr.add_argument(
        "--data",
        required=True,
        help="an image file, a folder of images (class subfolders are labels), or a "
        "CSV/Parquet manifest with a 'path' column (and optionally 'label')",
    )
    pr.add_argument(
        "--output",
        type=Path,
        default=Path("predictions.csv"),
        help="a .csv or .parquet file, never overwritten (default: predictions.csv)",
    )
    pr.add_argument(
        "--skip-bad-images",
        action="store_true",
        dest="skip_bad",
        help="predict the readable images; unreadable ones keep their row, with the reason "
        "in an 'error' column (default: stop and list them)",
    )
    pr.add_argument("--path-column", default="path", help="a manifest's image paths")
    pr.add_argument("--label-column", default=None, help="default: 'label' if present")
    pr.add_argument(
        "--group-column",
        default=None,
        help="patient ids, for patient-level AUC (default: 'patient_id' if present; a "
        "folder's patient subfolders, or its Nth level with 'folder:N'; 'none': no patients)",
    )
    pr.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    pr.add_argument(
        "--operating-point",
        default=None,
        help="re-choose the decision threshold by this rule on the out-of-fold predictions "
        "the model folder keeps: 'youden', 'sensitivity=0.95' or 'specificity=0.9' "
        "(default: the threshold the run chose)",
    )
    pr.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="binary models: the share of positive images where the model is used; the "
        "probabilities are mapped to it by Bayes' rule and the threshold moves with them, "
        "so the decisions stay as they were (default: the training data's share)",
    )
    return p


def _run_flags(t: argparse.ArgumentParser, *, search: bool) -> None:
    """The flags of ``tune``; ``cv`` takes those that are not about the search."""
    source = "the space file" if search else "the run"  # where a flag's default comes from
    if search:
        t.add_argument(
            "--space",
            type=Path,
            default=None,
            help="search-space YAML (default: search_spaces/cnn.yaml)",
        )
        t.add_argument(
            "--trials",
            type=int,
            default=None,
            help=f"number of trials (rows of trials.parquet; default: {source}'s, else 8)",
        )
        t.add_argument(
            "--scheduler",
            default=None,
            help="'asha' (default), 'paired' (a paired test of a trial's folds against the"
            " best finished trial's, raydx.stopper), 'asha+paired' (both) or 'none'",
        )
        t.add_argument(
            "--sampler",
            default=None,
            help="Optuna sampler: 'tpe' (default) or 'random' (a baseline)",
        )
        t.add_argument(
            "--grace-period",
            type=int,
            default=None,
            help=f"epochs before a scheduler may stop a trial (default: {source}'s, else 5)",
        )
        t.add_argument(
            "--max-concurrent-trials",
            type=int,
            default=None,
            help="trials that train at once (default: on CPUs one more than the cores hold, so "
            "that worker starts hide behind other trials' epochs; on GPUs as many as they "
            "hold); 1 makes the order of trials independent of the machine's speed; more "
            "than the cluster's nodes hold now wait for the nodes that its autoscaler adds",
        )
        t.add_argument(
            "--time-budget-min",
            type=float,
            default=None,
            help="end the search after this many minutes (counted from the start): running "
            "trials stop at their next epoch and keep their scores, no new trial starts, "
            "and the winner is scored as usual",
        )
        t.add_argument(
            "--resume",
            type=Path,
            default=None,
            metavar="RUN_DIR",
            help="continue the interrupted search in RUN_DIR (its saved options are used)",
        )
    t.add_argument(
        "--data",
        default=None,
        help=(
            "'synthetic' (default), "
            if search
            else "default: the run's data (from the run.json beside --config), else 'synthetic'; "
        )
        + "'synthetic:N' (N generated images), 'medmnist:NAME', a MedMNIST-layout .npz, a "
        "folder with one subfolder per class, a CSV/Parquet manifest, or a Parquet file of "
        "encoded images",
    )
    t.add_argument(
        "--output", type=Path, default=None, help="run folder (default: runs/<timestamp>)"
    )
    t.add_argument(
        "--folds",
        type=int,
        default=None,
        help=f"k of the k-fold cross-validation (default: {source}'s, else 5)",
    )
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"maximum epochs per trial (default: {source}'s, else 20)",
    )
    t.add_argument(
        "--seed",
        type=int,
        default=None,
        help="fixes the --limit subset and generated images, the test split, the folds, "
        "every trial's training and the sampler "
        f"(default: {source}'s, else 0)",
    )
    t.add_argument(
        "--fold-seed",
        type=int,
        default=None,
        help="draw the folds from this seed instead (the test split stays drawn from --seed)",
    )
    t.add_argument(
        "--final",
        default=None,
        help="the model scored on the test split and saved: 'ensemble' (the winner's fold "
        "models, mean probability; default) or 'refit' (one model trained on the whole CV "
        "pool for the epochs cross-validation chose)",
    )
    t.add_argument(
        "--operating-point",
        default=None,
        help="how the decision threshold is chosen on the out-of-fold predictions: "
        "'youden' (default: sensitivity + specificity - 1 maximal), 'sensitivity=0.95' (the "
        "most specific threshold that finds 95%% of the positives out of fold) or "
        "'specificity=0.9'. Binary tasks; with more classes the prediction is the most "
        "probable class and this only sets where the positive class's rates are read",
    )
    t.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="held-out fraction when the source has no test split (default 0.2)",
    )
    t.add_argument(
        "--positive-class",
        default=None,
        help="name or index of the disease class (default: a class named like "
        "malignant/tumor/cancer, else the minority class)",
    )
    t.add_argument("--image-size", type=int, default=None, help="resize images to this side length")
    t.add_argument(
        "--intensity",
        default=None,
        help="how 16-bit, float and DICOM greyscale pixels become 0-255: 'auto' (default: a "
        "DICOM file's window, else each image's min-max), 'percentile' or "
        "'percentile:LOW:HIGH' (each image's 0.5th-99.5th percentile), or 'range:LOW:HIGH' "
        "(fixed values for every image, e.g. range:-1000:400 in Hounsfield units)",
    )
    t.add_argument(
        "--limit", type=int, default=None, help="use a stratified subset of this many images"
    )
    t.add_argument(
        "--workers-per-trial",
        type=int,
        default=None,
        help="Ray Train workers per trial, each training folds round-robin "
        "(default: the fewest one-thread workers that finish an epoch of all folds "
        "soonest, e.g. 3 for 5 folds on 2 cores; with GPUs one per fold)",
    )
    t.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs per worker (fractions allowed)"
    )
    t.add_argument(
        "--gpus-per-worker", type=float, default=None, help="GPUs per worker (fractions allowed)"
    )
    t.add_argument(
        "--ray-address", default=None, help="join this Ray cluster instead of starting one"
    )
    t.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="checkpoint every fold's full state every N epochs (and at every new best; default 5)",
    )
    t.add_argument(
        "--report-interval-s",
        type=float,
        default=None,
        help="epochs shorter than this go to Tune together, each still recorded (0.5; "
        "0 reports every epoch)",
    )
    t.add_argument(
        "--max-failures",
        type=int,
        default=None,
        help="restarts of a trial's fold workers, and of the trial itself, after a dead "
        "process or node (default 2)",
    )
    d = t.add_argument_group("image folders and manifests")
    d.add_argument("--path-column", default=None, help="manifest column of image paths (path)")
    d.add_argument("--label-column", default=None, help="manifest column of labels (label)")
    d.add_argument(
        "--group-column",
        default=None,
        help="manifest column of patient/slide ids; folds keep a group whole (default: "
        "patient_id if present; in a folder, the class folders' patient subfolders; "
        "'folder:N': a folder's Nth level of subfolders, 1 being the class folders' own; "
        "'none': folds by image, where a column looks like ids or a folder has subfolders)",
    )
    d.add_argument(
        "--split-column",
        default=None,
        help="manifest column whose 'test' rows are held out (split; 'none': raydx draws "
        "the test split, where a column looks like a split)",
    )
    d.add_argument(
        "--skip-bad-images",
        action="store_true",
        default=None,
        help="leave unreadable images out (listed in bad_images.csv) instead of stopping",
    )
    d.add_argument(
        "--join-near-copies",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep near copies (near_copies.csv) in one fold, as a patient's images "
        "(default: list and warn of them; --no-join-near-copies: a run's own turned off)",
    )
    t.add_argument(
        "--verbose",
        action="store_true",
        default=None,
        help="also print the logs of Ray's workers (they are always in the dashboard)",
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """``parse_args``, with a "did you mean" for a mistyped or renamed flag."""
    from raydx.lookup import suggest

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        sub = parser._subparsers._group_actions[0].choices[args.command]  # type: ignore[union-attr,index]
        flags = [f for a in sub._actions for f in a.option_strings if f.startswith("--")]
        msg = f"unrecognized argument {extra[0]!r}."
        close = suggest(extra[0].split("=")[0], flags)
        if extra[0].startswith("--") and close:
            msg += f" Did you mean {close!r}?"
        parser.error(msg)
    return args


def _predict(args: argparse.Namespace) -> int:
    from raydx.predict import check_output, predict_files, write_predictions

    try:
        check_output(args.output)  # every file it may write, before any image is read
        pred = predict_files(
            args.model,
            args.data,
            skip_bad=args.skip_bad,
            path_column=args.path_column,
            label_column=args.label_column,
            group_column=args.group_column,
            device=args.device,
            operating_point=args.operating_point,
            prevalence=args.prevalence,
        )
        written = write_predictions(pred, args.output)
    except RaydxError as e:
        print(f"raydx: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a line, as tune and cv say it, not a traceback
        print("raydx: interrupted", file=sys.stderr)
        return 130
    print(pred.summary())
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


_PACKAGE = Path(__file__).parent  # raydx and its subpackages


def _console_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
    *,
    previous: Any,
) -> None:
    """raydx's own warnings as console lines ("raydx: warning: ..."), like its errors: the
    source line Python prints with a warning means nothing to a user of the CLI. Other
    libraries' warnings keep Python's form."""
    if issubclass(category, UserWarning) and Path(filename).is_relative_to(_PACKAGE):
        print(f"raydx: warning: {message}", file=file or sys.stderr)
        return
    previous(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    previous = warnings.showwarning  # the caller's (logging.captureWarnings, pytest)
    with warnings.catch_warnings():  # restores showwarning for a caller in Python
        warnings.showwarning = functools.partial(_console_warning, previous=previous)
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = _parse(argv)
    if args.command == "predict":
        return _predict(args)
    skip = ("command", "space", "resume", "config")
    opts = {k: v for k, v in vars(args).items() if k not in skip}
    if args.command in ("tune", "cv"):
        try:
            from raydx.run import cross_validate, resume, tune

            if args.command == "cv":
                cross_validate(args.config, **opts)
            elif args.resume is not None:
                # --verbose changes what is printed, not what runs
                given = sorted(k for k, v in opts.items() if v is not None and k != "verbose")
                if given or args.space is not None:
                    raise RaydxError(
                        "--resume continues a run with its saved options; drop "
                        + ", ".join(f"--{k.replace('_', '-')}" for k in given or ["space"])
                        + "."
                    )
                resume(args.resume, verbose=opts.get("verbose"))
            else:
                tune(args.space, **opts)
        except RaydxError as e:
            from raydx.run import SearchInterrupted

            print(f"raydx: error: {e}", file=sys.stderr)
            return 130 if isinstance(e, SearchInterrupted) else 2
        except KeyboardInterrupt:
            print("raydx: interrupted", file=sys.stderr)
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
