"""`raydx tune` end to end on a small subset of BreastMNIST, checking every output file."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from scipy.special import expit, logit

from raydx import load_model
from raydx.cli import main
from raydx.config import TrialConfig
from raydx.final import training_settings
from raydx.fold_calibration import aligned_to_share
from raydx.metrics import DIAGNOSIS_METRICS, auc, calibration
from raydx.operating_point import OperatingPoint

pytestmark = [pytest.mark.slow, pytest.mark.ray]

TEST_METRIC_KEYS = set(DIAGNOSIS_METRICS)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session, breastmnist):
    out = tmp_path_factory.mktemp("run") / "out"
    rc = main(
        [
            "tune",
            "--space",
            "search_spaces/cnn.yaml",
            "--data",
            str(breastmnist),
            "--trials",
            "2",
            "--folds",
            "3",
            "--epochs",
            "2",
            "--limit",
            "240",
            "--output",
            str(out),
            "--seed",
            "1",
            "--scheduler",
            "none",
        ]
    )
    assert rc == 0
    return out


def test_a_local_ray_starts_no_preemption_watcher(run_dir):
    """A one-node Ray that raydx started is never drained: no watcher process per trial."""
    import ray

    names = {a["ActorClassName"] for a in ray._private.state.actors().values()}
    assert "TrainController" in names  # the search did run Ray Train here
    assert "PreemptionWatcher" not in names


def test_trials_table(run_dir):
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert len(trials) == 2
    assert set(trials["status"]) <= {"TERMINATED", "ERROR"}
    assert trials["trial_id"].is_unique
    ok = trials[trials.status == "TERMINATED"]
    assert len(ok) >= 1
    for col in (
        "model",
        "lr",
        "best_epoch",
        "cv_auc_mean",
        "cv_auc_std",
        "fold_0_auc",
        "fold_2_auc",
    ):
        assert col in trials.columns
    r = ok.iloc[0]
    folds = np.array([r[f"fold_{i}_auc"] for i in range(3)])
    assert r.cv_auc_mean == pytest.approx(folds.mean())
    assert r.cv_auc_std == pytest.approx(folds.std())
    assert 1 <= r.best_epoch <= 2
    # the hand-tuned network is enqueued (first, but 2 trials run at once: rows may swap)
    hand = trials[(trials.lr == 0.003) & (trials.lr_schedule == "onecycle")]
    assert len(hand) == 1 and hand.iloc[0]["model"] == "cnn"
    assert hand.iloc[0]["status"] == "TERMINATED"  # 2 epochs of 2 batches: one-cycle's shortest


def test_folds_table(run_dir):
    trials = pd.read_parquet(run_dir / "trials.parquet")
    folds = pd.read_parquet(run_dir / "folds.parquet")
    assert not folds.duplicated(["trial_id", "fold", "epoch"]).any()
    assert set(folds["fold"]) == {0, 1, 2}
    for col in ("val_auc", "val_acc", "val_loss"):
        assert folds[col].between(0, np.inf).all()
    # trials.parquet's numbers are the best epoch's cross-fold mean
    for r in trials[trials.status == "TERMINATED"].itertuples():
        f = folds[(folds.trial_id == r.trial_id)]
        means = f.groupby("epoch")["val_auc"].mean()
        assert r.cv_auc_mean == pytest.approx(means.max())
        assert r.best_epoch == means.idxmax()
        assert len(f) == 3 * r.epochs_run


def test_splits_table(run_dir):
    s = pd.read_parquet(run_dir / "splits.parquet")
    assert len(s) == 240 and s["sample_id"].is_unique
    assert set(s["split"]) == {"cv", "test"}
    assert s.loc[s.split == "test", "fold"].isna().all()
    assert set(s.loc[s.split == "cv", "fold"]) == {0, 1, 2}
    # the official MedMNIST test split is the test split; train+val is the CV pool
    assert s.loc[s.split == "test", "sample_id"].str.startswith("test/").all()
    assert not s.loc[s.split == "cv", "sample_id"].str.startswith("test/").any()


def test_load_pool_gives_the_runs_images_and_splits(run_dir, breastmnist):
    """What bench/ re-trains as plain fold loops is what the search's trials saw."""
    from raydx.data.folds import splits_frame
    from raydx.prepare import load_pool, pool_options

    options = pool_options(run_dir)
    assert options["data"] == str(breastmnist) and options["limit"] == 240
    pool = load_pool(**options)
    ours = splits_frame(pool.table, pool.splits).reset_index(drop=True)
    theirs = pd.read_parquet(run_dir / "splits.parquet")
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    assert pool.table.class_names[pool.positive] == "malignant"
    assert pool.images.shape == (240, 1, 28, 28) and pool.images.dtype == np.float32
    prep = json.loads((run_dir / "model" / "config.json").read_text())["preprocessing"]
    pixels = pool.table.images.transpose(0, 3, 1, 2) / 255.0
    assert np.allclose(pool.images, (pixels - prep["mean"]) / prep["std"], atol=1e-6)
    model = load_model(run_dir / "model")
    assert model.positive_class == pool.positive
    # other folds, same test split (as `raydx cv --fold-seed 2`)
    other = load_pool(str(breastmnist), folds=3, seed=1, fold_seed=2, limit=240)
    assert (other.splits.split == pool.splits.split).all()
    assert (other.splits.fold != pool.splits.fold).any()
    # by hand, the same
    again = load_pool(str(breastmnist), folds=3, seed=1, limit=240)
    assert (again.splits.fold == pool.splits.fold).all()
    assert np.array_equal(again.images, pool.images)


