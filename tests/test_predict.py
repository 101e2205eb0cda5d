"""``raydx predict``: a saved model on new files, decoded as a search decodes them, and
scored exactly as the test split is when the files carry labels."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from raydx.artifact import DiagnosisModel, load_model, save_state_dicts
from raydx.cli import main
from raydx.data.decode import decode
from raydx.errors import DataError, RaydxError
from raydx.metrics import auc, diagnosis_metrics
from raydx.models import create_model
from raydx.operating_point import OperatingPoint, threshold_text
from raydx.predict import list_inputs, predict_files, write_predictions
from raydx.prior import shift

SIZE = 16
BINARY = ["malignant", "normal, benign"]  # BreastMNIST's names, a comma included


def _model_dir(
    tmp: Path,
    *,
    classes: list[str] = BINARY,
    channels: int = 1,
    positive: int = 0,
    oof: pd.DataFrame | None = None,
) -> Path:
    outputs = 1 if len(classes) == 2 else len(classes)
    members = []
    for i in range(2):
        torch.manual_seed(i)
        m = create_model(
            "cnn_tiny", in_channels=channels, num_outputs=outputs, image_size=SIZE, dropout=0.0
        )
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, 0.5)
        members.append(m.eval())
    config: dict[str, Any] = {
        "model": "cnn_tiny",
        "model_params": {"dropout": 0.0},
        "trial_id": "t",
        "class_names": classes,
        "label_map": {n: i for i, n in enumerate(classes)},
        "positive_class": positive,
        "positive_class_name": classes[positive],
        "threshold": 0.4,
        "preprocessing": {"image_size": SIZE, "channels": channels, "mean": 0.5, "std": 0.5},
    }
    states = [m.state_dict() for m in members]
    return save_state_dicts(tmp / "run" / "model", states, config, oof=oof)


def _oof(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold scores as a search saves them: positives score higher, with overlap."""
    rng = np.random.default_rng(seed)
    pos = rng.random(n) < 0.3
    prob = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * np.where(pos, 1, -1))))
    return pd.DataFrame(
        {"fold": np.arange(n) % 5, "label": np.where(pos, 0, 1), "is_positive": pos, "prob": prob}
    )


def _run_record(images: np.ndarray, split: list[str], hashes: list[str] | None = None):
    """A run's images (table) on its splits (``split``: "cv" or "test" per image, the cv
    ones dealt into 2 folds), as ``raydx.seen`` records them."""
    from raydx.data.folds import Splits
    from raydx.data.table import ImageTable

    n = len(images)
    table = ImageTable(
        images=images,
        labels=np.arange(n) % 2,
        sample_ids=np.array([f"s{i}" for i in range(n)], dtype=object),
        class_names=tuple(BINARY),
        name="t",
        hashes=np.array(hashes or [f"h{i}" for i in range(n)], dtype=object),
    )
    is_cv = np.array(split) == "cv"
    fold = np.where(is_cv, np.cumsum(is_cv) % 2, -1)
    return table, Splits(split=np.array(split, dtype=object), fold=fold, k=2)


def _write(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.squeeze()).save(path)
    return path


def _folder(root: Path, per_class: int = 6, size: int = SIZE, seed: int = 0) -> dict[Path, str]:
    """Class subfolders of random grey PNGs; returns file -> class."""
    rng = np.random.default_rng(seed)
    files = {}
    for c in BINARY:
        for i in range(per_class):
            px = rng.integers(0, 256, size=(size, size), dtype=np.uint8)
            files[_write(root / c / f"{i}.png", px)] = c
    return files


def test_folder_with_class_subfolders_is_scored_as_the_test_split(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "ext")
    pred = predict_files(model_dir, tmp_path / "ext")
    model = load_model(model_dir)
    t = pred.table.set_index("path")
    direct = model.predict_proba(np.stack([np.asarray(Image.open(f))[..., None] for f in files]))
    got = t.loc[[str(f) for f in files], "prob_malignant"].to_numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-6)
    np.testing.assert_allclose(t["prob_malignant"] + t["prob_normal, benign"], 1.0)
    assert list(t.loc[[str(f) for f in files], "label"]) == list(files.values())
    # The threshold chosen on the search's out-of-fold predictions decides the class.
    expected = np.where(direct >= 0.4, "malignant", "normal, benign")
    assert list(t.loc[[str(f) for f in files], "prediction"]) == list(expected)
    y = np.array([BINARY.index(c) for c in files.values()])
    assert pred.metrics == {
        **diagnosis_metrics(y, direct, positive=0, threshold=0.4),
        "positive_class": "malignant",
        "threshold_source": "Youden's J on out-of-fold predictions",
    }
    assert "AUC" in pred.summary() and "'normal, benign' " in pred.summary()
    assert f"calibration: Brier {pred.metrics['brier']:.3f}, intercept" in pred.summary()


