"""Float features to the chain's ``0..63`` inputs, and the record that lets predictions repeat it.

A client's data is usually float. ``fit_scaling`` takes each feature's range on the *training*
rows; ``apply_scaling`` maps ``x`` to ``round((x - low) / (high - low) * 63)`` clipped to ``0..63``
(a feature with ``high == low`` maps to 0). The scaling is a plain JSON-able dict
``{"low": [...], "high": [...]}``; it travels with the dataset (the ``pouw/dataset/2`` record, see
:mod:`pouw.datasets`) and with a downloaded model, so ``predict`` applies the very same map to new
rows. Nothing here is a consensus rule: validators only see the integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from chain.errors import Reason, ValidationError
from pouw.model import PAYLOAD_MAX

Scaling = dict[str, list[float]]


def _bad(detail: str) -> ValidationError:
    return ValidationError(Reason.BAD_DATASET, detail)


def is_float_data(x: npt.NDArray[Any]) -> bool:
    """Whether ``x`` needs quantizing: float dtype, or integers outside ``0..63``."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        return True
    return bool(arr.size) and (int(arr.min()) < 0 or int(arr.max()) > PAYLOAD_MAX)


def fit_scaling(x_train: npt.NDArray[Any]) -> Scaling:
    """Per-feature ``low``/``high`` of the training rows (finite values required)."""
    arr = np.asarray(x_train, dtype=np.float64)
    if arr.ndim != 2 or not len(arr):
        raise _bad("features must be a non-empty 2-D array")
    if not np.all(np.isfinite(arr)):
        raise _bad("features must be finite numbers (no NaN or infinity)")
    return {"low": [float(v) for v in arr.min(axis=0)], "high": [float(v) for v in arr.max(axis=0)]}


def apply_scaling(x: npt.NDArray[Any], scaling: Scaling) -> npt.NDArray[np.int64]:
    """``x`` (rows of floats) as integers ``0..63`` under ``scaling``."""
    low = np.asarray(scaling["low"], dtype=np.float64)
    high = np.asarray(scaling["high"], dtype=np.float64)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(low) or len(high) != len(low):
        raise _bad(f"rows must have the {len(low)} features the scaling was fitted on, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise _bad("features must be finite numbers (no NaN or infinity)")
    span = np.where(high > low, high - low, 1.0)
    q = np.rint((arr - low) / span * PAYLOAD_MAX)
    q = np.where(high > low, q, 0.0)
    return np.clip(q, 0, PAYLOAD_MAX).astype(np.int64)


def check_scaling(value: Any, n_features: int) -> Scaling:
    """A scaling record read from untrusted bytes, checked: two lists of finite floats."""
    if not isinstance(value, dict) or set(value) != {"low", "high"}:
        raise _bad("feature scaling must be {low: [...], high: [...]}")
    out: Scaling = {}
    for key in ("low", "high"):
        items = value[key]
        if not isinstance(items, list) or len(items) > n_features or not all(
            isinstance(v, float) and np.isfinite(v) for v in items
        ):
            raise _bad(f"feature scaling {key} must be at most {n_features} finite floats")
        out[key] = list(items)
    if len(out["low"]) != len(out["high"]):
        raise _bad("feature scaling low and high differ in length")
    return out


def read_csv(path: str | Any) -> npt.NDArray[np.float64]:
    """A .csv of numbers (comma-separated; a first line that is not numeric is a header)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    if lines:
        try:
            [float(v) for v in lines[0].split(",")]
        except ValueError:
            lines = lines[1:]
    try:
        rows = [[float(v) for v in line.split(",")] for line in lines]
    except ValueError as exc:
        raise _bad(f"{path}: not a .csv of numbers: {exc}") from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise _bad(f"{path}: every line needs the same number of values")
    return np.asarray(rows, dtype=np.float64)
