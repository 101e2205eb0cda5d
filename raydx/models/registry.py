"""timm-style model registry: ``@register_model``, ``create_model``, ``list_models``.

A model function takes ``in_channels``, ``num_outputs`` and ``image_size`` plus its
own keyword-only hyperparameters and returns an ``nn.Module``. Registering the
function (not a class) lets the search pass only the parameters a model declares.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from raydx.errors import RaydxError
from raydx.lookup import lookup

ModelFn = Callable[..., nn.Module]

_MODELS: dict[str, ModelFn] = {}
_FAMILY: dict[str, str] = {}
_COMMON = ("in_channels", "num_outputs", "image_size")


def register_model(family: str) -> Callable[[ModelFn], ModelFn]:
    """Register a model function under its ``__name__`` in ``family``."""

    def deco(fn: ModelFn) -> ModelFn:
        name = fn.__name__
        if name in _MODELS:
            raise RuntimeError(f"model {name!r} is registered twice")
        _MODELS[name] = fn
        _FAMILY[name] = family
        return fn

    return deco


def list_models(family: str | None = None) -> list[str]:
    """Registered model names, optionally of one family, sorted."""
    return sorted(n for n in _MODELS if family is None or _FAMILY[n] == family)


def list_families() -> list[str]:
    return sorted(set(_FAMILY.values()))


def model_family(name: str) -> str:
    return _FAMILY[lookup(name, _MODELS, "model")]


def model_fn(name: str) -> ModelFn:
    return _MODELS[lookup(name, _MODELS, "model")]


def model_params(name: str) -> dict[str, Any]:
    """The model's own hyperparameters and their defaults (common inputs excluded)."""
    fn = _MODELS[lookup(name, _MODELS, "model")]
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.name not in _COMMON and p.kind is not inspect.Parameter.VAR_KEYWORD
    }


def all_model_params() -> set[str]:
    """Every hyperparameter name that some registered model accepts."""
    return {p for name in _MODELS for p in model_params(name)}


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    num_outputs: int = 1,
    image_size: int = 28,
    **params: Any,
) -> nn.Module:
    """Build a registered model; unknown parameters are rejected, not ignored."""
    fn = _MODELS[lookup(name, _MODELS, "model")]
    known = model_params(name)
    for key in params:
        if key not in known:
            lookup(key, known, f"parameter of model {name!r}")
    try:
        return fn(in_channels=in_channels, num_outputs=num_outputs, image_size=image_size, **params)
    except RaydxError:
        raise
    except (ValueError, TypeError) as e:
        raise RaydxError(f"Cannot build model {name!r} with {params}: {e}") from e
