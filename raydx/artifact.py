"""The best model as a product: weights, config and preprocessing, loadable without Ray."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from raydx import __version__
from raydx.config import TrialConfig, hyperparameter_names, legacy_params
from raydx.data.pipeline import Preprocessing, normalise_batch
from raydx.errors import RaydxError, count
from raydx.files_out import atomic_write, write_json, write_parquet
from raydx.fold_calibration import Platt, ensemble, from_config
from raydx.operating_point import DEFAULT, OperatingPoint
from raydx.prior import anomaly_scores, shift, to_prevalence

FORMAT = "raydx-model/1"  # the folder's layout: config.json, members, OOF_FILE
# What the model's numbers mean, in config.json as "format_version" (with the
# "raydx_version" that saved it); a model keeps predicting as it did when saved.
# 1: the fold scalings clipped probabilities at raydx.metrics.PROB_EPS (absent: told by
# the out-of-fold scores, _unrecorded_format, since raydx kept float64's order a few
# days before it recorded the format).
# 2: at float64's limits (raydx.fold_calibration.KEEP_ORDER_SINCE).
FORMAT_VERSION = 2
# The winner's out-of-fold scores (class, positive-class probability; no image or patient
# ids, so the folder travels without them): a threshold can be re-chosen at predict time.
OOF_FILE = "oof_scores.parquet"
OOF_COLUMNS = ("fold", "label", "is_positive", "prob")


@dataclass
class DiagnosisModel:
    """An ensemble of fold models (or one refit model) with everything needed to predict."""

    members: list[nn.Module]
    config: dict[str, Any]
    oof: pd.DataFrame | None = None  # columns label, is_positive, prob (see OOF_FILE)
    preprocessing: Preprocessing = field(init=False)

    def __post_init__(self) -> None:
        self.preprocessing = Preprocessing(**self.config["preprocessing"])

    @property
    def class_names(self) -> list[str]:
        return list(self.config["class_names"])

    @property
    def positive_class(self) -> int:
        return int(self.config["positive_class"])

    @property
    def threshold(self) -> float:
        return float(self.config["threshold"])

    @property
    def threshold_rule(self) -> str:
        """How the threshold was chosen, as reports spell it ("Youden's J")."""
        return str(self.config.get("threshold_rule", DEFAULT.describe()))

    def at_operating_point(self, point: str | OperatingPoint) -> DiagnosisModel:
        """This model with its threshold re-chosen by ``point`` on the saved out-of-fold
        scores (never on the images it is about to predict).

        The weights are shared, not copied. The out-of-fold scores are those of the
        search's fold models, from which the saved threshold was chosen too.
        """
        op = point if isinstance(point, OperatingPoint) else OperatingPoint.parse(point)
        oof = self._saved_oof(f"operating_point={str(op)!r}", "--operating-point")
        y01 = oof["is_positive"].to_numpy(bool).astype(int)
        t = op.threshold(y01, oof["prob"].to_numpy(float))
        config = {**self.config, "threshold": t, "threshold_rule": op.describe()}
        return DiagnosisModel(members=self.members, config=config, oof=oof)

    @property
    def anomaly_scores(self) -> bool:
        """Whether the "probabilities" are anomaly scores (``raydx.prior.anomaly_scores``)."""
        return anomaly_scores(self.config.get("params") or {})

    @property
    def prevalence(self) -> float | None:
        """The positive class's share that a binary model's probabilities are for: the
        cross-validation pool's, unless ``at_prevalence`` moved them (None when unknown or
        meaningless: a multi-class model, anomaly scores, or a model saved without
        out-of-fold scores)."""
        if len(self.class_names) != 2 or self.anomaly_scores:
            return None
        if self.config.get("class_mix"):
            return float(self.config["class_mix"]["mapped_to"][1])
        return None if self.oof is None else float(self.oof["is_positive"].mean())

    def at_prevalence(self, share: float) -> DiagnosisModel:
        """This binary model with its probabilities for a site where a fraction ``share``
        of the images is positive (Bayes' rule, as ``raydx.prior``), and its threshold
        moved with them, so that every decision, and with it the sensitivity and the
        specificity, stays as it was; what changes is what a probability means there.

        The threshold, the out-of-fold rows and (at predict time) the probabilities go
        through one logit shift that keeps their order to float64's limits
        (``raydx.prior.to_prevalence``), after the class mix the model was saved with, if
        any, as saved. Moved again, the moves are made in turn (``class_mix["moves"]``)."""
        if len(self.class_names) != 2:
            raise RaydxError(
                f"prevalence applies to binary models; this one has {len(self.class_names)} "
                "classes and predicts its most probable one."
            )
        if self.anomaly_scores:
            raise RaydxError(
                "prevalence maps probabilities learnt under one class mix to another; this "
                "model's are anomaly scores (an anomaly-mode autoencoder's reconstruction "
                "error), which learnt none. Its threshold and sensitivity/specificity hold "
                "at any prevalence; choose another with --operating-point."
            )
        ok = isinstance(share, (int, float)) and 0.0 < float(share) < 1.0
        if not ok:
            msg = f"prevalence must be in (0, 1), but got prevalence={share!r}."
            if isinstance(share, (int, float)) and 1 < share < 100:
                msg += f" Did you mean {share / 100:g} (a share, not a percentage)?"
            raise RaydxError(msg)
        oof = self._saved_oof(f"prevalence={share!r}", "--prevalence")
        now = self.prevalence
        assert now is not None  # binary, with out-of-fold scores
        if not 0.0 < now < 1.0:
            raise RaydxError(
                f"this model's out-of-fold scores hold one class (a prevalence of {now:g}), "
                f"so there is no class mix to move from to prevalence={share!r}."
            )
        share = float(share)
        # One move, the same for the threshold, the out-of-fold rows and the predictions
        # (_with_class_mix): each goes through it from where it stands, so a probability
        # on the threshold stays on it, and its order is kept beyond the fit's 1e-7.
        saved, moves = _class_mix_parts(self.config.get("class_mix"))
        pool = moves[0][0] if moves else now  # where the first move started
        config = {
            **self.config,
            "class_mix": {
                "trained": saved["trained"] if saved else [1.0 - pool, pool],
                "mapped_to": [1.0 - share, share],
                "as_saved": saved,
                "moves": [*moves, [now, share]],
            },
            # above every probability (flags none) stays so
            "threshold": self.threshold
            if self.threshold > 1
            else float(to_prevalence(np.array([self.threshold]), now, share)[0]),
        }
        moved = oof.assign(prob=to_prevalence(oof["prob"].to_numpy(float), now, share))
        return DiagnosisModel(members=self.members, config=config, oof=moved)

    def _saved_oof(self, what: str, flag: str) -> pd.DataFrame:
        if self.oof is None:
            raise RaydxError(
                "this model folder holds no out-of-fold scores (it was saved before "
                f"raydx kept them in {OOF_FILE}), so {what} has nothing to be applied "
                "to; re-run its configuration with `raydx cv --config RUN/best.yaml` for a "
                f"model that takes {flag}."
            )
        return self.oof

    def to_uint8(self, images: np.ndarray) -> np.ndarray:
        """16-bit, integer or float grey images, (N, H, W) or (N, H, W, 1) -> uint8,
        scaled image by image by the model's ``preprocessing.intensity``, as its training
        images were (``raydx.data.intensity.scale_images``). uint8 passes; under ``auto``
        an integer image within 0-255 is cast only where the model was trained on 8-bit
        pixels, and stretched where its training images were scaled (16-bit, float or
        DICOM: config.json "input_modes", ``eight_bit_of``), so that an image gets the
        same bytes whatever images share the batch. A model saved before it recorded
        its modes keeps its rule: the batch as a whole decides.

        Arrays carry no DICOM window: a model trained on DICOM files with ``auto`` saw
        each file's window, which min-max on an array does not reproduce; for such
        images train with a fixed ``--intensity range:LOW:HIGH`` (or score the files
        with ``raydx predict``). Done on request only: a float image already in [0, 1]
        is not 8-bit pixels, and guessing would change what the model sees.
        """
        from raydx.data.intensity import Intensity, eight_bit_of, scale_images

        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.ndim != 4 or arr.shape[-1] != 1:
            raise RaydxError(
                f"to_uint8 takes grey images (N, H, W) or (N, H, W, 1), but got shape "
                f"{np.shape(images)}."
            )
        scaling = Intensity.parse(self.preprocessing.intensity)
        for warning in self._array_warnings(scaling):
            warnings.warn(warning, UserWarning, stacklevel=2)
        try:
            out, _ = scale_images(
                arr, scaling, eight_bit=eight_bit_of(self.config.get("input_modes"))
            )
        except ValueError as e:
            raise RaydxError(f"to_uint8: {e}.") from None
        return out[..., 0]

    def _array_warnings(self, scaling: Any) -> list[str]:
        """Where arrays cannot be scaled as the training files were: a DICOM file's
        window or VOI LUT (used by ``auto``; modes recorded before they were named may
        have had one), and MONOCHROME1's inversion."""
        from raydx.data.intensity import dicom_mapping

        modes = self.config.get("input_modes", {})
        out = []
        windowed = sum(
            n
            for m, n in modes.items()
            if dicom_mapping(m) in ("window", "VOI LUT", None) and m.startswith("DICOM MONOCHROME")
        )
        if scaling.kind == "auto" and windowed:
            out.append(
                f"this model was trained on {windowed} DICOM files with a window or VOI LUT "
                "(or not recorded) and intensity 'auto', which uses it; arrays carry none "
                "and are stretched min-max, so they may not look as the training images "
                "did. Score the files with raydx predict, or train with --intensity "
                "range:LOW:HIGH."
            )
        return out + self._inversion_warnings()

    def _inversion_warnings(self) -> list[str]:
        modes = self.config.get("input_modes", {})
        inverted = sum(n for m, n in modes.items() if m.startswith("DICOM MONOCHROME1"))
        if not inverted:
            return []
        return [
            f"this model was trained on {inverted} MONOCHROME1 DICOM files, which are "
            "inverted when read (white is dense); arrays are not: invert such arrays "
            "first (their maximum minus them), or score the files with raydx predict."
        ]

    def _colour_warnings(self) -> list[str]:
        """Where colour arrays cannot be taken as the training files were: an embedded
        ICC profile other than sRGB, which ingestion converts from (raydx.data.decode)."""
        from raydx.data.decode import converted_colour

        converted, profile = converted_colour(self.config.get("input_modes", {}))
        if not converted:
            return []
        return [
            f"this model was trained on {converted} colour files with an ICC profile other "
            f"than sRGB (such as {profile}), converted to sRGB when read; "
            "arrays are taken as sRGB: convert such images first (PIL.ImageCms."
            "profileToProfile), or score the files with raydx predict."
        ]

    def prepare(self, images: np.ndarray) -> torch.Tensor:
        """uint8 images, channels last: (N, H, W) grey or (N, H, W, C) with C 1, 3 or 4
        -> the network's normalised input (N, C, S, S).

        An alpha channel is dropped, as ingestion's Pillow ``convert("RGB")`` does, so a
        PNG read with numpy scores as it would through ``raydx predict``.
        """
        arr = np.asarray(images)
        one = "for one image pass image[None]"
        if arr.ndim not in (3, 4):
            raise RaydxError(
                f"images must be a batch, (N, H, W) or (N, H, W, C), but got shape "
                f"{arr.shape}; {one}."
            )
        if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and min(arr.shape[:2]) > 4:
            raise RaydxError(
                f"images of shape {arr.shape} look like one (H, W, C) image, not a batch "
                f"of {arr.shape[0]} greyscale images {arr.shape[1]}x{arr.shape[2]}; {one}."
            )
        if arr.ndim == 3:
            arr = arr[..., None]
        if arr.shape[-1] not in (1, 3, 4):
            hint = (
                "; this looks channels-first (N, C, H, W): pass images.transpose(0, 2, 3, 1)"
                if arr.shape[1] in (1, 3, 4)
                else ""
            )
            raise RaydxError(
                f"images must be channels last, (N, H, W, C) with C 1, 3 or 4, but got "
                f"shape {arr.shape}{hint}."
            )
        if arr.dtype != np.uint8:
            raise RaydxError(
                f"images must be uint8 (0-255, as read from image files), but got "
                f"dtype={arr.dtype}; scale 16-bit or float grey images as the model's "
                f"training files were (intensity {self.preprocessing.intensity!r}) with "
                "model.to_uint8(images)."
            )
        return torch.from_numpy(normalise_batch(arr[..., :3], self.preprocessing))

    def predict_proba_tensor(self, x: torch.Tensor) -> np.ndarray:
        from raydx.train import predict

        members = [predict(m, x) for m in self.members]
        scalings = from_config(self.config)  # each fold model on its own fold's scale
        p = np.mean(members, axis=0) if scalings is None else ensemble(members, scalings)
        return _with_class_mix(p, self.config.get("class_mix"))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Positive-class probability (binary) or class probabilities (N, C).

        Warns (once per calling line) where arrays may not be what the training files
        became when read: MONOCHROME1 DICOM inverted, colour converted from its ICC
        profile. ``raydx predict`` reads files as training did and does not warn.
        """
        x = self.prepare(images)
        colour = np.ndim(images) == 4 and np.shape(images)[-1] >= 3
        for warning in self._inversion_warnings() + (self._colour_warnings() if colour else []):
            warnings.warn(warning, UserWarning, stacklevel=2)
        return self.predict_proba_tensor(x)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class indices; binary sets use the threshold chosen on out-of-fold predictions."""
        p = self.predict_proba(images)
        if p.ndim == 1:
            neg = 1 - self.positive_class
            return np.where(p >= self.threshold, self.positive_class, neg)
        return p.argmax(1)


def _class_mix_parts(
    mix: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, list[list[float]]]:
    """A model's ``class_mix`` as the mix it was saved with (None: none) and the
    prevalence moves (``DiagnosisModel.at_prevalence``) made since, each [from, to]."""
    if mix and "moves" in mix:
        return mix["as_saved"], [list(m) for m in mix["moves"]]
    return mix or None, []


def _with_class_mix(p: np.ndarray, mix: dict[str, Any] | None) -> np.ndarray:
    """``p`` mapped by a model's ``class_mix``: the mix it was saved with as it was saved
    (``raydx.prior.shift``, whose clip at 1e-7 the fitted mix, the out-of-fold rows and
    the threshold chosen on them saw; a mix moved and saved by an older raydx is one
    such shift too), then each prevalence move made since, order kept
    (``raydx.prior.to_prevalence``), as the threshold and out-of-fold rows were moved."""
    saved, moves = _class_mix_parts(mix)
    if saved:
        p = shift(p, saved["trained"], saved["mapped_to"])
    for now, share in moves:
        p = to_prevalence(p, now, share)
    return p


def build_member(cfg: dict[str, Any]) -> nn.Module:
    from raydx.train import build_model

    params = dict(cfg.get("params") or {"model": cfg["model"], **cfg.get("model_params", {})})
    trial = TrialConfig.from_params(params)
    return build_model(
        trial,
        in_channels=int(cfg["preprocessing"]["channels"]),
        n_classes=len(cfg["class_names"]),
        image_size=int(cfg["preprocessing"]["image_size"]),
    )


def _check_params(path: Path, cfg: dict[str, Any]) -> None:
    """Refuse saved hyperparameters that this raydx does not know, all named at once.

    The weights were trained with them, so leaving them out could build another model,
    or the same one differently trained; older names that ``legacy_params`` maps stay
    readable."""
    params = cfg.get("params") or {"model": cfg.get("model"), **cfg.get("model_params", {})}
    with warnings.catch_warnings():  # build_member warns once more, for the user
        warnings.simplefilter("ignore")
        known = legacy_params(dict(params))
    from raydx.families import list_family_names
    from raydx.models.registry import list_models

    saved = cfg.get("raydx_version")
    by = f"raydx {saved}" if saved else "a raydx that did not record its version"
    if saved == "0.1.0":  # the number of every commit before 2026-12-07
        which = "a commit of raydx from before 2026-12-07 (version 0.1.0)"
    elif saved == __version__:  # another commit of this version
        which = f"the commit of raydx {saved} that saved it"
    else:
        which = f"raydx {saved}" if saved else "the raydx version that saved it"
    advice = f"load it with {which}, or train the model again with this one."
    register = (
        "if your own code registered it (@register_model, @register_family), import that "
        "module first; otherwise "
    )
    for kind, names_of in (("model", list_models), ("family", list_family_names)):
        name = known.get(kind)
        if isinstance(name, str) and name and name not in names_of():
            raise RaydxError(
                f"model folder '{path}' was saved by {by} with {kind} {name!r}, which this "
                f"raydx ({__version__}) does not have (its {kind}s: "
                f"{', '.join(names_of())}): {register}{advice}"
            )
    unknown = sorted(set(known) - hyperparameter_names())
    if not unknown:
        return
    names = ", ".join(repr(k) for k in unknown)
    raise RaydxError(
        f"model folder '{path}' was saved by {by} with "
        f"{'a hyperparameter' if len(unknown) == 1 else 'hyperparameters'} that this raydx "
        f"({__version__}) does not have: {names} (config.json 'params'). Its weights were "
        f"trained with them, so they are not dropped: {advice}"
    )


def save_model(
    path: Path,
    *,
    weight_files: list[Path],
    config: dict[str, Any],
    oof: pd.DataFrame | None = None,
) -> Path:
    """Copy the member weights and write ``config.json`` (and ``oof`` as OOF_FILE) next
    to them.

    Each file is written whole or not at all (a temporary file renamed over it), and
    ``config.json`` last: a folder with one (what ``load_model`` and ``raydx predict``
    look for) has every file it names, even after a crash mid-save.

    ``config.json`` records this raydx's version and ``FORMAT_VERSION``, unless
    ``config`` names a format_version (one loaded from a folder: its threshold was
    chosen as that format scores)."""
    path.mkdir(parents=True, exist_ok=True)
    names = []
    for i, src in enumerate(weight_files):
        name = f"member_{i}.safetensors"
        atomic_write(path / name, partial(shutil.copyfile, src))
        names.append(name)
    full = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **config,
        "raydx_version": __version__,
        "members": names,
    }
    if oof is not None:
        write_parquet(oof[list(OOF_COLUMNS)], path / OOF_FILE)
        full["oof_scores"] = OOF_FILE
    write_json(full, path / "config.json")
    return path