def test_arrays_that_files_would_have_changed_on_reading_are_warned_about(tmp_path) -> None:
    """A model trained on files with an ICC profile saw them converted to sRGB, and on
    MONOCHROME1 DICOM saw it inverted; numpy arrays handed to predict_proba carry
    neither, so it says so. ``raydx predict`` reads the files as training did: silent."""
    import warnings

    from image_files import icc_profile, photo_bytes

    model_dir = _model_dir(tmp_path, channels=3)
    cfg = json.loads((model_dir / "config.json").read_text())
    colour = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)

    def warned(modes: dict[str, int], images: np.ndarray = colour) -> list[str]:
        cfg["input_modes"] = modes
        (model_dir / "config.json").write_text(json.dumps(cfg))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            load_model(model_dir).predict_proba(images)
        return [str(w.message) for w in caught]

    profiled = {"RGB with ICC profile 'Display P3'": 3, "RGB with ICC profile 'Adobe RGB'": 9}
    (note,) = warned({"RGB": 4, **profiled})
    assert note.startswith(
        "this model was trained on 12 colour files with an ICC profile other than sRGB "
        "(such as 'Adobe RGB'), converted to sRGB when read; arrays are taken as sRGB"
    )
    assert warned(profiled, colour[..., 0]) == []  # grey arrays hold no colour space
    assert warned({"RGB": 4}) == []
    (note,) = warned({"DICOM MONOCHROME1 12-bit without a window": 5})
    assert note.startswith("this model was trained on 5 MONOCHROME1 DICOM files")

    cfg["input_modes"] = {"RGB with ICC profile 'Adobe RGB (1998)'": 2}
    (model_dir / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "in").mkdir()
    for i, a in enumerate(colour):
        (tmp_path / "in" / f"{i}.png").write_bytes(photo_bytes(a, "PNG", icc_profile()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = predict_files(model_dir, tmp_path / "in").table["prob_malignant"].to_numpy()
    model = load_model(model_dir)
    files = sorted((tmp_path / "in").iterdir())
    read = np.stack([decode(f.read_bytes(), SIZE).image for f in files])
    np.testing.assert_allclose(got, model.predict_proba_tensor(model.prepare(read)), rtol=1e-6)
    assert not np.array_equal(read, colour)  # converted, as the training files were


def test_files_of_another_size_and_mode_are_decoded_as_a_search_decodes_them(
    tmp_path: Path,
) -> None:
    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, size=(40, 30), dtype=np.uint8)
    f_grey = _write(tmp_path / "in" / "a.png", grey)
    _write(tmp_path / "in" / "b.png", np.repeat(grey[..., None], 3, axis=2))
    f_colour = _write(
        tmp_path / "in" / "c.png", rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    )
    t = predict_files(model_dir, tmp_path / "in").table.set_index("id")
    model = load_model(model_dir)
    want = model.predict_proba(decode(f_grey.read_bytes(), SIZE).image[None])
    # Grey stored as RGB is the same image as grey; a colour file becomes its channel mean.
    np.testing.assert_allclose(t.loc[["a.png", "b.png"], "prob_malignant"], [want[0]] * 2)
    colour = decode(f_colour.read_bytes(), SIZE).image.astype(float).mean(2, keepdims=True)
    want_c = model.predict_proba(np.rint(colour).astype(np.uint8)[None])
    np.testing.assert_allclose(t.loc["c.png", "prob_malignant"], want_c[0], rtol=1e-6)
    assert "label" not in t  # loose files carry no label, so no metrics
    assert predict_files(model_dir, f_grey).table["id"].tolist() == ["a.png"]


def test_grey_files_feed_a_colour_model(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path, channels=3)
    px = np.random.default_rng(2).integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
    f = _write(tmp_path / "in" / "a.png", px)
    got = predict_files(model_dir, f).table["prob_malignant"].to_numpy()
    want = load_model(model_dir).predict_proba(np.repeat(px[None, ..., None], 3, axis=3))
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_manifest_keeps_order_and_extra_columns_and_labels_are_optional(
    tmp_path: Path,
) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img"))
    rel = [f.relative_to(tmp_path).as_posix() for f in files][::-1]
    pd.DataFrame({"path": rel, "patient_id": [f"p{i}" for i in range(len(rel))]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    pred = predict_files(model_dir, tmp_path / "m.csv")
    assert pred.table["id"].tolist() == rel  # relative to the manifest, in its order
    assert pred.table["patient_id"].tolist() == [f"p{i}" for i in range(len(rel))]
    assert pred.metrics is None and "label" not in pred.table
    with pytest.raises(
        DataError,
        match=r"no column 'labl' \(--label-column\)\. Its columns are: path, patient_id\.",
    ):
        predict_files(model_dir, tmp_path / "m.csv", label_column="labl")


def test_manifest_labels_must_be_the_models_classes(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img", per_class=2))
    frame = pd.DataFrame({"path": [str(f) for f in files], "diagnosis": ["benign"] * 4})
    frame.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(DataError, match=r"label 'benign' \(column 'diagnosis'\) is not one"):
        predict_files(model_dir, tmp_path / "m.parquet", label_column="diagnosis")
    frame["diagnosis"] = ["malignant", "malignant", "normal, benign", "normal, benign"]
    frame.to_parquet(tmp_path / "m.parquet")
    pred = predict_files(model_dir, tmp_path / "m.parquet", label_column="diagnosis")
    assert pred.metrics is not None and pred.metrics["n"] == 4


def test_subfolders_that_are_not_classes_are_not_labels(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(3)
    for patient in ("patient_01", "patient_02"):
        _write(tmp_path / "in" / patient / "x.png", rng.integers(0, 256, (SIZE, SIZE), np.uint8))
    pred = predict_files(model_dir, tmp_path / "in")
    assert pred.metrics is None
    assert pred.table["id"].tolist() == ["patient_01/x.png", "patient_02/x.png"]


def test_a_run_folder_among_the_images_is_not_predicted(tmp_path: Path) -> None:
    """A search's run folder inside the folder scored (its plots are PNGs) is no class."""
    files = _folder(tmp_path / "ext", per_class=2)
    _write(tmp_path / "ext" / "runs" / "r1" / "roc.png", np.zeros((SIZE, SIZE), np.uint8))
    (tmp_path / "ext" / "runs" / "r1" / "run.json").write_text('{"options": {}}')
    rows = list_inputs(tmp_path / "ext").rows
    assert sorted(map(Path, rows["path"])) == sorted(files)


def test_segmentation_masks_beside_the_images_are_not_predicted(tmp_path: Path) -> None:
    """As a search lists a folder: BUSI's 'x_mask.png' beside 'x.png' is no image."""
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "ext", per_class=3)
    _write(tmp_path / "ext" / BINARY[1] / "0_mask.png", np.zeros((SIZE, SIZE), np.uint8))
    pred = predict_files(model_dir, tmp_path / "ext")
    assert sorted(pred.table["id"]) == sorted(
        p.relative_to(tmp_path / "ext").as_posix() for p in files
    )
    assert pred.notes[-1].startswith("1 segmentation mask passed over (")
    assert f"'{BINARY[1]}/0_mask.png'" in pred.notes[-1]
    # per class folder, as a search lists them: a class named 'masks' is a class
    for c in ("masks", "no_masks"):
        _write(tmp_path / "two" / c / "0.png", np.zeros((SIZE, SIZE), np.uint8))
    assert len(list_inputs(tmp_path / "two").rows) == 2


def test_a_class_the_model_does_not_know_is_predicted_but_not_scored(tmp_path: Path) -> None:
    """An external set with a third class (nevus beside the model's two): the model's
    classes are scored, the rest predicted and said; a misspelt class folder is not
    taken for another class."""
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "ext", per_class=4)
    rng = np.random.default_rng(4)
    for i in range(3):
        _write(
            tmp_path / "ext" / "nevus" / f"{i}.png", rng.integers(0, 256, (SIZE, SIZE), np.uint8)
        )
    pred = predict_files(model_dir, tmp_path / "ext")
    assert len(pred.table) == 11 and pred.table["prediction"].notna().all()
    assert pred.metrics is not None and pred.metrics["n"] == len(files) == 8
    assert pred.notes[0] == (
        "metrics on the 8 images of the model's classes; 3 images in subfolder 'nevus', "
        "not a class of the model, predicted but not scored"
    )
    (tmp_path / "ext" / "nevus").rename(tmp_path / "ext" / "malignnat")
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is None and "(did you mean 'malignant'?)" in pred.notes[0]


def test_bad_files_stop_the_run_or_are_kept_with_their_reason(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=3)
    (tmp_path / "ext" / "malignant" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1 of 7 images cannot be used:\n  .*broken\.png: "):
        predict_files(model_dir, tmp_path / "ext")
    pred = predict_files(model_dir, tmp_path / "ext", skip_bad=True)
    row = pred.table.set_index("id").loc["malignant/broken.png"]
    assert np.isnan(row["prob_malignant"]) and pd.isna(row["prediction"])
    assert "Pillow" in row["error"]
    assert pred.metrics is not None and pred.metrics["n"] == 6  # scored on the readable ones
    assert "1 unreadable left out" in pred.summary()


def test_multiclass_model_gives_every_class_probability(tmp_path: Path) -> None:
    classes = ["benign", "in situ", "invasive"]
    model_dir = _model_dir(tmp_path, classes=classes, positive=2)
    px = np.random.default_rng(4).integers(0, 256, size=(3, SIZE, SIZE), dtype=np.uint8)
    for i, c in enumerate(classes):
        _write(tmp_path / "in" / c / "a.png", px[i])
    t = predict_files(model_dir, tmp_path / "in").table
    probs = t[[f"prob_{c}" for c in classes]].to_numpy()
    np.testing.assert_allclose(probs, load_model(model_dir).predict_proba(px[..., None]), 1e-6)
    assert t["prediction"].tolist() == [classes[k] for k in probs.argmax(1)]


def test_outputs_are_never_overwritten(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    pred = predict_files(model_dir, tmp_path / "ext")
    written = write_predictions(pred, tmp_path / "out" / "p.parquet")
    assert [w.name for w in written] == ["p.parquet", "p.metrics.json"]
    assert pd.read_parquet(written[0]).equals(pred.table)
    assert json.loads(written[1].read_text())["n"] == 4
    with pytest.raises(RaydxError, match=r"p\.parquet' exists; pass another --output"):
        write_predictions(pred, tmp_path / "out" / "p.parquet")
    with pytest.raises(
        RaydxError, match=r"must end in \.csv or \.parquet, but got output='.*p\.txt'\.$"
    ):
        write_predictions(pred, tmp_path / "out" / "p.txt")


def test_bad_inputs_say_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data '.*nope' does not exist"):
        list_inputs(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"holds no images"):
        list_inputs(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"must be an image file .* or a \.csv/\.parquet"):
        list_inputs(tmp_path / "notes.txt")
    with pytest.raises(RaydxError, match=r"is neither a run folder .* nor a model folder"):
        predict_files(tmp_path, tmp_path)


def test_cli_takes_a_run_folder_and_refuses_an_existing_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "ext")]
    assert main([*args, "--output", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "predicted 4 images" in stdout and f"wrote {out}" in stdout
    assert len(pd.read_csv(out)) == 4 and out.with_name("p.metrics.json").is_file()
    assert main([*args, "--output", str(out)]) == 2
    assert "exists; pass another --output" in capsys.readouterr().err


def test_manifest_patients_add_a_patient_level_auc(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img", per_class=4))
    frame = pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [f.parent.name for f in files],
            "patient_id": [f"{f.parent.name}-{i // 2}" for i, f in enumerate(files)],
        }
    )
    frame.to_csv(tmp_path / "m.csv", index=False)
    pred = predict_files(model_dir, tmp_path / "m.csv")
    assert pred.metrics is not None and pred.metrics["n_patients"] == 4
    p = pred.table.groupby("patient_id")["prob_malignant"].mean()
    is_pos = np.asarray(p.index.str.startswith("malignant"), dtype=int)
    assert pred.metrics["patient_auc"] == pytest.approx(auc(is_pos, p.to_numpy()))
    assert "per patient: AUC" in pred.summary()
    # A patient's images are not independent: the image AUC's interval resamples patients.
    t = pred.table
    y = (t["label"] != "malignant").to_numpy(int)  # BINARY: 'malignant' is class 0
    by_patient = diagnosis_metrics(
        y, t["prob_malignant"].to_numpy(), positive=0, threshold=0.4, groups=t["patient_id"]
    )
    assert pred.metrics["auc_ci95_by"] == "patient"
    assert pred.metrics["auc_ci95"] == by_patient["auc_ci95"]
    lo, hi = pred.metrics["auc_ci95"]
    assert f"(95% CI {lo:.3f}-{hi:.3f} by patient bootstrap)" in pred.summary()
    frame.rename(columns={"patient_id": "case"}).to_csv(tmp_path / "n.csv", index=False)
    by_image = predict_files(model_dir, tmp_path / "n.csv")
    assert by_image.metrics is not None and "patient_auc" not in by_image.metrics
    assert by_image.metrics["auc_ci95_by"] == "image"
    assert "bootstrap" not in by_image.summary().replace("a bootstrap resamples only", "")
    with pytest.raises(DataError, match=r"no column 'patient' \(--group-column\)"):
        predict_files(model_dir, tmp_path / "n.csv", group_column="patient")
    by_case = predict_files(model_dir, tmp_path / "n.csv", group_column="case").metrics
    assert by_case is not None and by_case["patient_auc"] == pred.metrics["patient_auc"]
    # as a search takes them (an audit: 'none' was looked up as a column)
    frame.to_csv(tmp_path / "m.csv", index=False)
    no_patients = predict_files(model_dir, tmp_path / "m.csv", group_column="none").metrics
    assert no_patients is not None and no_patients["auc_ci95_by"] == "image"
    with pytest.raises(DataError, match=r"--group-column folder:2 names a subfolder level"):
        predict_files(model_dir, tmp_path / "m.csv", group_column="folder:2")


def test_a_previous_output_fed_back_keeps_its_columns_under_input_names(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    first = predict_files(model_dir, tmp_path / "ext")
    write_predictions(first, tmp_path / "a.parquet")
    again = predict_files(model_dir, tmp_path / "a.parquet").table
    assert again.columns.is_unique
    assert "input_id" in again and "input_prediction" in again and "input_prob_malignant" in again
    # The same files, decoded again, give the same probabilities.
    np.testing.assert_allclose(again["prob_malignant"], again["input_prob_malignant"])
    assert again["label"].tolist() == first.table["label"].tolist()


def test_manifest_id_column_is_kept_and_can_name_the_patients(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img", per_class=4))
    frame = pd.DataFrame(
        {
            "path": [str(f) for f in files],
            "label": [f.parent.name for f in files],
            "id": [f"{f.parent.name}-{i // 2}" for i, f in enumerate(files)],  # patients
        }
    )
    frame.to_csv(tmp_path / "m.csv", index=False)
    pred = predict_files(model_dir, tmp_path / "m.csv", group_column="id")
    assert pred.table["input_id"].tolist() == frame["id"].tolist()
    assert pred.metrics is not None and pred.metrics["n_patients"] == 4


def test_nullable_parquet_cells_are_missing_not_strings(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img", per_class=2))
    labels = pd.array([f.parent.name for f in files], dtype="string")
    patients = pd.array([1, 1, 2, None], dtype="Int64")
    frame = pd.DataFrame({"path": [str(f) for f in files], "label": labels, "patient_id": patients})
    frame.to_parquet(tmp_path / "m.parquet")
    pred = predict_files(model_dir, tmp_path / "m.parquet")
    assert pred.metrics is not None and "patient_auc" not in pred.metrics
    assert pred.notes[-1] == "no patient-level AUC: images without a patient: 1"
    frame["label"] = pd.array([*labels[:3], None], dtype="string")
    frame.to_parquet(tmp_path / "m.parquet")
    pred = predict_files(model_dir, tmp_path / "m.parquet")
    assert pred.metrics is None and pred.notes == ["no metrics: images without a label: 1"]
    assert "no metrics: images without a label: 1" in pred.summary()
    with pytest.raises(DataError, match=r"1 row without a 'label' value \(first at data row 4\)"):
        predict_files(model_dir, tmp_path / "m.parquet", label_column="label")


def _predict_encoded(model_dir: Path, tmp_path: Path, files: dict, **columns: list) -> Any:
    """Predict a Parquet of the images in ``tmp_path/img`` encoded in an ``image`` column
    (Hugging Face's layout), with ``columns`` beside it; its probabilities must be those
    of the files themselves."""
    images = [{"bytes": f.read_bytes(), "path": None} for f in files]
    frame = pd.DataFrame({"image": images, **columns, "label": list(files.values())})
    frame.to_parquet(tmp_path / "enc.parquet")
    pred = predict_files(model_dir, tmp_path / "enc.parquet")
    by_file = predict_files(model_dir, tmp_path / "img").table.set_index("path")
    want = by_file.loc[[str(f) for f in files], "prob_malignant"].to_numpy()
    np.testing.assert_allclose(pred.table["prob_malignant"], want)
    return pred


def test_parquet_of_encoded_images_as_a_search_takes_it(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "img", per_class=2)
    pred = _predict_encoded(model_dir, tmp_path, files)
    assert pred.table["id"].tolist() == [f"row-{i:06d}" for i in range(4)]
    assert "path" not in pred.table and "image" not in pred.table  # no bytes in the output
    assert pred.metrics is not None and pred.metrics["n"] == 4


def test_binary_model_whose_positive_class_is_the_second(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path, positive=1)
    files = _folder(tmp_path / "ext", per_class=3)
    t = predict_files(model_dir, tmp_path / "ext").table.set_index("path")
    x = np.stack([np.asarray(Image.open(f))[..., None] for f in files])
    p_pos = load_model(model_dir).predict_proba(x)  # of 'normal, benign'
    got = t.loc[[str(f) for f in files]]
    np.testing.assert_allclose(got["prob_normal, benign"], p_pos, rtol=1e-6)
    np.testing.assert_allclose(got["prob_malignant"], 1 - p_pos, rtol=1e-6)
    assert (got["prediction"] == np.where(p_pos >= 0.4, "normal, benign", "malignant")).all()


def test_multiclass_metrics_on_class_folders(tmp_path: Path) -> None:
    classes = ["benign", "in situ", "invasive"]
    model_dir = _model_dir(tmp_path, classes=classes, positive=2, oof=_oof())
    rng = np.random.default_rng(5)
    for c in classes:
        for i in range(3):
            _write(tmp_path / "in" / c / f"{i}.png", rng.integers(0, 256, (SIZE, SIZE), np.uint8))
    pred = predict_files(model_dir, tmp_path / "in")
    t = pred.table
    y = np.array([classes.index(c) for c in t["label"]])
    probs = t[[f"prob_{c}" for c in classes]].to_numpy()
    assert pred.metrics == {
        **diagnosis_metrics(y, probs, positive=2, threshold=0.4, class_names=classes),
        "positive_class": "invasive",
        "threshold_source": "Youden's J on out-of-fold predictions",
    }
    summary = pred.summary()  # the AUC is a macro average; the rates are the positive's
    assert "AUC " in summary and "(macro one-vs-rest; 95% CI" in summary
    assert "of the most probable class; 'invasive' against the rest at probability >= 0.400" in (
        summary
    )
    # A rule moves no multi-class prediction (the most probable class); predict says so.
    ruled = predict_files(model_dir, tmp_path / "in", operating_point="sensitivity=0.9")
    assert ruled.table["prediction"].tolist() == t["prediction"].tolist()
    assert (
        "note: with 3 classes the prediction is the most probable class; "
        "operating_point=sensitivity=0.9 only sets where the positive class's sensitivity "
        "and specificity are read"
    ) in ruled.summary()
    assert not any("macro mean over" in n for n in pred.notes)
    # An audit: a folder without one of the classes got a macro AUC over the other two,
    # with no word of it.
    import shutil

    shutil.rmtree(tmp_path / "in" / "in situ")
    fewer = predict_files(model_dir, tmp_path / "in")
    assert (
        "the AUC is the macro mean over the 2 classes these labels hold, of the model's 3: "
        "no image is labelled 'in situ'"
    ) in fewer.notes


def test_folder_metrics_are_skipped_with_a_reason(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    px = np.zeros((SIZE, SIZE), np.uint8)
    _write(tmp_path / "ext" / "loose.png", px)
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is None and pred.notes == ["no metrics: images without a label: 1"]
    (tmp_path / "ext" / "loose.png").unlink()
    _write(tmp_path / "ext" / "malignnat" / "x.png", px)  # a misspelt class folder
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is None and "subfolder 'malignnat' is not one" in pred.notes[0]


def test_device_and_empty_manifest_errors(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    with pytest.raises(
        RaydxError, match=r"device must be cpu, cuda or cuda:N, but got device='gpu'\.$"
    ):
        predict_files(model_dir, tmp_path, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RaydxError, match=r"needs a CUDA GPU, and none is visible"):
            predict_files(model_dir, tmp_path, device="cuda")
    for device in ("mps", "xpu", "meta"):  # torch knows them; raydx runs on none
        with pytest.raises(RaydxError, match=rf"cuda or cuda:N, but got device={device!r}\.$"):
            predict_files(model_dir, tmp_path, device=device)
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(RaydxError, match=rf"names GPU {n}, but .* visible here"):
            predict_files(model_dir, tmp_path, device=f"cuda:{n}")
    (tmp_path / "empty.csv").write_text("path,label\n")
    with pytest.raises(DataError, match=r"manifest '.*empty\.csv' has no rows\."):
        predict_files(model_dir, tmp_path / "empty.csv")


def test_a_broken_model_folder_is_named_in_one_line(tmp_path: Path) -> None:
    """An audit: a Git LFS pointer instead of the weights, a truncated or edited
    config.json, a missing file: each escaped as a raw SafetensorError, JSONDecodeError,
    KeyError or FileNotFoundError."""
    import shutil

    good = _model_dir(tmp_path / "good", oof=_oof())
    cfg = json.loads((good / "config.json").read_text())

    def broken(name: str, change) -> Path:
        d = tmp_path / name
        shutil.copytree(good, d)
        change(d)
        return d

    def config(d: Path, **edit: Any) -> None:
        (d / "config.json").write_text(json.dumps({**cfg, **edit}))

    cases = {
        "lfs": (
            lambda d: (d / cfg["members"][0]).write_text(
                "version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n"
            ),
            r"member_0\.safetensors' is not a readable safetensors file \(.*\); a Git LFS "
            r"pointer or a partial copy\? Copy the whole model folder again",
        ),
        "gone": (
            lambda d: (d / cfg["members"][1]).unlink(),
            r"member_1\.safetensors' is not a readable safetensors file",
        ),
        "cut": (
            lambda d: (d / "config.json").write_text('{"format": '),
            r"config\.json' is not valid JSON \(.*\); copy the whole model folder again",
        ),
        "list": (
            lambda d: (d / "config.json").write_text("[]"),
            r"config\.json' must hold a JSON object, but got list\.$",
        ),
        "no_members": (lambda d: config(d, members=None), r"has no 'members' \(a list"),
        "no_classes": (lambda d: config(d, class_names=["one"]), r"has no 'class_names'"),
        "size": (
            lambda d: config(d, preprocessing={**cfg["preprocessing"], "image_size": "abc"}),
            r"has no 'preprocessing' with whole numbers 'image_size' and 'channels'",
        ),
    }
    cases["no_oof"] = (
        lambda d: (d / cfg["oof_scores"]).unlink(),
        r"oof_scores\.parquet', which config\.json names, cannot be read",
    )
    for name, (change, message) in cases.items():
        with pytest.raises(RaydxError, match=message):
            load_model(broken(name, change))
    assert len(load_model(good).members) == 2


@pytest.mark.parametrize("rule", ["youden", "sensitivity=0.9", "specificity=0.8"])
def test_operating_point_rechooses_the_threshold_on_the_saved_oof_scores(
    tmp_path: Path, rule: str
) -> None:
    oof = _oof()
    model_dir = _model_dir(tmp_path, oof=oof)
    files = _folder(tmp_path / "ext")
    saved = load_model(model_dir)
    pd.testing.assert_frame_equal(saved.oof, oof)  # kept as given, no ids
    point = OperatingPoint.parse(rule)
    expected_t = point.threshold(oof["is_positive"].astype(int).to_numpy(), oof["prob"].to_numpy())
    assert expected_t != pytest.approx(0.4)  # the saved threshold is not what it picks

    pred = predict_files(model_dir, tmp_path / "ext", operating_point=rule)
    assert pred.model.threshold == expected_t
    # The rule's rates hold on the out-of-fold scores it was chosen on ...
    pos = oof["is_positive"].to_numpy()
    if point.rule == "sensitivity":
        assert np.mean(oof["prob"][pos] >= expected_t) >= 0.9
    if point.rule == "specificity":
        assert np.mean(oof["prob"][~pos] < expected_t) >= 0.8
    # ... and the new threshold, not the saved one, decides and scores the new images.
    t = pred.table.set_index("path").loc[[str(f) for f in files]]
    expected = np.where(t["prob_malignant"] >= expected_t, "malignant", "normal, benign")
    assert list(t["prediction"]) == list(expected)
    y = np.array([BINARY.index(c) for c in files.values()])
    assert pred.metrics is not None
    assert pred.metrics["threshold"] == expected_t
    assert pred.metrics["sensitivity"] == pytest.approx(
        np.mean(t["prob_malignant"].to_numpy()[y == 0] >= expected_t)
    )
    assert pred.metrics["threshold_source"] == f"{point.describe()} on out-of-fold predictions"
    cut = threshold_text(expected_t, 4)
    assert f"at probability >= {cut}: {point.describe()} on out-of-fold" in (pred.summary())
    # The summary says what the rule gives on the rows it was chosen on; this folder
    # keeps no recipe (params), so there is nothing to cross-fit.
    sens, spec = np.mean(oof["prob"][pos] >= expected_t), np.mean(oof["prob"][~pos] < expected_t)
    said = f"{point} out of fold: sensitivity {sens:.3f}, specificity {spec:.3f}"
    assert said in pred.summary().splitlines()
    # The model on disk is unchanged.
    assert load_model(model_dir).threshold == 0.4


def test_operating_point_summary_adds_cross_fitted_rates_with_the_recipe(tmp_path: Path) -> None:
    """A folder saved by a search keeps the trial's params: the rule's out-of-fold rates
    with each fold's threshold chosen on the other folds come with the fitted ones."""
    from raydx.cross_fit import cross_fitted_scores

    oof = _oof(seed=3)
    model_dir = _model_dir(tmp_path, oof=oof)
    cfg_file = model_dir / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "params": {}}))
    _folder(tmp_path / "ext", per_class=2)
    point = OperatingPoint.parse("sensitivity=0.9")
    pred = predict_files(model_dir, tmp_path / "ext", operating_point=str(point))
    y, p = oof["is_positive"].to_numpy(), oof["prob"].to_numpy()
    c = cross_fitted_scores({}, y, p, oof["fold"].to_numpy(), point)
    line = next(x for x in pred.summary().splitlines() if x.startswith("sensitivity=0.9 out"))
    assert line.endswith(
        f"; cross-fitted (chosen on the other folds): sensitivity {c['sensitivity']:.3f}, "
        f"specificity {c['specificity']:.3f}"
    )
    assert c["sensitivity"] is not None and c["sensitivity"] < 0.95  # not exact out of sample


def test_operating_point_needs_saved_oof_scores_and_a_valid_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _model_dir(tmp_path)  # as saved before raydx kept out-of-fold scores
    _folder(tmp_path / "ext", per_class=2)
    with pytest.raises(RaydxError, match=r"holds no out-of-fold scores.*raydx cv --config"):
        predict_files(tmp_path / "run", tmp_path / "ext", operating_point="sensitivity=0.9")
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "ext")]
    assert main([*args, "--output", str(out), "--operating-point", "youden"]) == 2
    assert "no out-of-fold scores" in capsys.readouterr().err and not out.exists()
    _model_dir(tmp_path, oof=_oof())
    assert main([*args, "--output", str(out), "--operating-point", "sensitivty=0.9"]) == 2
    err = capsys.readouterr().err
    assert "operating_point='sensitivty=0.9'" in err and "'sensitivity=0.9'" in err
    assert not out.exists()
    assert main([*args, "--output", str(out), "--operating-point", "specificity=0.5"]) == 0
    assert "specificity >= 0.5 on out-of-fold predictions" in capsys.readouterr().out
    assert json.loads(out.with_name("p.metrics.json").read_text())["threshold_source"] == (
        "specificity >= 0.5 on out-of-fold predictions"
    )


def test_prevalence_maps_the_probabilities_and_keeps_every_decision(tmp_path: Path) -> None:
    oof = _oof()
    model_dir = _model_dir(tmp_path, oof=oof)
    _folder(tmp_path / "ext", per_class=10)
    base = predict_files(model_dir, tmp_path / "ext")
    pool = float(oof["is_positive"].mean())
    assert base.model.prevalence == pytest.approx(pool)
    assert base.metrics is not None and base.metrics["prevalence"] == pytest.approx(pool)
    assert "probabilities are for a prevalence" not in base.summary()  # as trained

    there = predict_files(model_dir, tmp_path / "ext", prevalence=0.05)
    p0, p1 = base.table["prob_malignant"], there.table["prob_malignant"]
    np.testing.assert_allclose(p1, shift(p0.to_numpy(), [1 - pool, pool], [0.95, 0.05]))
    assert (p1 < p0).all()  # malignant is rarer there
    np.testing.assert_allclose(there.table["prob_normal, benign"], 1 - p1)
    assert there.model.threshold == pytest.approx(
        float(shift(np.array([0.4]), [1 - pool, pool], [0.95, 0.05])[0])
    )
    assert (there.table["prediction"] == base.table["prediction"]).all()
    assert there.metrics is not None
    for same in ("auc", "accuracy", "sensitivity", "specificity"):
        assert there.metrics[same] == base.metrics[same]
    assert there.metrics["calibration_intercept"] != base.metrics["calibration_intercept"]
    assert there.metrics["prevalence"] == 0.05
    assert "probabilities are for a prevalence of 5.0% 'malignant'" in there.summary()
    # An operating point chosen after the move picks the same images as before it.
    both = predict_files(
        model_dir, tmp_path / "ext", prevalence=0.05, operating_point="sensitivity=0.9"
    )
    alone = predict_files(model_dir, tmp_path / "ext", operating_point="sensitivity=0.9")
    assert (both.table["prediction"] == alone.table["prediction"]).all()
    # 20 images, half malignant: 5% is far outside their own share, 50% is it.
    note = "these 20 labelled images are 50.0% 'malignant' (95% CI 29.9%-70.1%)"
    assert note in there.summary() and "--prevalence 0.5 maps them" in there.summary()
    own = predict_files(model_dir, tmp_path / "ext", prevalence=0.5)
    assert "labelled images are" not in own.summary()
    # Moving twice is moving once.
    twice = load_model(model_dir).at_prevalence(0.5).at_prevalence(0.05)
    assert twice.threshold == pytest.approx(there.model.threshold)
    assert twice.config["class_mix"]["trained"] == pytest.approx([1 - pool, pool])
    # A threshold above every probability (a rule no score could meet) flags none there too.
    saved = json.loads((model_dir / "config.json").read_text())
    none = float(np.nextafter(1.0, 2.0))
    (model_dir / "config.json").write_text(json.dumps({**saved, "threshold": none}))
    assert load_model(model_dir).at_prevalence(0.05).threshold == none


def test_prevalence_errors_name_the_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _model_dir(tmp_path, oof=_oof())
    _folder(tmp_path / "ext", per_class=2)
    model = load_model(model_dir)
    for bad in (0.0, 1.0, 1.5, float("nan")):
        with pytest.raises(RaydxError, match=r"prevalence must be in \(0, 1\), but got"):
            model.at_prevalence(bad)
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(model_dir), "--data", str(tmp_path / "ext")]
    assert main([*args, "--output", str(out), "--prevalence", "2"]) == 2
    err = capsys.readouterr().err
    assert "prevalence=2.0" in err and "Did you mean 0.02 (a share" in err and not out.exists()
    assert main([*args, "--output", str(out), "--prevalence", "0.1"]) == 0
    assert "prevalence of 10.0% 'malignant'" in capsys.readouterr().out
    assert json.loads(out.with_name("p.metrics.json").read_text())["prevalence"] == 0.1
    old = _model_dir(tmp_path / "old")  # saved before out-of-fold scores were kept
    with pytest.raises(RaydxError, match=r"no out-of-fold scores.*takes --prevalence"):
        load_model(old).at_prevalence(0.1)
    three = _model_dir(tmp_path / "three", classes=["a", "b", "c"], oof=_oof())
    with pytest.raises(RaydxError, match="binary models; this one has 3 classes"):
        load_model(three).at_prevalence(0.1)
    # Anomaly scores learnt no class mix: none to state, none to move.
    saved = load_model(model_dir)
    params = {"family": "autoencoder", "ae_mode": "anomaly", "model": "conv_ae"}
    anomaly = DiagnosisModel(members=[], config={**saved.config, "params": params}, oof=saved.oof)
    assert anomaly.anomaly_scores and anomaly.prevalence is None
    with pytest.raises(RaydxError, match=r"anomaly scores .* choose another with --operating"):
        anomaly.at_prevalence(0.1)


def test_a_misspelt_label_column_is_pointed_out_not_taken_for_no_labels(tmp_path: Path) -> None:
    model_dir = _model_dir(tmp_path)
    files = list(_folder(tmp_path / "img", per_class=2))
    frame = pd.DataFrame({"path": [str(f) for f in files], "lable": [f.parent.name for f in files]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    pred = predict_files(model_dir, tmp_path / "m.csv")
    assert pred.metrics is None
    note = (
        "no metrics: the manifest has no 'label' column; did you mean 'lable'? "
        "(--label-column lable)"
    )
    assert pred.notes == [note] and note in pred.summary()
    assert predict_files(model_dir, tmp_path / "m.csv", label_column="lable").metrics is not None
    frame.rename(columns={"lable": "site"}).to_csv(tmp_path / "u.csv", index=False)
    assert predict_files(model_dir, tmp_path / "u.csv").notes == []  # unlabelled: no note


def test_a_dicom_folder_is_scored_per_patient_by_its_patient_ids(tmp_path: Path) -> None:
    """As a search groups a DICOM folder's folds by PatientID, predict's patient-level AUC
    takes the files' own ids when no manifest names patients."""
    model_dir = _model_dir(tmp_path)
    _dicom_folder(tmp_path / "ext", lambda c, i: {"PatientID": f"{c[:3]}{i // 2}"}, seed=0)
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is not None and pred.metrics["n_patients"] == 6
    assert pred.metrics["n"] == 12


def test_patient_subfolders_of_class_folders_are_scored_per_patient(tmp_path: Path) -> None:
    # As a search groups such a folder (raydx.data.files.list_folder): by subfolder name.
    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(3)
    for label in BINARY:
        for patient in range(3):
            for i in range(2):
                _write(tmp_path / "ext" / label / f"p{patient}{label[:1]}" / f"{i}.png",
                       rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))  # fmt: skip
    inputs = list_inputs(tmp_path / "ext")
    assert inputs.rows["label"].tolist().count("malignant") == 6
    assert sorted(set(inputs.rows["group"])) == ["p0m", "p0n", "p1m", "p1n", "p2m", "p2n"]
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is not None and pred.metrics["n_patients"] == 6


def test_a_folders_group_column_is_a_level_or_none_as_in_a_search(tmp_path: Path) -> None:
    """``benign/SOB/<type>/<patient>/`` scored per patient with ``folder:3``, as a search
    with that flag grouped it; ``none``: no patients; another name is an error."""
    rng = np.random.default_rng(4)
    for label in BINARY:
        for kind in ("A", "B"):
            for patient in range(2):
                folder = tmp_path / "ext" / label / "SOB" / kind / f"{label[0]}{kind}{patient}"
                for i in range(2):
                    _write(folder / f"{i}.png", rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    assert sorted(set(list_inputs(tmp_path / "ext").rows["group"])) == ["A", "B"]  # types
    by_level = list_inputs(tmp_path / "ext", group_column="folder:3").rows["group"]
    assert sorted(set(by_level)) == sorted(
        f"{label[0]}{kind}{n}" for label in BINARY for kind in "AB" for n in range(2)
    )
    assert list_inputs(tmp_path / "ext", group_column="none").rows["group"].isna().all()
    with pytest.raises(DataError, match="'patient_id' names a manifest column"):
        list_inputs(tmp_path / "ext", group_column="patient_id")
    with pytest.raises(DataError, match="no image lies in a subfolder at level 4"):
        list_inputs(tmp_path / "ext", group_column="folder:4")
    pred = predict_files(_model_dir(tmp_path), tmp_path / "ext", group_column="folder:3")
    assert pred.metrics is not None and pred.metrics["n_patients"] == 8


def test_a_semicolon_manifest_with_labels_written_as_floats(tmp_path: Path) -> None:
    files = _folder(tmp_path / "imgs", per_class=2)
    lines = [f"{p};{float(BINARY.index(c))}" for p, c in files.items()]
    (tmp_path / "m.csv").write_text("path;label\n" + "\n".join(lines) + "\n")
    inputs = list_inputs(tmp_path / "m.csv")
    assert sorted(set(inputs.rows["label"])) == ["0", "1"]
    assert inputs.rows["path"].map(lambda q: Path(q).is_file()).all()


def test_a_model_of_float_class_names_scores_labels_read_as_whole_numbers(tmp_path: Path) -> None:
    """Older runs saved class names ``'0.0'``/``'1.0'``; labels written ``0.0``/``1.0`` are
    read as ``0``/``1`` now, and are matched to those classes by value, not refused."""
    model_dir = _model_dir(tmp_path, classes=["0.0", "1.0"])
    files = _folder(tmp_path / "imgs", per_class=3)
    truth = {str(p): "0.0" if c == BINARY[0] else "1.0" for p, c in files.items()}
    for written in (["0.0", "1.0"], ["0", "1"]):  # as the model names them, and as read now
        labels = [written[BINARY.index(c)] for c in files.values()]
        frame = pd.DataFrame({"path": [str(p) for p in files], "label": labels})
        frame.to_csv(tmp_path / "m.csv", index=False)
        pred = predict_files(model_dir, tmp_path / "m.csv")
        assert pred.metrics is not None and pred.metrics["n"] == 6
        assert pred.metrics["positive_class"] == "0.0"
        assert pred.table.set_index("path")["label"].to_dict() == truth
    frame["label"] = ["2"] * len(frame)  # a number that is no class: refused as before
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=r"label '2' \(column 'label'\) is not one of the model's"):
        predict_files(model_dir, tmp_path / "m.csv")


def test_a_folder_of_wrapper_subfolders_is_scored_per_image_not_per_class(tmp_path: Path) -> None:
    """``malignant/images/*.png``: a single subfolder in every class folder is a wrapper,
    not one patient per class (as a search reads it): no patient-level score from it."""
    rng = np.random.default_rng(5)
    for label in BINARY:
        for i in range(3):
            _write(tmp_path / "ext" / label / "images" / f"{i}.png",
                   rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))  # fmt: skip
    inputs = list_inputs(tmp_path / "ext")
    assert inputs.rows["group"].isna().all()
    pred = predict_files(_model_dir(tmp_path), tmp_path / "ext")
    assert pred.metrics is not None and "n_patients" not in pred.metrics


def test_labelled_images_of_one_class_say_what_is_undefined_and_suggest_nothing_refused(
    tmp_path: Path,
) -> None:
    """The audit's case: all malignant. AUC is undefined, and --prevalence 1 (which the
    command refuses) is not offered."""
    import shutil

    model_dir = _model_dir(tmp_path, oof=_oof())
    _folder(tmp_path / "ext", per_class=12)
    shutil.rmtree(tmp_path / "ext" / BINARY[1])
    text = predict_files(model_dir, tmp_path / "ext").summary()
    assert "on their labels: AUC undefined: the 12 labelled images are of one class" in text
    assert "n/a-n/a" not in text and "--prevalence 1 " not in text
    assert "no --prevalence maps them to a set of one class" in text


def test_images_of_the_models_own_run_are_found_and_called_no_external_validation(
    tmp_path: Path, capsys
) -> None:
    """The run's images come back re-exported: a PNG of an array the model trained on
    (found by the image the network sees), a photo of another size saved again as TIFF
    (found by the file's own pixels), and a test-split image; new images are not."""
    from raydx.seen import SEEN_FILE, write_seen

    model_dir = _model_dir(tmp_path)  # tmp/run/model: its run folder is tmp/run
    rng = np.random.default_rng(8)
    arrays = rng.integers(0, 256, (6, SIZE, SIZE, 1), dtype=np.uint8)
    photo = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    photo_png = tmp_path / "photo.png"
    Image.fromarray(photo).save(photo_png)
    d = decode(photo_png.read_bytes(), SIZE)
    table, splits = _run_record(
        np.concatenate([arrays, d.image[None]]),
        ["cv"] * 5 + ["test", "cv"],
        [f"h{i}" for i in range(6)] + [d.hash],
    )
    write_seen(table, splits, tmp_path / "run")
    assert pd.read_parquet(tmp_path / "run" / SEEN_FILE)["part"].tolist() == (
        ["training"] * 5 + ["test split", "training"]
    )
    ext = tmp_path / "ext"
    _write(ext / BINARY[0] / "again0.png", arrays[0])  # trained on
    _write(ext / BINARY[1] / "again5.png", arrays[5])  # the test split
    Image.fromarray(photo).save(ext / BINARY[0] / "photo.tif")  # trained on, as TIFF
    for i in range(3):
        _write(ext / BINARY[i % 2] / f"new{i}.png", rng.integers(0, 256, (SIZE, SIZE), np.uint8))

    pred = predict_files(tmp_path / "run", ext)
    seen = pred.table.set_index("id")["seen"]
    assert seen[f"{BINARY[0]}/again0.png"] == "training"
    assert seen[f"{BINARY[0]}/photo.tif"] == "training"
    assert seen[f"{BINARY[1]}/again5.png"] == "test split"
    assert (seen[[i for i in seen.index if "new" in i]] == "").all()
    assert pred.metrics is not None and pred.metrics["seen"] == {
        "training": 2,
        "test split": 1,
        "training (near copy)": 0,
        "test split (near copy)": 0,
    }
    assert (
        "WARNING: of these 6 images, 2 are among the images this model was trained on and 1 "
        "is from its run's test split (the same pixels; column 'seen'): scores on them are "
        "no external validation"
    ) in pred.summary()
    # A model folder that travelled without its run carries no image hashes: no column.
    moved = tmp_path / "elsewhere" / "model"
    moved.parent.mkdir()
    import shutil

    shutil.copytree(model_dir, moved)
    assert "seen" not in predict_files(moved, ext).table
    assert not any(p.name == SEEN_FILE for p in model_dir.iterdir())
    one = predict_files(tmp_path / "run", ext / BINARY[0] / "photo.tif")
    assert (
        "WARNING: this image is among the images this model was trained on (the same "
        "pixels; column 'seen'): its score is no external validation of the model"
    ) in one.notes
    # A run saved before seen_images.parquet (an audit): said, not dropped silently.
    old_run = tmp_path / "old_run"
    shutil.copytree(tmp_path / "run", old_run)
    (old_run / SEEN_FILE).unlink()
    (old_run / "run.json").write_text(json.dumps({"options": {}}))
    older = predict_files(old_run, ext)
    assert "seen" not in older.table
    assert any(
        f"no 'seen' column: the run in {old_run.resolve()} has no {SEEN_FILE}" in n
        for n in older.notes
    )
    assert not any("no 'seen' column" in n for n in predict_files(moved, ext).notes)


def test_near_copies_of_the_runs_images_are_marked_and_an_older_record_says_it_cannot(
    tmp_path: Path,
) -> None:
    """A run's image saved again brighter and as a lossy JPEG has other pixels: no hash
    finds it, its thumbnail does. An image near both a training and a test image counts
    as training's; other images stay unmarked."""
    from raydx.seen import SEEN_FILE, write_seen

    _model_dir(tmp_path)
    rng = np.random.default_rng(3)
    smooth = np.stack([np.outer(rng.normal(size=SIZE), rng.normal(size=SIZE)) for _ in range(6)])
    arrays = (128 + 120 * smooth / np.abs(smooth).max(axis=(1, 2), keepdims=True)).astype(np.uint8)
    arrays = arrays[..., None]
    arrays[4] = arrays[2]  # a training image that is also in the test split
    table, splits = _run_record(arrays, ["cv"] * 3 + ["test"] * 3)
    write_seen(table, splits, tmp_path / "run")
    ext = tmp_path / "ext"
    brighter = lambda a: np.clip(a.astype(int) * 0.9 + 20, 0, 255).astype(np.uint8)  # noqa: E731
    _write(ext / BINARY[0] / "brighter0.png", brighter(arrays[0]))
    _write(ext / BINARY[1] / "brighter5.png", brighter(arrays[5]))
    Image.fromarray(arrays[1].squeeze()).save(ext / BINARY[1] / "lossy1.jpg", quality=95)
    _write(ext / BINARY[0] / "both2.png", brighter(arrays[2]))
    _write(ext / BINARY[0] / "exact3.png", arrays[3])  # the same pixels: never a near copy
    for i in range(2):
        _write(ext / BINARY[i] / f"new{i}.png", rng.integers(0, 256, (SIZE, SIZE), np.uint8))

    pred = predict_files(tmp_path / "run", ext)
    seen = pred.table.set_index("id")["seen"]
    assert seen[f"{BINARY[0]}/brighter0.png"] == "training (near copy)"
    assert seen[f"{BINARY[1]}/lossy1.jpg"] == "training (near copy)"
    assert seen[f"{BINARY[1]}/brighter5.png"] == "test split (near copy)"
    assert seen[f"{BINARY[0]}/both2.png"] == "training (near copy)"
    assert seen[f"{BINARY[0]}/exact3.png"] == "test split"
    assert seen[f"{BINARY[0]}/new0.png"] == seen[f"{BINARY[1]}/new1.png"] == ""
    assert pred.metrics is not None and pred.metrics["seen"] == {
        "training": 0,
        "test split": 1,
        "training (near copy)": 3,
        "test split (near copy)": 1,
    }
    assert (
        "WARNING: of these 7 images, 1 is from its run's test split, 3 are near copies of "
        "images it was trained on and 1 is a near copy of an image of its run's test split "
        "(the same pixels, or near copies whose 16 x 16 thumbnails correlate >= 0.985; "
        "column 'seen')"
    ) in pred.summary()
    (ext / BINARY[0] / "exact3.png").unlink()
    only_near = predict_files(tmp_path / "run", ext).summary()
    assert (
        "WARNING: of these 6 images, 3 are near copies of images it was trained on and 1 is "
        "a near copy of an image of its run's test split (most likely the same picture saved "
        "again: 16 x 16 thumbnails correlate >= 0.985; column 'seen')"
    ) in only_near
    one = predict_files(tmp_path / "run", ext / BINARY[1] / "lossy1.jpg")
    assert one.notes[0].startswith(
        "WARNING: this image is a near copy of an image this model was trained on (most "
        "likely the same picture saved again: 16 x 16 thumbnail correlates >= 0.985;"
    )
    # A record saved before thumbnails: exact copies only, and said so.
    frame = pd.read_parquet(tmp_path / "run" / SEEN_FILE)
    frame.drop(columns="thumbnail").to_parquet(tmp_path / "run" / SEEN_FILE)
    older = predict_files(tmp_path / "run", ext)
    assert (older.table["seen"] == "").all()
    assert older.metrics is not None and older.metrics["seen"] == {
        "training": 0,
        "test split": 0,
        "training (near copy)": None,  # not looked for
        "test split (near copy)": None,
    }
    assert any(
        n.startswith("near copies of the run's images not looked for: its seen_images.parquet")
        for n in older.notes
    )


def test_near_copies_are_found_when_the_model_takes_another_size_than_the_record(
    breastmnist: Path,
) -> None:
    """A model trained at --image-size 64 on BreastMNIST's 28-px arrays: predict sees the
    images at 64 px, the record's thumbnails were pooled from 28 px. Resized to the
    record's size first, every test image saved again as JPEG is found; pooled from 64
    px as they are, one was missed (correlation 0.984)."""
    import io

    from raydx.seen import SeenImages, seen_frame

    images = np.load(breastmnist)["test_images"][..., None]
    n = len(images)
    seen = SeenImages(seen_frame(*_run_record(images, ["test"] * n)))
    views = []
    for img in images[..., 0]:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        views.append(np.asarray(Image.open(buf).resize((64, 64), Image.BILINEAR)))
    parts = seen.near_parts(np.stack(views)[..., None])
    assert parts == ["test split (near copy)"] * n


def test_labelled_images_whose_classes_differ_by_file_format_are_warned_about(tmp_path) -> None:
    """An external test set of one class from one source and the other from another:
    its AUC may measure the source. Unlabelled images, or alike ones, say nothing."""
    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(9)
    for c, fmt in zip(BINARY, ("png", "jpg"), strict=True):
        for i in range(6):
            _write(
                tmp_path / "ext" / c / f"{i}.{fmt}", rng.integers(0, 256, (SIZE, SIZE), np.uint8)
            )
    summary = predict_files(model_dir, tmp_path / "ext").summary()
    assert (
        "WARNING: the file format alone tells the classes apart (balanced accuracy 1.00; "
        "'malignant': PNG 6; 'normal, benign': JPEG 6). Where the model reads it, these "
        "scores measure it as well as the disease"
    ) in summary
    _folder(tmp_path / "alike")
    assert "alone tells" not in predict_files(model_dir, tmp_path / "alike").summary()


def test_one_decision_for_every_labelled_image_is_warned_about(tmp_path) -> None:
    model_dir = _model_dir(tmp_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["threshold"] = 0.0  # every image flagged 'malignant'
    (model_dir / "config.json").write_text(json.dumps(cfg))
    _folder(tmp_path / "ext")
    summary = predict_files(model_dir, tmp_path / "ext").summary()
    assert (
        "WARNING: at the threshold 0 every labelled image is called 'malignant' (sensitivity "
        "1.000, specificity 0.000)"
    ) in summary


def test_encoded_images_with_a_path_column_are_decoded_and_named_by_it(tmp_path: Path) -> None:
    """As a search takes such a Parquet: the bytes are the images, and the path column
    (here naming files that are not on this machine) only names them."""
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "img", per_class=2)
    names = [f"elsewhere/scan-{i}.png" for i in range(len(files))]
    pred = _predict_encoded(model_dir, tmp_path, files, path=names)
    assert pred.table["id"].tolist() == names
    assert "path" not in pred.table and "input_path" not in pred.table
    assert pred.metrics is not None and pred.metrics["n"] == 4


def test_a_previous_output_with_a_seen_column_fed_back_keeps_it_as_input_seen(
    tmp_path: Path,
) -> None:
    """A model in its run folder adds 'seen'; its own output as the next manifest crashed
    with "cannot insert seen, already exists"."""
    from raydx.seen import SEEN_FILE

    _model_dir(tmp_path)
    empty = {"file_hash": "str", "view_hash": "str", "part": "str", "view_size": "int64"}
    pd.DataFrame({c: pd.Series([], dtype=t) for c, t in empty.items()}).to_parquet(
        tmp_path / "run" / SEEN_FILE
    )
    _folder(tmp_path / "ext", per_class=2)
    first = predict_files(tmp_path / "run", tmp_path / "ext")
    assert first.table["seen"].tolist() == [""] * 4
    write_predictions(first, tmp_path / "a.parquet")
    again = predict_files(tmp_path / "run", tmp_path / "a.parquet").table
    assert again.columns.is_unique
    assert again["seen"].tolist() == [""] * 4 and again["input_seen"].tolist() == [""] * 4
    assert {"input_id", "input_prediction", "input_prob_malignant"} <= set(again.columns)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Calls of predict's ``decode``, to show that a refusal came before any image was read."""
    import raydx.predict

    calls: list[int] = []
    real = raydx.predict.decode

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(raydx.predict, "decode", counted)
    return calls


def test_a_manifest_label_that_is_no_class_stops_before_any_image_is_decoded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = _model_dir(tmp_path)
    files = _folder(tmp_path / "img", per_class=3)
    labels = [c if i else "malignnat" for i, c in enumerate(files.values())]
    pd.DataFrame({"path": [str(f) for f in files], "label": labels}).to_csv(
        tmp_path / "m.csv", index=False
    )
    decoded = _count_decodes(monkeypatch)
    with pytest.raises(
        DataError,
        match=r"label 'malignnat' \(column 'label'\) is not one of the model's classes "
        r"\['malignant', 'normal, benign'\] \(did you mean 'malignant'\?\); fix the labels",
    ):
        predict_files(model_dir, tmp_path / "m.csv")
    out = tmp_path / "p.csv"
    args = ["predict", "--model", str(model_dir), "--data", str(tmp_path / "m.csv")]
    assert main([*args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydx: error: label 'malignnat'") and err.count("\n") == 1
    assert decoded == [] and not out.exists()


def test_cli_refuses_a_leftover_metrics_file_before_reading_any_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    out = tmp_path / "p.csv"
    out.with_name("p.metrics.json").write_text("{}\n")  # a previous run's scores
    decoded = _count_decodes(monkeypatch)
    args = ["predict", "--model", str(model_dir), "--data", str(tmp_path / "ext")]
    assert main([*args, "--output", str(out)]) == 2
    assert "p.metrics.json' exists; pass another --output" in capsys.readouterr().err
    assert decoded == [] and not out.exists()


@pytest.mark.parametrize("suffix, writer", [(".csv", "to_csv"), (".parquet", "to_parquet")])
def test_an_interrupted_write_leaves_no_output_and_a_retry_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, writer: str
) -> None:
    """A full disk mid-write left a truncated table, which the next run then refused."""
    model_dir = _model_dir(tmp_path)
    _folder(tmp_path / "ext", per_class=2)
    pred = predict_files(model_dir, tmp_path / "ext")
    out = tmp_path / "out" / f"p{suffix}"

    def half(self: pd.DataFrame, path: Any, *args: Any, **kwargs: Any) -> None:
        Path(path).write_text("id,pa")
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(pd.DataFrame, writer, half)
        with pytest.raises(OSError, match="No space left"):
            write_predictions(pred, out)
    assert list(out.parent.iterdir()) == []
    written = write_predictions(pred, out)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(w.name for w in written)
    assert json.loads(written[1].read_text())["n"] == 4


def _dicom_folder(root: Path, tags: Any, seed: int = 1) -> None:
    """6 random DICOM files per class in ``root/<class>/``; ``tags(class, i)``: theirs."""
    from image_files import dicom_bytes

    rng = np.random.default_rng(seed)
    for c in BINARY:
        (root / c).mkdir(parents=True)
        for i in range(6):
            px = rng.integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
            (root / c / f"{i}.dcm").write_bytes(dicom_bytes(px, **tags(c, i)))


def test_dicom_files_without_a_patient_id_are_each_a_patient(tmp_path: Path) -> None:
    """As a search groups them: one file without a PatientID took the patient-level AUC
    away from the whole set."""
    model_dir = _model_dir(tmp_path)
    # two files of one patient per class, four without a PatientID
    _dicom_folder(tmp_path / "ext", lambda c, i: {"PatientID": f"{c[:3]}0"} if i < 2 else {})
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is not None and pred.metrics["n"] == 12
    assert pred.metrics["n_patients"] == 2 + 8 and "patient_auc" in pred.metrics
    assert not any("no patient-level AUC" in n for n in pred.notes)


def test_dicom_files_without_a_patient_id_in_patient_subfolders_are_their_subfolders(
    tmp_path: Path,
) -> None:
    """As a search groups them: one patient's files carrying a PatientID made every other
    file a patient of its own, though each lay in its patient's subfolder."""
    from image_files import dicom_bytes

    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(5)
    for c in BINARY:
        for patient in range(3):
            for i in range(2):
                tags = {"PatientID": "M0"} if (c, patient) == (BINARY[0], 0) else {}
                px = rng.integers(0, 256, size=(SIZE, SIZE), dtype=np.uint8)
                f = tmp_path / "ext" / c / f"p{patient}{c[:1]}" / f"{i}.dcm"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(dicom_bytes(px, **tags))
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is not None and pred.metrics["n"] == 12
    assert pred.metrics["n_patients"] == 6


def test_dicom_files_with_a_placeholder_patient_id_are_each_a_patient(tmp_path: Path) -> None:
    """As a search groups them: ANONYMOUS on most files made them one patient of the
    per-patient AUC; each is one of its own, as a file without a PatientID, and said so."""
    model_dir = _model_dir(tmp_path)
    _dicom_folder(
        tmp_path / "ext", lambda c, i: {"PatientID": f"{c[:3]}0" if i < 2 else "ANONYMOUS"}
    )
    pred = predict_files(model_dir, tmp_path / "ext")
    assert pred.metrics is not None and pred.metrics["n_patients"] == 2 + 8
    assert (
        "WARNING: DICOM PatientID 'ANONYMOUS' on 8 images is a placeholder (an anonymiser's), "
        "not a patient, so read as no PatientID: each of those images is a patient of its "
        "own, and one patient's images may then count as several in the per-patient AUC; a "
        "manifest with a 'patient_id' column avoids that"
    ) in pred.notes
    # placeholders alone: no patients, as blank ones (the old code scored 1 "patient")
    _dicom_folder(tmp_path / "anon", lambda c, i: {"PatientID": "0"})
    pred = predict_files(model_dir, tmp_path / "anon")
    assert pred.metrics is not None and "n_patients" not in pred.metrics
    assert [n for n in pred.notes if "placeholder" in n] == [
        "WARNING: DICOM PatientID '0' on 12 images is a placeholder (an anonymiser's), not a "
        "patient, so read as no PatientID: no per-patient AUC; a manifest with a "
        "'patient_id' column names the patients"
    ]


@pytest.mark.parametrize(
    "text, value",
    [
        ("1", 1.0), ("1.0", 1.0), ("01", 1.0), ("+1", 1.0), ("1e0", 1.0), ("-0.5", -0.5),
        ("1_0", None), ("\u0661", None), ("inf", None), ("nan", None), ("", None),
        ("one", None), (None, None), ("0x1", None),
    ],
)  # fmt: skip
def test_labels_are_numbers_one_way_for_the_search_and_predict(
    text: str | None, value: float | None
) -> None:
    """One parser reads labels as numbers: a search's ``plain_numbers`` and predict's
    ``as_class_numbers`` agree on what is a number (``1_0`` and an Arabic-Indic one were
    numbers to predict alone)."""
    from raydx.data.files import plain_numbers
    from raydx.data.labels import label_number
    from raydx.predict import as_class_numbers

    assert label_number(text) == value
    labels = pd.Series([text, "2"])
    read, _ = plain_numbers(labels)
    matched = as_class_numbers(labels, ["1.0", "2.0"])
    if value is None:  # not all numbers: as written, and no class by value
        assert read.equals(labels) and matched[:1].equals(labels[:1])
    else:
        assert read[1] == "2" and float(read[0]) == value
        assert matched[0] == ("1.0" if value == 1 else text)


@pytest.mark.parametrize(
    "threshold, shown",
    [(1 - 1e-7, "1 - 1.0e-07"), (2e-5, "2.0e-05"), (0.31044, "0.3104"), (0.4, "0.4000")],
)
def test_a_summary_threshold_near_0_or_1_is_not_rounded_to_a_round_number(
    tmp_path: Path, threshold: float, shown: str
) -> None:
    """At 0.99999990 ">= 1.000" read as "flags none", though it flagged images. (Other
    thresholds keep 4 decimals, as the model card prints them; the exact value is in
    the model folder's config.json.)"""
    model_dir = _model_dir(tmp_path)
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg["threshold"] = threshold
    (model_dir / "config.json").write_text(json.dumps(cfg))
    _folder(tmp_path / "ext", per_class=2)
    summary = predict_files(model_dir, tmp_path / "ext").summary()
    assert f"malignant at probability >= {shown}: " in summary


def test_importing_predict_leaves_ray_out() -> None:
    """A model folder needs raydx and PyTorch only: predict must not import Ray."""
    import subprocess
    import sys

    code = "import sys, raydx.predict; print([m for m in sys.modules if m.split('.')[0] == 'ray'])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_images_of_another_kind_than_the_training_ones_are_warned_about(tmp_path: Path) -> None:
    """An audit's colour model, given grey copies of its own kind of photos, called every
    one the same class without a word; a grey model given colour images makes them grey."""
    rng = np.random.default_rng(6)
    for label in BINARY:
        for i in range(3):
            _write(tmp_path / "rgb" / label / f"{i}.png",
                   rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))  # fmt: skip
            _write(tmp_path / "grey" / label / f"{i}.png",
                   rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))  # fmt: skip
    grey_model = _model_dir(tmp_path / "g")
    said = predict_files(grey_model, tmp_path / "rgb").notes
    assert [n for n in said if "in colour" in n] == [
        "WARNING: the model was trained on grey images, and 6 images here are in colour: "
        "each was made grey (the mean of its channels), which its training images never "
        "needed; its scores on them may not hold."
    ]
    assert not any("in colour" in n for n in predict_files(grey_model, tmp_path / "grey").notes)
    colour = _model_dir(tmp_path / "c", channels=3)
    cfg = json.loads((colour / "config.json").read_text())
    (colour / "config.json").write_text(json.dumps({**cfg, "input_modes": {"RGB": 40}}))
    said = predict_files(colour, tmp_path / "grey").notes
    assert [n for n in said if "are grey" in n] == [
        "WARNING: the model was trained on colour images alone (RGB), and 6 images here are "
        "grey: each was copied into three equal channels, a kind of image the model never "
        "saw; its scores on them may not hold."
    ]
    (colour / "config.json").write_text(json.dumps({**cfg, "input_modes": {"RGB": 40, "L": 2}}))
    assert not any("are grey" in n for n in predict_files(colour, tmp_path / "grey").notes)
    # a mode says how a file was stored: X-rays saved as RGB were grey as read
    seen = {**cfg, "input_modes": {"RGB": 40}, "input_grey_images": 30}
    (colour / "config.json").write_text(json.dumps(seen))
    assert not any("are grey" in n for n in predict_files(colour, tmp_path / "grey").notes)
    (colour / "config.json").write_text(json.dumps({**seen, "input_grey_images": 0}))
    assert any("are grey" in n for n in predict_files(colour, tmp_path / "grey").notes)


def test_images_scaled_otherwise_than_the_training_ones_are_warned_about(tmp_path: Path) -> None:
    """An audit: 16-bit copies of a model's own 8-bit test images were stretched image by
    image (intensity auto) and turned 5 malignant decisions of 6 into none, silently."""
    rng = np.random.default_rng(7)
    for label in BINARY:
        for i in range(3):
            px = rng.integers(10, 200, (SIZE, SIZE), dtype=np.uint8)
            _write(tmp_path / "8" / label / f"{i}.png", px)
            _write(tmp_path / "16" / label / f"{i}.png", px.astype(np.uint16) * 257)
    model = _model_dir(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**cfg, "input_modes": {"L": 40}}))
    said = [n for n in predict_files(model, tmp_path / "16").notes if "8-bit" in n]
    assert len(said) == 1 and said[0].startswith(
        "WARNING: the model was trained on 8-bit images (L), and 6 images here are 16-bit, "
        "float or DICOM greyscale (I;16): each was brought to 0-255 as intensity 'auto' says"
    )
    assert not any("8-bit" in n for n in predict_files(model, tmp_path / "8").notes)
    (model / "config.json").write_text(json.dumps({**cfg, "input_modes": {"I;16": 40}}))
    said = [n for n in predict_files(model, tmp_path / "8").notes if "8-bit" in n]
    assert len(said) == 1 and "and 6 images here are 8-bit, which pass unchanged" in said[0]
    assert not any("8-bit" in n for n in predict_files(model, tmp_path / "16").notes)
    (model / "config.json").write_text(json.dumps(cfg))  # saved before modes were recorded
    assert not any("8-bit" in n for n in predict_files(model, tmp_path / "16").notes)