def test_predictions_table(run_dir):
    p = pd.read_parquet(run_dir / "predictions.parquet")
    s = pd.read_parquet(run_dir / "splits.parquet")
    assert set(p["sample_id"]) == set(s["sample_id"])
    assert p["prob"].between(0, 1).all()
    merged = p.merge(s, on="sample_id", suffixes=("", "_s"))
    assert (merged["split"] == merged["split_s"]).all()


def test_best_and_test_metrics(run_dir):
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert best["cv_auc_mean"] == pytest.approx(trials["cv_auc_mean"].max())
    assert {"trial_id", "params", "best_epoch", "cv_auc_mean", "cv_auc_std"} <= set(best)
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert set(test) >= TEST_METRIC_KEYS
    assert test["n"] == (pd.read_parquet(run_dir / "splits.parquet").split == "test").sum()
    lo, hi = test["auc_ci95"]
    assert lo <= test["auc"] <= hi
    assert 0 < test["threshold"] < 1
    # the threshold comes from out-of-fold predictions, as the winner's config says
    cfg = json.loads((run_dir / "model" / "config.json").read_text())
    assert cfg["threshold"] == pytest.approx(test["threshold"])
    # every training setting, the ones the space left to their defaults too
    used = TrialConfig.from_params(cfg["params"])
    assert cfg["training"] == json.loads(json.dumps(training_settings(used)))
    assert {"lr", "label_smoothing", "augment"} <= set(cfg["training"])
    assert "model_params" not in cfg["training"]  # config.json's own, with the defaults
    assert ("momentum" in cfg["training"]) == (used.optimizer == "sgd")
    # best.yaml scores the winner's out-of-fold predictions as one pool.
    pred = pd.read_parquet(run_dir / "predictions.parquet")
    cv = pred[pred["split"] == "cv"]
    oof = best["oof"]
    assert oof["n"] == len(cv)
    # ranked with one positive share for every fold, not by the per-fold intercepts
    y = cv["is_positive"].to_numpy()
    one = aligned_to_share(cv["prob"].to_numpy(), cv["fold"].to_numpy(), float(y.mean()))
    assert oof["pooled_auc"] == pytest.approx(auc(y.astype(int), one))
    expected = calibration(cv["is_positive"].to_numpy(), cv["prob"].to_numpy())
    assert {k: oof[k] for k in expected} == pytest.approx(expected, nan_ok=True)
    assert "patient_auc" not in oof  # no patient ids in the .npz


def test_run_json(run_dir):
    run = json.loads((run_dir / "run.json").read_text())
    assert run["seed"] == 1
    assert (
        run["data"]["sha256"] == "5e68d79723fb3a63a399b0a66b66451799fc2eb3651f469cec0b679cfd743b68"
    )
    assert run["data"]["positive_class_name"] == "malignant"
    assert run["packages"]["ray"] == "2.60.0"
    assert run["options"]["folds"] == 3


def _images(npz, sample_ids) -> np.ndarray:
    """BreastMNIST images by raydx sample id ("train/12", "test/3")."""
    with np.load(npz) as z:
        return np.stack([z[f"{s.split('/')[0]}_images"][int(s.split("/")[1])] for s in sample_ids])


def _reproduces_test_probabilities(out, npz) -> None:
    """The saved model, loaded without Ray, gives the test probabilities of the run."""
    model = load_model(out / "model")
    p = pd.read_parquet(out / "predictions.parquet").set_index("sample_id")
    ids = [i for i in p.index if i.startswith("test/")][:10]
    got = model.predict_proba(_images(npz, ids))
    np.testing.assert_allclose(got, p.loc[ids, "prob"], atol=1e-5)


def test_model_loads_without_ray_and_reproduces_test_probabilities(run_dir, breastmnist):
    model = load_model(run_dir / "model")
    assert model.positive_class == 0 and len(model.members) == 3
    _reproduces_test_probabilities(run_dir, breastmnist)