def save_state_dicts(
    path: Path,
    states: list[dict[str, torch.Tensor]],
    config: dict[str, Any],
    oof: pd.DataFrame | None = None,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    files = []
    for i, state in enumerate(states):
        f = path / f".tmp_member_{i}.safetensors"
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, f)
        files.append(f)
    try:
        return save_model(path, weight_files=files, config=config, oof=oof)
    finally:
        for f in files:
            f.unlink(missing_ok=True)


def resolve_model(path: str | Path) -> Path:
    """A model folder, or a run folder holding one (``RUN/model``)."""
    p = Path(path).expanduser()
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    if not p.exists():
        raise RaydxError(f"model '{path}' does not exist; pass a run folder or its 'model' folder.")
    raise RaydxError(
        f"model '{path}' is neither a run folder (with model/config.json) nor a model "
        f"folder (with config.json); a run that was interrupted before it ended has none."
    )


_COPY_AGAIN = "copy the whole model folder again from where it was saved."


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _check_layout(cfg_file: Path, cfg: dict[str, Any]) -> None:
    """The keys that loading reads, each of the kind raydx writes: a config.json edited
    or cut short says which, instead of a KeyError."""
    pre = cfg.get("preprocessing")
    wrong = None
    members = cfg.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        wrong = "'members' (a list of weight files)"
    elif not isinstance(cfg.get("class_names"), list) or len(cfg["class_names"]) < 2:
        wrong = "'class_names' (a list of at least 2)"
    elif not isinstance(pre, dict) or not all(
        isinstance(pre.get(k), int) and not isinstance(pre.get(k), bool) and pre[k] >= 1
        for k in ("image_size", "channels")
    ):
        wrong = "'preprocessing' with whole numbers 'image_size' and 'channels'"
    if wrong:
        raise RaydxError(f"'{cfg_file}' has no {wrong} as raydx writes it; {_COPY_AGAIN}")