def test_images_of_another_shape_than_the_training_ones_are_noted(tmp_path: Path) -> None:
    """Resizing to the model's square stretches an image by its own width/height: one
    stretched otherwise than the training images were is warned of; a square image of
    another size only noted."""
    rng = np.random.default_rng(8)
    for label in BINARY:
        for i in range(3):
            _write(tmp_path / "wide" / label / f"{i}.png",
                   rng.integers(0, 256, (SIZE, 3 * SIZE), dtype=np.uint8))  # fmt: skip
            _write(tmp_path / "big" / label / f"{i}.png",
                   rng.integers(0, 256, (2 * SIZE, 2 * SIZE), dtype=np.uint8))  # fmt: skip
            _write(tmp_path / "same" / label / f"{i}.png",
                   rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))  # fmt: skip
    model = _model_dir(tmp_path / "m")
    cfg = json.loads((model / "config.json").read_text())
    shapes = {"input_sizes": {f"{SIZE}x{SIZE}": 40}, "input_aspect": [1.0, 1.0]}
    (model / "config.json").write_text(json.dumps({**cfg, **shapes}))
    assert [n for n in predict_files(model, tmp_path / "wide").notes if "ratio" in n] == [
        f"WARNING: 6 images here have a width/height ratio outside the training images' (1): "
        f"{3 * SIZE}x{SIZE} (6); each was resized to {SIZE}x{SIZE} as they were, which "
        "stretches it otherwise; its scores on them may not hold (crop them to the training "
        "images' shape)."
    ]
    assert [n for n in predict_files(model, tmp_path / "big").notes if "resized" in n] == [
        f"images here are {2 * SIZE}x{2 * SIZE} (6), the training images {SIZE}x{SIZE}: all "
        f"resized to {SIZE}x{SIZE}"
    ]
    assert not any("resized" in n for n in predict_files(model, tmp_path / "same").notes)
    (model / "config.json").write_text(json.dumps(cfg))  # saved before shapes were recorded
    assert not any("resized" in n for n in predict_files(model, tmp_path / "wide").notes)


