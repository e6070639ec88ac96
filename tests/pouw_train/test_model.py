"""ModelConfig bounds, the initial draw, and ModelState's canonical bytes."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.encoding import pack
from chain.errors import InvalidEncoding, Reason, ValidationError
from chain.hashing import tagged_hash
from pouw.engine import step_matmul_count, step_matmul_shapes
from pouw.model import MASTER_MAX, ModelConfig, ModelState, init_bound, init_state, make_state

CONFIG = ModelConfig((64, 128, 64), 64, 8)


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig((64,), 64, 8),
        ModelConfig((64, 100), 64, 8),
        ModelConfig((64, 0), 64, 8),
        ModelConfig((64, 64 * 129), 64, 8),
        ModelConfig((64, True), 64, 8),
        ModelConfig([64, 64], 64, 8),  # type: ignore[arg-type]
        ModelConfig((64,) * 18, 64, 8),
        ModelConfig((64, 64), 96, 8),
        ModelConfig((64, 64), 0, 8),
        ModelConfig((64, 64), 64, -1),
        ModelConfig((64, 64), 64, 49),
    ],
)
def test_validate_rejects_out_of_spec_configs(config: ModelConfig) -> None:
    with pytest.raises(ValidationError) as err:
        config.validate()
    assert err.value.reason is Reason.BAD_JOB_SPEC


def test_sizes_agree_with_the_matmul_schedule() -> None:
    config = ModelConfig((64, 192, 128, 64), 128, 8)
    config.validate()
    shapes = step_matmul_shapes(config)
    assert len(shapes) == step_matmul_count(config) == 8
    assert config.macs_per_step() == sum(m * k * n for m, k, n in shapes)
    assert config.param_count() == 64 * 192 + 192 * 128 + 128 * 64


def test_init_state_is_deterministic_bounded_and_seed_dependent() -> None:
    a, b = init_state(CONFIG, b"seed"), init_state(CONFIG, b"seed")
    assert a == b and a.hash() == b.hash() and a.step == 0
    assert init_state(CONFIG, b"other") != a
    for w, (rows, cols) in zip(a.weights, CONFIG.layer_shapes(), strict=True):
        bound = init_bound(rows)
        assert w.shape == (rows, cols) and w.dtype == np.int32
        assert int(np.abs(w).max()) <= bound
        assert int(np.abs(w).max()) > bound * 0.95  # the whole range is used
        assert abs(float(w.mean())) < bound * 0.05
    assert not a.weights[0].flags.writeable


def test_init_bound_is_exact_he_uniform() -> None:
    assert init_bound(64) == int((6 / 64) ** 0.5 * 2**24)
    assert init_bound(6) == 1 << 24


def test_state_round_trips_and_hashes_its_encoding() -> None:
    state = make_state(12, list(init_state(CONFIG, b"s").weights))
    data = state.encode()
    assert ModelState.decode(data, CONFIG) == state
    assert state.hash() == tagged_hash("pouw/model", data)
    assert data == pack([12, *_layers(state)])


@given(
    step=st.integers(0, (1 << 64) - 1),
    seed=st.integers(0, 2**32 - 1),
    scale=st.integers(0, 30),
)
def test_round_trip_of_random_states(step: int, seed: int, scale: int) -> None:
    config = ModelConfig((64, 64), 64, 0)
    rng = np.random.default_rng(seed)
    w = np.clip(rng.integers(-(1 << scale), (1 << scale) + 1, size=(64, 64)), -MASTER_MAX, MASTER_MAX)
    state = make_state(step, [w])
    assert ModelState.decode(state.encode(), config) == state


def _layers(state: ModelState) -> list[list[Any]]:
    return [[w.shape[0], w.shape[1], w.astype("<i4").tobytes()] for w in state.weights]


def _malformed() -> list[bytes]:
    state = init_state(CONFIG, b"s")
    good = _layers(state)
    big = state.weights[0].astype(np.int64).copy()
    big[0, 0] = MASTER_MAX + 1
    return [
        state.encode() + b"\x00",  # trailing byte
        pack([0, *good[:1]]),  # a layer missing
        pack([0, *good, good[0]]),  # a layer too many
        pack([-1, *good]),  # negative step
        pack([b"0", *good]),  # step of the wrong type
        pack([0, [128, 64, good[0][2]], good[1]]),  # transposed shape
        pack([0, [64, 128, good[0][2][:-4]], good[1]]),  # short data
        pack([0, [64, 128], good[1]]),  # no data field
        pack([0, [64, 128, big.astype("<i4").tobytes()], good[1]]),  # beyond the master clamp
        pack([0, [64, 128, "text"], good[1]]),  # data of the wrong type
        msgpack.packb([0, *good], use_bin_type=False),  # raw str instead of bin: non-canonical
        b"\xc1",  # not msgpack
        b"\x80",  # an empty map
    ]


@pytest.mark.parametrize("data", _malformed())
def test_decode_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(InvalidEncoding):
        ModelState.decode(data, CONFIG)


def test_states_compare_by_value() -> None:
    a = init_state(CONFIG, b"s")
    b = make_state(0, [w.copy() for w in a.weights])
    assert a == b
    assert make_state(1, list(a.weights)) != a
    assert a != "not a state"
