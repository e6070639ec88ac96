"""Float features to the chain's ``0..63`` inputs, and the record that lets predictions repeat it.

A client's data is usually float. ``fit_scaling`` takes each feature's range on the *training*
rows; ``apply_scaling`` maps ``x`` to ``round((x - low) / (high - low) * 63)`` clipped to ``0..63``
(a feature with ``high == low`` maps to 0) and, when the scaling says ``"bias": true`` (what
``fit_scaling`` gives), appends one constant feature 63: the protocol's MLP has no bias terms, and
without a constant input its first layer can only draw boundaries through the origin (iris trained
through the chain reached 86.7 % without it, 96.7 % with it — scikit-learn's MLP: 96.7 %). The
column is free where the width is padded to 64 anyway. The scaling is a plain JSON-able dict
``{"bias": true, "low": [...], "high": [...]}``; it travels with the dataset (the ``pouw/dataset/2``
record, see :mod:`pouw.datasets`) and with a downloaded model, so ``predict`` applies the very same
map to new rows. Nothing here is a consensus rule: validators only see the integers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from chain.errors import Reason, ValidationError
from pouw.model import PAYLOAD_MAX

Scaling = dict[str, Any]
"""``{"low": [float, ...], "high": [float, ...]}``, plus ``"bias": True`` when a constant feature
63 follows the scaled ones (absent means no such column; ``"bias": false`` is not canonical)."""


def _bad(detail: str) -> ValidationError:
    return ValidationError(Reason.BAD_DATASET, detail)


def is_float_data(x: npt.NDArray[Any]) -> bool:
    """Whether ``x`` needs quantizing: float dtype, or integers outside ``0..63``."""
    arr = np.asarray(x)
    if arr.dtype.kind == "f":
        return True
    return bool(arr.size) and (int(arr.min()) < 0 or int(arr.max()) > PAYLOAD_MAX)


def fit_scaling(x_train: npt.NDArray[Any], bias: bool = True) -> Scaling:
    """Per-feature ``low``/``high`` of the training rows (finite values required), with a constant
    bias feature unless ``bias`` is False."""
    arr = np.asarray(x_train, dtype=np.float64)
    if arr.ndim != 2 or not len(arr):
        raise _bad("features must be a non-empty 2-D array")
    if not np.all(np.isfinite(arr)):
        raise _bad("features must be finite numbers (no NaN or infinity)")
    scaling: Scaling = {"low": [float(v) for v in arr.min(axis=0)], "high": [float(v) for v in arr.max(axis=0)]}
    if bias:
        scaling["bias"] = True
    return scaling


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
    out = np.clip(q, 0, PAYLOAD_MAX).astype(np.int64)
    if scaling.get("bias"):
        out = np.hstack([out, np.full((len(out), 1), PAYLOAD_MAX, dtype=np.int64)])
    return out


def check_scaling(value: Any, n_features: int) -> Scaling:
    """A scaling record read from untrusted bytes, checked: two lists of finite floats."""
    if not isinstance(value, dict) or set(value) - {"bias"} != {"low", "high"}:
        raise _bad("feature scaling must be {low: [...], high: [...]} with an optional bias: true")
    if "bias" in value and value["bias"] is not True:
        raise _bad("feature scaling bias must be true when present")
    out: Scaling = {"bias": True} if "bias" in value else {}
    for key in ("low", "high"):
        items = value[key]
        if not isinstance(items, list) or len(items) > n_features or not all(
            isinstance(v, float) and np.isfinite(v) for v in items
        ):
            raise _bad(f"feature scaling {key} must be at most {n_features} finite floats")
        out[key] = list(items)
    if len(out["low"]) != len(out["high"]):
        raise _bad("feature scaling low and high differ in length")
    if out.get("bias") and len(out["low"]) >= n_features:
        raise _bad(f"feature scaling with a bias column needs fewer than {n_features} scaled features")
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
