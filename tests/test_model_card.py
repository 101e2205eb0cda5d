"""The model card: written from a run folder's files alone, right for every kind of run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from raydx.model_card import model_card, write_model_card

CLASSES = ["benign", "in situ | DCIS", "invasive"]


def _run(tmp: Path, *, test: dict[str, Any] | None, groups: bool) -> Path:
    out = tmp / "run"
    (out / "model").mkdir(parents=True)
    params = {"model": "cnn", "lr": 0.001, "family": "cnn"}
    best = {
        "trial_id": "abc123",
        "family": "cnn",
        "params": params,
        "best_epoch": 7,
        "cv_auc_mean": 0.8123,
        "cv_auc_std": 0.0456,
        "fold_aucs": [0.8, 0.85, 0.78],
        "threshold": 0.3,
    }
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    run = {
        "command": ["raydx", "cv", "--config", "x.yaml"],
        "options": {"fold_seed": 5},
        "seed": 1,
        "started": "2026-11-28T10:00:00",
        "git_commit": None,
        "packages": {"raydx": "0.1.0", "torch": "2.14.1", "ray": "2.60.0", "optuna": "5.0.0"},
        "data": {"source": "manifest.csv", "name": "manifest", "n": 90, "sha256": None},
    }
    (out / "run.json").write_text(json.dumps(run))
    config = {
        "model": "cnn",
        "trial_id": "abc123",
        "class_names": CLASSES,
        "positive_class": 2,
        "positive_class_name": "invasive",
        "threshold": 0.3,
        "preprocessing": {"image_size": 32, "channels": 3, "mean": 0.5, "std": 0.5},
        "combine": "mean probability of the fold models",
        "epochs": 7,
        "members": ["member_0.safetensors", "member_1.safetensors", "member_2.safetensors"],
    }
    (out / "model" / "config.json").write_text(json.dumps(config))
    pd.DataFrame({"trial_id": ["abc123"], "cv_auc_mean": [0.8123]}).to_parquet(
        out / "trials.parquet"
    )
    splits = pd.DataFrame(
        {"sample_id": ["a", "b", "c"], "split": ["cv", "cv", "test"], "fold": [0, 1, None]}
    )
    if groups:
        splits["group"] = ["p1", "p2", "p3"]  # the pool's patients are counted, not p3
    splits.to_parquet(out / "splits.parquet")
    summary = pd.DataFrame(
        {"split": ["cv", "cv", "cv"], "fold": [0, 1, 2], "n": [30, 30, 30]}
        | {c: [10, 10, 10] for c in CLASSES}
    )
    summary.to_csv(out / "split_summary.csv", index=False)
    if test is not None:
        (out / "test_metrics.json").write_text(json.dumps(test))
    return out


def test_multiclass_run_without_a_test_split(tmp_path: Path) -> None:
    card = model_card(_run(tmp_path, test=None, groups=False))
    assert card.startswith("# Model card: `cnn` for `invasive` and others, trained on manifest")
    assert "The predicted class is the most probable one" in card
    assert "macro average of one-vs-rest AUCs" in card
    assert "**0.812 ± 0.046**" in card and "0.800, 0.850, 0.780" in card
    assert "One configuration, cross-validated (`raydx cv`), not chosen among others" in card
    assert "--fold-seed 6 --no-test" in card  # the next fold seed after the run's 5
    assert "The test split was not scored" in card
    assert "leaves the estimate uncertain" not in card  # no interval to speak of
    assert "no patient ids, so images are split one by one" in card
    # A class name holding "|" stays in its own column of the fold table.
    header = next(line for line in card.splitlines() if line.startswith("| split"))
    assert header == "| split | fold | n | benign | in situ \\| DCIS | invasive |"
    assert "n/a (a folder or generated data)" in card and "git commit `n/a`" in card
    # Written before best.yaml had an out-of-fold block and config.json a threshold rule.
    assert "(Youden's J on the out-of-fold predictions)" in card and "Out of fold" not in card
    assert "The model folder was saved by" not in card  # config.json recorded no version


def test_provenance_names_the_raydx_that_saved_the_model(tmp_path: Path) -> None:
    # A run resumed under another raydx saves its model with that one.
    out = _run(tmp_path, test=None, groups=False)
    cfg = json.loads((out / "model" / "config.json").read_text())
    cfg |= {"raydx_version": "0.2.0", "format_version": 2}
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    card = model_card(out)
    provenance = card.split("## Provenance")[1]
    assert "- raydx 0.1.0, git commit" in provenance  # the run's, from run.json
    assert (
        "- The model folder was saved by raydx 0.2.0, format version 2 (`config.json`)."
        in provenance
    )


def test_out_of_fold_line_and_a_rate_rule(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=True)
    best = yaml.safe_load((out / "best.yaml").read_text())
    best["oof"] = {
        "pooled_auc": 0.8,
        "sensitivity": 0.95,
        "specificity": 0.5,
        "brier": 0.12,
        "calibration_intercept": 0.1,
        "calibration_slope": float("nan"),
        "n": 90,
        "patient_auc": 0.81,
        "patient_auc_ci95": [0.7, 0.9],
        "n_patients": 30,
        "cross_fitted": {
            "sensitivity": 0.93,
            "specificity": 0.48,
            "brier": 0.125,
            "calibration_intercept": -0.02,
            "calibration_slope": 0.7,
        },
    }
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    cfg = json.loads((out / "model" / "config.json").read_text())
    cfg["threshold_rule"] = "sensitivity >= 0.95"
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    card = model_card(out)
    assert "(sensitivity >= 0.95 on the out-of-fold predictions)" in card
    assert (
        "- Out of fold (every CV image once, scored by the fold model that did not train on "
        "it; n=90): pooled AUC 0.800 (macro one-vs-rest); `invasive` against the rest at "
        "the threshold, sensitivity 0.950 and specificity 0.500; Brier score 0.120, "
        "calibration intercept 0.100 (0 is ideal) and slope n/a (1 is ideal; below 1, too "
        "extreme). Per patient: 'invasive' against the rest: AUC 0.810 (95% CI 0.700-0.900, "
        "30 patients)."
    ) in card
    # The same rows with nothing fitted on the fold they score (no class_mix here, as for
    # an anomaly-scoring autoencoder: only the threshold was fitted).
    assert "- The threshold was fitted on those same rows, which flatters them" in card
    assert (
        "fold's in turn (cross-fitted: what images the fits did not see should get): "
        "sensitivity 0.930 and specificity 0.480; Brier score 0.125, calibration intercept "
        "-0.020 (0 is ideal) and slope 0.700"
    ) in card


def test_binary_run_with_patients_and_test_scores(tmp_path: Path) -> None:
    test = {
        "auc": 0.9,
        "auc_ci95": [0.8, 0.97],
        "auc_ci95_by": "patient",
        "accuracy": 0.85,
        "sensitivity": 0.8,
        "specificity": float("nan"),
        "balanced_accuracy": 0.8,
        "pr_auc": 0.7,
        "accuracy_at_0_5": 0.84,
        "n": 60,
        "patient_auc": 0.88,
        "patient_auc_ci95": [0.7, 0.99],
        "n_patients": 20,
        "patient_aggregation": "mean probability",
    }
    out = _run(tmp_path, test=test, groups=True)
    cfg = json.loads((out / "model" / "config.json").read_text())
    cfg |= {"class_names": ["benign", "malignant"], "positive_class": 1}
    cfg["positive_class_name"] = "malignant"
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    path = write_model_card(out)
    card = path.read_text()
    assert path == out / "model" / "README.md"
    assert "`malignant` vs `benign`" in card
    assert "`malignant` is predicted at probability >= 0.3000" in card
    assert "AUC **0.900** (95% CI 0.800-0.970, stratified bootstrap of patients); " in card
    assert "specificity n/a" in card
    assert "Per patient, `malignant` against the rest (mean probability): AUC **" in card
    assert "20 patients)." in card
    assert "A test set of 60 images leaves the estimate uncertain (the interval above" in card
    assert "grouped by patient (2 patients), so no patient is in two folds" in card
    assert "threshold chosen by Youden's J on the out-of-fold predictions" in card
    assert "accuracy at 0.5 0.840; calibration not recorded." in card  # an older run


def test_report_of_an_older_run_folder_and_one_refit_model(tmp_path: Path) -> None:
    """report.html from a folder written before best.yaml had ``oof`` and the test
    metrics had calibration; then with them, for a refit model."""
    from raydx.report import write_report

    out = _run(tmp_path, test=None, groups=False)
    rng = np.random.default_rng(0)
    y = rng.random(80) < 0.3
    pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(80)],
            "split": ["cv"] * 60 + ["test"] * 20,
            "is_positive": y,
            "prob": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, 80), 0, 1),
        }
    ).to_parquet(out / "predictions.parquet")
    pd.DataFrame(
        {"trial_id": ["abc123"] * 2, "fold": [0, 1], "epoch": [1, 1], "val_auc": [0.8, 0.82]}
    ).to_parquet(out / "folds.parquet")
    pd.DataFrame(
        {"trial_id": ["abc123"], "cv_auc_mean": [0.8123], "cv_auc_std": [0.04], "error": [None]}
    ).to_parquet(out / "trials.parquet")
    run = json.loads((out / "run.json").read_text())
    run["data"] |= {"class_names": CLASSES, "positive_class_name": "invasive"}
    (out / "run.json").write_text(json.dumps(run))
    (out / "images" / "gan").mkdir(parents=True)
    for fold in (0, 1):  # what GANTrainer.write_artifacts leaves
        Image.new("L", (8, 8)).save(out / "images" / "gan" / f"abc123_samples_fold{fold}.png")
    html = write_report(out).read_text()
    assert "Out of fold" not in html and "Decision curve: net benefit" in html
    assert html.count("gan family, trial abc123: samples (fold 0; all in images/)") == 1
    assert "None" not in html  # a trial without an error shows an empty cell
    assert "classes 'benign', 'in situ | DCIS', 'invasive'" in html  # one name each
    assert (out / "plots" / "decision_curve.png").stat().st_size > 1000

    best = yaml.safe_load((out / "best.yaml").read_text())
    best["oof"] = {"pooled_auc": 0.8, "brier": 0.1, "n": 60}
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    run["options"]["final"] = "refit"
    (out / "run.json").write_text(json.dumps(run))
    html = write_report(out).read_text()
    assert "the saved model is one model refit on every CV image" in html


def test_decision_curve_draws_net_benefit_on_test_else_out_of_fold() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raydx.metrics import net_benefit
    from raydx.report import _decision_curve

    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    p = 1 / (1 + np.exp(-(rng.normal(size=200) + 2.0 * np.where(y, 1, -1))))
    test = pd.DataFrame({"split": "test", "is_positive": y, "prob": p})
    fig = _decision_curve(test, 0.6)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    t, model = lines["winner, test (n=200)"].get_data()
    np.testing.assert_allclose(model, net_benefit(y, p, t))
    np.testing.assert_allclose(
        lines["act on every image"].get_ydata(), net_benefit(y, 1.0 + 0 * p, t)
    )
    assert t[0] == 0.01 and t[-1] >= 0.65  # past the model's threshold
    assert "model threshold 0.60" in lines
    plt.close(fig)
    # No test split (a run with --no-test): the out-of-fold predictions, labelled so.
    fig = _decision_curve(test.assign(split="cv"), None)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "winner, out-of-fold (CV) (n=200)" in labels
    assert not any(lab.startswith("model threshold") for lab in labels)
    plt.close(fig)
    # One class only: no benefit to weigh, no plot.
    assert _decision_curve(test.assign(is_positive=True), 0.5) is None


def test_a_search_winner_re_checked_by_cv_says_how_it_was_chosen(tmp_path: Path) -> None:
    search = tmp_path / "search"
    search.mkdir()
    pd.DataFrame({"trial_id": ["a", "b", "c"], "cv_auc_mean": [0.7, 0.81, 0.75]}).to_parquet(
        search / "trials.parquet"
    )
    (search / "test_metrics.json").write_text("{}")
    test = {
        "auc": 0.8,
        "auc_ci95": [0.7, 0.9],
        "n": 40,
        "accuracy": 0.75,
        "sensitivity": 0.7,
        "specificity": 0.8,
        "balanced_accuracy": 0.75,
        "pr_auc": 0.6,
        "accuracy_at_0_5": 0.7,
        "brier": 0.2,
        "calibration_intercept": 0.0,
        "calibration_slope": 1.0,
    }
    out = _run(tmp_path, test=test, groups=False)
    run = json.loads((out / "run.json").read_text())
    run["space"] = {"path": str(search / "best.yaml")}
    (out / "run.json").write_text(json.dumps(run))

    splits = pd.read_parquet(out / "splits.parquet")
    splits.to_parquet(search / "splits.parquet")  # the folds the search chose it on
    card = model_card(out)
    assert f"The winner of the search in `{search}`, cross-validated again" in card
    assert "as optimistic as that search's figure" in card and "not chosen among" not in card
    assert f"the search in `{search}` scored this configuration there too" in card
    # no patient ids (or a run saved before the interval said): images were resampled
    assert "AUC **0.800** (macro one-vs-rest; 95% CI 0.700-0.900, stratified bootstrap); " in card

    splits.assign(fold=splits["fold"][::-1].to_numpy()).to_parquet(search / "splits.parquet")
    card = model_card(out)
    assert "on another fold assignment: less optimistic" in card
    assert "these images." in card and "scored this configuration there too" in card

    # another seed without an official test split: the same images, another test split
    moved = splits.copy()
    cv, test_row = moved.index[moved["split"] == "cv"][0], moved.index[moved["split"] == "test"][0]
    moved.loc[[cv, test_row], "split"] = ["test", "cv"]
    moved.to_parquet(search / "splits.parquet")
    card = model_card(out)
    assert "its test split was drawn anew and holds images the search chose it on" in card
    assert "scored this configuration there too" not in card

    # another seed's --limit subset (an audit: 47 of 200 images in common): not comparable
    other = splits.assign(sample_id=splits["sample_id"].astype(str) + "x")
    other.to_parquet(search / "splits.parquet")
    card = model_card(out)
    assert "on other images than that search's (other data, or another seed's" in card
    assert "less optimistic" not in card and "scored this configuration there too" not in card

    # generated images keep their ids whatever the seed drew: the fingerprints tell
    splits.to_parquet(search / "splits.parquet")
    run["data"] |= {"fingerprint": "a" * 64, "fingerprint_version": 2}
    run["options"]["data"] = "synthetic"
    (out / "run.json").write_text(json.dumps(run))
    other = {"options": {"data": "synthetic:400"}, "data": {**run["data"], "fingerprint": "b" * 64}}
    (search / "run.json").write_text(json.dumps(other))
    assert "on other images than that search's" in model_card(out)
    (search / "run.json").write_text(json.dumps({**other, "data": run["data"]}))
    assert "cross-validated again" in model_card(out)
    # files: a re-check at another --image-size decodes them to other pixels, the same
    # images all the same (a review)
    run["options"]["data"] = "manifest.csv"
    (out / "run.json").write_text(json.dumps(run))
    (search / "run.json").write_text(json.dumps({**other, "options": {"data": "manifest.csv"}}))
    assert "cross-validated again" in model_card(out)

    pd.DataFrame({"trial_id": ["a"], "cv_auc_mean": [0.7]}).to_parquet(search / "trials.parquet")
    card = model_card(out)  # a one-configuration run chose nothing
    assert "not chosen among others" in card


def test_a_limited_subset_and_test_copies_in_the_pool_are_named(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=False)
    run = json.loads((out / "run.json").read_text())
    run["options"]["limit"] = 90
    (out / "run.json").write_text(json.dumps(run))
    pd.DataFrame(
        {
            "set": [0, 0, 1, 1],
            "sample_id": ["test/1", "train/7", "test/2", "train/9"],
            "label": [0, 1, 1, 1],
            "side": ["test", "cv", "test", "cv"],
            "labels_conflict": [True, True, False, False],
            "across_test": [True, True, True, True],
        }
    ).to_csv(out / "duplicates.csv", index=False)
    card = model_card(out)
    assert "a stratified `--limit 90` subset: its scores are not comparable" in card
    assert "2 images of the test split have exact copies in the cross-validation pool" in card
    assert "optimistic where the copies' labels agree, pessimistic where they conflict" in card
    assert "3 members, 7 epochs each" in card


def test_a_search_of_one_trial_is_not_called_raydx_cv(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=False)
    fixed = {"params": {"model": "cnn", "lr": 0.001}}
    (out / "space.yaml").write_text(yaml.safe_dump(fixed))
    assert "- One configuration, cross-validated (`raydx cv`), not chosen" in model_card(out)
    drawn = {"params": {"model": "cnn", "lr": {"type": "float", "low": 1e-4, "high": 1e-2}}}
    (out / "space.yaml").write_text(yaml.safe_dump(drawn))
    card = model_card(out)
    assert "- The only trial of a search: its configuration was drawn from the space" in card
    assert "(`raydx cv`), not chosen" not in card


def test_the_card_and_the_report_keep_the_loaders_warnings_without_their_examples(
    tmp_path: Path,
) -> None:
    """The console names a file, a subfolder or a PatientID as an example, which may
    name a patient (a privacy audit: "PID-12345_DOE_JANE" in the card that travels with
    the model). The card and the report keep the warning and its counts, not the names;
    ``run.json``, which stays with the run, keeps them."""
    from raydx.data.files import _dicom_group_notes, _folder_group_note, _repeated_notes
    from raydx.model_card import without_examples
    from raydx.report import _warnings

    notes = [
        *_repeated_notes(pd.Series(["malignant/DOE_JANE (1).png"] * 2 + ["b.png"]), "path"),
        *_dicom_group_notes(
            pd.DataFrame({"group": ["PID-12345", "PID-12345-b"]}), np.array(["PID-12345"] * 2)
        ),
        _folder_group_note(
            pd.DataFrame({"folder": ["PID-12345_DOE_JANE", "PID-2_ROE_RICHARD"]}),
            pd.Series([True, True]),
            finer=(4, "PID-2_ROE_RICHARD/study1"),
        ),
    ]
    assert len(notes) == 3 and all("DOE_JANE" in n or "PID-12345" in n for n in notes)
    out = _run(tmp_path, test=None, groups=False)
    run = json.loads((out / "run.json").read_text())
    run["data"]["ingest"] = {"notes": notes}
    (out / "run.json").write_text(json.dumps(run))
    card = model_card(out)
    report = "".join(_warnings(yaml.safe_load((out / "best.yaml").read_text()), None, run))
    for text in (card, report):
        assert "DOE" not in text and "PID-" not in text and "ROE" not in text
    assert (
        "- 1 image listed more than once in column 'path'; each row is used as an image of "
        "its own (the copies are kept in one fold, see duplicates.csv)."
    ) in card
    assert "- 1 DICOM PatientID spread over several groups of the group column, so one" in card
    assert "only 2 subfolder names found (2 groups; the same name under two" in card
    assert "1 image listed more than once in column &#x27;path&#x27;; each row" in report
    # what is left of an aside, a quoted name with brackets and a semicolon included
    assert without_examples("found (3 names, e.g. 'a (1;b'; one each) and (e.g. 'c)') x") == (
        "found (3 names; one each) and x"
    )
    # an apostrophe in a word opens no quote; a repr's escaped quote closes none (a review)
    assert without_examples("names, e.g. the patients' folders; rest kept") == "names; rest kept"
    assert without_examples("odd (e.g. 'a\"b\\'c'), rest kept") == "odd, rest kept"
    assert without_examples("e.g. this stays (as e.g. does this)") == (
        "e.g. this stays (as e.g. does this)"
    )


def test_loader_warnings_reach_the_card(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=False)
    run = json.loads((out / "run.json").read_text())
    run["data"]["ingest"] = {
        "notes": [
            "no group column: folds by image",
            "WARNING: no column 'patient_id', so images are split one by one, but column "
            "'patient' looks like patient ids; if it is, pass --group-column patient",
        ]
    }
    (out / "run.json").write_text(json.dumps(run))
    card = model_card(out)
    assert (
        "- No column 'patient_id', so images are split one by one, but column 'patient' "
        "looks like patient ids; if it is, pass --group-column patient."
    ) in card
    assert "no group column: folds by image" not in card


def _anomaly_run(tmp: Path, *, auc: float, slope: float) -> Path:
    """A binary run whose winner is an anomaly-mode autoencoder."""
    out = _run(tmp, test=None, groups=False)
    best = yaml.safe_load((out / "best.yaml").read_text())
    params = {"family": "autoencoder", "ae_mode": "anomaly", "model": "conv_ae"}
    best |= {"family": "autoencoder", "params": params, "cv_auc_mean": auc}
    best["oof"] = {
        "pooled_auc": auc,
        "sensitivity": 1.0,
        "specificity": 0.03,
        "brier": 0.3,
        "calibration_intercept": -0.87,
        "calibration_slope": slope,
        "n": 90,
    }
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    cfg = json.loads((out / "model" / "config.json").read_text())
    cfg |= {"class_names": ["benign", "malignant"], "positive_class": 1, "params": params}
    cfg |= {"positive_class_name": "malignant", "model": "conv_ae", "oof_scores": "oof.parquet"}
    (out / "model" / "config.json").write_text(json.dumps(cfg))
    return out


def test_an_anomaly_model_is_not_said_to_hold_a_class_mix(tmp_path: Path) -> None:
    """Its scores are a squashed reconstruction error: no mix to reflect or map."""
    card = model_card(_anomaly_run(tmp_path, auc=0.8, slope=0.4))
    assert "The probability of `malignant` is an anomaly score" in card
    assert "The anomaly scores do not depend on the class mix" in card
    assert "reflect the class mix" not in card and "--prevalence" not in card
    assert "do not read one as a risk" in card
    assert "slope 0.400 (1 is ideal; below 1, too extreme)" in card
    assert "Warning" not in card


def test_a_winner_below_chance_is_flagged_and_a_negative_slope_read_right(
    tmp_path: Path,
) -> None:
    card = model_card(_anomaly_run(tmp_path, auc=0.431, slope=-0.225))
    assert (
        "- **Warning:** The cross-validated AUC 0.431 is below 0.5: this model ranks the "
        "classes worse than chance (an anomaly-mode autoencoder flags images that "
        "reconstruct worse than the non-positive training images, and here the positive "
        "ones do not). Do not use it as it is."
    ) in card
    assert (
        "slope -0.225 (1 is ideal; below 0, higher probabilities go with fewer positives)" in card
    )
    assert "too extreme" not in card


def test_colour_converted_from_an_icc_profile_is_on_the_card(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=False)
    run = json.loads((out / "run.json").read_text())
    modes = {"RGB": 20, "RGB with ICC profile 'Display P3'": 3}
    run["data"]["ingest"] = {"modes": modes | {"RGB with ICC profile 'Adobe RGB (1998)'": 7}}
    (out / "run.json").write_text(json.dumps(run))
    n = run["data"]["n"]
    assert (
        f"- Colour: 10 of the {n} images carried an ICC profile other than sRGB (such as "
        "'Adobe RGB (1998)') and were converted to sRGB; `raydx predict` reads new files the "
        "same way, numpy arrays are taken as sRGB."
    ) in model_card(out)
    run["data"]["ingest"] = {"modes": {"RGB": 30}}
    (out / "run.json").write_text(json.dumps(run))
    assert "ICC" not in model_card(out)


def test_fold_models_on_different_scales_and_one_decision_reach_card_and_report(
    tmp_path: Path,
) -> None:
    from raydx.report import _warnings

    out = _run(tmp_path, test=None, groups=False)
    best = yaml.safe_load((out / "best.yaml").read_text())
    best["cv_auc_mean"], best["threshold"] = 0.988, 0.0669
    best["oof"] = {
        "pooled_auc": 0.850,
        "sensitivity": 1.0,
        "specificity": 0.03,
        "brier": 0.3,
        "calibration_intercept": -0.87,
        "calibration_slope": 0.5,
        "n": 90,
    }
    (out / "best.yaml").write_text(yaml.safe_dump(best))
    card = model_card(out)
    assert "- **Warning:** The fold models score on different scales: each ranks" in card
    run = json.loads((out / "run.json").read_text())
    run["data"]["ingest"] = {"notes": ["WARNING: the file format alone tells the classes apart"]}
    test = {"sensitivity": 1.0, "specificity": 0.0, "threshold": 0.07, "positive_class": "m"}
    said = _warnings(best, test, run)
    starts = (
        "the fold models score on",
        "at the threshold 0.07 every test image",
        "the file format",
    )
    assert len(said) == 3
    for text, start in zip(said, starts, strict=True):
        assert text.startswith(f"<p><b>Warning:</b> {start}"), text


def test_test_copies_are_counted_as_test_images_not_as_sets(tmp_path: Path) -> None:
    """One set of four copies: three in the test split, one in the pool."""
    from raydx.data.duplicates import duplicate_notes

    out = _run(tmp_path, test=None, groups=False)
    dups = pd.DataFrame(
        {
            "set": [0, 0, 0, 0],
            "sample_id": ["a", "b", "c", "d"],
            "label": ["x"] * 4,
            "side": ["cv", "test", "test", "test"],
            "labels_conflict": [False] * 4,
            "across_test": [True] * 4,
        }
    )
    dups.to_csv(out / "duplicates.csv", index=False)
    card = model_card(out)
    assert "- 3 images of the test split have exact copies in the cross-validation" in card
    notes = " ".join(duplicate_notes(dups))
    assert "WARNING: 3 images of the given test split have exact copies in the" in notes


def test_the_card_and_the_notes_count_test_copies_with_one_helper(tmp_path: Path) -> None:
    """``copies_across_test``: the same count from ``duplicate_sets``' frame and from
    ``duplicates.csv`` read back; copies within one side and an older CSV without the
    ``across_test`` column count none."""
    from raydx.data.duplicates import copies_across_test

    dups = pd.DataFrame(
        {
            "set": [0, 0, 1, 1, 1],
            "sample_id": ["a", "b", "c", "d", "e"],
            "label": ["x"] * 5,
            "side": ["cv", "cv", "test", "test", "cv"],
            "labels_conflict": [False] * 5,
            "across_test": [False, False, True, True, True],
        }
    )
    out = _run(tmp_path, test=None, groups=False)
    dups.to_csv(out / "duplicates.csv", index=False)
    across, n = copies_across_test(pd.read_csv(out / "duplicates.csv"))
    assert n == copies_across_test(dups)[1] == 2 and sorted(across["sample_id"]) == ["c", "d", "e"]
    assert "- 2 images of the test split have exact copies in the cross-validation" in (
        model_card(out)
    )
    dups.drop(columns="across_test").to_csv(out / "duplicates.csv", index=False)
    assert copies_across_test(pd.read_csv(out / "duplicates.csv"))[1] == 0
    assert "exact copies in the cross-validation pool" not in model_card(out)


def test_the_card_names_the_run_folder_wherever_it_has_moved(tmp_path: Path) -> None:
    """The card travels with the model: no path of the machine it was written on."""
    old, new = tmp_path / "old", tmp_path / "new"
    search = old / "search"
    search.mkdir(parents=True)
    pd.DataFrame({"trial_id": ["a", "b"], "cv_auc_mean": [0.7, 0.81]}).to_parquet(
        search / "trials.parquet"
    )
    (search / "best.yaml").write_text("params: {}\n")
    out = _run(old, test=None, groups=False)
    pd.read_parquet(out / "splits.parquet").to_parquet(search / "splits.parquet")
    run = json.loads((out / "run.json").read_text())
    run["options"]["output"] = str(out)  # as the run recorded itself: resolved
    run["space"] = {"path": str(search / "best.yaml")}
    (out / "run.json").write_text(json.dumps(run))
    old.rename(new)  # the project folder moved, both runs with it

    card = model_card(new / "run")
    assert (
        "`raydx cv --config RUN/best.yaml --fold-seed 6 --no-test`, RUN being this run's "
        "folder (the one that holds this model folder)."
    ) in card
    assert str(old) not in card
    assert f"- The winner of the search in `{new / 'search'}`, cross-validated again" in card


def test_seen_images_are_found_from_inside_the_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``raydx predict --model .`` run in RUN/model: "." has no parent but itself."""
    from raydx.seen import SEEN_FILE, SeenImages

    (tmp_path / "model").mkdir()
    pd.DataFrame(
        {"file_hash": ["f1"], "view_hash": ["v1"], "part": ["training"], "view_size": [28]}
    ).to_parquet(tmp_path / SEEN_FILE)
    monkeypatch.chdir(tmp_path / "model")
    for given in (".", "./", "../model"):
        seen = SeenImages.beside(Path(given))
        assert seen is not None, given
        assert seen.part("f1", np.zeros((4, 4, 1), np.uint8)) == "training"