def check_device(device: str) -> None:
    """cpu, cuda or cuda:N of a visible GPU: other devices torch knows (mps, xpu, meta)
    fail later with messages about the weights."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise RaydxError(f"device must be cpu, cuda or cuda:N, but got device={device!r}.")
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise RaydxError(f"device={device!r} needs a CUDA GPU, and none is visible here.")
        if dev.index is not None and dev.index >= n:
            raise RaydxError(
                f"device={device!r} names GPU {dev.index}, but {count(n, 'GPU is', 'GPUs are')} "
                f"visible here (cuda:0 to cuda:{n - 1})."
            )


def load_model(path: str | Path, *, device: str = "cpu") -> DiagnosisModel:
    """Load a saved raydx model for prediction, without Ray: a model folder
    (``OUT/model``) or the run folder that holds it, as ``raydx predict --model`` takes."""
    check_device(device)
    path = resolve_model(path)
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (ValueError, OSError) as e:
        raise RaydxError(f"'{cfg_file}' is not valid JSON ({e}); {_COPY_AGAIN}") from None
    if not isinstance(cfg, dict):
        raise RaydxError(f"'{cfg_file}' must hold a JSON object, but got {type(cfg).__name__}.")
    if cfg.get("format") != FORMAT:
        raise RaydxError(
            f"model format {cfg.get('format')!r} is not supported (expected {FORMAT!r})."
        )
    _check_layout(cfg_file, cfg)
    oof = None
    if cfg.get("oof_scores"):
        try:
            oof = pd.read_parquet(path / cfg["oof_scores"])
        except (OSError, ValueError) as e:  # missing, truncated, an LFS pointer
            raise RaydxError(
                f"'{path / cfg['oof_scores']}', which config.json names, cannot be read "
                f"({_first_line(e)}); {_COPY_AGAIN}"
            ) from None
    if "format_version" not in cfg:  # saved before it was recorded
        cfg["format_version"] = _unrecorded_format(cfg, oof)
    version = cfg["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RaydxError(
            f"format_version in '{cfg_file}' must be an integer >= 1, but got "
            f"format_version={version!r}."
        )
    if version > FORMAT_VERSION:
        saved = cfg.get("raydx_version")
        raise RaydxError(
            f"the model in '{path}' has format_version={version}"
            + (f" (saved by raydx {saved})" if saved else "")
            + f", and this raydx ({__version__}) reads up to format_version={FORMAT_VERSION}; "
            "load it with the raydx version that saved it, or a newer one."
        )
    _check_params(path, cfg)
    members = []
    for name in cfg["members"]:
        m = build_member(cfg)
        try:
            weights = load_file(path / name, device=device)
        except (OSError, SafetensorError) as e:  # missing, truncated, a Git LFS pointer
            raise RaydxError(
                f"'{path / name}' is not a readable safetensors file ({_first_line(e)}); "
                f"a Git LFS pointer or a partial copy? {_COPY_AGAIN.capitalize()}"
            ) from None
        try:
            m.load_state_dict(weights)
        except RuntimeError as e:  # another architecture than the one config.json builds
            first = str(e).strip().splitlines()[-1].strip()
            model = (cfg.get("params") or {}).get("model", cfg.get("model"))
            raise RaydxError(
                f"the weights in '{path / name}' do not fit the model that config.json "
                f"describes (model={model!r}): {first}. A model saved by another raydx "
                "version may not load: since December 2026, GANs of image sides that halve "
                "to an odd number > 7 (such as 100 or 150) are smaller."
            ) from e
        members.append(m.to(device).eval())
    return DiagnosisModel(members=members, config=cfg, oof=oof)


def _unrecorded_format(cfg: dict[str, Any], oof: pd.DataFrame | None) -> int:
    """The format of a model saved before config.json recorded one: 1 (its fold scalings
    clipped at 1e-7), unless its out-of-fold scores lie beyond what the clipped scalings
    can give, which only the raydx of the days before format 2 was recorded wrote (its
    scalings already kept float64's order): 2."""
    from raydx.metrics import PROB_EPS

    saved = (cfg.get("member_calibration") or {}).get("members")
    if not saved or oof is None or oof.empty:
        return 1
    # each fold's rows went through its own model's scaling (member k: fold k)
    ends = [
        Platt(float(m["slope"]), float(m["intercept"]), PROB_EPS)(np.array([0.0, 1.0]))
        for m in saved
    ]
    prob = oof["prob"].to_numpy(float)
    fold = oof["fold"].to_numpy() if "fold" in oof else np.full(len(prob), -1)
    for k in np.unique(fold):
        own = [ends[int(k)]] if 0 <= int(k) < len(ends) else ends  # else: any member's
        lo, hi = min(float(e.min()) for e in own), max(float(e.max()) for e in own)
        p = prob[(fold == k) & np.isfinite(prob)]
        if (p < lo * (1 - 1e-9)).any() or ((1 - p) < (1 - hi) * (1 - 1e-9)).any():
            return 2
    return 1
