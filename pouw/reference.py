"""An independent, slow re-implementation of the training step, written from docs/protocol.md Part III.

It shares no code with pouw/engine.py: products are numpy int64 matmuls, scalars are Python ints,
the dither hash runs in wrapping uint64 arithmetic reduced mod 2**32 (the engine avoids overflow
instead), and every rule is spelled out again here. Tests require the two to agree bit for bit;
a disagreement means one of them misreads the spec.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from chain.errors import Reason, ValidationError
from pouw.datasets import Dataset
from pouw.model import MASTER_FRAC_BITS, MASTER_MAX, ModelConfig, ModelState, make_state
from pouw.prng import Prng

I64 = npt.NDArray[np.int64]
_U32 = np.uint64(0xFFFFFFFF)


def peak_shift(x: I64) -> int:
    """Smallest s >= 0 with max|x| < 2**(s+6)."""
    peak = int(np.abs(x).max()) if x.size else 0
    return max(peak.bit_length() - 6, 0)


def round_nearest(x: I64, s: int) -> I64:
    s = min(s, 62)
    if s == 0:
        return x
    return (x + np.int64(1 << (s - 1))) >> np.int64(s)


def dither_hash32(key: int, count: int) -> npt.NDArray[np.uint64]:
    """The dither hash of element indices ``0..count-1`` under a 64-bit key, as uint64 < 2**32."""
    h = np.arange(count, dtype=np.uint64)
    for half, mul in ((key & 0xFFFFFFFF, 0x7FEB352D), (key >> 32, 0x045D9F3B)):
        h = h ^ np.uint64(half)
        h = h ^ (h >> np.uint64(16))
        h = (h * np.uint64(mul)) & _U32
        h = h ^ (h >> np.uint64(15))
    return h


def round_stochastic(x: I64, s: int, key: int) -> I64:
    s = min(s, 62)
    if s == 0:
        return x
    h = dither_hash32(key, x.size).astype(np.int64).reshape(x.shape)
    noise = h >> np.int64(32 - s) if s <= 32 else h << np.int64(s - 32)
    return (x + noise) >> np.int64(s)


def _product(a: I64, b: I64) -> I64:
    if max(np.abs(a).max(initial=0), np.abs(b).max(initial=0)) > 63:
        raise ValidationError(Reason.OUT_OF_RANGE, "matmul operand beyond the payload bound")
    return a @ b


def reference_train_step(
    config: ModelConfig, state: ModelState, dataset: Dataset, trajectory_seed: bytes
) -> ModelState:
    """Step ``state.step`` of the trajectory, computed the slow way."""
    n_layers = len(config.dims) - 1
    step = state.step
    rows = Prng("pouw/batch", trajectory_seed, step).randbelow_array(dataset.n_train, config.batch_size)
    keys = [int(k) for k in Prng("pouw/sround", trajectory_seed, step).u64s(2 * n_layers)]
    x = dataset.x_train[rows].astype(np.int64)
    labels = dataset.y_train[rows]

    # quantised weights: (mantissa, exponent)
    wq: list[tuple[I64, int]] = []
    for w in state.weights:
        s = peak_shift(w.astype(np.int64))
        wq.append((np.clip(round_nearest(w.astype(np.int64), s), -63, 63), s - MASTER_FRAC_BITS))

    # forward
    acts: list[tuple[I64, int]] = [(x, -6)]
    for i in range(n_layers):
        a, ea = acts[-1]
        z = _product(a, wq[i][0])
        ez = ea + wq[i][1]
        if i < n_layers - 1:
            h = np.maximum(z, 0)
            s = peak_shift(h)
            acts.append((np.minimum(round_nearest(h, s), 63), ez + s))

    # loss gradient of 1/2 * sum (logit - onehot)^2 over the real classes
    e_loss = max(ez, -32)
    out = round_nearest(z, e_loss - ez)
    one = 2 ** (-e_loss) if e_loss <= 0 else (1 if e_loss == 1 else 0)
    out[np.arange(len(labels)), labels] -= one
    out[:, dataset.n_classes :] = 0
    s = peak_shift(out)
    delta = np.clip(round_stochastic(out, s, keys[n_layers - 1]), -63, 63)
    e_delta = e_loss + s

    # backward, top layer first
    new_weights: list[npt.NDArray[np.int32]] = [np.zeros(0, np.int32)] * n_layers
    for i in range(n_layers - 1, -1, -1):
        a, ea = acts[i]
        grad = _product(a.T, delta)
        e_grad = ea + e_delta
        if i > 0:
            back = np.where(a > 0, _product(delta, wq[i][0].T), 0)
            s = peak_shift(back)
            next_delta = np.clip(round_stochastic(back, s, keys[i - 1]), -63, 63)
            next_e = e_delta + wq[i][1] + s
        u = e_grad - config.lr_shift + MASTER_FRAC_BITS
        if u >= 0:
            step_w = np.clip(grad * (2 ** min(u, 32)), -(2**31), 2**31)
        else:
            step_w = round_stochastic(grad, -u, keys[n_layers + i])
        w_new = np.clip(state.weights[i].astype(np.int64) - step_w, -MASTER_MAX, MASTER_MAX)
        new_weights[i] = w_new.astype(np.int32)
        if i > 0:
            delta, e_delta = next_delta, next_e
    return make_state(step + 1, new_weights)
