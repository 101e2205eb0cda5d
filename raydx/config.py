"""Typed, frozen configuration. YAML and CLI flags are translated into these at the edge."""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from raydx.errors import RaydxError
from raydx.lookup import lookup

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("none", "cosine", "onecycle")
CLASS_BALANCE = ("none", "weighted", "sampler")
SCHEDULERS = ("none", "asha", "paired", "asha+paired")
SAMPLERS = ("tpe", "random")  # Optuna samplers over the same define-by-run space
FINAL_MODES = ("ensemble", "refit")
# Larger than whole-slide tiles or mammograms are fed to a CNN; a bigger --image-size is
# a typo (the driver holds every image at this size).
MAX_IMAGE_SIZE = 2048


@dataclass(frozen=True)
class AugmentConfig:
    """Training-batch augmentation; every field 0 or False means off."""

    hflip: float = 0.0  # probability
    vflip: float = 0.0  # probability
    rotate: float = 0.0  # max degrees, uniform in [-rotate, rotate]
    scale: float = 0.0  # random resized crop: area scale drawn from [1 - scale, 1]
    translate: float = 0.0  # max shift as a fraction of the side
    brightness: float = 0.0  # additive, uniform in [-b, b] (on the image in [-1, 1]); b <= 1
    contrast: float = 0.0  # multiplicative, uniform in [1 - c, 1 + c]; c < 1
    noise: float = 0.0  # std of Gaussian noise (on the normalised image)
    cutout: float = 0.0  # side of a square set to mid-grey, as a fraction of the image side

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise RaydxError(f"{name} must be a probability in [0, 1], but got {name}={v}.")
        if not 0.0 <= self.cutout <= 1.0:
            raise RaydxError(
                f"cutout must be a fraction of the side in [0, 1], but got cutout={self.cutout}."
            )
        if not 0.0 <= self.scale < 1.0:
            raise RaydxError(f"scale must be in [0, 1), but got scale={self.scale}.")
        # Images are normalised to [-1, 1]: a shift of 1 is half their range.
        if not 0.0 <= self.brightness <= 1.0:
            raise RaydxError(
                "brightness must be a shift in [0, 1] (images lie in [-1, 1]), but got "
                f"brightness={self.brightness}."
            )
        # The factor is drawn from [1 - contrast, 1 + contrast]: at 1 or more it may be
        # 0 (a flat image) or negative (an inverted one).
        if not 0.0 <= self.contrast < 1.0:
            raise RaydxError(
                "contrast must be in [0, 1) (the factor 1 - contrast must stay > 0), but got "
                f"contrast={self.contrast}."
            )
        for name in ("rotate", "translate", "noise"):
            v = getattr(self, name)
            if not v >= 0:
                raise RaydxError(f"{name} must be >= 0, but got {name}={v}.")

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))


AUGMENT_PARAMS = tuple(f.name for f in fields(AugmentConfig))


