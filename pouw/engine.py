"""The exact integer training step: the consensus-relevant arithmetic of useful work.

Every tensor is block floating point: an integer mantissa tensor and one integer exponent, standing
for ``mantissa * 2**exp``. Products are int8 x int8 -> int32 through a :class:`MatmulHook` (the
lottery wraps it); everything else is torch int64 elementwise code that runs unchanged on CPU and
CUDA: arithmetic shifts with round-half-up (deterministic) or stochastic rounding (dithered by an
integer hash of a per-step key and the element index), clamps to ``|v| <= 63``, ReLU, a squared-error
loss gradient and a power-of-two learning rate on int32 master weights. No floats, no torch RNG.
docs/protocol.md Part III is the normative text; pouw/reference.py re-implements it independently.

Matmul order within a step (``index`` passed to the hook), for ``L`` layers:
forward ``i = 0..L-1``: ``a_i @ Wq_i``; then backward for ``i = L-1 .. 0``: ``a_i^T @ d_i``
(weight gradient) followed, if ``i > 0``, by ``d_i @ Wq_i^T`` (error of the layer below).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import numpy as np
import numpy.typing as npt
import torch

from chain.errors import Reason, ValidationError
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.model import (
    INPUT_EXP,
    MASTER_FRAC_BITS,
    MASTER_MAX,
    PAYLOAD_BITS,
    PAYLOAD_MAX,
    ModelConfig,
    ModelState,
    make_state,
)
from pouw.prng import Prng

SHIFT_CAP = 62
"""Right shifts are by ``min(s, SHIFT_CAP)``; every shifted value has ``|x| < 2**61``."""
LOSS_MIN_EXP = -32
"""The output residual is formed at exponent ``max(e_out, LOSS_MIN_EXP)``."""
UPDATE_LIMIT = 1 << 31
"""A single weight update is clamped to ``[-UPDATE_LIMIT, UPDATE_LIMIT]`` before it applies."""
MASK32 = 0xFFFFFFFF
MIX_MUL = (0x7FEB352D, 0x045D9F3B)
"""Multipliers of the dither hash; each is below 2**31, so ``x * c`` of a 32-bit ``x`` fits int64."""


class MatmulHook(Protocol):
    """Returns the exact int32 product of int8 operands (|v| <= 63, dims multiples of 64)."""

    def __call__(self, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor: ...


class Scaled(NamedTuple):
    """``mant * 2**exp`` with one exponent for the whole tensor."""

    mant: torch.Tensor
    exp: int


# --- per-step randomness (drawn on the CPU, a few bytes per step) ------------------------------


def batch_indices(trajectory_seed: bytes, step: int, n_train: int, batch_size: int) -> np.ndarray:
    """Rows of step ``step``: ``batch_size`` draws of ``randbelow(n_train)``, with replacement."""
    return Prng("pouw/batch", trajectory_seed, step).randbelow_array(n_train, batch_size)


def rounding_keys(trajectory_seed: bytes, step: int, n_layers: int) -> list[int]:
    """64-bit dither keys: ``keys[i]`` rounds the error of layer ``i``, ``keys[L+i]`` its update."""
    words = Prng("pouw/sround", trajectory_seed, step).u64s(2 * n_layers)
    return [int(w) for w in words]


# --- integer primitives ---------------------------------------------------------------------------


def shift_for(x: torch.Tensor) -> int:
    """The least ``s >= 0`` with ``max|x| < 2**(s+6)``: keeps 6 significant bits of the peak."""
    peak = int(x.abs().max()) if x.numel() else 0
    return max(0, peak.bit_length() - PAYLOAD_BITS)


def round_half_up(x: torch.Tensor, s: int) -> torch.Tensor:
    """``floor(x / 2**s + 1/2)`` for int64 ``x``."""
    s = min(s, SHIFT_CAP)
    return x if s <= 0 else (x + (1 << (s - 1))) >> s


def _mix32(h: torch.Tensor, mul: int) -> None:
    """In place: ``h ^= h >> 16; h = h * mul mod 2**32; h ^= h >> 15`` (``h`` holds 32-bit values)."""
    h ^= h >> 16
    h *= mul
    h &= MASK32
    h ^= h >> 15


def dither(index: torch.Tensor, key: int, s: int) -> torch.Tensor:
    """``floor(h * 2**(s-32))`` for the 32-bit hash ``h`` of (key, element index): uniform on [0, 2**s)."""
    h = index ^ (key & MASK32)
    _mix32(h, MIX_MUL[0])
    h ^= key >> 32
    _mix32(h, MIX_MUL[1])
    return h >> (32 - s) if s <= 32 else h << (s - 32)


def stochastic_round(x: torch.Tensor, s: int, key: int) -> torch.Tensor:
    """``floor((x + dither) / 2**s)``: rounds up with probability equal to the dropped fraction."""
    s = min(s, SHIFT_CAP)
    if s <= 0:
        return x
    index = torch.arange(x.numel(), dtype=torch.int64, device=x.device).view(x.shape)
    return (x + dither(index, key, s)) >> s


def clamp_payload(x: torch.Tensor, low: int = -PAYLOAD_MAX) -> torch.Tensor:
    return x.clamp(low, PAYLOAD_MAX).to(torch.int8)


# --- the layers -----------------------------------------------------------------------------------


def quantize_weights(w: torch.Tensor) -> Scaled:
    """int8 view of master weights: round-half-up by ``shift_for(W)``, clamp to +-63."""
    s = shift_for(w)
    return Scaled(clamp_payload(round_half_up(w, s)), s - MASTER_FRAC_BITS)


def relu_requantize(z: Scaled) -> Scaled:
    """Hidden activation: ``min(round_half_up(max(z, 0), s), 63)`` with ``s = shift_for(relu z)``."""
    h = z.mant.clamp_min(0)
    s = shift_for(h)
    return Scaled(clamp_payload(round_half_up(h, s), 0), z.exp + s)


def requantize_error(p: torch.Tensor, exp: int, key: int) -> Scaled:
    """An error tensor to int8 payload: stochastic rounding by ``shift_for(p)``, clamp to +-63."""
    s = shift_for(p)
    return Scaled(clamp_payload(stochastic_round(p, s, key)), exp + s)


def output_residual(z: Scaled, labels: torch.Tensor, n_classes: int) -> Scaled:
    """``logits - onehot(label)`` on the first ``n_classes`` outputs (padding outputs get 0)."""
    exp = max(z.exp, LOSS_MIN_EXP)
    out = round_half_up(z.mant, exp - z.exp)
    target = 1 << -exp if exp <= 0 else int(exp == 1)  # round_half_up(1, exp)
    onehot = torch.nn.functional.one_hot(labels, out.shape[1]) * target
    residual = out - onehot
    residual[:, n_classes:] = 0
    return Scaled(residual, exp)


def weight_update(w: torch.Tensor, grad: Scaled, lr_shift: int, key: int) -> torch.Tensor:
    """``clamp(W - round(grad * 2**(F - lr_shift)), +-MASTER_MAX)``, stochastic when it shifts right."""
    u = grad.exp - lr_shift + MASTER_FRAC_BITS
    if u >= 0:
        delta = (grad.mant << min(u, 32)).clamp(-UPDATE_LIMIT, UPDATE_LIMIT)
    else:
        delta = stochastic_round(grad.mant, -u, key)
    return (w - delta).clamp(-MASTER_MAX, MASTER_MAX)


# --- the step -------------------------------------------------------------------------------------


def step_matmul_count(config: ModelConfig) -> int:
    return 3 * config.n_layers - 1


def step_matmul_shapes(config: ModelConfig) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of each matmul, in hook-index order."""
    b, dims, n_layers = config.batch_size, config.dims, config.n_layers
    shapes = [(b, dims[i], dims[i + 1]) for i in range(n_layers)]
    for i in reversed(range(n_layers)):
        shapes.append((dims[i], b, dims[i + 1]))
        if i > 0:
            shapes.append((b, dims[i + 1], dims[i]))
    return shapes


