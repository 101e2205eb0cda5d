"""After the search: pick the winner on CV, score it once on the test split, save it."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raydx.artifact import load_model, save_model, save_state_dicts
from raydx.config import RunOptions, TrialConfig
from raydx.cross_fit import cross_fitted_scores
from raydx.data.decode import aspect, size_key
from raydx.data.folds import Splits
from raydx.data.intensity import modes_of
from raydx.data.near_copies import copy_free
from raydx.data.pipeline import Preprocessing
from raydx.data.table import ImageTable
from raydx.errors import RaydxError, count
from raydx.evaluate import checkpoint_best_epoch, fold_weight_files, read_oof
from raydx.fold_calibration import DEFAULT as DEFAULT_METHOD
from raydx.fold_calibration import aligned_to_share, apply_per_fold, fit_per_fold
from raydx.metrics import (
    auc,
    calibration,
    diagnosis_metrics,
    patient_metrics,
    rates,
)
from raydx.operating_point import OperatingPoint, threshold_source
from raydx.prior import anomaly_scores, fitted_class_mix, shift, training_mix
from raydx.refit import refit_on_ray, refit_state
from raydx.results import builtin, write_json, write_parquet, write_yaml
from raydx.seen import write_seen
from raydx.space import ANOMALY_UNREAD
from raydx.train import diagnosis_network


def input_shapes(table: ImageTable) -> dict[str, Any]:
    """config.json's ``input_sizes`` (the 20 commonest, "WxH": count) and ``input_aspect``
    ([lowest, highest] width / height) of the training images as read: decoded files'
    sizes, or the arrays' own."""
    sizes = dict(table.info.get("sizes") or {})
    if not sizes:
        h, w = table.images.shape[1:3]
        sizes = {size_key(w, h): len(table)}
    ratios = [aspect(k) for k in sizes]
    return {
        "input_sizes": dict(list(sizes.items())[:20]),
        "input_aspect": [round(min(ratios), 4), round(max(ratios), 4)],
    }


def training_settings(cfg: TrialConfig) -> dict[str, Any]:
    """config.json's ``training``: the settings the training used, defaults included,
    without what config.json holds elsewhere (the model and its parameters) or what this
    configuration does not read (SGD's momentum under another optimizer; everything but
    the batch size for an anomaly-mode autoencoder, which trains no classifier)."""
    out = dataclasses.asdict(cfg)
    for key in ("family", "model", "model_params", "family_params"):
        out.pop(key)
    if cfg.optimizer != "sgd":
        out.pop("momentum")
    if anomaly_scores({"family": cfg.family, **cfg.family_params}):
        out = {k: v for k, v in out.items() if k not in ANOMALY_UNREAD and k != "augment"}
    return out


def pick_winner(trials: pd.DataFrame) -> pd.Series:
    ok = trials[
        (trials["status"] == "TERMINATED")
        & trials["cv_auc_mean"].notna()
        & trials["checkpoint_path"].notna()
    ]
    if ok.empty:
        failed = trials[trials["status"] == "ERROR"]
        reasons = (
            "; ".join(f"{r.trial_id}: {r.error}" for r in failed.head(3).itertuples())
            or "no trial reported a finite CV AUC"
        )
        raise RaydxError(
            f"every trial failed ({len(failed)} of {len(trials)}); first reasons: {reasons}"
        )
    return ok.sort_values(["cv_auc_mean", "cv_auc_std"], ascending=[False, True]).iloc[0]


