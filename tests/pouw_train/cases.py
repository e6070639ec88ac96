"""Shared builders for the training tests: the vector files and random small training cases."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pouw.datasets import Dataset, synthetic
from pouw.model import MASTER_MAX, ModelConfig, ModelState, init_state, make_state

VECTORS = Path(__file__).parent.parent / "vectors"


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def vector_dataset(vectors: dict[str, Any]) -> Dataset:
    spec = vectors["dataset"]
    x = np.frombuffer(bytes.fromhex(spec["x_train_hex"]), dtype=np.int8).reshape(-1, 64)
    empty = np.zeros((0, 64), dtype=np.int8)
    return Dataset(spec["name"], x, np.array(spec["y_train"]), empty, np.zeros(0, np.int64), spec["n_classes"])


def vector_config(case: dict[str, Any]) -> ModelConfig:
    return ModelConfig(tuple(case["dims"]), case["batch_size"], case["lr_shift"])


@dataclass(frozen=True)
class Case:
    config: ModelConfig
    state: ModelState
    dataset: Dataset
    trajectory_seed: bytes


def random_case(rng: np.random.Generator) -> Case:
    """A small config, a dataset that fits it, and a state whose weight scale spans 2**0..2**30."""
    n_layers = int(rng.integers(1, 4))
    dims = tuple(64 * int(v) for v in rng.integers(1, 3, size=n_layers + 1))
    config = ModelConfig(dims, 64 * int(rng.integers(1, 3)), int(rng.integers(0, 49)))
    classes = int(rng.integers(2, min(dims[-1], 24) + 1))
    dataset = synthetic(n=int(rng.integers(1, 300)), d=dims[0], classes=classes,
                        seed=int(rng.integers(1 << 32)), test=0, hidden=16)  # fmt: skip
    scale = 1 << int(rng.integers(0, 31))
    if rng.random() < 0.3:
        state = init_state(config, rng.bytes(8))
        state = make_state(int(rng.integers(0, 1 << 40)), list(state.weights))
    else:
        weights = [
            np.clip(rng.integers(-scale, scale + 1, size=shape), -MASTER_MAX, MASTER_MAX)
            for shape in config.layer_shapes()
        ]
        state = make_state(int(rng.integers(0, 1 << 40)), weights)
    return Case(config, state, dataset, rng.bytes(32))
