"""JSON files that every parser reads (the contract's ``*.json``)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict_json(obj: Any) -> str:
    """An undefined score (nan, say a calibration slope under perfect separation) is
    ``null``, not Python's bare ``NaN``, which strict parsers (JavaScript, jq) reject."""
    return json.dumps(_finite(obj), indent=2, default=str, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
