"""Held-out accuracy and integer loss of a model state (a report, not a consensus rule).

Every test row runs through the engine's forward pass on its own (:func:`pouw.modelfile.forward_rows`:
the engine's batch-wide requantization made a row's prediction depend on its neighbours), so the
node's figure is exactly what ``pouw.modelfile.ModelFile.predict`` gives a client. Prediction is the
first argmax over the real classes. The loss is ``sum((logit - onehot)**2)`` over real classes with
each row's logits at exponent ``EVAL_LOSS_EXP`` and clamped to ``+-2**16`` of those units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.engine import check_compatible
from pouw.model import ModelConfig, ModelState
from pouw.modelfile import forward_rows, quantized_weights

EVAL_LOSS_EXP = -8
EVAL_LOGIT_LIMIT = 1 << 16
EVAL_CHUNK_ROWS = 4096
"""Rows per forward call (memory only: rows are independent)."""


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``correct`` of ``total`` test rows; ``loss`` in units of ``2**(2*EVAL_LOSS_EXP)``."""

    correct: int
    total: int
    loss: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def mean_loss(self) -> float:
        return self.loss / (self.total << (-2 * EVAL_LOSS_EXP)) if self.total else 0.0


def evaluate(config: ModelConfig, state: ModelState, dataset: Dataset, backend: Backend | None = None) -> Evaluation:
    """Held-out accuracy and loss of ``state`` (``backend`` is accepted for callers; numpy does the work)."""
    check_compatible(config, dataset)
    weights_q = quantized_weights(state)
    correct = loss = 0
    for start in range(0, len(dataset.x_test), EVAL_CHUNK_ROWS):
        x = dataset.x_test[start : start + EVAL_CHUNK_ROWS]
        y = dataset.y_test[start : start + EVAL_CHUNK_ROWS]
        mant, exps = forward_rows(weights_q, x)
        real = mant[:, : dataset.n_classes]
        correct += int((real.argmax(axis=1) == y).sum())
        loss += _squared_error(real, exps, y)
    return Evaluation(correct, len(dataset.x_test), loss)


def _squared_error(real: npt.NDArray[np.int64], exps: npt.NDArray[np.int64], labels: npt.NDArray[np.int64]) -> int:
    """Sum over rows of the squared error at exponent ``EVAL_LOSS_EXP`` (row exponents differ)."""
    down = np.clip(EVAL_LOSS_EXP - exps, 0, 62)[:, None]
    up = np.clip(exps - EVAL_LOSS_EXP, 0, 17)[:, None]
    half = np.where(down > 0, np.left_shift(1, np.maximum(down - 1, 0)), 0)
    rounded = (real + half) >> down
    widened = np.clip(real, -EVAL_LOGIT_LIMIT, EVAL_LOGIT_LIMIT) << up
    scaled = np.where(down > 0, rounded, widened).clip(-EVAL_LOGIT_LIMIT, EVAL_LOGIT_LIMIT)
    onehot = np.zeros_like(scaled)
    onehot[np.arange(len(labels)), labels] = 1 << -EVAL_LOSS_EXP
    return int(((scaled - onehot) ** 2).sum())