def test_every_binary_winner_is_recalibrated_in_the_large(run_dir):
    """Whatever its class_balance, each fold model's out-of-fold probabilities are
    shifted by its own intercept, so that each fold's sum to its positives (the fitted
    intercept's equation); the saved model's config holds the same shifts."""
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    cv = pd.read_parquet(run_dir / "predictions.parquet").query("split == 'cv'")
    calibrated = best["member_calibration"]
    assert "class_mix" not in best and calibrated["method"] == "intercept per fold"
    assert len(calibrated["members"]) == 3
    for _, rows in cv.groupby("fold"):
        assert rows["prob"].sum() == pytest.approx(rows["is_positive"].sum(), rel=1e-5)
    assert calibrated["mapped_to"][1] == pytest.approx(cv["is_positive"].mean())
    balanced = best["params"].get("class_balance", "none") != "none"
    share = cv["is_positive"].mean()
    assert calibrated["nominal"][1] == pytest.approx(0.5 if balanced else share)
    assert best["oof"]["calibration_intercept"] == pytest.approx(0.0, abs=1e-4)
    cfg = json.loads((run_dir / "model" / "config.json").read_text())
    assert cfg["member_calibration"] == calibrated
    assert (
        "recalibrated in the large, fold model by fold model"
        in (run_dir / "model" / "README.md").read_text()
    )


def test_out_of_fold_scores_are_also_cross_fitted(run_dir):
    """best.yaml's cross-fitted block recomputes from the saved files: the saved
    probabilities, the folds, the run's rule and its per-fold recalibration; the
    report and the model card show it."""
    from raydx.cross_fit import cross_fitted_scores

    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    rule = json.loads((run_dir / "run.json").read_text())["options"]["operating_point"]
    cv = pd.read_parquet(run_dir / "predictions.parquet").query("split == 'cv'")
    is_pos, fold = cv["is_positive"].to_numpy(), cv["fold"].to_numpy()
    expected = cross_fitted_scores(
        best["params"],
        is_pos,
        cv["prob"].to_numpy(),
        fold,
        OperatingPoint.parse(rule),
        per_fold=best["member_calibration"]["method"],
    )
    crossed = best["oof"]["cross_fitted"]
    assert crossed == pytest.approx(expected, nan_ok=True)
    html = (run_dir / "report.html").read_text()
    assert "the other folds (cross-fitted)" in html
    assert "each fold&#x27;s intercept on the rest of its own" in html or (
        "each fold's intercept on the rest of its own" in html
    )
    card = (run_dir / "model" / "README.md").read_text()
    assert "(cross-fitted: what images the fits did not see should get)" in card
    assert "each fold's intercept on the rest of its own" in card
    assert f"Brier score {crossed['brier']:.3f}" in card


def test_report(run_dir):
    html = (run_dir / "report.html").read_text()
    assert "Winner" in html and "data:image/png;base64" in html
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 1000
    assert (run_dir / "plots" / "saliency.png").stat().st_size > 1000
    assert (run_dir / "plots" / "decision_curve.png").stat().st_size > 1000
    assert "Decision curve: net benefit" in html
    assert "Where the winner looks" in html
    # written atomically, yet with the mode of a file written plainly (events.jsonl)
    plain = (run_dir / "events.jsonl").stat().st_mode
    for name in ("report.html", "best.yaml", "trials.parquet", "run.json", "model/README.md"):
        assert (run_dir / name).stat().st_mode == plain, name


def test_model_card_travels_with_the_model(run_dir):
    card = (run_dir / "model" / "README.md").read_text()
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    test = json.loads((run_dir / "test_metrics.json").read_text())
    assert card.startswith("# Model card: `cnn` for `malignant` vs `normal, benign`")
    assert f"**{best['cv_auc_mean']:.3f} ± {best['cv_auc_std']:.3f}**" in card
    assert f"AUC **{test['auc']:.3f}**" in card and f"(n={test['n']})" in card
    assert f">= {best['threshold']:.4f}" in card
    assert "best of 2 trials'" in card and "--fold-seed 2 --no-test" in card
    assert "no patient ids" in card and "| cv | 0 |" in card
    oof = best["oof"]
    assert (
        f"pooled AUC {oof['pooled_auc']:.3f}; at the threshold, sensitivity "
        f"{oof['sensitivity']:.3f} and specificity {oof['specificity']:.3f}; Brier score "
    ) in card
    assert f"Brier score {test['brier']:.3f}, calibration intercept" in card


