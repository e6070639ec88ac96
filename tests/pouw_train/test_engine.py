"""The training step: golden vectors on every backend, engine vs independent reference, the hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from chain.errors import Reason, ValidationError
from pouw.backends import Backend, get_backend
from pouw.datasets import digits, load_dataset
from pouw.engine import (
    Trainer,
    batch_indices,
    dither,
    round_half_up,
    shift_for,
    step_matmul_shapes,
    stochastic_round,
    train,
    train_step,
)
from pouw.model import MASTER_MAX, ModelConfig, init_state, make_state
from pouw.reference import peak_shift, reference_train_step, round_nearest, round_stochastic
from tests.conftest import requires_cuda
from tests.pouw_train.cases import Case, load_vectors, random_case, vector_config, vector_dataset

VECTORS = load_vectors("training_step.json")
CASES = VECTORS["cases"]
DATA = vector_dataset(VECTORS)


def _check_vector(case: dict[str, Any], step: Any) -> None:
    config = vector_config(case)
    state = init_state(config, bytes.fromhex(case["init_seed"]))
    assert state.hash().hex() == case["pre_state_hash"]
    assert [int(v) for v in state.weights[0].ravel()[:8]] == case["pre_weights_head"]
    tau = bytes.fromhex(case["trajectory_seed"])
    for want in case["post_state_hashes"]:
        state = step(config, state, tau)
        assert state.hash().hex() == want
    assert [int(v) for v in state.weights[-1].ravel()[:8]] == case["post_weights_head"]


def _engine(backend: Backend) -> Any:
    return lambda config, state, tau: train_step(config, state, DATA, tau, backend)


def test_vector_dataset_and_ids() -> None:
    assert DATA.id.hex() == VECTORS["dataset"]["id"]
    for name, want in VECTORS["dataset_ids"].items():
        assert load_dataset(name).id.hex() == want
    for case in CASES:
        tau = bytes.fromhex(case["trajectory_seed"])
        assert list(batch_indices(tau, 0, DATA.n_train, 8)) == case["step0_batch_head"]


def test_dither_hash_vectors() -> None:
    index = torch.arange(8, dtype=torch.int64)
    for entry in VECTORS["dither"]:
        assert dither(index, int(entry["key"]), 32).tolist() == entry["hash32"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_training_vectors_on_the_engine(case: dict[str, Any], backend: str) -> None:
    _check_vector(case, _engine(get_backend(backend)))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_training_vectors_on_the_independent_reference(case: dict[str, Any]) -> None:
    _check_vector(case, lambda config, state, tau: reference_train_step(config, state, DATA, tau))


@requires_cuda
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_training_vectors_on_cuda(case: dict[str, Any]) -> None:
    _check_vector(case, _engine(get_backend("cuda")))


RANDOM_STEPS = 50


def _random_cases(seed: int) -> list[Case]:
    rng = np.random.default_rng(seed)
    return [random_case(rng) for _ in range(RANDOM_STEPS)]


def test_engine_matches_reference_on_random_steps() -> None:
    cpu = get_backend("cpu")
    for i, case in enumerate(_random_cases(2024)):
        got = train_step(case.config, case.state, case.dataset, case.trajectory_seed, cpu)
        want = reference_train_step(case.config, case.state, case.dataset, case.trajectory_seed)
        assert got == want, f"case {i}: {case.config}"
        assert got.step == case.state.step + 1
        assert all(int(np.abs(w).max()) <= MASTER_MAX for w in got.weights)


@requires_cuda
def test_cuda_matches_cpu_on_random_steps() -> None:
    cpu, cuda = get_backend("cpu"), get_backend("cuda")
    for case in _random_cases(77):
        args = (case.config, case.state, case.dataset, case.trajectory_seed)
        assert train(*args, cuda, 3) == train(*args, cpu, 3)


def test_many_steps_in_one_trainer_equal_single_steps() -> None:
    config = ModelConfig((64, 128, 64), 64, 8)
    state = init_state(config, b"s")
    cpu = get_backend("cpu")
    step_by_step = state
    for _ in range(5):
        step_by_step = train_step(config, step_by_step, digits(), b"t", cpu)
    assert train(config, state, digits(), b"t", cpu, 5) == step_by_step


def test_hook_sees_the_documented_schedule_and_bounded_operands() -> None:
    config = ModelConfig((64, 192, 128, 64), 128, 8)
    state = init_state(config, b"s")
    cpu = get_backend("cpu")
    seen: list[tuple[int, tuple[int, int, int]]] = []

    def hook(a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        assert a.dtype == b.dtype == torch.int8 and a.is_contiguous() and b.is_contiguous()
        assert int(a.abs().max()) <= 63 and int(b.abs().max()) <= 63
        seen.append((index, (a.shape[0], a.shape[1], b.shape[1])))
        return cpu.int_mm(a, b)

    ds = load_dataset("synthetic:n=200,d=64,classes=5,seed=3")
    hooked = train_step(config, state, ds, b"t", cpu, hook)
    assert seen == list(enumerate(step_matmul_shapes(config)))
    assert hooked == train_step(config, state, ds, b"t", cpu)


def test_hook_result_is_used_and_checked() -> None:
    config = ModelConfig((64, 64), 64, 8)
    state = init_state(config, b"s")
    cpu = get_backend("cpu")

    def off_by_one(a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        return cpu.int_mm(a, b) + 1

    assert train_step(config, state, digits(), b"t", cpu, off_by_one) != train_step(config, state, digits(), b"t", cpu)

    def wrong_dtype(a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        return cpu.int_mm(a, b).to(torch.int64)

    with pytest.raises(ValidationError):
        train_step(config, state, digits(), b"t", cpu, wrong_dtype)


def test_step_depends_on_the_trajectory_seed_and_step_number() -> None:
    config = ModelConfig((64, 64, 64), 64, 8)
    state = init_state(config, b"s")
    cpu = get_backend("cpu")
    base = train_step(config, state, digits(), b"t", cpu)
    assert train_step(config, state, digits(), b"u", cpu) != base
    later = make_state(7, list(state.weights))
    assert train_step(config, later, digits(), b"t", cpu).weights[0].tobytes() != base.weights[0].tobytes()


def test_incompatible_inputs_are_rejected() -> None:
    cpu = get_backend("cpu")
    wide = ModelConfig((128, 64), 64, 8)
    with pytest.raises(ValidationError) as err:
        train_step(wide, init_state(wide, b"s"), digits(), b"t", cpu)
    assert err.value.reason is Reason.BAD_JOB_SPEC
    config = ModelConfig((64, 64), 64, 8)
    with pytest.raises(ValidationError):
        Trainer(config, init_state(ModelConfig((64, 128), 64, 8), b"s"), digits(), b"t", cpu)
    too_many = load_dataset("synthetic:n=100,d=64,classes=65,seed=1")
    with pytest.raises(ValidationError):
        train_step(config, init_state(config, b"s"), too_many, b"t", cpu)


def test_batch_indices_are_uniform_rows_of_the_training_set() -> None:
    rows = batch_indices(b"t", 3, 1000, 4096)
    assert rows.min() >= 0 and rows.max() < 1000
    assert np.array_equal(rows, batch_indices(b"t", 3, 1000, 4096))
    assert not np.array_equal(rows, batch_indices(b"t", 4, 1000, 4096))
    counts = np.bincount(rows // 100, minlength=10)
    assert counts.min() > 300


# --- the integer primitives ------------------------------------------------------------------------


def test_round_half_up_rounds_ties_towards_plus_infinity() -> None:
    x = torch.arange(-6, 7, dtype=torch.int64)
    assert round_half_up(x, 2).tolist() == [-1, -1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1, 2]
    assert round_half_up(x, 0).tolist() == x.tolist()
    big = torch.tensor([(1 << 61) - 1, -(1 << 61)], dtype=torch.int64)
    assert round_half_up(big, 100).tolist() == [0, 0]


def test_shift_for_keeps_six_significant_bits() -> None:
    assert shift_for(torch.tensor([0, 63, -5])) == 0
    assert shift_for(torch.tensor([64])) == 1
    assert shift_for(torch.tensor([-127])) == 1
    assert shift_for(torch.tensor([1 << 40])) == 35
    assert shift_for(torch.zeros(0, dtype=torch.int64)) == 0


@pytest.mark.parametrize("s", [1, 3, 7, 20, 40])
def test_stochastic_rounding_is_unbiased_and_within_one(s: int) -> None:
    rng = np.random.default_rng(s)
    x = torch.from_numpy(rng.integers(-(1 << (s + 4)), 1 << (s + 4), size=1 << 15))
    rounded = stochastic_round(x, s, key=0x1234_5678_9ABC_DEF0)
    floor = x >> s
    assert bool(((rounded == floor) | (rounded == floor + 1)).all())
    error = (rounded.double() * 2.0**s - x.double()).mean() / 2.0**s
    assert abs(float(error)) < 0.01
    exact = torch.full((1 << 14,), 1 << s, dtype=torch.int64) * 3
    assert stochastic_round(exact, s, key=5).tolist() == [3] * (1 << 14)


def test_dither_is_uniform_and_key_dependent() -> None:
    index = torch.arange(1 << 16, dtype=torch.int64)
    d = dither(index, 99, 4)
    counts = torch.bincount(d, minlength=16)
    assert int(counts.min()) > 3700 and int(counts.max()) < 4500
    assert not torch.equal(dither(index, 99, 16), dither(index, 100, 16))
    assert int(dither(index, 7, 62).max()) < 1 << 62


@pytest.mark.parametrize("s", [0, 1, 31, 32, 33, 62, 63, 90])
def test_rounding_primitives_agree_with_the_reference(s: int) -> None:
    rng = np.random.default_rng(s)
    x = rng.integers(-(1 << 40), 1 << 40, size=(64, 96))
    key = int(rng.integers(0, 1 << 63)) * 2 + 1
    assert np.array_equal(stochastic_round(torch.from_numpy(x), s, key).numpy(), round_stochastic(x, s, key))
    assert np.array_equal(round_half_up(torch.from_numpy(x), s).numpy(), round_nearest(x, s))
    assert shift_for(torch.from_numpy(x)) == peak_shift(x)
