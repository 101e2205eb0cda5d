"""Model families: how one fold of one configuration is trained and scored.

A family couples a fold trainer (the epoch loop of that kind of model) with the
family-level hyperparameters it understands (model hyperparameters belong to the
model registry instead) and the kind of registry model a configuration may name as
``model`` (``model_kind``; a model of another kind is an error, never quietly
swapped). Every trainer exposes the same surface, so cross-validation, checkpoints and
the final evaluation never look at the family:

- ``__init__(cfg, *, x_train, y_train, x_val, y_val, n_classes, positive, epochs, seed,
  fold, device)`` (see :class:`raydx.train.FoldTrainer`), ``x_*`` normalised float
  tensors (N, C, H, W) or ``raydx.data.rows.Rows`` of one (read through ``len``,
  ``shape``, ``[index]`` and ``to`` only), ``y_*`` class indices; ``x_val``/``y_val``
  may be None (refit).
- ``pretrain()``: work done before the first diagnosis epoch (autoencoder or GAN
  training); a no-op for the CNN. Its length is a family hyperparameter.
- ``run_epoch(epoch) -> EpochResult``: one diagnosis epoch and its validation scores;
  ``EpochResult.extra`` carries family metrics such as reconstruction error.
- ``model``: the diagnosis ``nn.Module``, images -> logits (B, 1) or (B, C), built by
  ``raydx.train.build_model(cfg, ...)`` so that ``raydx.load_model`` can rebuild it
  from the saved config alone. Its ``state_dict`` is the fold's artifact.
- ``state_dict()`` / ``load_state_dict(state)``: everything needed to resume training
  (models, optimisers, schedules, random generators, epoch counters).
- ``write_artifacts(directory)``: optional extra files for the run's output (e.g. a
  grid of generated samples).
Failures of the configuration itself (NaN loss, a collapsed GAN) raise
:class:`raydx.train.TrialFailure` with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raydx.lookup import lookup


@dataclass(frozen=True)
class Family:
    name: str
    trainer: type
    # The model of a configuration that names none (one of ``models()``).
    default_model: str
    params: Mapping[str, Any] = field(default_factory=dict)  # name -> default
    # The registry family (raydx.models.registry) of the models ``model`` may name.
    model_kind: str = "cnn"
    # A family param that names a second registry model (the GAN family's
    # ``gan_model``), and the family params passed to that model only where it
    # declares them (a searched one its model lacks would be dropped).
    sub_model: str | None = None
    sub_model_params: tuple[str, ...] = ()
    # Raises RaydxError on a bad value, given {param: value} (defaults fill the rest):
    # lets a space file be checked before a search, not inside a trial.
    check: Callable[[Mapping[str, Any]], Any] | None = None

    def models(self) -> list[str]:
        """The registry models a configuration of this family may name as ``model``."""
        from raydx.models.registry import list_models

        return list_models(self.model_kind)

    def sub_model_drops(self, key: str, values: Mapping[str, Any]) -> str | None:
        """The sub-model (``values[sub_model]``, else its default) if it does not declare
        family param ``key``, which is then left out of its build; else None."""
        from raydx.models.registry import model_params

        if self.sub_model is None or key not in self.sub_model_params:
            return None
        sub = str(values.get(self.sub_model) or self.params[self.sub_model])
        return None if key in model_params(sub) else sub


_FAMILIES: dict[str, Family] = {}


def register_family(
    name: str,
    trainer: type,
    params: Mapping[str, Any] | None = None,
    *,
    default_model: str,
    model_kind: str = "cnn",
    sub_model: str | None = None,
    sub_model_params: tuple[str, ...] = (),
    check: Callable[[Mapping[str, Any]], Any] | None = None,
) -> None:
    if name in _FAMILIES:
        raise RuntimeError(f"family {name!r} is registered twice")
    _FAMILIES[name] = Family(
        name,
        trainer,
        default_model,
        dict(params or {}),
        model_kind=model_kind,
        sub_model=sub_model,
        sub_model_params=tuple(sub_model_params),
        check=check,
    )


def check_family_param(name: str, value: Any) -> None:
    """Raise RaydxError if ``value`` is not a valid value of family parameter ``name``."""
    _load()
    for fam in _FAMILIES.values():
        if name in fam.params and fam.check is not None:
            fam.check({name: value})


def _load() -> None:
    import raydx.families.cnn

    try:  # families added by later work register themselves here
        import raydx.families.autoencoder
    except ModuleNotFoundError as e:
        if e.name != "raydx.families.autoencoder":
            raise
    try:
        import raydx.families.gan  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "raydx.families.gan":
            raise


def get_family(name: str) -> Family:
    _load()
    return _FAMILIES[lookup(name, _FAMILIES, "family")]


def list_families() -> list[Family]:
    """Every registered family, sorted by name."""
    _load()
    return [_FAMILIES[n] for n in sorted(_FAMILIES)]


def list_family_names() -> list[str]:
    _load()
    return sorted(_FAMILIES)


def all_family_params() -> set[str]:
    _load()
    return {p for f in _FAMILIES.values() for p in f.params}
