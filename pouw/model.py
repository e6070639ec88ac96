"""The integer MLP's configuration, its state (int32 master weights) and the protocol's initial draw.

Normative (docs/protocol.md Part III): a model is a bias-free MLP with layer widths ``dims``; layer ``i``
holds master weights ``W_i`` of shape ``(dims[i], dims[i+1])`` as int32 fixed point with
``MASTER_FRAC_BITS`` fractional bits, clamped to ``|W| <= MASTER_MAX``. The state's canonical bytes
are ``pack([step, [rows, cols, raw little-endian int32 bytes], ...])`` (one entry per layer), its
hash is ``tagged_hash("pouw/model", bytes)``. Initial weights are He-uniform integers drawn from
``Prng("pouw/init-weights", seed)``.

This module also holds the numeric constants of the training spec, so the engine and the
independent reference read them from one place.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chain.encoding import pack, unpack
from chain.errors import InvalidEncoding, Reason, ValidationError
from chain.hashing import tagged_hash
from pouw.prng import Prng

# --- constants of the training spec -------------------------------------------------------------
PAYLOAD_MAX = 63
"""Every matmul operand entry satisfies ``|v| <= PAYLOAD_MAX`` (headroom for the lottery's noise)."""
PAYLOAD_BITS = 6
"""``bit_length(PAYLOAD_MAX)``: a requantisation keeps this many significant bits."""
MASTER_FRAC_BITS = 24
"""Master weight ``W`` stands for the real number ``W * 2**-MASTER_FRAC_BITS``."""
MASTER_MAX = (1 << 30) - 1
"""Master weights are clamped to ``[-MASTER_MAX, MASTER_MAX]`` after every update."""
INPUT_EXP = -PAYLOAD_BITS
"""Input feature ``q`` in ``0..63`` stands for ``q * 2**INPUT_EXP``."""
DIM_QUANTUM = 64
MAX_DIM = 8192
MAX_LAYERS = 16
MAX_BATCH = 8192
MAX_LR_SHIFT = 48

Weights = npt.NDArray[np.int32]


def _is_int(value: Any) -> bool:
    return type(value) is int


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """What a job fixes about the model: widths (input and output included), batch, learning rate."""

    dims: tuple[int, ...]
    batch_size: int
    lr_shift: int

    def validate(self) -> None:
        """Raise ``ValidationError(BAD_JOB_SPEC)`` unless every bound of the spec holds."""

        def bad(detail: str) -> ValidationError:
            return ValidationError(Reason.BAD_JOB_SPEC, detail)

        if type(self.dims) is not tuple or not 2 <= len(self.dims) <= MAX_LAYERS + 1:
            raise bad(f"dims must be a tuple of 2..{MAX_LAYERS + 1} widths")
        for d in self.dims:
            if not _is_int(d) or not DIM_QUANTUM <= d <= MAX_DIM or d % DIM_QUANTUM:
                raise bad(f"width {d!r} is not a multiple of {DIM_QUANTUM} in [64, {MAX_DIM}]")
        b = self.batch_size
        if not _is_int(b) or not DIM_QUANTUM <= b <= MAX_BATCH or b % DIM_QUANTUM:
            raise bad(f"batch size {b!r} is not a multiple of {DIM_QUANTUM} in [64, {MAX_BATCH}]")
        if not _is_int(self.lr_shift) or not 0 <= self.lr_shift <= MAX_LR_SHIFT:
            raise bad(f"lr_shift {self.lr_shift!r} not in [0, {MAX_LR_SHIFT}]")

    @property
    def n_layers(self) -> int:
        return len(self.dims) - 1

    def layer_shapes(self) -> list[tuple[int, int]]:
        return [(self.dims[i], self.dims[i + 1]) for i in range(self.n_layers)]

    def param_count(self) -> int:
        return sum(r * c for r, c in self.layer_shapes())

    def macs_per_step(self) -> int:
        """Multiply-accumulates of one step: 3 per weight per batch row, less the skipped input grad."""
        return self.batch_size * (3 * self.param_count() - self.dims[0] * self.dims[1])


@dataclass(frozen=True, eq=False)
class ModelState:
    """Master weights after ``step`` training steps. Arrays are read-only; compare with ``==``."""

    step: int
    weights: tuple[Weights, ...]

    def encode(self) -> bytes:
        layers: list[Any] = []
        for w in self.weights:
            rows, cols = w.shape
            layers.append([rows, cols, w.astype("<i4", copy=False).tobytes()])
        return pack([self.step, *layers])

    @classmethod
    def decode(cls, data: bytes, config: ModelConfig) -> ModelState:
        """Inverse of :meth:`encode` for ``config``; any mismatch is :class:`InvalidEncoding`."""
        obj = unpack(data, max_size=64 + 16 * len(config.dims) + 4 * config.param_count())
        shapes = config.layer_shapes()
        if type(obj) is not list or len(obj) != 1 + len(shapes):
            raise InvalidEncoding(Reason.WRONG_FIELD_COUNT, f"model state has {1 + len(shapes)} fields")
        step = obj[0]
        if type(step) is not int or not 0 <= step < 1 << 64:
            raise InvalidEncoding(Reason.OUT_OF_RANGE, "step is not a uint64")
        weights = []
        for i, (entry, shape) in enumerate(zip(obj[1:], shapes, strict=True)):
            if type(entry) is not list or len(entry) != 3:
                raise InvalidEncoding(Reason.WRONG_FIELD_COUNT, f"layer {i} is [rows, cols, data]")
            rows, cols, raw = entry
            if type(rows) is not int or type(cols) is not int or (rows, cols) != shape:
                raise InvalidEncoding(Reason.OUT_OF_RANGE, f"layer {i} shape {rows}x{cols} != {shape}")
            if type(raw) is not bytes or len(raw) != 4 * rows * cols:
                raise InvalidEncoding(Reason.MALFORMED, f"layer {i} data is not {rows}x{cols} int32")
            weights.append(np.frombuffer(raw, dtype="<i4").reshape(shape))
        return make_state(step, weights)

    def hash(self) -> bytes:
        return tagged_hash("pouw/model", self.encode())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelState):
            return NotImplemented
        return (
            self.step == other.step
            and len(self.weights) == len(other.weights)
            and all(np.array_equal(a, b) for a, b in zip(self.weights, other.weights, strict=True))
        )

    __hash__ = None  # type: ignore[assignment]


