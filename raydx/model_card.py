"""``model/README.md``: the model card that travels with the weights.

A model folder is copied away from its run (to a hospital's server, a colleague, a
registry), and what it was trained on, how it was validated and what it scored must go
with it (Mitchell et al., 2019, "Model Cards for Model Reporting"). Written from the
run's result files alone, like ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from raydx.data.decode import converted_colour
from raydx.data.folds import fold_grouping
from raydx.data.intensity import Intensity, modes_of, scaled_count
from raydx.data.near_copies import without_copies_text
from raydx.data.sources import is_synthetic
from raydx.errors import count
from raydx.metrics import (
    below_chance_text,
    fold_scale_text,
    patient_auc_text,
    refit_scale_text,
    scored_warnings,
    slope_meaning,
)
from raydx.operating_point import DEFAULT, of_predictions, threshold_text
from raydx.prior import anomaly_scores, recipe_share, why
from raydx.results import atomic_write


def _f(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _calibration_text(m: dict[str, Any]) -> str:
    if "brier" not in m:  # scored before raydx reported calibration
        return "calibration not recorded"
    return (
        f"Brier score {_f(m['brier'])}, calibration intercept "
        f"{_f(m['calibration_intercept'])} (0 is ideal) and slope "
        f"{_f(m['calibration_slope'])} ({slope_meaning(m['calibration_slope'])})"
    )


def _rates_and_calibration(m: dict[str, Any], lead: str = "at the threshold, sensitivity") -> str:
    both = m.get("sensitivity") is not None and m.get("specificity") is not None
    rates = f"{lead} {_f(m['sensitivity'])} and specificity {_f(m['specificity'])}; "
    return (rates if both else "") + _calibration_text(m)


def _md_table(df: pd.DataFrame) -> list[str]:
    def cell(v: Any) -> str:  # a class named "a|b" must not split a column
        return "" if pd.isna(v) else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "|" + "---|" * df.shape[1]]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return lines


def _pixel_values(prep: dict[str, Any], data: dict[str, Any]) -> list[str]:
    """How 16-bit, float and DICOM pixels became 0-255, where any were (or were meant to be)."""
    intensity = str(prep.get("intensity", "auto"))
    modes = modes_of(data.get("ingest", {}))
    n = scaled_count(modes)
    converted, profile = converted_colour(modes)
    colour = (
        [
            f"- Colour: {converted} of the {data['n']} images carried an ICC profile other "
            f"than sRGB (such as {profile}) and were converted to sRGB; `raydx predict` "
            "reads new files the same way, numpy arrays are taken as sRGB."
        ]
        if converted
        else []
    )
    if not n and intensity == "auto":
        return colour
    if not n:
        return [
            f"- Pixel values: intensity `{intensity}` was set, but every image was 8-bit or "
            "colour, which pass unchanged.",
            *colour,
        ]
    return [
        f"- Pixel values: {n} of the {data['n']} images are 16-bit, float or DICOM "
        f"greyscale; {Intensity.parse(intensity).describe()} (intensity `{intensity}`). "
        "`raydx predict` reads new files the same way.",
        *colour,
    ]


def model_card(out: Path) -> str:
    """The card's Markdown, from ``best.yaml``, ``run.json``, ``model/config.json``,
    ``trials.parquet``, ``split_summary.csv`` and ``test_metrics.json`` when present."""
    out = Path(out)
    best = yaml.safe_load((out / "best.yaml").read_text())
    run = json.loads((out / "run.json").read_text())
    cfg = json.loads((out / "model" / "config.json").read_text())
    trials = pd.read_parquet(out / "trials.parquet")
    scores = out / "test_metrics.json"
    test = json.loads(scores.read_text()) if scores.is_file() else None
    data, opts = run["data"], run["options"]
    prep = cfg["preprocessing"]
    positive = cfg["positive_class_name"]
    classes = ", ".join(f"`{c}`" for c in cfg["class_names"])
    scored = int(trials["cv_auc_mean"].notna().sum())
    folds = len(best["fold_aucs"])
    fold_seed = opts.get("fold_seed")
    fold_seed = run["seed"] if fold_seed is None else fold_seed
    family = best.get("family", "cnn")
    anomaly = anomaly_scores(best["params"])
    source = _source_search(run, out) if scored == 1 else None
    rule = cfg.get("threshold_rule", DEFAULT.describe())
    cut = threshold_text(cfg["threshold"], 4)
    network = f"`{cfg['model']}`" + ("" if family == cfg["model"] else f" ({family} family)")
    others = [c for c in cfg["class_names"] if c != positive]
    multi = len(others) > 1
    task = f"`{positive}` vs `{others[0]}`" if len(others) == 1 else f"`{positive}` and others"
    splits = pd.read_parquet(out / "splits.parquet")
    grouped = ("and " if "group" in splits else "") + fold_grouping(splits)
    lines = [
        f"# Model card: {network} for {task}, trained on {data['name']}",
        "",
        "Written by raydx at the end of the run that chose this model. A research model: "
        "it is not a medical device and has not been validated for clinical use.",
        "",
        "## Model",
        f"- {cfg['combine'][0].upper()}{cfg['combine'][1:]}; "
        f"{count(len(cfg['members']), 'member')}, {count(cfg['epochs'], 'epoch')} each; "
        f"trial `{cfg['trial_id']}`.",
        f"- Input: {prep['image_size']}x{prep['image_size']} pixels, {prep['channels']} "
        f"channel(s); files are converted and squash-resized to that (bilinear), then "
        f"scaled to [0, 1] and normalised with mean {prep['mean']} and std {prep['std']}.",
        *_pixel_values(prep, data),
        f"- Output: the probability of each class ({classes}). "
        + (
            f"`{positive}` is predicted at probability >= {cut}, the "
            f"threshold chosen by {rule} on the out-of-fold predictions (never on the "
            "test split)."
            + (
                " `raydx predict --operating-point sensitivity=0.95` (or another rule) "
                "re-chooses it on those predictions, which the model folder keeps."
                if cfg.get("oof_scores")
                else ""
            )
            if len(cfg["class_names"]) == 2
            else "The predicted class is the most probable one; the AUC below is the "
            f"macro average of one-vs-rest AUCs, and sensitivity and specificity are those "
            f"of `{positive}` against the rest at probability >= {cut} "
            f"({rule} on the out-of-fold predictions)."
        ),
        *_class_mix_lines(cfg, positive),
        *(
            [
                f"- The probability of `{positive}` is an anomaly score: the sigmoid of an "
                "image's reconstruction error over the typical error of the "
                f"non-`{positive}` training images (0.5 is a typical one of those). It "
                "learnt no class mix and is not a risk; its ranking and the threshold on it "
                "are what it offers."
            ]
            if anomaly
            else []
        ),
        "- Configuration (as searched):",
        "",
        "```yaml",
        yaml.safe_dump(best["params"], sort_keys=True).rstrip(),
        "```",
        "",
        "## Data",
        f"- Source `{data['source']}` ({data['n']} images"
        + (
            f", a stratified `--limit {opts['limit']}` subset: its scores are not "
            "comparable with ones on the whole data"
            if opts.get("limit")
            else ""
        )
        + f"); sha256 of the file `{data.get('sha256') or 'n/a (a folder or generated data)'}`; "
        f"fingerprint of every image's pixels and label `{data.get('fingerprint', 'n/a')}`.",
        *_ingest_warnings(run),
        *_duplicate_lines(out),
        *near_copy_lines(out, data.get("n"), joined=bool(opts.get("join_near_copies"))),
    ]
    summary = out / "split_summary.csv"
    if summary.is_file():
        lines += [
            f"- Cross-validation pool split into {folds} folds (fold seed {fold_seed}; "
            f"stratified by class, {grouped}), and the held-out test split:",
            "",
            *_md_table(pd.read_csv(summary, dtype={"fold": "Int64"})),
        ]
    lines += [
        "",
        "## Validation",
        f"- Cross-validated AUC **{best['cv_auc_mean']:.3f} ± {best['cv_auc_std']:.3f}** "
        f"(mean ± std over the {folds} folds: "
        + ", ".join(f"{a:.3f}" for a in best["fold_aucs"])
        + f"), at epoch {best['best_epoch']}.",
        _selection_text(scored, source, _searched(out))
        + " To re-check it on folds it was not chosen on: "
        f"`raydx cv --config RUN/best.yaml --fold-seed {fold_seed + 1} --no-test`, RUN "
        "being this run's folder (the one that holds this model folder).",
    ]
    budget = budget_text(trials, opts, str(best["trial_id"]))
    if budget:
        lines.append(f"- {budget}")
    for warning in (
        below_chance_text(best["cv_auc_mean"], anomaly=anomaly),
        fold_scale_text(best),
        refit_scale_text(best),
    ):
        if warning:
            lines.append(f"- **Warning:** {warning[0].upper()}{warning[1:]}")
    oof = best.get("oof")  # runs written before this block existed have none
    if oof:
        lines.append(
            f"- Out of fold (every CV image once, scored by the fold model that did not "
            f"train on it; n={oof['n']}): pooled AUC {_f(oof['pooled_auc'])}"
            + (" (macro one-vs-rest)" if multi else "")
            + "; "
            + (
                _rates_and_calibration(
                    oof, f"`{positive}` against the rest at the threshold, sensitivity"
                )
                if multi
                else _rates_and_calibration(oof)
            )
            + "."
            + (
                f" Per patient: {patient_auc_text(oof, against=positive if multi else None)}."
                if "patient_auc" in oof
                else ""
            )
        )
    crossed = (oof or {}).get("cross_fitted")  # runs saved before it have none
    if crossed:
        if best.get("member_calibration"):
            how = (
                "threshold and the fold models' intercepts were fitted on those same rows, "
                "which flatters them; with the threshold fitted on the other folds' rows "
                "and each fold's intercept on the rest of its own, applied to each fold's "
                "rows in turn"
            )
        else:
            shifted = bool(best.get("class_mix"))
            fits = "threshold and the calibration shift were" if shifted else "threshold was"
            how = (
                f"{fits} fitted on those same rows, which flatters them; fitted on the "
                "other folds' rows and applied to each fold's in turn"
            )
        lines.append(
            f"- The {how} (cross-fitted: what images the fits did not see should get): "
            f"{_rates_and_calibration(crossed, 'sensitivity')}."
        )
    if test is None:
        lines.append("- The test split was not scored (`raydx cv --no-test`).")
    else:
        lo, hi = test["auc_ci95"]
        lines += [
            f"- Held-out test split, scored once with this model (n={test['n']}"
            + (
                f"; the search in `{source.folder}` scored this configuration there too"
                if source and source.scored_test
                else ""
            )
            + f"): AUC **{_f(test['auc'])}** ("
            + ("macro one-vs-rest; " if multi else "")
            + f"95% CI {_f(lo)}-{_f(hi)}, stratified bootstrap"
            + (" of patients" if test.get("auc_ci95_by") == "patient" else "")
            + "); "
            + (
                f"the most probable class: accuracy {_f(test['accuracy'])}, balanced accuracy "
                f"{_f(test['balanced_accuracy'])}; `{positive}` against the rest at the "
                f"threshold: sensitivity {_f(test['sensitivity'])}, specificity "
                f"{_f(test['specificity'])}; PR AUC {_f(test['pr_auc'])}; "
                if multi
                else f"at the threshold: accuracy {_f(test['accuracy'])}, sensitivity "
                f"{_f(test['sensitivity'])}, specificity {_f(test['specificity'])}, balanced "
                f"accuracy {_f(test['balanced_accuracy'])}; PR AUC {_f(test['pr_auc'])}; "
                f"accuracy at 0.5 {_f(test['accuracy_at_0_5'])}; "
            )
            + f"{_calibration_text(test)}.",
        ]
        if test.get("without_copies"):
            lines.append("- The same model on the test split" + without_copies_text(test)[1:] + ".")
        if test.get("per_class"):  # a macro mean hides a weak class
            lines.append(
                "- Per class on the test split (AUC against the rest, recall by the most "
                "probable class, images predicted it and labelled it): "
                + "; ".join(
                    f"`{c}` {_f(v['auc'])}, {_f(v['recall'])}, predicted {v['predicted']}, "
                    f"labelled {v['n']}"
                    for c, v in test["per_class"].items()
                )
                + "."
            )
        for warning in scored_warnings(test, "test image"):
            lines.append(f"- **Warning:** {warning[0].upper()}{warning[1:]}")
        if "patient_auc" in test:
            lines.append(
                f"- Per patient, `{positive}` against the rest ({test['patient_aggregation']}): "
                f"{patient_auc_text(test, lambda s: f'**{s}**')}."
            )
    pred_file = out / "predictions.parquet"
    pred = pd.read_parquet(pred_file) if pred_file.is_file() else None
    share = ""
    if pred is not None:
        pool = pred.loc[pred["split"] == "cv", "is_positive"]
        share = f" ({pool.mean():.0%} `{positive}` in the cross-validation pool)"
    if len(cfg["class_names"]) == 2 and pred is not None:
        points = of_predictions(pred, opts.get("operating_point"), best)
        lines += [
            "- Other operating points, each threshold chosen by its rule on the out-of-fold "
            "predictions"
            + (
                " (cross-fitted: chosen for each fold on the other folds' rows)"
                if "cross-fitted sensitivity" in points
                else ""
            )
            + ("" if test is None else ", then read on the test split")
            + (
                " (`raydx predict --operating-point RULE` applies one):"
                if cfg.get("oof_scores")
                else " (`raydx cv --config best.yaml --operating-point RULE` saves a model at one):"
            ),
            "",
            *_md_table(
                points.assign(threshold=points["threshold"].map(threshold_text)).map(
                    lambda v: f"{v:.3f}" if isinstance(v, float) else v
                )
            ),
        ]
    lines += [
        "",
        "## Use",
        "```bash",
        "raydx predict --model THIS_FOLDER --data new_images/ --output predictions.csv",
        "```",
        "or, without Ray, `raydx.load_model('THIS_FOLDER').predict_proba(uint8_images)`. "
        "With labels (class subfolders named as the classes above, or a manifest's "
        "`label` column), `raydx predict` also scores the model on the images: an external "
        "validation.",
        "",
        "## Limitations",
        f"- Trained and validated on {data['name']} only: other scanners, sites, "
        "populations or image sizes may score lower; validate on your own data first.",
        (
            f"- The anomaly scores do not depend on the class mix{share}, but the "
            "predictive values (the share of flagged images that are positive, and of the "
            f"others that are not) do: where `{positive}` is more or less common, they "
            "differ. Sensitivity and specificity at the threshold do not, as long as each "
            "class's images are like these."
            if anomaly
            else f"- The probabilities reflect the class mix of the training data{share}; "
            f"where `{positive}` is more or less common, the probabilities and the "
            "predictive values (the share of flagged images that are positive, and of the "
            "others that are not) differ with it"
            + (
                " (`raydx predict --prevalence S` maps the probabilities to a site where a "
                "share S is positive, and keeps the decisions)"
                if cfg.get("oof_scores") and len(cfg["class_names"]) == 2
                else ""
            )
            + ". Sensitivity and specificity at the threshold do not depend on that mix, "
            "as long as each class's images are like these."
        ),
        *(
            [
                f"- A test set of {test['n']} images"
                + (
                    f", {test['n_positive']} of them {test.get('positive_class', 'positive')!r},"
                    if "n_positive" in test
                    else ""
                )
                + " leaves the estimate uncertain (the interval above, however narrow it looks): "
                "differences between models inside it are not evidence."
            ]
            if test is not None
            else []
        ),
        (
            "- Anomaly scores are not calibrated probabilities (the calibration figures "
            "above say how far from them they are); do not read one as a risk."
            if anomaly
            else "- The probabilities are calibrated only as well as the calibration figures "
            "above say, and only for data like the training data. Where a probability is "
            "read as a risk, recalibrate on local data first."
        ),
        "",
        "## Provenance",
        f"- raydx {run['packages'].get('raydx', '?')}, git commit "
        f"`{run.get('git_commit') or 'n/a'}`{_changed(run)}; "
        f"PyTorch {run['packages'].get('torch', '?')}, "
        f"Ray {run['packages'].get('ray', '?')}, Optuna {run['packages'].get('optuna', '?')}.",
        *_saved_by(cfg),
        f"- Seed {run['seed']}; started {run['started']}; command "
        f"`{shlex.join(run.get('command') or [])}`. Every option is in the run's `run.json`.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(out: Path) -> Path:
    path = Path(out) / "model" / "README.md"
    text = model_card(out)
    atomic_write(path, lambda p: p.write_text(text))
    return path


def _saved_by(cfg: dict[str, Any]) -> list[str]:
    """Which raydx wrote the model folder, and in which format (raydx.artifact): a run
    resumed under another version saves the model with that one, and a model predicts
    as its format says."""
    if "raydx_version" not in cfg:  # saved before config.json recorded it
        return []
    return [
        f"- The model folder was saved by raydx {cfg['raydx_version']}, format version "
        f"{cfg.get('format_version', 1)} (`config.json`)."
    ]


def _class_mix_lines(cfg: dict[str, Any], positive: str) -> list[str]:
    """Where the networks trained on another class mix than the data's (raydx.prior), and
    how their probabilities were brought to the data's (raydx.fold_calibration)."""
    per_fold = cfg.get("member_calibration")
    if per_fold:
        return [per_fold_text(per_fold, positive, cfg.get("params") or {})]
    mix = cfg.get("class_mix")
    if not mix:
        return []
    if "shift" in mix:  # fitted out of fold (raydx.prior.fitted_class_mix)
        share = recipe_share(mix)
        trained_on = (
            ""
            if share is None
            else f"; they trained on {share:.0%} `{positive}` ({why(cfg.get('params') or {})})"
        )
        return [
            f"- Probabilities are recalibrated in the large: shifted by one intercept "
            f"({mix['shift']:+.2f} on the logit scale) fitted on the out-of-fold "
            f"predictions, so that on average they match the data's {mix['mapped_to'][1]:.0%} "
            f"`{positive}`. The networks' own probabilities behaved as if "
            f"{mix['trained'][1]:.0%} of the images were `{positive}`{trained_on}. The "
            "ranking and AUC stay as they are (`class_mix` in config.json)."
        ]
    return [  # binary only; the positive class is listed second
        f"- The networks trained on a class mix of {mix['trained'][1]:.0%} `{positive}` "
        f"({why(cfg.get('params') or {})}); their probabilities are mapped to the "
        f"data's mix of {mix['mapped_to'][1]:.0%} by Bayes' rule (`class_mix` in "
        "config.json): the ranking and AUC stay as they are, and the probabilities "
        "no longer overstate the classes the training mix over-represented."
    ]


