"""Shared fixtures of the lottery tests: the devnet job (digits, a 64-128-64 MLP) and one mined seal."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from chain.types import BLOCK_VERSION, Header
from pouw.backends import Backend, get_backend
from pouw.datasets import Dataset, load_dataset
from pouw.mining import Miner, MineResult
from pouw.model import ModelConfig, ModelState, init_state
from pouw.params import DEVNET, PouwParams, target_for_work

# Small matmuls lose far more to thread hand-offs than they gain, above all on a loaded 2-core box.
torch.set_num_threads(1)

CONFIG = ModelConfig(dims=(64, 128, 64), batch_size=64, lr_shift=8)
# Devnet with short segments, so a shard of a dozen steps has segments that are not replayed.
PARAMS = dataclasses.replace(DEVNET, name="devnet-test", checkpoint_interval=3, sampled_segments=2)
TRAJECTORY_SEED = bytes(range(32))
OLD_SEED = b"\x01" * 32
HEADER_SEED = b"\x02" * 32
# About one win every four steps.
TARGET = target_for_work(PARAMS, 4 * CONFIG.macs_per_step())


def lottery_header(**changes: Any) -> Header:
    """A block template for the lottery job (fixed fields; ``changes`` override any of them)."""
    header = Header(
        version=BLOCK_VERSION, height=7, prev_hash=b"\x11" * 32, timestamp=1_793_491_300, tx_root=b"\x22" * 32,
        target=TARGET, miner=b"\x33" * 20, job_id=b"\x44" * 32, start_state_hash=b"\x55" * 32,
        dims=CONFIG.dims, batch_size=CONFIG.batch_size, lr_shift=CONFIG.lr_shift,
    )
    return dataclasses.replace(header, **changes)


@dataclass(frozen=True)
class Mined:
    params: PouwParams
    config: ModelConfig
    dataset: Dataset
    start: ModelState
    backend: Backend
    target: int
    result: MineResult

    def verify_args(self) -> dict[str, object]:
        claim = self.result.seal_claim
        return {
            "params": self.params,
            "config": self.config,
            "dataset": self.dataset,
            "start_state": self.start,
            "trajectory_seed": TRAJECTORY_SEED,
            "header_seed": HEADER_SEED,
            "target": self.target,
            "steps": claim.steps,
            "final_state_hash": claim.final_state_hash,
            "trajectory_root": claim.trajectory_root,
            "proof": claim.proof,
            "work": self.result.work_bytes,
            "backend": self.backend,
            "prefix_root": claim.prefix_root,
        }


@pytest.fixture(scope="session")
def backend() -> Backend:
    return get_backend("cpu")


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="session")
def start_state() -> ModelState:
    return init_state(CONFIG, b"lottery-test-job")


@pytest.fixture(scope="session")
def mined(backend: Backend, digits: Dataset, start_state: ModelState) -> Mined:
    """A shard of 10 steps under an old template (no wins: target 0), then mined to a win."""
    miner = Miner(PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
    assert miner.mine(OLD_SEED, 0, 10) is None
    result = miner.mine(HEADER_SEED, TARGET, 200)
    assert result is not None
    return Mined(PARAMS, CONFIG, digits, start_state, backend, TARGET, result)