@dataclass(frozen=True)
class TrialConfig:
    """One point of the search space: everything a fold needs to train.

    ``model`` left empty is the family's default model (``Family.default_model``:
    ``conv_ae`` for the autoencoder family, ``cnn_seed`` for the others); a model of
    another kind than the family's is an error.
    """

    family: str = "cnn"
    model: str = ""
    model_params: dict[str, Any] = field(default_factory=dict)
    family_params: dict[str, Any] = field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "none"
    batch_size: int = 64
    class_balance: str = "none"
    label_smoothing: float = 0.0
    mixup: float = 0.0  # alpha of the Beta(alpha, alpha) mixing weight; 0: off
    sam: float = 0.0  # rho of sharpness-aware minimisation (radius of the ascent step); 0: off
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        from raydx.families import get_family

        family = get_family(self.family)
        if not self.model:
            object.__setattr__(self, "model", family.default_model)
        lookup(self.model, _model_names(), "model")
        wrong_kind = model_kind_error(self.model, family.name)
        if wrong_kind:
            raise RaydxError(wrong_kind)
        lookup(self.optimizer, OPTIMIZERS, "optimizer")
        lookup(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        lookup(self.class_balance, CLASS_BALANCE, "class_balance")
        if not self.lr > 0:
            raise RaydxError(f"lr must be > 0, but got lr={self.lr}.")
        if not 0.0 <= self.momentum < 1.0:  # SGD's; Nesterov momentum when > 0
            raise RaydxError(f"momentum must be in [0, 1), but got momentum={self.momentum}.")
        if not 0.0 <= self.weight_decay < math.inf:
            raise RaydxError(
                "weight_decay must be a finite number >= 0, but got "
                f"weight_decay={self.weight_decay}."
            )
        if self.batch_size < 1:  # training needs 2 (raydx.train.FoldTrainer); a saved
            # model of batch size 1 must still load
            raise RaydxError(f"batch_size must be >= 1, but got batch_size={self.batch_size}.")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise RaydxError(
                "label_smoothing must be in [0, 0.5), but got "
                f"label_smoothing={self.label_smoothing}."
            )
        if not self.mixup >= 0:
            raise RaydxError(f"mixup must be >= 0 (0: off), but got mixup={self.mixup}.")
        if not self.sam >= 0:
            raise RaydxError(f"sam must be >= 0 (0: off), but got sam={self.sam}.")

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> TrialConfig:
        """Build from a flat dict of searched values (as Optuna suggests them).

        Model hyperparameters are the keys the chosen model declares, family ones the
        keys its family takes. A key that neither takes (one of another model or family)
        is left out with a warning, so that a model saved from such a configuration
        still loads; a space file with one fails when it is read (raydx.space).
        """
        from raydx.families import get_family

        params = legacy_params(params)
        family = get_family(params.get("family", cls.family))
        model = lookup(params.get("model") or family.default_model, _model_names(), "model")
        wrong_kind = model_kind_error(model, family.name)
        if wrong_kind:
            raise RaydxError(wrong_kind)
        known = hyperparameter_names()
        top: dict[str, Any] = {}
        aug: dict[str, Any] = {}
        mp: dict[str, Any] = {}
        fp: dict[str, Any] = dict(family.params)
        for key, value in params.items():
            if key not in known:
                lookup(key, known, "hyperparameter")
            route = param_route(key, family.name, model)
            if route == "top":
                top[key] = value
            elif route == "augment":
                aug[key] = value
            elif route == "model":
                mp[key] = value
            elif route == "family":
                fp[key] = value
            else:
                warnings.warn(
                    f"{not_taken(key, family.name, model)} It is left out; remove it "
                    "(or name a model or family that takes it) to silence this warning.",
                    UserWarning,
                    stacklevel=2,
                )
        top["model"] = model
        top["family"] = family.name
        return cls(**top, model_params=mp, family_params=fp, augment=AugmentConfig(**aug))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_OWN_FIELDS = frozenset(
    f.name
    for f in fields(TrialConfig)
    if f.name not in ("model_params", "family_params", "augment")
)


def _model_names() -> list[str]:
    from raydx.models.registry import list_models

    return list_models()


def legacy_params(params: dict[str, Any]) -> dict[str, Any]:
    """What an older raydx trained for a configuration it accepted. Before December 2026
    an autoencoder configuration whose model was left at the CNN default (``cnn_seed``: a
    space with ``model`` searched for the CNN families but not conditioned on them)
    trained ``conv_ae`` with cnn_seed's own parameters only (dropout). Its saved models,
    runs and best.yaml still load and resume that way, with a warning; a new space file
    with the pairing is refused when it is read (raydx.space)."""
    if params.get("family") != "autoencoder" or params.get("model") != "cnn_seed":
        return params
    from raydx.models.registry import model_params

    warnings.warn(
        "family 'autoencoder' with model='cnn_seed', which an older raydx trained as "
        "'conv_ae' (with cnn_seed's parameters only): read as 'conv_ae'.",
        UserWarning,
        stacklevel=3,
    )
    own = set(model_params("cnn_seed"))
    kept = {
        k: v
        for k, v in params.items()
        if param_route(k, "autoencoder", "conv_ae") != "model" or k in own
    }
    return {**kept, "model": "conv_ae"}


ParamRoute = Literal["top", "augment", "model", "family"]


def param_route(key: str, family: str, model: str) -> ParamRoute | None:
    """Where ``TrialConfig.from_params`` puts hyperparameter ``key`` for a configuration
    of ``family`` and ``model``; None: neither the model nor the family takes it."""
    from raydx.families import get_family
    from raydx.models.registry import model_params

    if key in _OWN_FIELDS:
        return "top"
    if key in AUGMENT_PARAMS:
        return "augment"
    if key in model_params(model):
        return "model"
    if key in get_family(family).params:
        return "family"
    return None


def takers(key: str) -> tuple[list[str], list[str]]:
    """The models a configuration may name as ``model`` that take ``key``, and the
    families that take it (as a family parameter or through one of their models)."""
    from raydx.families import list_families
    from raydx.models.registry import model_params

    families = list_families()
    # A GAN is no configuration's `model` (the gan family names its GAN by `gan_model`).
    models = sorted({m for f in families for m in f.models() if key in model_params(m)})
    fams = [f.name for f in families if key in f.params or set(models) & set(f.models())]
    return models, fams


def not_taken(key: str, family: str, model: str) -> str:
    """One sentence: ``key`` goes to neither ``model`` nor ``family``, and who takes it."""
    models, fams = takers(key)
    if models:
        return (
            f"{key} is not a parameter of model {model!r} (family {family!r}); "
            f"models that take it: {', '.join(models)}."
        )
    return (
        f"{key} is not a parameter of family {family!r} (model {model!r}); "
        f"families that take it: {', '.join(fams) or 'none'}."
    )


def model_kind_error(model: str, family: str) -> str | None:
    """Why ``model`` cannot be the model of a ``family`` configuration; None if it can."""
    from raydx.families import get_family, list_families

    fam = get_family(family)
    if model in fam.models():
        return None
    others = [f.name for f in list_families() if model in f.models()]
    what = (
        f"a model of family {' or '.join(repr(f) for f in others)}"
        if others
        else "which no family takes as its model"
    )
    return (
        f"model must be a model of family {family!r} ({', '.join(fam.models())}; "
        f"{fam.default_model} when none is named), but got model={model!r}, {what}."
    )


def hyperparameter_names() -> set[str]:
    """Every name a search-space ``params`` entry may use."""
    from raydx.families import all_family_params
    from raydx.models.registry import all_model_params

    return set(_OWN_FIELDS) | set(AUGMENT_PARAMS) | all_model_params() | all_family_params()


@dataclass(frozen=True)
class RunOptions:
    """Options of one ``raydx tune`` run. Space files set defaults; CLI flags override."""

    data: str = "synthetic"
    space: Path | None = None
    output: Path | None = None
    family: str = "cnn"
    folds: int = 5
    trials: int = 8
    epochs: int = 20
    seed: int = 0
    fold_seed: int | None = None  # None: seed (the test split is always drawn from seed)
    scheduler: str = "asha"
    sampler: str = "tpe"
    grace_period: int = 5
    test_fraction: float = 0.2
    positive_class: str | None = None
    image_size: int | None = None
    # 16-bit, float and DICOM pixels -> 0-255: auto, percentile[:LOW:HIGH], range:LOW:HIGH
    # (raydx.data.intensity).
    intensity: str = "auto"
    limit: int | None = None
    cpus_per_worker: float | None = None
    gpus_per_worker: float = 0.0
    workers_per_trial: int | None = None  # None: search.plan_resources decides
    max_concurrent_trials: int | None = None
    time_budget_min: float | None = None  # None: run every trial (see raydx.budget)
    final: str = "ensemble"
    # How the binary threshold is chosen on out-of-fold predictions (raydx.operating_point).
    operating_point: str = "youden"
    score_test: bool = True  # False: the test split is not looked at (raydx cv --no-test)
    checkpoint_every: int = 5
    # Epochs that end sooner than this after a trial's last report wait and go with a
    # later one (raydx.cv.EARLIER_EPOCHS says why); 0 reports every epoch.
    report_interval_s: float = 0.5
    max_failures: int = 2
    ray_address: str | None = None
    verbose: bool = False
    # Image folders and manifests (see raydx.data.files)
    path_column: str = "path"
    label_column: str = "label"
    group_column: str | None = None  # None: "patient_id" if the manifest has it
    split_column: str | None = None  # None: "split" if the manifest has it
    skip_bad_images: bool = False
    # keep near copies in one fold, as patients (raydx.data.near_copies)
    join_near_copies: bool = False

    def __post_init__(self) -> None:
        from raydx.data.intensity import Intensity

        # one spelling in run.json; a non-string gets the forms, not just "a str"
        object.__setattr__(self, "intensity", str(Intensity.parse(self.intensity)))
        for name, allowed in _run_option_types().items():
            object.__setattr__(self, name, _typed(name, getattr(self, name), allowed))
        if self.folds < 2:
            raise RaydxError(f"folds must be >= 2, but got folds={self.folds}.")
        for name in ("seed", "fold_seed"):  # NumPy's and Optuna's samplers take these
            v = getattr(self, name)
            if v is not None and not 0 <= v < 2**32:
                raise RaydxError(f"{name} must be in [0, 2**32 - 1], but got {name}={v}.")
        if self.trials < 1:
            raise RaydxError(f"trials must be >= 1, but got trials={self.trials}.")
        if self.epochs < 1:
            raise RaydxError(f"epochs must be >= 1, but got epochs={self.epochs}.")
        if self.grace_period < 1:
            raise RaydxError(
                f"grace_period must be >= 1, but got grace_period={self.grace_period}."
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise RaydxError(
                f"test_fraction must be in (0, 1), but got test_fraction={self.test_fraction}."
            )
        lookup(self.scheduler, SCHEDULERS, "scheduler")
        lookup(self.sampler, SAMPLERS, "sampler")
        lookup(self.final, FINAL_MODES, "final")
        from raydx.operating_point import OperatingPoint

        op = str(OperatingPoint.parse(self.operating_point))
        object.__setattr__(self, "operating_point", op)  # one spelling in run.json
        if self.cpus_per_worker is not None and not self.cpus_per_worker > 0:
            raise RaydxError(
                f"cpus_per_worker must be > 0, but got cpus_per_worker={self.cpus_per_worker}."
            )
        if not self.gpus_per_worker >= 0:  # NaN too
            raise RaydxError(
                f"gpus_per_worker must be >= 0, but got gpus_per_worker={self.gpus_per_worker}."
            )
        if self.workers_per_trial is not None and not 1 <= self.workers_per_trial <= self.folds:
            raise RaydxError(
                f"workers_per_trial must be in [1, folds={self.folds}], but got "
                f"workers_per_trial={self.workers_per_trial}."
            )
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise RaydxError(
                "max_concurrent_trials must be >= 1, but got "
                f"max_concurrent_trials={self.max_concurrent_trials}."
            )
        if self.time_budget_min is not None and not self.time_budget_min > 0:
            raise RaydxError(
                f"time_budget_min must be > 0, but got time_budget_min={self.time_budget_min}."
            )
        if self.image_size is not None and not 8 <= self.image_size <= MAX_IMAGE_SIZE:
            raise RaydxError(
                f"image_size must be between 8 and {MAX_IMAGE_SIZE}, but got "
                f"image_size={self.image_size}."
            )
        if self.checkpoint_every < 1:
            raise RaydxError(
                f"checkpoint_every must be >= 1, but got checkpoint_every={self.checkpoint_every}."
            )
        if not self.report_interval_s >= 0:
            raise RaydxError(
                "report_interval_s must be >= 0, but got "
                f"report_interval_s={self.report_interval_s}."
            )
        if self.max_failures < 0:
            raise RaydxError(
                f"max_failures must be >= 0, but got max_failures={self.max_failures}."
            )
        if self.limit is not None and self.limit < 4:
            raise RaydxError(f"limit must be >= 4, but got limit={self.limit}.")

    def replace(self, **changes: Any) -> RunOptions:
        return dataclasses.replace(self, **changes)


_PY_TYPE_WORDS = {type(None): "None", bool: "True or False", int: "an int", float: "a number"}


@functools.cache
def _run_option_types() -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(RunOptions)
    return {f.name: typing.get_args(hints[f.name]) or (hints[f.name],) for f in fields(RunOptions)}


def _typed(name: str, v: Any, allowed: tuple[type, ...]) -> Any:
    """``v`` as the field's own type, or an error that names it (a "3" from a script, a
    2.5 for folds, a numpy int from a loop is fine and becomes an int for run.json)."""
    if v is None and type(None) in allowed:
        return None
    if isinstance(v, bool):
        if bool in allowed:
            return v
    elif isinstance(v, numbers.Integral) and (int in allowed or float in allowed):
        return int(v) if int in allowed else float(v)
    elif isinstance(v, numbers.Real) and float in allowed:
        return float(v)
    elif isinstance(v, (str, os.PathLike)) and Path in allowed:
        return Path(v)
    elif isinstance(v, (str, os.PathLike)) and str in allowed:
        return os.fspath(v)
    words = " or ".join(
        _PY_TYPE_WORDS.get(t, "a path" if t is Path else f"a {t.__name__}") for t in allowed
    )
    raise RaydxError(f"{name} must be {words}, but got {name}={v!r}.")


# Run options a space file's ``run:`` section may set (the rest are per-invocation).
SPACE_RUN_KEYS = (
    "family",
    "folds",
    "trials",
    "epochs",
    "seed",
    "fold_seed",
    "scheduler",
    "sampler",
    "grace_period",
    "test_fraction",
    "image_size",
    "intensity",
    "max_concurrent_trials",
    "time_budget_min",
    "final",
    "operating_point",
)
