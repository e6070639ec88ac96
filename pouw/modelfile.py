"""A trained job's model as a file people can use: save/load (safetensors), predict, export.

The file is safetensors: one int32 tensor ``w{i}`` per layer (the chain's master weights, fixed point
with ``master_frac_bits`` fractional bits) and string metadata that makes it self-describing:

=====================  ===========================================================================
``format``             ``pouw/model/1``
``dims``               layer widths, input first, e.g. ``64,64,64``
``n_classes``          the dataset's classes: outputs ``n_classes..`` are padding, never predicted
``master_frac_bits``   master weight ``W`` stands for ``W * 2**-master_frac_bits``
``input_exp``          input feature ``q`` (``0..payload_max``) stands for ``q * 2**input_exp``
``payload_max``        int8 payload bound of every matmul operand
``payload``            how the forward pass quantizes (see :func:`forward_rows`)
``job_id`` ...         ``dataset_id``, ``step``, ``chain`` (chain id), ``preset``, ``batch_size``,
                       ``lr_shift``: where the model comes from
``feature_scaling``    optional JSON ``{"low": [...], "high": [...]}``: how float features map to
                       ``0..63`` (see :mod:`pouw.quantize`); :func:`ModelFile.predict` applies it
=====================  ===========================================================================

Prediction is the chain's evaluation forward pass (:func:`pouw.engine.forward`) done **row by
row**: the engine requantizes a hidden layer with one shift for the whole batch, so one row's
prediction depended on the rows batched with it. Here each row gets the shift its own peak
needs — exactly what the engine computes for that row alone (zero padding rows never move a
peak) — so results do not depend on batch size or composition. The node's held-out evaluation
(:mod:`pouw.evaluate`) uses the same function, so ``predict`` on the test split reproduces it.
The arithmetic is integer-exact: products run as float64 GEMMs, exact because every partial sum is
below ``63 * 63 * 8192 < 2**53``. Nothing here is a consensus rule; the training step is unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from chain.errors import PouwError
from pouw.model import INPUT_EXP, MASTER_FRAC_BITS, PAYLOAD_BITS, PAYLOAD_MAX, ModelConfig, ModelState, make_state

if TYPE_CHECKING:
    import torch

FORMAT = "pouw/model/1"
SHIFT_CAP = 62
PAYLOAD_TEXT = (
    "int8 block floating point: weights W_q = clamp(round_half_up(W >> s), +-63) with s the least "
    "shift keeping the layer's peak below 2**6, standing for W_q * 2**(s - master_frac_bits); "
    "hidden activations relu then per-row round_half_up to 6 bits (0..63); logits int64"
)

IntArray = npt.NDArray[np.int64]


class BadModelFile(PouwError):
    """A file that is not a readable pouw model, or input that does not fit it."""


def _bit_length(x: IntArray) -> IntArray:
    """``int.bit_length`` of each non-negative entry (values below 2**62)."""
    out = np.zeros(x.shape, dtype=np.int64)
    rest = x.copy()
    for bit in (32, 16, 8, 4, 2, 1):
        big = rest >= (1 << bit)
        out += np.where(big, bit, 0)
        rest = np.where(big, rest >> bit, rest)
    return out + (rest > 0)


def _round_half_up_rows(x: IntArray, shifts: IntArray) -> IntArray:
    """``floor(x / 2**s + 1/2)`` with one shift ``s >= 0`` per row (broadcast over columns)."""
    s = np.minimum(shifts, SHIFT_CAP)[:, None]
    half = np.where(s > 0, np.left_shift(1, np.maximum(s - 1, 0)), 0)
    return (x + half) >> s


def quantized_weights(state: ModelState) -> list[tuple[IntArray, int]]:
    """Each layer's int8 payload and exponent, as :func:`pouw.engine.quantize_weights` makes them."""
    out = []
    for w in state.weights:
        w64 = w.astype(np.int64)
        peak = int(np.abs(w64).max()) if w64.size else 0
        s = max(0, peak.bit_length() - PAYLOAD_BITS)
        q = w64 if s == 0 else (w64 + (1 << (s - 1))) >> s
        out.append((np.clip(q, -PAYLOAD_MAX, PAYLOAD_MAX), s - MASTER_FRAC_BITS))
    return out


def _exact_product(a: IntArray, w: IntArray) -> IntArray:
    """``a @ w`` for int8-range operands, through an exact float64 GEMM."""
    return np.rint(a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)