def test_predict_on_image_files_gives_the_runs_test_probabilities(
    run_dir, breastmnist, tmp_path, capsys
):
    """PNG files of test images, decoded by ``raydx predict``, score as the run scored
    the same images from the .npz; class folders make it an external validation."""
    from PIL import Image

    p = pd.read_parquet(run_dir / "predictions.parquet").set_index("sample_id")
    test = p[p["split"] == "test"]
    for sid, pixels in zip(test.index, _images(breastmnist, test.index), strict=True):
        folder = tmp_path / "ext" / test.loc[sid, "label_name"]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{sid.replace('/', '_')}.png")
    out = tmp_path / "pred.csv"
    rc = main(
        ["predict", "--model", str(run_dir), "--data", str(tmp_path / "ext"), "--output", str(out)]
    )
    assert rc == 0
    got = pd.read_csv(out)
    got.index = [f.split("/")[1][: -len(".png")].replace("_", "/") for f in got["id"]]
    np.testing.assert_allclose(got.loc[test.index, "prob_malignant"], test["prob"], atol=1e-5)
    metrics = json.loads(out.with_name("pred.metrics.json").read_text())
    expected = json.loads((run_dir / "test_metrics.json").read_text())
    for k in ("auc", "accuracy", "sensitivity", "specificity", "threshold", "n"):
        assert metrics[k] == pytest.approx(expected[k], abs=1e-6), k
    # The bootstrap draws rows by position, and the folder lists them in another order.
    assert metrics["auc_ci95"] == pytest.approx(expected["auc_ci95"], abs=0.03)
    # ... and they are the run's own test images, which predict finds and says
    assert (got["seen"] == "test split").all()
    assert metrics["seen"] == {
        "training": 0,
        "test split": len(test),
        "training (near copy)": 0,
        "test split (near copy)": 0,
    }
    said = capsys.readouterr().out
    assert (
        f"WARNING: of these {len(test)} images, {len(test)} are from its run's test split" in said
    )


