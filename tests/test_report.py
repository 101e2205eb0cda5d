"""report.html: written from a run folder's files alone, for every kind of run, even one
whose test scores are undefined."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from test_model_card import CLASSES, _run

from raydx.cv import fold_metrics
from raydx.files_out import atomic_write
from raydx.jsonfile import strict_json
from raydx.metrics import diagnosis_metrics
from raydx.model_card import write_model_card
from raydx.report import (
    ANOMALY_NOTE,
    FAILED_LABEL,
    MAX_TRIAL_BARS,
    _decision_curve,
    _importance_figure,
    _trials_figure,
    fold_curves,
    write_report,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BINARY = ["benign", "malignant"]


def _report_run(
    tmp: Path,
    *,
    classes: list[str] = BINARY,
    test_prob: float | None = None,
    params: dict[str, Any] | None = None,
) -> Path:
    """A run folder with what write_report reads. Test metrics come from the test rows of
    predictions.parquet through ``strict_json``, as the run saves them; ``test_prob``
    sets every test probability (NaN: a diverged refit, whose undefined scores are NaN
    in the metrics)."""
    out = _run(tmp, test=None, groups=False)
    positive = len(classes) - 1
    rng = np.random.default_rng(0)
    label = np.r_[np.arange(60) % len(classes), np.arange(20) % len(classes)]
    is_pos = label == positive
    prob = np.clip(0.3 + 0.4 * is_pos + rng.normal(0, 0.2, 80), 0.01, 0.99)
    pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(80)],
            "split": ["cv"] * 60 + ["test"] * 20,
            "fold": pd.array([i % 3 for i in range(60)] + [None] * 20, dtype="Int64"),
            "label": label,
            "is_positive": is_pos,
            "prob": prob if test_prob is None else np.r_[prob[:60], np.full(20, test_prob)],
        }
    ).to_parquet(out / "predictions.parquet")
    if len(classes) == 2:
        scores = diagnosis_metrics(is_pos[60:].astype(int), prob[60:], positive=1, threshold=0.3)
    else:  # the other classes share what the positive class leaves
        rest = np.repeat(((1 - prob[60:]) / positive)[:, None], positive, axis=1)
        scores = diagnosis_metrics(
            label[60:], np.c_[rest, prob[60:]], positive=positive, threshold=0.3
        )
    if test_prob is not None and np.isnan(test_prob):  # what NaN probabilities leave
        undefined = ("auc", "pr_auc", "brier", "calibration_intercept", "calibration_slope")
        scores |= dict.fromkeys(undefined, float("nan")) | {"auc_ci95": [np.nan, np.nan]}
    scores |= {
        "model": "mean probability of the fold models",
        "trial_id": "abc123",
        "positive_class": classes[positive],
        "threshold_source": "Youden's J on the out-of-fold predictions",
    }
    (out / "test_metrics.json").write_text(strict_json(scores))
    pd.DataFrame(
        {"trial_id": "abc123", "fold": [0, 1, 2] * 2, "epoch": [1] * 3 + [2] * 3}
        | {"val_auc": [0.7, 0.72, 0.74, 0.8, 0.82, 0.84]}
    ).to_parquet(out / "folds.parquet")
    pd.DataFrame(
        {"trial_id": ["abc123"], "status": ["TERMINATED"], "cv_auc_mean": [0.8123]}
        | {"cv_auc_std": [0.04], "error": [None]}
    ).to_parquet(out / "trials.parquet")
    run = json.loads((out / "run.json").read_text())
    run["data"] |= {"class_names": classes, "positive_class_name": classes[positive]}
    (out / "run.json").write_text(json.dumps(run))
    best = yaml.safe_load((out / "best.yaml").read_text())
    best["params"] = params or best["params"]
    best["oof"] = {
        "pooled_auc": 0.8,
        "sensitivity": 0.7,
        "specificity": None,  # strict_json's NaN
        "brier": 0.2,
        "calibration_intercept": 0.0,
        "calibration_slope": 1.0,
        "n": 60,
    }
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    cfg = json.loads((out / "model" / "config.json").read_text())
    cfg |= {"class_names": classes, "positive_class": positive}
    cfg["positive_class_name"] = classes[positive]
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    return out


def test_undefined_test_scores_and_nan_probabilities_still_give_report_and_card(
    tmp_path: Path,
) -> None:
    """A diverged refit: every test probability NaN, so test_metrics.json holds null."""
    out = _report_run(tmp_path / "nan", test_prob=float("nan"))
    assert json.loads((out / "test_metrics.json").read_text())["auc"] is None
    html = write_report(out).read_text()
    assert (
        "test AUC <b>undefined</b> (n=20: some of the model's test probabilities are not "
        "finite (a diverged model))"
    ) in html
    assert (
        "20 of the 20 test images have no finite probability (a diverged model gives NaN) "
        "and are left out of this figure."
    ) in html
    # The out-of-fold curves are still drawn, and the decision curve falls back on them.
    assert (out / "plots" / "roc_calibration.png").stat().st_size > 1000
    assert "Decision curve: net benefit" in html
    assert "<td>n/a</td>" in html  # the undefined scores in the tables
    # No test column in the operating points: a NaN would count as a negative call there.
    assert "are left out of this table" in html and "test sensitivity" not in html
    card = write_model_card(out).read_text()
    assert "AUC **n/a** (95% CI n/a-n/a" in card

    # All test images of one class: probabilities fine, the AUC undefined all the same.
    out = _report_run(tmp_path / "one", classes=BINARY)
    pred = pd.read_parquet(out / "predictions.parquet")
    pred.loc[pred["split"] == "test", "is_positive"] = False
    pred.to_parquet(out / "predictions.parquet")
    test = json.loads((out / "test_metrics.json").read_text())
    test |= {"auc": None, "auc_ci95": [None, None], "sensitivity": None}
    (out / "test_metrics.json").write_text(json.dumps(test))
    html = write_report(out).read_text()
    assert "test AUC <b>undefined</b> (n=20: the test images are all of one class)" in html
    assert "No test curve: its 20 images with a finite probability are all negative" in html


def test_failed_trials_are_apart_in_the_bars_and_out_of_the_importance_scatter() -> None:
    trials = pd.DataFrame(
        {
            "trial_id": ["t0", "t1", "t2", "t3", "t4", "t5"],
            "status": ["ERROR", *["TERMINATED"] * 2, "INTERRUPTED", *["TERMINATED"] * 2],
            "batch": [64, 128, 256, 64, 64, 128],
            "stopped_early": [False, True, False, False, True, False],
            "cv_auc_mean": [0.95, 0.70, 0.80, 0.90, 0.71, 0.84],
            "cv_auc_std": 0.01,
        }
    )
    fig = _trials_figure(trials, {"trial_id": "t5"})
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["t0 (failed)", "t3 (interrupted)", "t5", "t2", "t4", "t1"]
    hatched = [bar.get_hatch() == "//" for bar in ax.patches]
    assert hatched == [True, True, False, False, False, False]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [FAILED_LABEL]
    plt.close(fig)

    table = pd.DataFrame(
        {"param": ["batch"], "importance": [0.9], "low": [0.8], "high": [1.0]}
        | {"n_trials": [4], "kind": ["categorical"], "note": [""]}
    )
    fig = _importance_figure(table, trials, {"trial_id": "t5"})
    sub = fig.axes[1]
    assert [t.get_text() for t in sub.get_xticklabels()] == ["64", "128", "256"]  # by value
    drawn = {c.get_label(): c.get_offsets().tolist() for c in sub.collections}
    # The scored trials only: the failed t0 and interrupted t3 are not "ran every epoch".
    assert drawn["ran every epoch"] == [[2.0, 0.80], [1.0, 0.84]]
    assert drawn["stopped early"] == [[1.0, 0.70], [0.0, 0.71]]
    plt.close(fig)


def test_a_long_search_shows_its_best_trials_and_the_winner() -> None:
    """A bar a trial grew the figure by 0.35 inch each: 2000 trials drew 60000 px."""
    n = 300
    trials = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(n)],
            "status": ["ERROR"] + ["TERMINATED"] * (n - 1),
            "cv_auc_mean": np.linspace(0.95, 0.5, n),
            "cv_auc_std": 0.01,
        }
    )
    fig = _trials_figure(trials, {"trial_id": "t100"})  # t0 failed, so not the winner
    names = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert names == ["t0 (failed)", *[f"t{i}" for i in range(1, MAX_TRIAL_BARS)], "t100"]
    assert fig.axes[0].get_title() == (
        f"the {MAX_TRIAL_BARS} best of {n} trials with an AUC and the winner; all in trials.parquet"
    )
    assert fig.get_size_inches()[1] < 20
    plt.close(fig)
    fig = _trials_figure(trials, {"trial_id": "t1"})
    assert len(fig.axes[0].get_yticklabels()) == MAX_TRIAL_BARS
    assert fig.axes[0].get_title().startswith(f"the {MAX_TRIAL_BARS} best of {n} trials with")
    plt.close(fig)
    fig = _trials_figure(trials.head(MAX_TRIAL_BARS), {"trial_id": "t1"})
    assert fig.axes[0].get_title() == ""  # all shown
    plt.close(fig)


def test_learning_curve_band_is_the_std_the_headline_reports() -> None:
    aucs = [0.80, 0.82, 0.84]
    gathered = [
        dict(val_auc=a, val_loss=0.5, val_acc=0.8, train_loss=0.4, time_s=1.0) for a in aucs
    ]
    headline = fold_metrics(gathered, 3)
    folds = pd.DataFrame(
        {"trial_id": "t", "fold": [0, 1, 2, 0, 1, 2], "epoch": [1, 1, 1, 2, 2, 2]}
        | {"val_auc": [*aucs, 0.9, float("nan"), 0.9]}
    )
    curves = fold_curves(folds).set_index("epoch")
    assert curves.loc[1, "mean"] == pytest.approx(headline["cv_auc_mean"])
    assert curves.loc[1, "std"] == pytest.approx(headline["cv_auc_std"])  # ddof=0
    # A fold without an AUC leaves the epoch without a mean, as the search ranks it.
    assert np.isnan(curves.loc[2, "mean"]) and np.isnan(curves.loc[2, "std"])


def test_multi_class_tables_name_the_class_against_the_rest(tmp_path: Path) -> None:
    out = _report_run(tmp_path, classes=CLASSES)
    html = write_report(out).read_text()
    for column in ("sensitivity", "specificity", "brier", "calibration_slope", "threshold"):
        assert f"<th>{column} ('invasive' vs rest)</th>" in html
    assert "<th>auc (macro one-vs-rest)</th>" in html
    assert "<th>pooled_auc (macro one-vs-rest)</th>" in html  # the out-of-fold table
    assert "accuracy_at_0_5" not in html  # the most probable class's accuracy again
    assert (
        "The predicted class is the most probable one; the AUC is the macro average of "
        "one-vs-rest AUCs, and the columns marked vs rest are those of 'invasive' against "
        "the rest at probability &gt;= 0.300"
    ) in html
    assert "Threshold 0.300" not in html and "Operating points" not in html
    # each class's own AUC and recall (a macro mean hides a weak class), as a table
    assert "<th>AUC vs rest</th>" in html and "<th>predicted as it</th>" in html
    assert "{&#x27;auc" not in html and "{'auc'" not in html  # not a dict in a cell
    card = write_model_card(out).read_text()
    assert "- Per class on the test split (AUC against the rest, recall by the most " in card
    assert "net benefit of acting on the winner's probability of 'invasive'" in html

    pred = pd.read_parquet(out / "predictions.parquet")
    fig = _decision_curve(pred, 0.3, "invasive")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert not any(lab.startswith("model threshold") for lab in labels)  # not its rule
    assert fig.axes[0].get_title() == "'invasive' against the rest"
    plt.close(fig)

    binary = write_report(_report_run(tmp_path / "binary")).read_text()
    assert "<th>sensitivity</th>" in binary and "<th>accuracy_at_0_5</th>" in binary
    assert "Threshold 0.300 (Youden's J" in binary


def test_anomaly_scores_get_no_calibration_or_decision_curve(tmp_path: Path) -> None:
    params = {"family": "autoencoder", "ae_mode": "anomaly", "model": "conv_ae"}
    out = _report_run(tmp_path, params=params)
    html = write_report(out).read_text()
    assert "<h2>ROC of the winner</h2>" in html and ANOMALY_NOTE in html
    assert "ROC and calibration" not in html and "Decision curve" not in html
    assert not (out / "plots" / "decision_curve.png").exists()

    html = write_report(_report_run(tmp_path / "cnn")).read_text()
    assert "ROC and calibration of the winner" in html and "Decision curve" in html
    assert ANOMALY_NOTE not in html


def test_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[str] = []
    fsync, replace = os.fsync, os.replace

    def synced(fd: int) -> None:
        done.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        fsync(fd)

    def renamed(a: Any, b: Any) -> None:
        done.append("rename")
        replace(a, b)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", renamed)
    atomic_write(tmp_path / "report.html", lambda p: p.write_text("<html>"))
    assert done == ["file", "rename", "folder"]
    assert (tmp_path / "report.html").read_text() == "<html>"

    # Where a folder cannot be opened (Windows), the file is written all the same.
    opened = os.open

    def no_folders(path: Any, flags: int, *args: Any) -> int:
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return opened(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    atomic_write(tmp_path / "best.yaml", lambda p: p.write_text("a: 1\n"))
    assert (tmp_path / "best.yaml").read_text() == "a: 1\n"


def test_the_test_aucs_interval_says_when_it_resampled_patients(tmp_path: Path) -> None:
    out = _report_run(tmp_path)
    test = json.loads((out / "test_metrics.json").read_text())
    lo, hi = test["auc_ci95"]
    html = write_report(out).read_text()
    assert test["auc_ci95_by"] == "image"
    assert f"(95% CI {lo:.3f}–{hi:.3f}, n=20)" in html and "by patient" not in html
    # With patient ids, the test split's images are resampled a patient at a time.
    pred = pd.read_parquet(out / "predictions.parquet").query("split == 'test'")
    patients = np.arange(20) // 2
    y, p = pred["is_positive"].to_numpy(int), pred["prob"].to_numpy()
    test |= diagnosis_metrics(y, p, positive=1, threshold=0.3, groups=patients)
    (out / "test_metrics.json").write_text(strict_json(test))
    lo, hi = test["auc_ci95"]
    html = write_report(out).read_text()
    assert f"(95% CI {lo:.3f}–{hi:.3f} by patient bootstrap, n=20)" in html


def test_the_report_says_how_the_folds_were_formed(tmp_path: Path) -> None:
    """An audit: the model card said whether folds kept patients whole, the report
    never did."""
    out = _report_run(tmp_path)
    pd.DataFrame(
        {"split": ["cv", "cv", "test"], "fold": ["0", "1", ""], "malignant": [3, 4, 2]}
    ).to_csv(out / "split_summary.csv", index=False)
    page = write_report(out).read_text()
    assert (
        "<h2>Splits</h2>\n<p>Cross-validation pool split into 3 folds (fold seed 5; stratified "
        "by class; no patient ids, so images are split one by one), and the held-out test "
        "split:</p>"
    ) in page
    assert "<th>malignant</th>" in page
    assert "&lt;NA&gt;" not in page  # the test split's fold, an Int64 gap, reads empty
    splits = pd.read_parquet(out / "splits.parquet")
    splits.assign(group=["p1", "p2", "p3"]).to_parquet(out / "splits.parquet")
    page = write_report(out).read_text()
    assert "grouped by patient (2 patients), so no patient is in two folds)" in page


def test_the_report_and_card_say_what_the_time_budget_cut(tmp_path: Path) -> None:
    """An audit: only the console and trials.parquet's stopped_by said the search was
    cut short; the card's '3 epochs each' read as the plan."""
    out = _report_run(tmp_path)
    assert "time budget" not in write_report(out).read_text()
    trials = pd.read_parquet(out / "trials.parquet")
    trials.assign(stopped_by=["time budget"], epochs_run=[3]).to_parquet(out / "trials.parquet")
    run = json.loads((out / "run.json").read_text())
    run["options"] |= {"time_budget_min": 0.5, "trials": 8, "epochs": 5}
    (out / "run.json").write_text(json.dumps(run))
    said = (
        "The time budget (0.5 min) ended the search: 1 of 8 trials began, and 1 was stopped "
        "at the deadline (ranked on the epochs they had finished, if any); the winner among "
        "them, after 3 of 5 epochs."
    )
    assert f"<p>{said}</p>" in write_report(out).read_text()
    assert f"- {said}" in write_model_card(out).read_text()