def test_the_card_names_a_checkouts_uncommitted_changes(tmp_path: Path) -> None:
    out = _run(tmp_path, test=None, groups=False)
    run = json.loads((out / "run.json").read_text())
    run |= {"git_commit": "abc123", "git_changed": ["raydx/final.py", "raydx/predict.py"]}
    (out / "run.json").write_text(json.dumps(run))
    assert (
        "git commit `abc123` with uncommitted changes to 2 files (`raydx/final.py`, "
        "`raydx/predict.py`); PyTorch" in model_card(out)
    )
    run |= {"git_changed": []}
    (out / "run.json").write_text(json.dumps(run))
    assert "git commit `abc123`; PyTorch" in model_card(out)
    run |= {"git_changed": None}  # git failed: the commit alone says too little
    (out / "run.json").write_text(json.dumps(run))
    assert "`abc123` (uncommitted changes unknown: git failed); PyTorch" in model_card(out)
    del run["git_changed"]  # a run recorded before git_changed was
    (out / "run.json").write_text(json.dumps(run))
    assert "git commit `abc123`; PyTorch" in model_card(out)


def test_the_test_score_without_near_copies_reaches_card_and_report(tmp_path: Path) -> None:
    from raydx.report import _test_summary

    kept = {"left_out": 2, "n": 58, "auc": 0.85, "auc_ci95": [0.7, 0.95], "accuracy": 0.8}
    test = {
        "auc": 0.9,
        "auc_ci95": [0.8, 0.97],
        "accuracy": 0.85,
        "sensitivity": 0.8,
        "specificity": 0.9,
        "balanced_accuracy": 0.85,
        "pr_auc": 0.7,
        "accuracy_at_0_5": 0.84,
        "n": 60,
        "without_copies": kept,
    }
    card = model_card(_run(tmp_path, test=test, groups=False))
    assert (
        "- The same model on the test split without the 2 test images with a copy in the "
        "pool, test AUC 0.850 [95% CI 0.700-0.950], accuracy 0.800 (n=58)."
    ) in card
    assert _test_summary(test).endswith(
        "; without the 2 test images with a copy in the pool, test AUC <b>0.850</b> "
        "[95% CI 0.700-0.950], accuracy 0.800 (n=58)."
    )