def make_state(step: int, weights: Sequence[npt.NDArray[np.integer[Any]]]) -> ModelState:
    """A state holding read-only int32 copies of ``weights``; each must lie within ``±MASTER_MAX``."""
    frozen = []
    for i, w in enumerate(weights):
        if w.ndim != 2 or (w.size and int(np.abs(w.astype(np.int64)).max()) > MASTER_MAX):
            raise InvalidEncoding(Reason.OUT_OF_RANGE, f"layer {i} is not a matrix within ±{MASTER_MAX}")
        arr = w.astype(np.int32)
        arr.setflags(write=False)
        frozen.append(arr)
    return ModelState(step=step, weights=tuple(frozen))


def init_bound(fan_in: int) -> int:
    """He-uniform bound ``floor(sqrt(6 / fan_in) * 2**MASTER_FRAC_BITS)``, computed exactly."""
    return math.isqrt((6 << (2 * MASTER_FRAC_BITS)) // fan_in)


def init_state(config: ModelConfig, seed: bytes) -> ModelState:
    """Step-0 weights: layer by layer, row-major, ``randbelow(2b+1) - b`` with ``b = init_bound``."""
    config.validate()
    prng = Prng("pouw/init-weights", seed)
    weights = []
    for rows, cols in config.layer_shapes():
        bound = init_bound(rows)
        draws = prng.randbelow_array(2 * bound + 1, rows * cols) - bound
        weights.append(draws.reshape(rows, cols).astype(np.int32))
    return make_state(0, weights)