def test_output_folder_with_a_run_is_refused(run_dir, capsys):
    rc = main(["tune", "--data", "synthetic", "--output", str(run_dir), "--trials", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already holds a finished raydx run; choose another --output." in err
    assert "--resume" not in err  # nothing to continue


@pytest.fixture(scope="module")
def recheck(run_dir, tmp_path_factory):
    """``raydx cv`` on the winner's best.yaml: the run's own folds, then other folds."""
    out = {}
    fresh = ["--fold-seed", "7", "--operating-point", "sensitivity=0.9"]
    for name, extra in (("same", []), ("fresh", fresh)):
        out[name] = tmp_path_factory.mktemp("cv") / name
        best = str(run_dir / "best.yaml")
        rc = main(["cv", "--config", best, "--output", str(out[name]), *extra])
        assert rc == 0
    return out


def test_cv_on_the_runs_own_folds_reproduces_the_winners_cv_auc(run_dir, recheck):
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    again = yaml.safe_load((recheck["same"] / "best.yaml").read_text())
    assert again["params"] == best["params"]
    assert again["fold_aucs"] == pytest.approx(best["fold_aucs"], abs=1e-6)
    trials = pd.read_parquet(recheck["same"] / "trials.parquet")
    assert len(trials) == 1 and trials["epochs_run"].iloc[0] == 2  # the run's schedule
    opts = json.loads((recheck["same"] / "run.json").read_text())["options"]
    assert (opts["folds"], opts["epochs"], opts["seed"], opts["limit"]) == (3, 2, 1, 240)
    assert opts["trials"] == 1 and opts["scheduler"] == "none"


def test_cv_with_a_fold_seed_keeps_the_test_split_and_redraws_the_folds(run_dir, recheck):
    a = pd.read_parquet(run_dir / "splits.parquet").set_index("sample_id")
    b = pd.read_parquet(recheck["fresh"] / "splits.parquet").set_index("sample_id")
    assert a.index.equals(b.index)
    assert (a["split"] == b["split"]).all()  # the test split the winner never saw
    cv = a["split"] == "cv"
    assert not a.loc[cv, "fold"].equals(b.loc[cv, "fold"])
    assert json.loads((recheck["fresh"] / "run.json").read_text())["options"]["fold_seed"] == 7
    test = json.loads((recheck["fresh"] / "test_metrics.json").read_text())
    assert test["n"] == int((~cv).sum())


def test_cv_with_an_operating_point_sets_the_threshold_on_out_of_fold_predictions(recheck):
    fresh = recheck["fresh"]
    pred = pd.read_parquet(fresh / "predictions.parquet")
    oof = pred[pred["split"] == "cv"]
    y, p = oof["is_positive"].to_numpy(), oof["prob"].to_numpy()
    best = yaml.safe_load((fresh / "best.yaml").read_text())
    assert best["threshold"] == pytest.approx(OperatingPoint("sensitivity", 0.9).threshold(y, p))
    assert best["oof"]["sensitivity"] == pytest.approx(np.mean(p[y] >= best["threshold"]))
    assert best["oof"]["sensitivity"] >= 0.9
    test = json.loads((fresh / "test_metrics.json").read_text())
    assert test["threshold_source"] == "sensitivity >= 0.9 on out-of-fold predictions"
    assert json.loads((fresh / "run.json").read_text())["options"]["operating_point"] == (
        "sensitivity=0.9"
    )
    cfg = json.loads((fresh / "model" / "config.json").read_text())
    assert cfg["threshold_rule"] == "sensitivity >= 0.9"
    # The report lays the other rules beside it; its row is the run's own figures.
    report = (fresh / "report.html").read_text()
    row = re.search(r"<tr>\s*<td>sensitivity=0.9 \(this run's\)</td>(.*?)</tr>", report, re.S)
    assert row is not None and "<h2>Operating points</h2>" in report
    cells = [float(v) for v in re.findall(r"<td>([0-9.]+)</td>", row.group(1))]
    # Its cross-fitted rates are best.yaml's: the same rule fitted on the other folds.
    crossed = best["oof"]["cross_fitted"]
    expected = [best["threshold"], best["oof"]["sensitivity"], best["oof"]["specificity"]]
    expected += [crossed["sensitivity"], crossed["specificity"]]
    expected += [test["sensitivity"], test["specificity"]]
    assert cells == pytest.approx(expected, abs=5e-5)
    card = (fresh / "model" / "README.md").read_text()
    assert "threshold chosen by sensitivity >= 0.9 on the out-of-fold" in card
    assert "raydx predict --operating-point" in card
    own = f"| sensitivity=0.9 (this run's) | {best['threshold']:.3f} | "
    own += f"{best['oof']['sensitivity']:.3f} | {best['oof']['specificity']:.3f} | "
    own += f"{crossed['sensitivity']:.3f} | {crossed['specificity']:.3f} | "
    assert own + f"{test['sensitivity']:.3f} | {test['specificity']:.3f} |" in card
    assert "| specificity=0.95 | " in card
    # The model folder keeps those out-of-fold scores (no ids), so predict can re-choose.
    model = load_model(fresh / "model")
    assert model.oof is not None and list(model.oof) == ["fold", "label", "is_positive", "prob"]
    # in no image's order (a privacy audit: a patient's images would sit side by side)
    assert model.oof.equals(model.oof.sort_values(["fold", "prob"], ignore_index=True))
    kept = model.oof.sort_values(["prob", "is_positive"]).reset_index(drop=True)
    ref = oof.sort_values(["prob", "is_positive"]).reset_index(drop=True)
    np.testing.assert_allclose(kept["prob"], ref["prob"])
    assert (kept["is_positive"] == ref["is_positive"]).all()
    assert model.at_operating_point("sensitivity=0.9").threshold == pytest.approx(best["threshold"])
    assert model.at_operating_point("youden").threshold == pytest.approx(
        OperatingPoint().threshold(y, p)
    )


def test_cv_fold_seed_keeps_a_drawn_test_split(tmp_path, ray_session):
    """Synthetic data has no official test split: raydx draws one from --seed. The
    re-check with --no-test leaves that test split alone."""
    from raydx.run import resume

    run = tmp_path / "run"
    args = ["--data", "synthetic", "--limit", "120", "--folds", "2", "--epochs", "1"]
    assert main(["tune", *args, "--trials", "1", "--seed", "3", "--output", str(run)]) == 0
    again = tmp_path / "again"
    best = str(run / "best.yaml")
    cmd = ["cv", "--config", best, "--fold-seed", "4", "--no-test", "--output", str(again)]
    assert main(cmd) == 0
    a = pd.read_parquet(run / "splits.parquet").set_index("sample_id")
    b = pd.read_parquet(again / "splits.parquet").set_index("sample_id")
    assert (a["split"] == b["split"]).all()
    cv = a["split"] == "cv"
    assert not a.loc[cv, "fold"].equals(b.loc[cv, "fold"])

    # --no-test: CV results, model and report as usual; no test prediction anywhere
    assert not (again / "test_metrics.json").exists()
    pred = pd.read_parquet(again / "predictions.parquet")
    assert set(pred["split"]) == {"cv"} and len(pred) == int(cv.sum())
    assert (again / "model").is_dir() and (again / "best.yaml").is_file()
    assert "The test split was not scored" in (again / "report.html").read_text()
    assert not (again / "plots" / "saliency.png").exists()  # drawn from test images only
    card = (again / "model" / "README.md").read_text()
    assert "The test split was not scored" in card and "not chosen among others" in card
    saved = json.loads((again / "run.json").read_text())["space"]["path"]
    assert saved == str((run / "best.yaml").resolve())  # what the card reads the choice from
    said: list[str] = []
    done = resume(again, log=said.append)  # a finished run, though it has no test scores
    assert "nothing to resume" in said[0] and done.test_metrics is None


def test_class_balanced_training_maps_probabilities_to_the_pools_class_mix(
    tmp_path, ray_session, breastmnist
):
    """A sampler-balanced winner: each fold model's out-of-fold and test probabilities
    (and the saved model's) are shifted by its own intercept, fitted on its own fold, so
    that they match its fold's share of positives in the large; each fold's AUC
    unchanged."""
    from raydx.cv import oof_file
    from raydx.train import predict

    config = tmp_path / "balanced.yaml"
    config.write_text("model: cnn_tiny\nclass_balance: sampler\nlr: 0.003\nbatch_size: 32\n")
    out = tmp_path / "out"
    args = ["--data", str(breastmnist), "--limit", "200", "--folds", "2", "--epochs", "2"]
    assert main(["cv", "--config", str(config), *args, "--output", str(out)]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    pred = pd.read_parquet(out / "predictions.parquet")
    cv, test = pred[pred["split"] == "cv"], pred[pred["split"] == "test"]
    prevalence = cv["is_positive"].mean()
    calibrated = best["member_calibration"]
    assert calibrated["nominal"] == [0.5, 0.5]
    assert calibrated["mapped_to"] == pytest.approx([1 - prevalence, prevalence])
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["member_calibration"] == calibrated and "class_mix" not in cfg
    card = (out / "model" / "README.md").read_text()
    assert "They trained on 50% `malignant` (class balancing, `class_balance: sampler`)" in card
    # Out of fold: each fold model's own probabilities, shifted by its fold's intercept,
    # which makes that fold's sum to its positives (its defining equation).
    trials = pd.read_parquet(out / "trials.parquet")
    ckpt = out / trials["checkpoint_path"].iloc[0]
    for k, member in enumerate(calibrated["members"]):
        with np.load(ckpt / oof_file(k)) as z:
            own = z["prob"]
        mine = cv[cv["fold"] == k]
        np.testing.assert_allclose(
            np.sort(mine["prob"]), np.sort(expit(logit(own) + member["intercept"])), rtol=1e-6
        )
        assert mine["prob"].sum() == pytest.approx(mine["is_positive"].sum(), rel=1e-5)
        assert member["slope"] == 1.0
    assert best["oof"]["calibration_intercept"] == pytest.approx(0.0, abs=1e-4)
    # On the test split: the saved model averages its members, each shifted by its own
    # intercept.
    model = load_model(out / "model")
    x = model.prepare(_images(breastmnist, test["sample_id"]))
    members = [predict(m, x) for m in model.members]
    shifts = [c["intercept"] for c in calibrated["members"]]
    expected = np.mean([expit(logit(p) + c) for p, c in zip(members, shifts, strict=True)], axis=0)
    np.testing.assert_allclose(test["prob"], expected, atol=1e-6)
    scores = json.loads((out / "test_metrics.json").read_text())
    assert scores["auc"] == pytest.approx(auc(test["is_positive"].astype(int), expected), abs=1e-9)
    # Its probabilities are for the pool's prevalence; moved there, nothing changes.
    assert model.prevalence == pytest.approx(prevalence)
    same = model.at_prevalence(prevalence)
    np.testing.assert_allclose(same.predict_proba_tensor(x), expected, rtol=1e-6)


def test_final_refit_saves_one_model_trained_on_the_whole_cv_pool(
    tmp_path, ray_session, breastmnist
):
    """--final refit: the winner trained once more on every CV image (a Ray task), for
    the epochs cross-validation chose; that one model is scored and saved."""
    from raydx.refit import refit_state

    out = tmp_path / "out"
    args = ["--data", str(breastmnist), "--limit", "200", "--folds", "2", "--epochs", "3"]
    args += ["--trials", "1", "--scheduler", "none", "--final", "refit", "--output", str(out)]
    assert main(["tune", *args]) == 0
    best = yaml.safe_load((out / "best.yaml").read_text())
    splits = pd.read_parquet(out / "splits.parquet")
    n_cv = int((splits.split == "cv").sum())
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["members"] == ["member_0.safetensors"]
    epochs = f"{best['best_epoch']} epoch{'s' * (best['best_epoch'] != 1)}"
    assert cfg["combine"] == f"one model refit on the {n_cv} CV images for {epochs}"
    # the refit model's own training images, decided at the fold models' threshold
    check = best["refit_check"]
    assert check["n"] == n_cv and 0 <= check["called_positive_training"] <= 1
    test = json.loads((out / "test_metrics.json").read_text())
    assert test["model"] == cfg["combine"] and test["n"] == len(splits) - n_cv
    _reproduces_test_probabilities(out, breastmnist)
    # The Ray task trained exactly what refit_state trains in this process on the CV
    # rows with the task's thread count: not the test rows, not a fold model.
    import ray

    from raydx.config import RunOptions
    from raydx.search import plan_resources, refit_resources

    held = plan_resources(RunOptions(folds=2, trials=1), ray.cluster_resources())
    model = load_model(out / "model")
    cv = splits[splits.split == "cv"]
    threads = torch.get_num_threads()
    torch.set_num_threads(refit_resources(held)["threads"])
    try:
        expected = refit_state(
            best["params"],
            x=model.prepare(_images(breastmnist, cv.sample_id)).numpy(),
            y=cv.label.to_numpy(),
            n_classes=2,
            positive=model.positive_class,
            epochs=3,
            stop_epoch=best["best_epoch"],
            seed=json.loads((out / "run.json").read_text())["options"]["seed"],
            folds=2,
        )
    finally:
        torch.set_num_threads(threads)
    got = model.members[0].state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=0, msg=k)


def test_multiclass_npz_end_to_end(tmp_path, ray_session):
    """A 3-class MedMNIST-layout file: softmax outputs, macro AUC, per-class probabilities."""
    from raydx.data.synthetic import make_synthetic
    from raydx.run import tune

    said: list[str] = []

    t = make_synthetic(180, seed=3)
    rng = np.random.default_rng(0)
    labels = np.where(t.labels == 1, 2, rng.integers(0, 2, len(t)))  # 2 = malignant
    imgs = t.images[..., 0].astype(np.uint16) * 16  # 12-bit data, scaled by --intensity
    path = tmp_path / "three.npz"
    np.savez(
        path,
        train_images=imgs[:150],
        train_labels=labels[:150, None],
        test_images=imgs[150:],
        test_labels=labels[150:, None],
    )
    res = tune(
        "search_spaces/cnn.yaml",
        data=str(path),
        trials=1,
        folds=2,
        epochs=1,
        output=tmp_path / "out",
        scheduler="none",
        intensity="range:0:4095",
        log=said.append,
    )
    # the setting reaches the console, the report, the card and the saved model
    assert any(str(m).startswith("raydx: 180 16-bit, float or DICOM") for m in said)
    assert "<p>Pixel values: 180 16-bit" in (res.output / "report.html").read_text()
    assert "(intensity `range:0:4095`)" in (res.output / "model" / "README.md").read_text()
    saved = json.loads((res.output / "model" / "config.json").read_text())
    assert saved["preprocessing"]["intensity"] == "range:0:4095"
    assert saved["input_modes"] == {"I;16": 180}
    pred = pd.read_parquet(res.output / "predictions.parquet")
    probs = pred[["prob_0", "prob_1", "prob_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert set(res.test_metrics) >= TEST_METRIC_KEYS
    assert res.test_metrics["n"] == 30
    # with no class named like a disease, the positive class is the minority one
    run = json.loads((res.output / "run.json").read_text())
    counts = np.bincount(labels, minlength=3)
    assert run["data"]["positive_class"] == int(np.argmin(counts))
    named = f"positive class '{np.argmin(counts)}' (the smallest class, as no class name says"
    assert sum(named in str(m) for m in said) == 1  # the console says why it was chosen
    # The accuracies are the most probable class's, which no threshold moves, and the
    # AUC is a macro average: the closing lines, the card and the report say so.
    test = json.loads((res.output / "test_metrics.json").read_text())
    assert test["n_classes"] == 3 and test["accuracy"] == test["accuracy_at_0_5"]
    closing = "\n".join(map(str, said))
    assert f"test AUC {test['auc']:.3f} (macro one-vs-rest) [95% CI" in closing
    assert f"accuracy {test['accuracy']:.3f} of the most probable class (n=30" in closing
    assert "at the threshold (" not in closing
    card = (res.output / "model" / "README.md").read_text()
    assert f"the most probable class: accuracy {test['accuracy']:.3f}, balanced accuracy" in card
    assert "accuracy at 0.5" not in card
    assert "(macro one-vs-rest, 95% CI" in (res.output / "report.html").read_text()


def test_all_families_space_end_to_end(tmp_path, ray_session, breastmnist):
    """search_spaces/all.yaml: one trial of each family first, compared on one objective."""
    from raydx.run import tune

    res = tune(
        "search_spaces/all.yaml",
        data=str(breastmnist),
        trials=3,
        folds=2,
        epochs=1,
        limit=200,
        output=tmp_path / "out",
        scheduler="none",
        log=lambda *a: None,
    )
    t = res.trials
    assert sorted(t["family"]) == ["autoencoder", "cnn", "gan"]
    assert (t["status"] == "TERMINATED").all()
    assert t["cv_auc_mean"].notna().all()
    folds = pd.read_parquet(res.output / "folds.parquet")
    ae = t.loc[t.family == "autoencoder", "trial_id"].iloc[0]
    assert folds.loc[folds.trial_id == ae, "recon_error"].notna().all()
    # pictures of the best trial of the generative families, next to the results
    assert list((res.output / "images" / "gan").glob("*samples_fold*.png"))
    assert list((res.output / "images" / "autoencoder").glob("*.png"))
    report = (res.output / "report.html").read_text()
    assert "gan family, trial" in report and "autoencoder family, trial" in report
    # the saved config names the network the winner's family builds
    from raydx.config import TrialConfig
    from raydx.train import diagnosis_network

    cfg = json.loads((res.output / "model" / "config.json").read_text())
    built = diagnosis_network(TrialConfig.from_params(cfg["params"]))
    assert (cfg["model"], cfg["model_params"]) == built
    # only the overall winner was scored on the test split
    assert (
        json.loads((res.output / "test_metrics.json").read_text())["trial_id"]
        == (res.best["trial_id"])
    )


def test_short_epochs_reported_together_keep_every_epoch_and_asha_rungs(tmp_path, ray_session):
    """With a report interval longer than the search, the workers report only at ASHA's
    milestones (2 and 6) and the last epoch: Tune sees 3 reports, the tables every epoch."""
    from raydx.run import tune
    from raydx.space import parse_space

    space = parse_space(
        {
            "run": {"scheduler": "asha", "grace_period": 2},
            "params": {"model": "cnn", "depth": 2, "width": 8, "lr": 3e-3, "batch_size": 32},
        }
    )
    res = tune(
        space,
        data="synthetic",
        limit=96,
        trials=1,
        folds=2,
        epochs=7,
        report_interval_s=600.0,
        output=tmp_path / "out",
        log=lambda *a: None,
    )
    folds = pd.read_parquet(res.output / "folds.parquet")
    assert sorted(folds["epoch"].unique()) == list(range(1, 8))
    assert len(folds) == 2 * 7 and not folds.duplicated(["fold", "epoch"]).any()
    [result_json] = (res.output / "ray" / "tune").glob("*/result.json")
    reports = [json.loads(line) for line in result_json.read_text().splitlines()]
    assert [r["epoch"] for r in reports] == [2, 6, 7]
    assert [r["training_iteration"] for r in reports] == [1, 2, 3]
    assert [len(json.loads(r.get("earlier_epochs", "[]"))) for r in reports] == [1, 3, 0]
    trials = pd.read_parquet(res.output / "trials.parquet")
    assert trials.loc[0, "epochs_run"] == 7
    assert trials.loc[0, "best_epoch"] == folds.groupby("epoch")["val_auc"].mean().idxmax()
    assert res.test_metrics["n"] > 0  # the winner's checkpoint held its best models


def test_a_search_of_five_trials_ranks_its_parameters(tmp_path, ray_session):
    """importance.csv, the console line and the report's section, from a real search."""
    from raydx.run import tune
    from raydx.space import parse_space

    space = parse_space(
        {
            "params": {
                "model": "cnn_tiny",  # training parameters: every model takes them
                "lr": {"type": "float", "low": 1e-4, "high": 3e-2, "log": True},
                "dropout": {"type": "float", "low": 0.0, "high": 0.5},
                "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
                "momentum": {
                    "type": "categorical",
                    "choices": [0.8, 0.9],
                    "when": {"optimizer": "sgd"},
                },
                "batch_size": 32,
            }
        }
    )
    lines: list[str] = []
    res = tune(
        space,
        data="synthetic",
        trials=5,
        folds=2,
        epochs=1,
        limit=120,
        scheduler="none",
        output=tmp_path / "out",
        log=lines.append,
    )
    table = pd.read_csv(res.output / "importance.csv", keep_default_na=False, na_values=[""])
    scored = res.trials["cv_auc_mean"].notna().sum()
    assert scored >= 5 and (table["n_trials"] == scored).all()
    assert set(table["param"]) == {"lr", "dropout", "optimizer", "momentum"}
    assert "model" not in set(table["param"]) and "batch_size" not in set(table["param"])
    numbers = table[table["importance"].notna()]
    assert numbers["importance"].between(0, 1).all()
    assert (
        (numbers["low"] <= numbers["importance"] + 1e-6)
        & (numbers["importance"] <= numbers["high"] + 1e-6)
    ).all()
    assert sum(line.startswith("raydx: parameter importance (fANOVA over") for line in lines) == 1
    assert (res.output / "plots" / "importance.png").stat().st_size > 1000
    html = (res.output / "report.html").read_text()
    assert "Which parameters mattered (importance.csv)" in html
    assert f"over the {scored} trials with a CV AUC" in html


def test_tunes_progress_table_leads_with_the_running_best(run_dir):
    """Tune's table shows a report's first four metrics: the running best CV AUC
    (``objective``) and its epoch come before the last epoch's CV AUC."""
    first = next((run_dir / "ray").rglob("result.json")).read_text().splitlines()[0]
    keys = list(json.loads(first))[:4]
    assert keys == ["epoch", "objective", "best_epoch", "cv_auc_mean"]


def test_predict_at_the_runs_own_rule_gives_its_cross_fitted_rates(run_dir, breastmnist, tmp_path):
    """``raydx predict --operating-point`` re-chooses the threshold on the model folder's
    out-of-fold rows (scaled fold by fold) and cross-fits it as the run did: the same
    threshold and rates as best.yaml's."""
    from PIL import Image

    from raydx.predict import predict_files

    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    rule = json.loads((run_dir / "run.json").read_text())["options"]["operating_point"]
    folder = tmp_path / "new"
    folder.mkdir()
    for i, pixels in enumerate(_images(breastmnist, ["test/0", "test/1"])):
        Image.fromarray(pixels).save(folder / f"{i}.png")
    pred = predict_files(run_dir / "model", folder, operating_point=rule)
    assert pred.model.threshold == pytest.approx(best["threshold"], abs=1e-12)
    crossed = best["oof"]["cross_fitted"]
    line = next(x for x in pred.summary().splitlines() if x.startswith(f"{rule} out of fold"))
    assert line.endswith(
        f"cross-fitted (chosen on the other folds): sensitivity {crossed['sensitivity']:.3f}, "
        f"specificity {crossed['specificity']:.3f}"
    )
