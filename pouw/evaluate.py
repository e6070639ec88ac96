"""Held-out accuracy and integer loss of a model state (a report, not a consensus rule).

The test split is cut into chunks of ``batch_size`` rows (the last one zero-padded; zero rows do
not move a chunk's scale) and run through the engine's forward pass. Prediction is the first
argmax over the real classes. The loss is ``sum((logit - onehot)**2)`` over real classes with the
logits at exponent ``EVAL_LOSS_EXP`` and clamped to ``+-2**16`` of those units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.engine import check_compatible, logits, round_half_up
from pouw.model import ModelConfig, ModelState

EVAL_LOSS_EXP = -8
EVAL_LOGIT_LIMIT = 1 << 16


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


def evaluate(config: ModelConfig, state: ModelState, dataset: Dataset, backend: Backend) -> Evaluation:
    check_compatible(config, dataset)
    chunk = config.batch_size
    correct = loss = 0
    for start in range(0, len(dataset.x_test), chunk):
        x = dataset.x_test[start : start + chunk]
        y = torch.from_numpy(dataset.y_test[start : start + chunk].copy()).to(backend.device)
        padded = np.zeros((chunk, x.shape[1]), dtype=np.int8)
        padded[: len(x)] = x
        out = logits(config, state, padded, backend)
        real = out.mant[: len(x), : dataset.n_classes]
        correct += int((real.argmax(dim=1) == y).sum())
        loss += _squared_error(real, out.exp, y)
    return Evaluation(correct, len(dataset.x_test), loss)


def _squared_error(real: torch.Tensor, exp: int, labels: torch.Tensor) -> int:
    if exp < EVAL_LOSS_EXP:
        scaled = round_half_up(real, EVAL_LOSS_EXP - exp)
    else:
        scaled = real.clamp(-EVAL_LOGIT_LIMIT, EVAL_LOGIT_LIMIT) << min(exp - EVAL_LOSS_EXP, 17)
    scaled = scaled.clamp(-EVAL_LOGIT_LIMIT, EVAL_LOGIT_LIMIT)
    onehot = torch.nn.functional.one_hot(labels, real.shape[1]) << -EVAL_LOSS_EXP
    return int(((scaled - onehot) ** 2).sum())
