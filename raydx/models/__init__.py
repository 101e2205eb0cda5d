"""Model families. Importing this package registers every model."""

from raydx.models import autoencoder as autoencoder
from raydx.models import cnn as cnn
from raydx.models import gan as gan
from raydx.models.registry import (
    create_model,
    list_families,
    list_models,
    model_family,
    model_params,
    register_model,
)

__all__ = [
    "create_model",
    "list_families",
    "list_models",
    "model_family",
    "model_params",
    "register_model",
]
