"""A readable report of a run: one self-contained HTML file with its plots."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raydx.data.folds import fold_grouping
from raydx.data.intensity import intensity_note, modes_of
from raydx.data.near_copies import without_copies_text
from raydx.errors import count
from raydx.importance import ended, scored_trials
from raydx.metrics import (
    calibration,
    ci_by_text,
    multi_class_positive,
    net_benefit,
    patient_auc_text,
    winner_warnings,
)
from raydx.model_card import budget_text, copy_warnings, ingest_warnings
from raydx.operating_point import of_predictions, threshold_text
from raydx.prior import anomaly_scores, recipe_share, why
from raydx.results import atomic_write


def _fig_to_b64(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _plots(
    out: Path,
    trials: pd.DataFrame,
    folds: pd.DataFrame,
    pred: pd.DataFrame,
    best: dict,
    data: dict[str, Any],
    importance: pd.DataFrame | None = None,
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The figures by title (base64 PNG; "" for one that could not be drawn) and, by the
    same titles, notes on what a figure leaves out and why.

    ``data``: run.json's record of the images (class names, positive class);
    ``importance``: importance.csv, where the run has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    plots: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    plot_dir = out / "plots"
    plot_dir.mkdir(exist_ok=True)

    fig = _trials_figure(trials, best)
    if fig is not None:
        fig.savefig(plot_dir / "trials.png", dpi=110, bbox_inches="tight")
        plots["Trials"] = _fig_to_b64(fig)
        plt.close(fig)

    if importance is not None:
        fig = _importance_figure(importance, trials, best)
        fig.savefig(plot_dir / "importance.png", dpi=110, bbox_inches="tight")
        plots[IMPORTANCE_TITLE] = _fig_to_b64(fig)
        plt.close(fig)

    if not folds.empty:
        fig, ax = plt.subplots(figsize=(7, 4))
        curves = fold_curves(folds)
        for tid, c in curves.groupby("trial_id"):
            if tid == best["trial_id"]:
                continue
            ax.plot(c["epoch"], c["mean"], color="grey", alpha=0.4, lw=1)
        w = curves[curves["trial_id"] == best["trial_id"]]
        ax.plot(
            w["epoch"], w["mean"], color="tab:red", lw=2, label=f"winner {best['trial_id']} (mean)"
        )
        ax.fill_between(
            w["epoch"], w["mean"] - w["std"], w["mean"] + w["std"], color="tab:red", alpha=0.15
        )
        for _, c in folds[folds["trial_id"] == best["trial_id"]].groupby("fold"):
            ax.plot(c["epoch"], c["val_auc"], color="tab:red", alpha=0.35, lw=0.8, ls="--")
        ax.axvline(best["best_epoch"], color="k", ls=":", lw=1, label="best epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("validation AUC")
        ax.legend(loc="lower right", fontsize=8)
        fig.savefig(plot_dir / "learning_curves.png", dpi=110, bbox_inches="tight")
        plots["Learning curves (grey: other trials; dashed: the winner's folds)"] = _fig_to_b64(fig)
        plt.close(fig)

    if not pred.empty:
        anomaly = anomaly_scores(best.get("params") or {})
        multi = len(data["class_names"]) > 2  # the curves are the positive class's
        positive = str(data["positive_class_name"])
        finite = np.isfinite(pred["prob"].to_numpy(float))
        kept = pred[finite]
        title = "ROC of the winner" if anomaly else "ROC and calibration of the winner"
        said = notes.setdefault(title, [])
        said += _dropped(pred, finite, ("cv", "test"))
        fig, axes = plt.subplots(1, 1 if anomaly else 2, figsize=(4.5 if anomaly else 9, 4))
        axes = np.atleast_1d(axes)
        drawn = 0
        for split, color in (("cv", "tab:blue"), ("test", "tab:red")):
            d = kept[kept["split"] == split]
            y = d["is_positive"].to_numpy().astype(int)
            name = SPLIT_NAMES[split]
            if len(np.unique(y)) < 2:
                if len(d):  # (a split with none left is said above)
                    side = "positive" if y.all() else "negative"
                    said.append(
                        f"No {name} curve: its {count(len(d), 'image')} with a finite "
                        f"probability {'is' if len(d) == 1 else 'are all'} {side}, and a "
                        "curve needs both."
                    )
                continue
            drawn += 1
            fpr, tpr, _ = roc_curve(y, d["prob"])
            axes[0].plot(fpr, tpr, color=color, label=f"{name}, n={len(d)}")
            if anomaly:
                continue
            slope = calibration(y.astype(bool), d["prob"].to_numpy())["calibration_slope"]
            name += f", slope {slope:.2f}"
            # each non-empty tenth of the probability range at its mean prediction, so
            # that a line joins every bin that holds images
            frac, mean_prob = calibration_curve(y, d["prob"].to_numpy(float), n_bins=10)
            axes[1].plot(mean_prob, frac, "o-", color=color, label=name)
        if anomaly:
            said.append(ANOMALY_NOTE)
        if not drawn:
            plt.close(fig)
            plots[title] = ""
        else:
            axes[0].plot([0, 1], [0, 1], "k:", lw=1)
            axes[0].set_xlabel("1 - specificity")
            axes[0].set_ylabel("sensitivity")
            against = f", '{positive}' against the rest" if multi else ""
            axes[0].set_title(f"ROC{against}")
            axes[0].legend(loc="lower right", fontsize=8)
            if not anomaly:
                axes[1].plot([0, 1], [0, 1], "k:", lw=1)
                axes[1].set_xlabel(
                    f"predicted probability of '{positive}'"
                    if multi
                    else "predicted probability of the positive class"
                )
                axes[1].set_ylabel("observed fraction positive")
                axes[1].set_title("Calibration")
                axes[1].legend(loc="upper left", fontsize=8)
            fig.savefig(plot_dir / "roc_calibration.png", dpi=110, bbox_inches="tight")
            plots[title] = _fig_to_b64(fig)
            plt.close(fig)
        if not anomaly:  # a decision curve reads the scores as risks
            fig = _decision_curve(pred, best.get("threshold"), positive if multi else None)
            if fig is not None:
                title = (
                    "Decision curve: net benefit of acting on the winner's probability"
                    + (f" of '{positive}'" if multi else "")
                    + ", against acting on every image or on none"
                )
                fig.savefig(plot_dir / "decision_curve.png", dpi=110, bbox_inches="tight")
                plots[title] = _fig_to_b64(fig)
                plt.close(fig)
                rows = _decision_rows(kept)
                used = rows[1] if rows is not None else "cv"
                notes[title] = _dropped(pred, finite, (used,))
                if multi:
                    notes[title].append(
                        f"The model predicts the most probable class; this curve weighs acting "
                        f"on the probability of '{positive}' alone, '{positive}' against the "
                        "rest, at each threshold."
                    )
    saliency = plot_dir / "saliency.png"  # drawn by final.py, which holds the images
    if saliency.is_file():
        title = "Where the winner looks (test images: each class's highest and lowest scored)"
        plots[title] = base64.b64encode(saliency.read_bytes()).decode()
    # What the generative families made (images/<family>/): one fold of each pictured trial.
    for picture in sorted((out / "images").glob("*/*_fold0.png")):
        tid, _, kind = picture.stem.removesuffix("_fold0").partition("_")
        title = f"{picture.parent.name} family, trial {tid}: {kind} (fold 0; all in images/)"
        plots[title] = base64.b64encode(picture.read_bytes()).decode()
    return plots, notes


def _trials_figure(trials: pd.DataFrame, best: dict[str, Any]) -> Any:
    """Each trial's CV AUC, best first (the ``MAX_TRIAL_BARS`` best and the winner, where
    more have one); None when no trial has one. A trial that failed
    or was interrupted shows the AUC it had reached, which the search could not rank
    (``importance.scored_trials`` leaves it out too): grey, hatched and named so."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    ok = trials[trials["cv_auc_mean"].notna()].sort_values("cv_auc_mean", ascending=False)
    if ok.empty:
        return None
    shown = len(ok)
    if shown > MAX_TRIAL_BARS:  # a bar a trial stops being an overview (2000: 60000 px)
        top = ok.head(MAX_TRIAL_BARS)
        winner = ok[ok["trial_id"] == best["trial_id"]]
        ok = top if winner.index.isin(top.index).all() else pd.concat([top, winner])
    failed = ~ended(ok)
    status = ok["status"] if "status" in ok else pd.Series("TERMINATED", index=ok.index)
    names = [
        f"{t} ({'failed' if s == 'ERROR' else 'interrupted'})" if f else str(t)
        for t, s, f in zip(ok["trial_id"], status, failed, strict=True)
    ]
    colors = [
        "tab:gray" if f else "tab:red" if t == best["trial_id"] else "tab:blue"
        for t, f in zip(ok["trial_id"], failed, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(ok) + 1.2))
    y = np.arange(len(ok))
    bars = ax.barh(y, ok["cv_auc_mean"], xerr=ok["cv_auc_std"], color=colors, alpha=0.8)
    for bar, f in zip(bars, failed, strict=True):
        if f:
            bar.set_hatch("//")
    ax.set_yticks(y, names)
    if failed.any():
        unfinished = Patch(facecolor="tab:gray", hatch="//", alpha=0.8, label=FAILED_LABEL)
        ax.legend(handles=[unfinished], loc="lower right", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cross-validated AUC (mean ± std over folds, best epoch)")
    if len(ok) < shown:
        ax.set_title(
            f"the {MAX_TRIAL_BARS} best of {shown} trials with an AUC"
            + (" and the winner" if len(ok) > MAX_TRIAL_BARS else "")
            + "; all in trials.parquet",
            fontsize=9,
        )
    low = float(np.nanmin((ok["cv_auc_mean"] - ok["cv_auc_std"].fillna(0)).to_numpy(float)))
    ax.set_xlim(max(0.0, low - 0.05), 1.0)
    return fig


MAX_TRIAL_BARS = 40
SPLIT_NAMES = {"cv": "out-of-fold (CV)", "test": "test"}
FAILED_LABEL = "failed or interrupted (the AUC it had reached)"
ANOMALY_NOTE = (
    "No calibration curve and no decision curve: an anomaly-mode autoencoder's score is a "
    "squashed reconstruction error, not a probability, so there is no risk to calibrate "
    "or to act on; its ranking (the ROC curve) is what it offers."
)


def _dropped(pred: pd.DataFrame, finite: np.ndarray, splits: tuple[str, ...]) -> list[str]:
    """What a figure leaves out: images without a finite probability (a diverged model
    gives NaN), split by split."""
    said = []
    for split in splits:
        rows = (pred["split"] == split).to_numpy()
        bad = int((rows & ~finite).sum())
        if bad:
            said.append(
                f"{bad} of the {int(rows.sum())} {SPLIT_NAMES[split]} images have no finite "
                "probability (a diverged model gives NaN) and are left out of this figure."
            )
    return said


def fold_curves(folds: pd.DataFrame) -> pd.DataFrame:
    """Each trial's validation AUC per epoch: mean and std over its folds, as
    ``cv.fold_metrics`` takes them (population std; NaN where any fold's AUC is)."""
    auc = pd.to_numeric(folds["val_auc"], errors="coerce").astype(float)
    frame = folds[["trial_id", "epoch"]].assign(val_auc=auc, bad=~np.isfinite(auc))
    by = frame.groupby(["trial_id", "epoch"])
    bad = by["bad"].any()
    curves = pd.DataFrame(
        {
            "mean": by["val_auc"].mean().mask(bad),
            "std": by["val_auc"].std(ddof=0).mask(bad),
        }
    )
    return curves.reset_index()


IMPORTANCE_TITLE = "Which parameters mattered (importance.csv)"
SLICES = 6  # parameters pictured beside the importance bars


def _read_importance(out: Path) -> pd.DataFrame | None:
    path = out / "importance.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return table if table["importance"].notna().any() else None


def _importance_figure(table: pd.DataFrame, trials: pd.DataFrame, best: dict) -> Any:
    """Left: each parameter's importance with its resampled range. Right: the CV AUC of
    every trial against the leading parameters' values (hollow: stopped early)."""
    import matplotlib.pyplot as plt

    scored = table[table["importance"].notna()]
    shown = [p for p in scored["param"] if p in trials.columns][:SLICES]
    cols = 1 + max(1, (len(shown) + 1) // 2)
    fig = plt.figure(figsize=(3.3 * cols, 5.2))
    grid = fig.add_gridspec(2, cols)
    ax = fig.add_subplot(grid[:, 0])
    y = np.arange(len(scored))
    lo = (scored["importance"] - scored["low"]).clip(lower=0)
    hi = (scored["high"] - scored["importance"]).clip(lower=0)
    ax.barh(y, scored["importance"], xerr=[lo, hi], color="tab:blue", alpha=0.8, capsize=2)
    ax.set_yticks(y, scored["param"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, min(1.0, 1.15 * float(np.nanmax(scored["high"].to_numpy(float), initial=0.05))))
    ax.set_xlabel("fANOVA importance, median of resamples\n(10th-90th percentile)")
    ok = scored_trials(trials)
    stopped = ok["stopped_early"].fillna(False).astype(bool).to_numpy()
    kinds = dict(zip(table["param"], table["kind"], strict=True))
    for i, name in enumerate(shown):
        sub = fig.add_subplot(grid[i % 2, 1 + i // 2])
        col = ok[name]
        if kinds[name] == "categorical":
            labels = _choice_labels(col)
            x = np.array([labels.index(str(v)) if pd.notna(v) else np.nan for v in col])
            sub.set_xticks(range(len(labels)), labels, fontsize=7)
            sub.set_xlim(-0.5, len(labels) - 0.5)
        else:
            x = pd.to_numeric(col, errors="coerce").to_numpy(float)
            if kinds[name].endswith("-log"):
                sub.set_xscale("log")
        auc = ok["cv_auc_mean"].to_numpy(float)
        sub.scatter(x[~stopped], auc[~stopped], s=18, color="tab:blue", label="ran every epoch")
        sub.scatter(
            x[stopped],
            auc[stopped],
            s=18,
            facecolors="none",
            edgecolors="tab:blue",
            label="stopped early",
        )
        win = (ok["trial_id"] == best["trial_id"]).to_numpy()
        sub.scatter(x[win], auc[win], s=40, color="tab:red", marker="*", label="winner")
        sub.set_title(name, fontsize=9)
        sub.tick_params(labelsize=7)
        if i % 2 == 0:
            sub.set_ylabel("CV AUC", fontsize=8)
    fig.tight_layout()
    if shown:  # below the panels, where it hides no trial
        handles, labels = fig.axes[1].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="upper center", bbox_to_anchor=(0.6, 0.0), ncol=3, fontsize=8
        )
    return fig


def _choice_labels(col: pd.Series) -> list[str]:
    """A categorical parameter's values in axis order: by value where every one is a
    number (64, 128, 256, not "128" < "256" < "64"), else alphabetically."""
    values = set(col.dropna())
    try:
        return [str(v) for v in sorted(values, key=float)]
    except (TypeError, ValueError):
        return sorted({str(v) for v in values})


def _importance_text(table: pd.DataFrame) -> list[str]:
    """What the importance figure measures, and how far to trust it."""
    scored = table[table["importance"].notna()]
    n = int(table["n_trials"].iloc[0])
    text = (
        "<p>fANOVA (Optuna's <code>FanovaImportanceEvaluator</code>): the share of the "
        "variance of the trials' CV AUC that each parameter explains on its own, over "
        f"the {n} trials with a CV AUC, a trial stopped early with the CV AUC it reached "
        "(as the search ranked it). Each bar is the median of fits on resamples of the "
        "trials (with replacement), its range their 10th to 90th percentile: where two "
        f"ranges overlap, these {n} trials cannot "
        f"tell which of the two parameters mattered more, and with {len(scored)} "
        "parameters searched, a parameter that does not matter at all still gets a share "
        "by chance. The scatter plots show the CV AUC of every trial against the leading "
        "parameters' values.</p>"
    )
    notes = table[table["note"].notna() & (table["note"] != "")]
    if notes.empty:
        return [text]
    left = "; ".join(f"{html.escape(r.param)}: {html.escape(r.note)}" for r in notes.itertuples())
    return [text, f"<p>Not scored (fANOVA needs a parameter in every trial): {left}.</p>"]


def _decision_rows(pred: pd.DataFrame) -> tuple[pd.DataFrame, str] | None:
    """The rows a decision curve weighs: the test split's, else the out-of-fold ones
    (a run with ``--no-test``); None where neither holds both sides."""
    for split in ("test", "cv"):
        d = pred[pred["split"] == split]
        if not d.empty and d["is_positive"].nunique() == 2:
            return d, split
    return None


def _decision_curve(pred: pd.DataFrame, threshold: float | None, against: str | None = None) -> Any:
    """Net benefit over threshold probabilities up to well past the positive class's
    share (past it, acting on every image does harm) and past the model's threshold.

    Rows without a finite probability are left out (``_plots`` says how many).
    ``against``: the positive class of a multi-class task, whose model decides by the
    most probable class, so no threshold is drawn as its rule."""
    import matplotlib.pyplot as plt

    rows = _decision_rows(pred[np.isfinite(pred["prob"].to_numpy(float))])
    if rows is None:
        return None
    d, split = rows
    name = SPLIT_NAMES[split]
    y = d["is_positive"].to_numpy().astype(bool)
    p = d["prob"].to_numpy(float)
    hi = float(min(0.99, max(0.5, 2.5 * y.mean())))
    if against is not None:
        threshold = None  # the model predicts the most probable class
    if threshold is not None and 0 < threshold < 0.94:
        hi = max(hi, threshold + 0.05)
    t = np.linspace(0.01, hi, 99)
    model = net_benefit(y, p, t)
    everyone = net_benefit(y, np.ones_like(p), t)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(t, model, color="tab:red", label=f"winner, {name} (n={len(d)})")
    ax.plot(t, everyone, color="tab:gray", ls="--", label="act on every image")
    ax.axhline(0.0, color="k", lw=1, label="act on none")
    if threshold is not None and 0 < threshold < hi:
        ax.axvline(threshold, color="k", ls=":", lw=1, label=f"model threshold {threshold:.2f}")
    # Down to a little below the model's worst, but never so far that the band near
    # zero, where the decisions are, flattens out.
    floor = max(float(np.nanmin(model)) - 0.02, -max(0.1, float(y.mean())))
    ax.set_ylim(min(-0.05, floor), float(y.mean()) + 0.05)
    of = "" if against is None else f" of '{against}'"
    ax.set_xlabel(f"threshold probability{of} (the risk at which one would act)")
    ax.set_ylabel("net benefit (true positives per image)")
    if against is not None:
        ax.set_title(f"'{against}' against the rest")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def _budget(trials: pd.DataFrame, run: dict[str, Any], best: dict[str, Any]) -> list[str]:
    text = budget_text(trials, run.get("options", {}), str(best["trial_id"]))
    return [f"<p>{html.escape(text, quote=False)}</p>"] if text else []


def _splits(
    out: Path, run: dict[str, Any], k: int, table: Callable[[pd.DataFrame], str]
) -> list[str]:
    """How the folds were formed (by patient or image by image) and each split's class
    counts, as the model card says them; nothing for a run folder without the files."""
    if not (out / "splits.parquet").is_file():
        return []
    fold_seed = run["options"].get("fold_seed")
    fold_seed = run["seed"] if fold_seed is None else fold_seed
    grouping = fold_grouping(pd.read_parquet(out / "splits.parquet"))
    parts = [
        "<h2>Splits</h2>",
        f"<p>Cross-validation pool split into {k} folds (fold seed {fold_seed}; stratified "
        f"by class; {html.escape(grouping, quote=False)}), and the held-out test split:</p>",
    ]
    summary = out / "split_summary.csv"
    if summary.is_file():
        parts.append(table(pd.read_csv(summary, dtype={"fold": "Int64"})))
    return parts


def write_report(out: Path) -> Path:
    """Build ``report.html`` from the run's result files (it reads nothing else)."""
    out = Path(out)
    trials = pd.read_parquet(out / "trials.parquet")
    folds = pd.read_parquet(out / "folds.parquet")
    pred = pd.read_parquet(out / "predictions.parquet")
    best = yaml.safe_load((out / "best.yaml").read_text())
    scores = out / "test_metrics.json"
    test = json.loads(scores.read_text()) if scores.is_file() else None
    run = json.loads((out / "run.json").read_text())
    importance = _read_importance(out)
    plots, notes = _plots(out, trials, folds, pred, best, run["data"], importance)

    def table(df: pd.DataFrame, missing: str = "") -> str:
        """``missing``: what an empty cell says ("n/a" for a score that is undefined)."""
        # None reads "None" and an Int64 gap "<NA>" (na_rep fills float gaps alone)
        text = [c for c in df.columns if not pd.api.types.is_float_dtype(df[c])]
        df = df.assign(**{c: df[c].astype(object).where(df[c].notna(), missing) for c in text})
        return df.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep=missing, border=0)

    cols = [
        c
        for c in (
            "trial_id",
            "family",
            "status",
            "stopped_by",
            "epochs_run",  # where ASHA or the time budget stopped it
            "best_epoch",
            "cv_auc_mean",
            "cv_auc_std",
            "error",
        )
        if c in trials
    ]
    top = trials.sort_values("cv_auc_mean", ascending=False, na_position="last")[cols]
    data = run["data"]
    against = str(data["positive_class_name"]) if len(data["class_names"]) > 2 else None
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>raydx report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}"
        "td,th{padding:3px 8px;border-bottom:1px solid #ddd}"
        "h2{margin-top:1.6em}.big{font-size:1.3em}</style></head><body>",
        "<h1>raydx run report</h1>",
        f"<p>Data: <b>{html.escape(str(data['name']))}</b> ({data['n']} images, classes "
        f"{html.escape(', '.join(repr(str(c)) for c in data['class_names']), quote=False)}; "
        "positive class "
        f"<b>{html.escape(data['positive_class_name'])}</b>). Seed {run['seed']}. "
        f"Started {html.escape(run['started'])}.</p>",
        *_pixel_values(run),
        "<h2>Result</h2>",
        f"<p class='big'>Winner <b>{html.escape(best['trial_id'])}</b>: cross-validated AUC "
        f"<b>{best['cv_auc_mean']:.3f} ± {best['cv_auc_std']:.3f}</b> "
        f"(epoch {best['best_epoch']})" + ("." if test is None else _test_summary(test)) + "</p>",
        *_budget(trials, run, best),
        *_warnings(best, test, run),
        *[
            f"<p><b>Copies:</b> {html.escape(t.replace('`', ''))}</p>"
            for t in copy_warnings(out, data.get("n"))
        ],
        *(_test_details(test, table) if test else [_NOT_SCORED]),
        *_oof_details(best, run["options"].get("final", "ensemble"), table, against),
        *_operating_points(pred, run, best, table),
        *_splits(out, run, len(best["fold_aucs"]), table),
        "<h2>Winning configuration</h2>",
        f"<pre>{html.escape(yaml.safe_dump(best['params'], sort_keys=True))}</pre>",
    ]
    for title, b64 in plots.items():
        parts.append(f"<h2>{html.escape(title, quote=False)}</h2>")
        if b64:
            parts.append(f"<img src='data:image/png;base64,{b64}'>")
        parts += [f"<p>{html.escape(n, quote=False)}</p>" for n in notes.get(title, [])]
        if title == IMPORTANCE_TITLE and importance is not None:
            parts += _importance_text(importance)
    parts += ["<h2>All trials</h2>", table(top), "</body></html>"]
    path = out / "report.html"
    atomic_write(path, lambda p: p.write_text("\n".join(parts)))
    return path


def _pixel_values(run: dict[str, Any]) -> list[str]:
    """How 16-bit, float and DICOM pixels became 0-255 (``raydx.data.intensity``)."""
    ingest = run["data"].get("ingest", {})
    note = intensity_note(
        str(run["options"].get("intensity", "auto")),
        modes_of(ingest),
    )
    return [f"<p>Pixel values: {html.escape(note)}.</p>"] if note else []


def _warnings(best: dict[str, Any], test: dict[str, Any] | None, run: dict[str, Any]) -> list[str]:
    """The winner's warnings (below chance, fold models on different scales, one decision
    for every test image) and the loader's (a shortcut, a path listed twice), as on
    the console and the model card."""
    texts = winner_warnings(best, test, anomaly=anomaly_scores(best["params"]))
    return [f"<p><b>Warning:</b> {html.escape(t)}</p>" for t in texts + ingest_warnings(run)]


_NOT_SCORED = "<p>The test split was not scored (<code>raydx cv --no-test</code>).</p>"


def _test_summary(test: dict[str, Any]) -> str:
    lo, hi = test.get("auc_ci95") or (None, None)
    against = multi_class_positive(test)
    macro = "macro one-vs-rest, " if against else ""
    if _undefined(test.get("auc")):
        line = f"; test AUC <b>undefined</b> (n={test['n']}: {_why_undefined(test)})"
    else:
        line = (
            f"; test AUC <b>{_f(test['auc'])}</b> ({macro}95% CI {_f(lo)}–{_f(hi)}"
            f"{ci_by_text(test)}, n={test['n']})"
        )
    if "patient_auc" in test:
        named = html.escape(against, quote=False) if against else None
        line += f"; per patient {patient_auc_text(test, lambda s: f'<b>{s}</b>', named)}"
    return line + without_copies_text(test, lambda s: f"<b>{s}</b>") + "."


def _oof_details(
    best: dict[str, Any], final: str, table: Any, against: str | None = None
) -> list[str]:
    """``against``: the positive class of a multi-class task (None when binary)."""
    oof = best.get("oof")
    if not oof:  # runs written before best.yaml had the block
        return []
    scores = {k: v for k, v in oof.items() if not isinstance(v, (list, dict))}
    crossed = oof.get("cross_fitted")  # runs saved before it have none
    saved = "averages them" if final == "ensemble" else "is one model refit on every CV image"
    mix = best.get("class_mix")
    cause = html.escape(why(best["params"]).replace("`", ""))
    per_fold = best.get("member_calibration")
    if per_fold:  # each fold model on its own fold (raydx.fold_calibration)
        shifts = [m["intercept"] for m in per_fold["members"]]
        share = recipe_share(per_fold)
        trained_on = "" if share is None else f"; they trained on {share:.0%} positive ({cause})"
        mapped = (
            " Every probability here is shifted by the intercept of its fold model, fitted "
            f"on that model's own fold (from {min(shifts):+.2f} to {max(shifts):+.2f} on the "
            "logit scale: calibration-in-the-large, fold by fold), so that the fold models "
            f"agree on a scale and on average match the pool's mix ({_mix(per_fold['mapped_to'])})"
            f"{trained_on}. Each fold's AUC is unchanged, and the intercept here is 0 by "
            "construction"
            + (
                "; the cross-fitted row below checks it without the test split."
                if crossed
                else ": the test split checks it."
            )
        )
    elif mix and "shift" in mix:  # fitted out of fold (raydx.prior.fitted_class_mix)
        share = recipe_share(mix)
        trained_on = "" if share is None else f"; they trained on {share:.0%} positive ({cause})"
        mapped = (
            f" Every probability here is shifted by one intercept fitted on these "
            f"out-of-fold predictions ({mix['shift']:+.2f} on the logit scale: "
            f"calibration-in-the-large), so that on average they match the pool's mix "
            f"({_mix(mix['mapped_to'])}); the networks' own probabilities behaved as if "
            f"trained on {_mix(mix['trained'])}{trained_on}. The AUC is unchanged, and the "
            "intercept here is 0 by construction"
            + (
                "; the cross-fitted row below checks it without the test split."
                if crossed
                else ": the test split checks it."
            )
        )
    elif mix:  # a run saved before the shift was fitted: Bayes' rule from the recipe's mix
        mapped = (
            f" The networks trained on another class mix ({cause}: "
            f"{_mix(mix['trained'])}); every probability here is mapped to the pool's "
            f"mix ({_mix(mix['mapped_to'])}) by Bayes' rule, which leaves the AUC as it is."
        )
    else:
        mapped = ""
    fits = "threshold and the shift are" if mix else "threshold is"
    how = "fits them on the other folds' rows and applies them to each fold's in turn"
    if per_fold:
        fits = "threshold and the fold models' intercepts are"
        how = (
            "fits the threshold on the other folds' rows and each fold's intercept on the "
            "rest of its own, and applies them to each fold's rows in turn"
        )
    crossing = (
        f" The {fits} fitted on these same rows, which flatters them (a sensitivity"
        f" target holds here exactly); the cross-fitted row {how}: what images the fits"
        " did not see should get."
        if crossed
        else ""
    )
    versus = (
        ""
        if against is None
        else " The predicted class is the most probable one; the pooled AUC is the macro "
        "average of one-vs-rest AUCs, and the columns marked vs rest are those of "
        f"'{html.escape(against)}' against the rest at the threshold."
    )
    head = (
        "<p>Out of fold: every CV image once, scored by the fold model that did not train "
        f"on it (single fold models; the saved model {saved}). Calibration intercept: 0 "
        f"is ideal; slope: 1 is ideal, below 1 the probabilities are too extreme, above 1 "
        f"too timid.{mapped}"
        f"{crossing}{versus}</p>"
    )

    def named(row: dict[str, Any]) -> dict[str, Any]:
        return row if against is None else _versus_rest(row, against, "pooled_auc")

    if not crossed:
        return [head, table(pd.DataFrame([named(scores)]), "n/a")]
    rows = [
        {"fitted on": "every out-of-fold row", **scores},
        # The same images: their counts, so that the columns stay whole numbers.
        {"fitted on": "the other folds (cross-fitted)", **crossed}
        | {k: scores[k] for k in ("n", "n_patients") if k in scores},
    ]
    # Blank where the cross-fitted row has no such score (an AUC no fit changes).
    return [head, table(pd.DataFrame([named(r) for r in rows]))]


def _operating_points(
    pred: pd.DataFrame, run: dict[str, Any], best: dict[str, Any], table: Any
) -> list[str]:
    """Binary tasks: the thresholds other rules would pick, side by side."""
    if len(run["data"]["class_names"]) != 2:
        return []  # the decision is the most probable class; no threshold to pick
    # A NaN probability is never >= a threshold: kept, it would count as a negative call.
    finite = np.isfinite(pred["prob"].to_numpy(float))
    dropped = " ".join(_dropped(pred, finite, ("cv", "test"))).replace("figure", "table")
    pred = pred[finite]
    if not (pred["split"] == "cv").any():
        return []  # no out-of-fold probability to choose a threshold on
    has_test = bool((pred["split"] == "test").any())
    points = of_predictions(pred, run["options"].get("operating_point"), best)
    return [
        "<h2>Operating points</h2>",
        "<p>Each threshold is chosen by its rule on the out-of-fold predictions"
        + (
            "; the cross-fitted columns choose it for each fold on the other folds' rows "
            "(what the rule gives on images it was not chosen on, without the test split)"
            if "cross-fitted sensitivity" in points
            else ""
        )
        + (
            "; the test columns say where that same threshold lands on images it was not chosen on"
            if has_test
            else ""
        )
        + ". <code>raydx predict --operating-point RULE</code> applies one to new images; "
        "<code>raydx cv --config best.yaml --operating-point RULE</code> makes it the "
        "saved model's." + (f" {dropped}" if dropped else "") + "</p>",
        table(points.assign(threshold=[threshold_text(t, 4) for t in points["threshold"]])),
    ]


def _mix(shares: list[float]) -> str:
    """A binary class mix (only binary ones are mapped), as the positive class's share."""
    return f"{shares[1]:.0%} positive"


def _test_details(test: dict[str, Any], table: Any) -> list[str]:
    scores = {k: v for k, v in test.items() if not isinstance(v, (str, list, dict))}
    against = multi_class_positive(test)
    cut, source = (
        _f(test.get("threshold")),
        html.escape(str(test.get("threshold_source", "")), quote=False),
    )
    if against is None:
        rule = f"Threshold {cut} ({source}). "
    else:
        scores.pop("accuracy_at_0_5", None)  # the most probable class's accuracy again
        scores = _versus_rest(scores, against, "auc")
        rule = (
            "The predicted class is the most probable one; the AUC is the macro average of "
            "one-vs-rest AUCs, and the columns marked vs rest are those of "
            f"'{html.escape(against)}' against the rest at probability &gt;= {cut} ({source}). "
        )
    per_class = []
    if test.get("per_class"):  # a macro mean hides a weak class
        rows = pd.DataFrame(
            [{"class": c, **v} for c, v in test["per_class"].items()],
            columns=["class", "auc", "recall", "n", "predicted"],
        ).rename(columns={"auc": "AUC vs rest", "n": "images", "predicted": "predicted as it"})
        per_class = [
            "<p>Per class: its AUC against the rest, its recall by the most probable class, "
            "and how many test images are predicted it.</p>",
            table(rows, "n/a"),
        ]
    return [
        f"<p>Test model: {html.escape(test['model'])}. {rule}"
        "Only the winner was scored on the test split.</p>",
        table(pd.DataFrame([scores]), "n/a"),
        *per_class,
    ]


# Scores of the positive class against the rest, in a multi-class task's tables.
VERSUS_REST = (
    "sensitivity",
    "specificity",
    "pr_auc",
    "threshold",
    "brier",
    "calibration_intercept",
    "calibration_slope",
    "patient_auc",
)


def _versus_rest(scores: dict[str, Any], against: str, macro: str) -> dict[str, Any]:
    """A multi-class task's scores with their columns named for what they measure: the
    macro one-vs-rest AUC, and ``against`` (the positive class) against the rest."""

    def name(k: str) -> str:
        if k == macro:
            return f"{k} (macro one-vs-rest)"
        return f"{k} ('{against}' vs rest)" if k in VERSUS_REST else k

    return {name(k): v for k, v in scores.items()}


def _undefined(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _f(x: Any) -> str:
    """A score to three places, "n/a" where undefined (``strict_json`` saves NaN as null)."""
    return "n/a" if _undefined(x) else f"{x:.3f}"


def _why_undefined(test: dict[str, Any]) -> str:
    """Why the test AUC is undefined, read off the other scores: the Brier score exists
    unless a probability is not finite."""
    if "brier" not in test:  # scored before raydx reported calibration
        return "the test images are all of one class, or a probability is not finite"
    if _undefined(test["brier"]):
        return "some of the model's test probabilities are not finite (a diverged model)"
    return "the test images are all of one class"