def test_a_saved_model_records_the_shapes_of_its_training_images() -> None:
    from raydx.data.table import ImageTable
    from raydx.final import input_shapes

    images = np.zeros((4, 28, 28, 1), np.uint8)
    table = ImageTable(
        images=images,
        labels=np.array([0, 1, 0, 1]),
        sample_ids=np.array(["a", "b", "c", "d"], dtype=object),
        class_names=("a", "b"),
        name="t",
    )
    assert input_shapes(table) == {"input_sizes": {"28x28": 4}, "input_aspect": [1.0, 1.0]}
    files = dataclasses.replace(table, info={"sizes": {"120x40": 3, "60x60": 1}})
    assert input_shapes(files) == {
        "input_sizes": {"120x40": 3, "60x60": 1},
        "input_aspect": [1.0, 3.0],
    }


def test_the_refit_check_decides_the_training_rows_alone(tmp_path: Path) -> None:
    """``final._refit_check``: the refit model's own CV training rows at the threshold
    (up to 2000 of them), never a test row."""
    from raydx.final import _refit_check

    model_dir = _model_dir(tmp_path)
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (30, 1, SIZE, SIZE)).astype(np.float32)
    cv_rows = np.arange(0, 30, 3)  # 10 CV rows among test rows
    oof = np.r_[np.zeros(5), np.ones(5)]
    check = _refit_check(model_dir, x, cv_rows, oof, 0.4, seed=0)
    p = load_model(model_dir).predict_proba_tensor(torch.from_numpy(x[cv_rows]))
    assert check["n"] == 10 and check["called_positive_oof"] == 0.5
    assert check["called_positive_training"] == pytest.approx(float(np.mean(p >= 0.4)))
    assert check["prob_range_training"] == pytest.approx([float(p.min()), float(p.max())])


def test_an_output_that_cannot_be_written_is_refused_before_any_image_is_read(
    tmp_path: Path,
) -> None:
    """A file where its folder should be, or a name too long for the temporary file
    beside it: one line before the images (a traceback after the last one, before)."""
    from raydx.predict import check_output

    (tmp_path / "afile").write_text("x")
    with pytest.raises(RaydxError, match=r"cannot be written \(not a directory, in '.*afile'\)"):
        check_output(tmp_path / "afile" / "p.csv")
    with pytest.raises(
        RaydxError, match=r"\(file name too long, in '.*'\); choose another --output"
    ):
        check_output(tmp_path / ("a" * 240 + ".csv"))
    assert check_output(tmp_path / "new" / "p.csv")[0].name == "p.csv"
    assert not (tmp_path / "new").exists()  # checked, not made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # no probe left