def per_fold_text(calibrated: dict[str, Any], positive: str, params: dict[str, Any]) -> str:
    """How each fold model's probabilities were recalibrated (raydx.fold_calibration)."""
    shifts = [m["intercept"] for m in calibrated["members"]]
    share, nominal = calibrated["mapped_to"][1], recipe_share(calibrated)
    trained_on = (
        ""
        if nominal is None
        else f" They trained on {nominal:.0%} `{positive}` ({why(params)}), which this undoes."
    )
    return (
        f"- Probabilities are recalibrated in the large, fold model by fold model: each is "
        f"shifted by its own intercept (from {min(shifts):+.2f} to {max(shifts):+.2f} on the "
        "logit scale), fitted on the fold it did not train on, so that the fold models "
        f"agree on a scale and on average match the data's {share:.0%} `{positive}` before "
        f"their probabilities are pooled for the threshold and averaged.{trained_on} "
        "Each fold model's ranking and AUC stay as they are (`member_calibration` in "
        "config.json)."
    )


@dataclass(frozen=True)
class _Source:
    """The search whose winner ``raydx cv --config RUN/best.yaml`` re-checks."""

    folder: Path
    same_folds: bool  # the very split the winner was chosen on
    scored_test: bool  # the search scored this run's test split too
    same_images: bool  # another seed draws another --limit subset; other --data
    same_test: bool  # a re-drawn test split may hold images the winner was chosen on


