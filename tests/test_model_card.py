"""The model card: written from a run folder's files alone, right for every kind of run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

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
    splits = pd.DataFrame({"sample_id": ["a", "b"], "split": ["cv", "cv"], "fold": [0, 1]})
    if groups:
        splits["group"] = ["p1", "p2"]
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
    assert "no patient ids, so images are split one by one" in card
    # A class name holding "|" stays in its own column of the fold table.
    header = next(line for line in card.splitlines() if line.startswith("| split"))
    assert header == "| split | fold | n | benign | in situ \\| DCIS | invasive |"
    assert "n/a (a folder or generated data)" in card and "git commit `n/a`" in card


def test_binary_run_with_patients_and_test_scores(tmp_path: Path) -> None:
    test = {
        "auc": 0.9,
        "auc_ci95": [0.8, 0.97],
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
    assert "AUC **0.900** (95% CI 0.800-0.970" in card and "specificity n/a" in card
    assert "Per patient, `malignant` against the rest (mean probability): AUC **" in card
    assert "20 patients)." in card
    assert "grouped by patient (2 patients), so no patient is in two folds" in card
