"""The integer MLP learns: >= 90 % on held-out digits, and it tracks its float32 twin."""

from __future__ import annotations

from benchmarks.accuracy_curves import compare
from pouw.backends import get_backend
from pouw.datasets import digits
from pouw.engine import train
from pouw.evaluate import evaluate
from pouw.model import ModelConfig, init_state

DEVNET = ModelConfig((64, 128, 64), 64, 8)


def test_integer_mlp_reaches_90_percent_on_digits() -> None:
    cpu, data = get_backend("cpu"), digits()
    state = train(DEVNET, init_state(DEVNET, b"digits"), data, b"digits", cpu, 250)
    result = evaluate(DEVNET, state, data, cpu)
    assert result.total == 360
    assert result.accuracy >= 0.90, result
    assert result.mean_loss < 0.25
    untrained = evaluate(DEVNET, init_state(DEVNET, b"digits"), data, cpu)
    assert untrained.accuracy < 0.3 and untrained.loss > result.loss


def test_integer_and_float32_curves_stay_within_five_points() -> None:
    run = compare("test", DEVNET, "digits", steps=300, every=25)
    assert len(run.steps) == len(run.integer_accuracy) == len(run.float32_accuracy) == 13
    assert max(run.integer_accuracy[0], run.float32_accuracy[0]) < 0.3  # untrained at step 0
    assert run.max_gap_from(100) <= 0.05, list(zip(run.integer_accuracy, run.float32_accuracy, strict=True))
    assert run.integer_accuracy[-1] >= 0.9