def _changed(run: dict[str, Any]) -> str:
    """The checkout's uncommitted changes: the commit alone would not run the same code.
    ``git_changed`` None: git failed; absent: a run recorded before it was."""
    changed = run.get("git_changed", [])
    if changed is None:
        return " (uncommitted changes unknown: git failed)" if run.get("git_commit") else ""
    if not changed:
        return ""
    shown = ", ".join(f"`{c}`" for c in changed[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    return f" with uncommitted changes to {count(len(changed), 'file')} ({shown}{more})"


def _source_search(run: dict[str, Any], out: Path) -> _Source | None:
    """For ``raydx cv`` of a search's winner: how this run's images and splits stand to
    that search's. None for a configuration not chosen among others."""
    path = (run.get("space") or {}).get("path")
    if not path:
        return None
    src = _moved(Path(path), run, out).parent
    trials, splits = src / "trials.parquet", src / "splits.parquet"
    if src.resolve() == out.resolve() or not (trials.is_file() and splits.is_file()):
        return None
    if int(pd.read_parquet(trials)["cv_auc_mean"].notna().sum()) < 2:
        return None  # itself one configuration
    theirs, ours = pd.read_parquet(splits), pd.read_parquet(out / "splits.parquet")
    same_images = _same_images(src, run, theirs, ours)
    tests = [set(t.loc[t["split"] == "test", "sample_id"].astype(str)) for t in (theirs, ours)]
    same_test = same_images and tests[0] == tests[1]
    scored_there = same_test and (src / "test_metrics.json").is_file()
    return _Source(src, theirs.equals(ours), scored_there, same_images, same_test)


def _same_images(src: Path, run: dict[str, Any], theirs: pd.DataFrame, ours: pd.DataFrame) -> bool:
    """By sample ids; for generated images, which keep their ids (``synthetic/0``, ...)
    whatever the seed drew, by the fingerprints of their pixels and labels (not for
    files: a re-check at another --image-size decodes the same images to other pixels)."""
    try:
        record = json.loads((src / "run.json").read_text())
    except (OSError, ValueError):
        record = {}
    other, mine = record.get("data", {}), run.get("data", {})
    generated = bool(record) and all(
        is_synthetic((r.get("options") or {}).get("data")) for r in (record, run)
    )
    if (
        generated
        and other.get("fingerprint")
        and mine.get("fingerprint")
        and other.get("fingerprint_version", 1) == mine.get("fingerprint_version", 1)
    ):
        return bool(other["fingerprint"] == mine["fingerprint"])
    return set(theirs["sample_id"].astype(str)) == set(ours["sample_id"].astype(str))


def _moved(path: Path, run: dict[str, Any], out: Path) -> Path:
    """``path`` (absolute, as run.json recorded it) where it is now: a run folder moved
    with the search it re-checked (a project folder copied, a mount renamed) keeps them
    at the same place relative to each other; run.json recorded where the run was."""
    was = run.get("options", {}).get("output")
    if path.exists() or not was or not path.is_absolute():
        return path
    try:
        moved = Path(os.path.normpath(Path(out) / os.path.relpath(path, was)))
    except ValueError:  # on another drive (Windows): no relative path between them
        return path
    return moved if moved.exists() else path


def _selection_text(scored: int, source: _Source | None, searched: bool = False) -> str:
    """How optimistic the cross-validated AUC is, from how the configuration was chosen.

    ``searched``: the run's space had ranges or choices (a search, not ``raydx cv``)."""
    if scored > 1:
        return (
            f"- It is the best of {scored} trials' cross-validated AUCs on one fold "
            "assignment, so it is optimistic."
        )
    if source is None and searched:
        return (
            "- The only trial of a search: its configuration was drawn from the space, not "
            "chosen among others."
        )
    if source is None:
        return "- One configuration, cross-validated (`raydx cv`), not chosen among others."
    if not source.same_images:
        return (
            f"- The winner of the search in `{source.folder}`, cross-validated (`raydx cv`) "
            "on other images than that search's (other data, or another seed's `--limit` "
            "subset): its figures do not compare with the search's."
        )
    if source.same_folds:
        return (
            f"- The winner of the search in `{source.folder}`, cross-validated again "
            "(`raydx cv`) on the folds it was chosen on, so it is as optimistic as that "
            "search's figure."
        )
    return (
        f"- The winner of the search in `{source.folder}`, cross-validated (`raydx cv`) on "
        "another fold assignment: less optimistic than that search's figure, though the "
        "configuration was still chosen on these images"
        + (
            "."
            if source.same_test
            else "; its test split was drawn anew and holds images the search chose it on, "
            "so the test figure is optimistic too."
        )
    )


def _searched(out: Path) -> bool:
    """Whether the run's space (its saved copy) drew anything: a range or a choice."""
    path = out / "space.yaml"
    if not path.is_file():
        return False
    params = (yaml.safe_load(path.read_text()) or {}).get("params") or {}
    return any(isinstance(v, dict) for v in params.values())


def _duplicate_lines(out: Path) -> list[str]:
    """Test images with exact copies in the cross-validation pool (``duplicates.csv``):
    splitting cannot separate them, and they bias the test score."""
    path = out / "duplicates.csv"
    if not path.is_file():
        return []
    dups = pd.read_csv(path)
    lines = []
    from raydx.data.duplicates import bias_of_copies, copies_across_test

    across, n = copies_across_test(dups)
    if n:
        lines.append(
            f"- {count(n, 'image')} of the test split {'has' if n == 1 else 'have'} exact "
            f"copies in the cross-validation pool (`duplicates.csv`); "
            f"{bias_of_copies(across)}."
        )
    conflict = dups[dups["labels_conflict"].astype(bool)] if "labels_conflict" in dups else dups[:0]
    if len(conflict):
        sets = conflict.groupby("set")["side"].agg(set)
        in_test = int(sets.map(lambda s: "test" in s).sum())
        where = f", {in_test} of them with a copy in the test split" if in_test else ""
        verb = "carries" if len(sets) == 1 else "carry"
        lines.append(
            f"- {count(len(sets), 'set')} of exact copies {verb} conflicting labels{where} "
            "(`duplicates.csv`): at most one label of each set "
            "can be predicted right, so the scores are pessimistic for them; check the labels."
        )
    return lines


def near_copy_lines(out: Path, n_images: int | None = None, *, joined: bool = False) -> list[str]:
    """Near copies (``near_copies.csv``) that the splits put apart: test images with a
    near copy trained on, and pairs in two folds; or that a set of ``n_images`` was too
    large to be looked at."""
    from raydx.data.near_copies import CORRELATION, FILE, MAX_IMAGES, tested_with_copies

    if n_images is not None and n_images > MAX_IMAGES:
        return [f"- Near copies were not looked for ({n_images:,} images, above {MAX_IMAGES:,})."]
    path = out / FILE
    if not path.is_file():
        return []
    pairs = pd.read_csv(path, keep_default_na=False, dtype={"sample_id": str, "other": str})
    tested = tested_with_copies(pairs)
    folds = int((pairs["straddles"] == "folds").sum())
    conflict = int((pairs["label"] != pairs["other_label"]).sum())
    lines = [
        f"- {count(len(pairs), 'pair')} of near copies (most likely one picture saved twice "
        f"with small changes: their 16 x 16 thumbnails correlate >= {CORRELATION}; `{FILE}`)"
        + ("" if tested or folds else ", each pair on one side of every split")
        + (", joined by --join-near-copies" if joined else "")
        + (f", {conflict} of them with conflicting labels." if conflict else ".")
    ]
    if tested:
        verb = "has" if len(tested) == 1 else "have"
        lines.append(
            f"- {count(len(tested), 'image')} of the test split {verb} a near copy in the "
            "cross-validation pool: the test score is optimistic for those whose labels agree."
        )
    if folds:
        lines.append(
            f"- {count(folds, 'pair')} of near copies {'lies' if folds == 1 else 'lie'} in two "
            "folds: the CV AUC is optimistic for them."
        )
    return lines


def copy_warnings(out: Path, n_images: int | None = None) -> list[str]:
    """The card's lines on exact and near copies, for the report."""
    lines = _duplicate_lines(out) + near_copy_lines(out, n_images)
    return [line.removeprefix("- ") for line in lines]


def ingest_warnings(run: dict[str, Any]) -> list[str]:
    """What the loader warned about (a shortcut, repeated paths), its WARNING: cut off and
    its examples left out (``without_examples``); the card and the report show them."""
    notes = run["data"].get("ingest", {}).get("notes", [])
    return [
        without_examples(n.removeprefix("WARNING: "))
        for n in notes
        if n.startswith("WARNING: ") and n[9:]
    ]


def without_examples(text: str) -> str:
    """``text`` without its examples: a "(e.g. ...)" aside, or ", e.g. ..." up to the
    aside's next ";" or its end. The console's notes name a file, a subfolder or a
    PatientID as an example, which may name a patient; the model card travels with the
    model, and the report is often shared with it, so they keep the counts and leave the
    names to the console and ``run.json``. Quoted names (reprs) may hold brackets,
    semicolons, escaped quotes; a quote opens only after "(", a space or a comma, so an
    apostrophe in a word (patients') opens none."""
    out: list[str] = []
    i = 0
    while (j := text.find("e.g. ", i)) >= 0:
        if j >= 1 and text[j - 1] == "(":
            start, stop = j - 1, ")"
        elif text[j - 2 : j] == ", ":
            start, stop = j - 2, ";)"
        else:
            out.append(text[i : j + 5])
            i = j + 5
            continue
        depth, k, quote = 0, j, ""
        while k < len(text):
            c = text[k]
            if quote:
                if c == "\\":  # an escaped character, a quote included
                    k += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"" and text[k - 1] in "( ,":
                quote = c
            elif c == "(":
                depth += 1
            elif depth == 0 and c in stop:
                break
            elif c == ")":
                depth -= 1
            k += 1
        if stop == ")":  # the whole aside, and the space before it
            k += 1
            start -= text[start - 1 : start] == " "
        out.append(text[i:start])
        i = k
    out.append(text[i:])
    return "".join(out)


def _ingest_warnings(run: dict[str, Any]) -> list[str]:
    return [f"- {n[0].upper()}{n[1:]}." for n in ingest_warnings(run)]


def budget_text(
    trials: pd.DataFrame, options: dict[str, Any], winner: str | None = None
) -> str | None:
    """What the time budget cut, from a run's files (trials.parquet, run.json's
    options), for the report and the model card: the console says it as it happens,
    the files kept only ``stopped_by``. None where the budget cut nothing."""
    minutes, wanted = options.get("time_budget_min"), options.get("trials")
    if minutes is None or "stopped_by" not in trials:
        return None
    cut = trials[trials["stopped_by"] == "time budget"]
    if cut.empty and (wanted is None or len(trials) >= wanted):
        return None
    text = (
        f"The time budget ({minutes:g} min) ended the search: {len(trials)} of {wanted} "
        f"trials began, and {len(cut)} {'was' if len(cut) == 1 else 'were'} stopped at the "
        "deadline (ranked on the epochs they had finished, if any)"
    )
    if winner is not None and winner in set(cut["trial_id"].astype(str)) and "epochs_run" in cut:
        ran = int(cut.loc[cut["trial_id"].astype(str) == winner, "epochs_run"].iloc[0])
        text += f"; the winner among them, after {ran} of {options.get('epochs')} epochs"
    return text + "."