def forward_rows(weights_q: Sequence[tuple[IntArray, int]], x: npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
    """Logit mantissas ``(rows, outputs)`` and one exponent per row, each row on its own.

    Row ``r`` gets exactly what :func:`pouw.engine.forward` gives a batch holding only that row
    (plus zero rows): ``a_0 = x``; ``z_i = a_i @ Wq_i``; hidden ``a_{i+1} = min(round_half_up(relu
    z_i, s_r), 63)`` with ``s_r = max(0, bit_length(max_j relu z_i[r, j]) - 6)``.
    """
    a = np.asarray(x, dtype=np.int64)
    if a.ndim != 2 or a.shape[1] != weights_q[0][0].shape[0]:
        raise BadModelFile(f"input must be (rows, {weights_q[0][0].shape[0]}), got {a.shape}")
    exps = np.full(len(a), INPUT_EXP, dtype=np.int64)
    for i, (wq, w_exp) in enumerate(weights_q):
        z = _exact_product(a, wq)
        exps = exps + w_exp
        if i == len(weights_q) - 1:
            return z, exps
        h = np.maximum(z, 0)
        peak = h.max(axis=1) if h.shape[1] else np.zeros(len(h), dtype=np.int64)
        s = np.maximum(0, _bit_length(peak) - PAYLOAD_BITS)
        a = np.minimum(_round_half_up_rows(h, s), PAYLOAD_MAX)
        exps = exps + s
    raise BadModelFile("a model has at least one layer")


def predict_classes(weights_q: Sequence[tuple[IntArray, int]], x: npt.NDArray[Any], n_classes: int) -> IntArray:
    """First argmax of each row's logits over the real classes ``0..n_classes-1``."""
    logits, _ = forward_rows(weights_q, x)
    return np.asarray(logits[:, :n_classes].argmax(axis=1), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ModelFile:
    """A job's model with what it takes to use it."""

    config: ModelConfig
    state: ModelState
    n_classes: int
    job_id: str = ""
    dataset_id: str = ""
    chain_id: int = 0
    preset: str = ""
    feature_scaling: dict[str, list[float]] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def n_features(self) -> int:
        return self.config.dims[0]

    def metadata(self) -> dict[str, str]:
        meta = {
            "format": FORMAT, "dims": ",".join(map(str, self.config.dims)), "n_classes": str(self.n_classes),
            "master_frac_bits": str(MASTER_FRAC_BITS), "input_exp": str(INPUT_EXP),
            "payload_max": str(PAYLOAD_MAX), "payload": PAYLOAD_TEXT, "job_id": self.job_id,
            "dataset_id": self.dataset_id, "step": str(self.step), "chain": str(self.chain_id),
            "preset": self.preset, "batch_size": str(self.config.batch_size), "lr_shift": str(self.config.lr_shift),
            **self.extra,
        }
        if self.feature_scaling is not None:
            meta["feature_scaling"] = json.dumps(self.feature_scaling)
        return meta

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        tensors = {f"w{i}": np.ascontiguousarray(w, dtype=np.int32) for i, w in enumerate(self.state.weights)}
        save_file(tensors, str(path), metadata=self.metadata())

    def to_bytes(self) -> bytes:
        from safetensors.numpy import save

        tensors = {f"w{i}": np.ascontiguousarray(w, dtype=np.int32) for i, w in enumerate(self.state.weights)}
        return bytes(save(tensors, metadata=self.metadata()))

    # -- using it ---------------------------------------------------------------------------------

    def quantize_input(self, x: npt.NDArray[Any]) -> IntArray:
        """Rows of features as the model reads them: floats through the recorded scaling (or
        integers ``0..63`` as they are), zero-padded to the input width."""
        from pouw.quantize import apply_scaling

        arr = np.asarray(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise BadModelFile(f"input must be a 2-D array of rows, got {arr.ndim} dims")
        if self.feature_scaling is not None:
            q = apply_scaling(arr, self.feature_scaling)
        else:
            if arr.dtype.kind == "f":
                if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
                    raise BadModelFile("this model reads integer features 0..63 (its dataset recorded no scaling)")
            q = arr.astype(np.int64)
            if q.size and (int(q.min()) < 0 or int(q.max()) > PAYLOAD_MAX):
                raise BadModelFile(f"features must lie in 0..{PAYLOAD_MAX} for this model")
        if q.shape[1] > self.n_features:
            raise BadModelFile(f"rows have {q.shape[1]} features; the model reads {self.n_features}")
        return np.pad(q, ((0, 0), (0, self.n_features - q.shape[1]))).astype(np.int64)

    def logits(self, x: npt.NDArray[Any]) -> tuple[IntArray, IntArray]:
        """Integer logits (real classes only) and each row's exponent: logit = mant * 2**exp."""
        mant, exps = forward_rows(quantized_weights(self.state), self.quantize_input(x))
        return mant[:, : self.n_classes], exps

    def predict(self, x: npt.NDArray[Any]) -> IntArray:
        """The class of each row: first argmax over the dataset's classes. Batch-independent."""
        return predict_classes(quantized_weights(self.state), self.quantize_input(x), self.n_classes)

    def to_torch(self) -> torch.nn.Module:
        """A float PyTorch MLP (bias-free ``Linear`` + ``ReLU``) with the chain's quantized weights.

        It reads :meth:`torch_input` (features scaled to ``q * 2**input_exp``) and returns float
        logits over the real classes only (the padding outputs are cut from the last layer). It
        skips the integer requantization of hidden activations, so a near-tied row may differ from
        :meth:`predict`; ``pouw-bench useful`` and the tests measure the agreement.
        """
        import torch

        layers: list[torch.nn.Module] = []
        weights = quantized_weights(self.state)
        for i, (wq, exp) in enumerate(weights):
            last = i == len(weights) - 1
            w = wq[:, : self.n_classes] if last else wq
            linear = torch.nn.Linear(w.shape[0], w.shape[1], bias=False)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy((w.astype(np.float64) * 2.0**exp).T.astype(np.float32)))
            layers.append(linear)
            if not last:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    def torch_input(self, x: npt.NDArray[Any]) -> torch.Tensor:
        """``x`` as the exported module reads it: scaled to 0..63, padded, times ``2**input_exp``."""
        import torch

        return torch.from_numpy(self.quantize_input(x).astype(np.float32) * np.float32(2.0**INPUT_EXP))


def load(path: str | Path) -> ModelFile:
    """Read a model written by :meth:`ModelFile.save` (or ``pouw-wallet job download``)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            meta = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BadModelFile(f"{path}: not a safetensors model file: {exc}") from None
    return from_parts(meta, tensors, str(path))


def loads(data: bytes) -> ModelFile:
    from safetensors import SafetensorError
    from safetensors.numpy import load as load_bytes

    try:
        tensors = load_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__", {})
    except (SafetensorError, ValueError) as exc:
        raise BadModelFile(f"not a safetensors model: {exc}") from None
    return from_parts(meta, tensors, "model")


def from_parts(meta: dict[str, str], tensors: dict[str, Any], where: str) -> ModelFile:
    if meta.get("format") != FORMAT:
        raise BadModelFile(f"{where}: format {meta.get('format')!r} is not {FORMAT}")
    try:
        dims = tuple(int(d) for d in meta["dims"].split(","))
        config = ModelConfig(dims, int(meta["batch_size"]), int(meta["lr_shift"]))
        weights = [np.asarray(tensors[f"w{i}"]) for i in range(len(dims) - 1)]
        if [w.shape for w in weights] != config.layer_shapes() or any(w.dtype != np.int32 for w in weights):
            raise BadModelFile(f"{where}: weights do not match dims {dims}")
        if int(meta["master_frac_bits"]) != MASTER_FRAC_BITS or int(meta["input_exp"]) != INPUT_EXP:
            raise BadModelFile(f"{where}: unsupported number format")
        scaling = json.loads(meta["feature_scaling"]) if meta.get("feature_scaling") else None
        known = {"format", "dims", "n_classes", "master_frac_bits", "input_exp", "payload_max", "payload", "job_id",
                 "dataset_id", "step", "chain", "preset", "batch_size", "lr_shift", "feature_scaling"}
        return ModelFile(
            config=config, state=make_state(int(meta["step"]), weights), n_classes=int(meta["n_classes"]),
            job_id=meta.get("job_id", ""), dataset_id=meta.get("dataset_id", ""), chain_id=int(meta.get("chain", 0)),
            preset=meta.get("preset", ""), feature_scaling=scaling,
            extra={k: v for k, v in meta.items() if k not in known},
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise BadModelFile(f"{where}: bad model metadata: {exc}") from None