def check_compatible(config: ModelConfig, dataset: Dataset) -> None:
    """The job's model must read the dataset's features and have an output per class."""
    config.validate()
    if config.dims[0] != dataset.n_features or config.dims[-1] < dataset.n_classes:
        raise ValidationError(
            Reason.BAD_JOB_SPEC,
            f"dims {config.dims} do not fit {dataset.n_features} features, {dataset.n_classes} classes",
        )


Product = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def checked_product(mm: MatmulHook) -> Product:
    """``mm`` as an int64-returning product that rejects a wrongly shaped or typed result."""

    def product(a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        c = mm(a.contiguous(), b.contiguous(), index)
        if c.dtype != torch.int32 or tuple(c.shape) != (a.shape[0], b.shape[1]):
            raise ValidationError(Reason.WRONG_TYPE, f"matmul {index} returned {c.dtype} {tuple(c.shape)}")
        return c.to(torch.int64)

    return product


def forward(weights_q: list[Scaled], x: torch.Tensor, product: Product) -> tuple[list[Scaled], Scaled]:
    """Hidden activations ``[a_0 .. a_{L-1}]`` (int8, 0..63) and the int64 output logits."""
    acts = [Scaled(x, INPUT_EXP)]
    for i, wq in enumerate(weights_q):
        a = acts[-1]
        z = Scaled(product(a.mant, wq.mant, i), a.exp + wq.exp)
        if i == len(weights_q) - 1:
            return acts, z
        acts.append(relu_requantize(z))
    raise ValidationError(Reason.BAD_JOB_SPEC, "a model has at least one layer")


class Trainer:
    """Runs consecutive steps with the weights kept on the backend's device."""

    def __init__(
        self,
        config: ModelConfig,
        state: ModelState,
        dataset: Dataset,
        trajectory_seed: bytes,
        backend: Backend,
        matmul: MatmulHook | None = None,
    ) -> None:
        check_compatible(config, dataset)
        if [w.shape for w in state.weights] != config.layer_shapes():
            raise ValidationError(Reason.BAD_JOB_SPEC, "state does not match the model's dims")
        self.config = config
        self.dataset = dataset
        self.trajectory_seed = trajectory_seed
        self.device = backend.device
        self.product = checked_product(matmul if matmul is not None else _plain(backend))
        self.step_index = state.step
        self.weights = [torch.from_numpy(w.astype(np.int64)).to(self.device) for w in state.weights]

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = batch_indices(self.trajectory_seed, self.step_index, self.dataset.n_train, self.config.batch_size)
        x = torch.from_numpy(self.dataset.x_train[rows]).to(self.device)
        y = torch.from_numpy(self.dataset.y_train[rows]).to(self.device)
        return x, y

    def step(self) -> None:
        """One training step; matmul indices follow :func:`step_matmul_shapes`."""
        n_layers = self.config.n_layers
        keys = rounding_keys(self.trajectory_seed, self.step_index, n_layers)
        x, labels = self._batch()
        weights_q = [quantize_weights(w) for w in self.weights]
        acts, out = forward(weights_q, x, self.product)
        err = output_residual(out, labels, self.dataset.n_classes)
        delta = requantize_error(err.mant, err.exp, keys[n_layers - 1])
        index = n_layers
        for i in reversed(range(n_layers)):
            a = acts[i]
            grad = Scaled(self.product(a.mant.T, delta.mant, index), a.exp + delta.exp)
            self.weights[i] = weight_update(self.weights[i], grad, self.config.lr_shift, keys[n_layers + i])
            index += 1
            if i > 0:  # the error of the layer below, through this layer's pre-update weights
                back = self.product(delta.mant, weights_q[i].mant.T, index)
                index += 1
                back = torch.where(a.mant > 0, back, 0)
                delta = requantize_error(back, delta.exp + weights_q[i].exp, keys[i - 1])
        self.step_index += 1

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def state(self) -> ModelState:
        host: list[npt.NDArray[np.int32]] = [w.to(torch.int32).cpu().numpy() for w in self.weights]
        return make_state(self.step_index, host)


def _plain(backend: Backend) -> MatmulHook:
    def int_mm(a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        return backend.int_mm(a, b)

    return int_mm


def train_step(
    config: ModelConfig,
    state: ModelState,
    dataset: Dataset,
    trajectory_seed: bytes,
    backend: Backend,
    matmul: MatmulHook | None = None,
) -> ModelState:
    """Step ``state.step`` of the trajectory ``trajectory_seed``: returns the state one step on."""
    trainer = Trainer(config, state, dataset, trajectory_seed, backend, matmul)
    trainer.step()
    return trainer.state()


def train(
    config: ModelConfig,
    state: ModelState,
    dataset: Dataset,
    trajectory_seed: bytes,
    backend: Backend,
    steps: int,
    matmul: MatmulHook | None = None,
) -> ModelState:
    """``steps`` consecutive :func:`train_step` calls, without leaving the device in between."""
    trainer = Trainer(config, state, dataset, trajectory_seed, backend, matmul)
    trainer.run(steps)
    return trainer.state()


def logits(config: ModelConfig, state: ModelState, x: npt.NDArray[np.int8], backend: Backend) -> Scaled:
    """Output logits of ``x`` (rows a multiple of 64) under ``state``: the evaluation forward pass."""
    weights = [torch.from_numpy(w.astype(np.int64)).to(backend.device) for w in state.weights]
    inputs = torch.from_numpy(np.array(x, dtype=np.int8)).to(backend.device)
    _, out = forward([quantize_weights(w) for w in weights], inputs, checked_product(_plain(backend)))
    return out