def finish(
    opts: RunOptions,
    table: ImageTable,
    splits: Splits,
    positive: int,
    x: np.ndarray,
    trials: pd.DataFrame,
    configs: dict[str, dict[str, Any]],
    out: Path,
    *,
    refit_resources: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``configs`` maps trial ids to the exact parameter dicts the trials ran with.

    The saved model is the winner's fold models (``opts.final == "ensemble"``) or one
    model refit on the whole CV pool (``"refit"``, a Ray task with
    ``refit_resources``: cpus, gpus, threads; run in this process when None).
    Returns the winner's record and its test metrics (None when ``opts.score_test`` is
    off: the test split is then not looked at).
    """
    win = pick_winner(trials)
    params = dict(configs[win["trial_id"]])
    cfg = TrialConfig.from_params(params)
    ckpt = Path(win["checkpoint_path"])
    held = checkpoint_best_epoch(ckpt)
    if held != int(win["best_epoch"]):  # the record and the checkpoints disagree: a bug
        raise RaydxError(
            f"the checkpoint that trial {win['trial_id']}'s record names ({ckpt}) holds "
            f"the models of epoch {held}, not of its best epoch {int(win['best_epoch'])}; "
            "the winner cannot be scored. Please report this with the run's events.jsonl."
        )

    # Threshold from the out-of-fold predictions only: the test split is not looked at.
    rows, oof = read_oof(ckpt, opts.folds)
    y_cv = table.labels[rows]
    fold = splits.fold[rows]
    binary = table.n_classes == 2
    # Binary: the out-of-fold probabilities, and the saved model's, are recalibrated in
    # the large, so that they match the pool's odds (this also undoes class balancing):
    # each fold model by its own intercept, fitted on its own fold, so that the fold
    # models agree on a scale before they are pooled and averaged
    # (raydx.fold_calibration); one refit model by one intercept fitted on them all
    # (raydx.prior.fitted_class_mix). Anomaly scores and multi-class models are left
    # as trained.
    per_fold = binary and opts.final == "ensemble" and not anomaly_scores(params)
    calibrated: dict[str, Any] | None = None
    mix = None
    if per_fold:
        scalings = fit_per_fold(y_cv == positive, oof, fold, DEFAULT_METHOD)
        oof = apply_per_fold(oof, fold, scalings)
        counts = np.bincount(y_cv == positive, minlength=2)
        calibrated = {
            "method": DEFAULT_METHOD,
            "members": [scalings[k].to_dict() for k in range(opts.folds)],
            "mapped_to": [float(v) for v in counts / counts.sum()],
            "nominal": [float(v) for v in training_mix(params, counts)],
        }
    elif binary:
        mix = fitted_class_mix(params, y_cv == positive, oof)
        if mix is not None:
            oof = shift(oof, mix["trained"], mix["mapped_to"])
    p_pos_oof = oof if binary else oof[:, positive]
    point = OperatingPoint.parse(opts.operating_point)
    threshold = point.threshold((y_cv == positive).astype(int), p_pos_oof)
    # Ranked across folds without the per-fold intercepts, which carry each fold's labels.
    share = float(np.mean(y_cv == positive))
    ranked = aligned_to_share(oof, fold, share) if per_fold and 0 < share < 1 else None
    oof_scores = out_of_fold_scores(y_cv, oof, table, rows, positive, threshold, ranked=ranked)
    if binary:  # the threshold and the recalibration fitted without the rows they score
        crossed = cross_fitted_scores(
            params,
            y_cv == positive,
            p_pos_oof,
            fold,
            point,
            per_fold=calibrated["method"] if calibrated else None,
        )
        oof_scores["cross_fitted"] = builtin(crossed)
    # Saved with the model, so that predict can re-choose the threshold the same way.
    oof_frame = pd.DataFrame(
        {
            "fold": fold.astype(np.int64),
            "label": y_cv.astype(np.int64),
            "is_positive": y_cv == positive,
            "prob": p_pos_oof.astype(np.float64),
        }
    ).sort_values(["fold", "prob"], kind="stable", ignore_index=True)  # the model folder
    # travels: rows in the images' order would keep a patient's images side by side

    prep = Preprocessing(
        image_size=opts.image_size or table.image_size,
        channels=table.channels,
        intensity=opts.intensity,
    )
    network, network_params = diagnosis_network(cfg)
    model_config = {
        "model": network,
        "model_params": network_params,
        "trial_id": win["trial_id"],
        "params": params,
        # the optimiser, schedule and augmentation settings the training used, the
        # defaults of what the space left out included (an audit: an lr that no trial
        # searched was recorded nowhere)
        "training": training_settings(cfg),
        "class_names": list(table.class_names),
        "label_map": table.label_map,
        "positive_class": positive,
        "positive_class_name": table.class_names[positive],
        "threshold": threshold,
        "threshold_rule": point.describe(),
        "preprocessing": prep.to_dict(),
        # what the training files were (Pillow modes, "DICOM MONOCHROME2 12-bit", ...):
        # DiagnosisModel.to_uint8 warns where arrays cannot be scaled as they were
        "input_modes": modes_of(table.info),
        # how many were grey as read (raydx.predict warns of grey images for a model that
        # saw none); recorded for image files
        **({"input_grey_images": table.info["grey_images"]} if "grey_images" in table.info else {}),
        # the training images' sizes as read and their range of width/height (raydx.predict
        # warns of images that resizing would stretch otherwise than it stretched these)
        **input_shapes(table),
        **({"class_mix": mix} if mix else {}),
        **({"member_calibration": calibrated} if calibrated else {}),
        "epochs": int(win["best_epoch"]),
    }
    if opts.final == "refit":
        cv_rows = np.flatnonzero(splits.split == "cv")
        job: dict[str, Any] = dict(
            params=params,
            x=x[cv_rows],
            y=table.labels[cv_rows],
            n_classes=table.n_classes,
            positive=positive,
            epochs=opts.epochs,
            stop_epoch=int(win["best_epoch"]),
            seed=opts.seed,
            folds=opts.folds,
        )
        state = refit_on_ray(**refit_resources, **job) if refit_resources else refit_state(**job)
        described = (
            f"one model refit on the {len(cv_rows)} CV images for "
            f"{count(int(win['best_epoch']), 'epoch')}"
        )
        model_dir = save_state_dicts(
            out / "model", [state], config={**model_config, "combine": described}, oof=oof_frame
        )
        refit_check = _refit_check(model_dir, x, cv_rows, p_pos_oof, threshold, opts.seed)
    else:
        refit_check = None
        described = f"ensemble of the {opts.folds} fold models (mean probability)"
        model_dir = save_model(
            out / "model",
            weight_files=fold_weight_files(ckpt, opts.folds),
            config={**model_config, "combine": "mean probability of the fold models"},
            oof=oof_frame,
        )
    test: dict[str, Any] | None = None
    test_rows = np.flatnonzero(splits.split == "test")
    if opts.score_test:
        model = load_model(model_dir)
        p_test = model.predict_proba_tensor(__import__("torch").from_numpy(x[test_rows]))
        y_test = table.labels[test_rows]
        # a patient's images are not independent: with ids, the interval resamples patients
        groups = None if table.groups is None else table.groups[test_rows]
        test = {
            **diagnosis_metrics(
                y_test,
                p_test,
                positive=positive,
                threshold=threshold,
                groups=groups,
                class_names=table.class_names,
            ),
            "model": described,
            "trial_id": win["trial_id"],
            "positive_class": table.class_names[positive],
            "threshold_source": threshold_source(point.describe(), refit=bool(refit_check)),
        }
        if groups is not None:
            test |= patient_metrics(y_test, p_test, groups, positive=positive)
        apart = copy_free(out, table.sample_ids[test_rows])
        if apart is not None:  # the test images without a copy trained on
            kept = diagnosis_metrics(
                y_test[apart],
                p_test[apart],
                positive=positive,
                threshold=threshold,
                groups=None if groups is None else groups[apart],
                class_names=table.class_names,
            )
            test["without_copies"] = {
                "left_out": int((~apart).sum()),
                **{k: kept[k] for k in ("n", "auc", "auc_ci95", "accuracy") if k in kept},
            }
        _saliency(model, x[test_rows], y_test == positive, p_test, table, positive, out)
    else:  # the out-of-fold predictions alone
        test_rows, p_test = test_rows[:0], oof[:0]

    pred = _predictions(table, splits, positive, rows, oof, test_rows, p_test)
    write_parquet(pred, out / "predictions.parquet")
    write_seen(table, splits, out)  # for raydx predict: no validating on these images
    best = {
        "trial_id": str(win["trial_id"]),
        "family": str(win.get("family", "cnn")),
        "params": params,
        "best_epoch": int(win["best_epoch"]),
        "cv_auc_mean": float(win["cv_auc_mean"]),
        "cv_auc_std": float(win["cv_auc_std"]),
        "fold_aucs": [float(win[f"fold_{i}_auc"]) for i in range(opts.folds)],
        "threshold": float(threshold),
        "oof": oof_scores,
        **({"class_mix": mix} if mix else {}),
        **({"member_calibration": calibrated} if calibrated else {}),
        **({"refit_check": refit_check} if refit_check else {}),
    }
    collect_images(trials, out)
    # Written last (best.yaml without a test split): run_folder.is_finished takes either
    # as the sign that every file of this step is there, and --resume then only writes
    # the report and the model card again where they are missing.
    write_yaml(best, out / "best.yaml")
    if test is not None:
        write_json(test, out / "test_metrics.json")
    return best, test


REFIT_CHECK_ROWS = 2000  # enough to see a shifted scale (seconds at 28 px on a CPU)


def _refit_check(
    model_dir: Path,
    x: np.ndarray,
    cv_rows: np.ndarray,
    p_pos_oof: np.ndarray,
    threshold: float,
    seed: int,
) -> dict[str, Any]:
    """How the refit model decides its own training images at the threshold chosen on
    the fold models' out-of-fold predictions (no test image is looked at). An audit's
    refit model scored every image above it, training images and test split alike:
    trained on more images for as many epochs, it scored on another scale than the
    fold models the threshold and the class-mix shift were fitted on."""
    import torch

    rows = np.sort(np.random.default_rng(seed).permutation(cv_rows)[:REFIT_CHECK_ROWS])
    model = load_model(model_dir)
    p = model.predict_proba_tensor(torch.from_numpy(x[rows]))  # these rows alone: no copy of x
    p_pos = p if p.ndim == 1 else p[:, model.positive_class]
    return {
        "n": len(rows),
        "called_positive_training": float(np.mean(p_pos >= threshold)),
        "called_positive_oof": float(np.mean(np.asarray(p_pos_oof) >= threshold)),
        "prob_range_training": [float(np.min(p_pos)), float(np.max(p_pos))],
    }


def out_of_fold_scores(
    y_cv: np.ndarray,
    oof: np.ndarray,
    table: ImageTable,
    rows: np.ndarray,
    positive: int,
    threshold: float,
    *,
    ranked: np.ndarray | None = None,
) -> dict[str, Any]:
    """The winner's out-of-fold predictions scored as one pool: every CV image once, by
    the fold model that did not train on it.

    The pooled AUC differs from the mean of the fold AUCs (it also asks the folds to
    agree on a scale); calibration and the patient-level AUC exist only pooled: a fold
    holds too few patients. ``ranked``: binary probabilities that the two AUCs rank
    instead of ``oof`` (``raydx.fold_calibration.aligned_to_share``).
    """
    is_pos = y_cv == positive
    p_pos = oof if oof.ndim == 1 else oof[:, positive]
    for_auc = oof if ranked is None else ranked
    # Where the threshold puts them: what the test split's figures should be near.
    sens, spec = (None if math.isnan(r) else r for r in rates(is_pos, p_pos, threshold))
    scores: dict[str, Any] = {
        "pooled_auc": auc(y_cv if oof.ndim == 2 else is_pos.astype(np.int64), for_auc),
        "sensitivity": sens,
        "specificity": spec,
        **calibration(is_pos, p_pos),
        "n": len(y_cv),
    }
    if table.groups is not None:
        pm = patient_metrics(y_cv, for_auc, table.groups[rows], positive=positive)
        scores |= {k: v for k, v in pm.items() if k != "patient_aggregation"}
    return builtin(scores)


def _saliency(
    model: Any,
    x: np.ndarray,
    is_pos: np.ndarray,
    prob: np.ndarray,
    table: ImageTable,
    positive: int,
    out: Path,
) -> None:
    """``plots/saliency.png`` for the report. A picture must never cost a finished run,
    so a failure is reported and passed over."""
    import sys

    from raydx.saliency import write_saliency

    try:
        write_saliency(
            model.members,
            x,
            is_pos,
            prob if prob.ndim == 1 else prob[:, positive],
            positive=positive,
            positive_name=table.class_names[positive],
            path=out / "plots" / "saliency.png",
        )
    except Exception as e:
        print(f"raydx: saliency maps skipped ({type(e).__name__}: {e})", file=sys.stderr)


def collect_images(trials: pd.DataFrame, out: Path) -> list[Path]:
    """Copy the pictures of each family's best trial (generated samples, reconstructions)
    from its checkpoint to ``OUT/images/<family>/``."""
    copied = []
    ok = trials[(trials["status"] == "TERMINATED") & trials["checkpoint_path"].notna()]
    for family, rows in ok.groupby("family"):
        row = rows.sort_values("cv_auc_mean", ascending=False).iloc[0]
        pngs = sorted(Path(row["checkpoint_path"]).glob("*.png"))
        if not pngs:
            continue
        dest = out / "images" / str(family)
        dest.mkdir(parents=True, exist_ok=True)
        for png in pngs:
            target = dest / f"{row['trial_id']}_{png.name}"
            shutil.copyfile(png, target)
            copied.append(target)
    return copied


def _predictions(
    table: ImageTable,
    splits: Splits,
    positive: int,
    cv_rows: np.ndarray,
    oof: np.ndarray,
    test_rows: np.ndarray,
    p_test: np.ndarray,
) -> pd.DataFrame:
    rows = np.concatenate([cv_rows, test_rows])
    prob = np.concatenate([oof, p_test])
    df = pd.DataFrame(
        {
            "sample_id": table.sample_ids[rows].astype(str),
            "split": splits.split[rows].astype(str),
            "fold": pd.array(
                np.where(splits.fold[rows] >= 0, splits.fold[rows], -1), dtype="Int64"
            ),
            "label": table.labels[rows].astype(np.int64),
        }
    )
    df.loc[df["fold"] < 0, "fold"] = pd.NA
    if table.groups is not None:
        df["group"] = table.groups[rows].astype(str)
    df["label_name"] = [table.class_names[i] for i in df["label"]]
    df["is_positive"] = df["label"] == positive
    if prob.ndim == 1:
        df["prob"] = prob
    else:
        df["prob"] = prob[:, positive]
        for c, name in enumerate(table.class_names):  # as predict's table names them
            df[f"prob_{name}"] = prob[:, c]
    return df.sort_values(["split", "sample_id"]).reset_index(drop=True)
