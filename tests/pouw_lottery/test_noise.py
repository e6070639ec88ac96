"""The low-rank noise: shapes, bounds, rank, determinism, and the draw rule re-derived by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pouw.noise import draw_noise, draw_signs, draw_windows
from pouw.params import NOISE_BOUND, PAYLOAD_BOUND
from pouw.prng import Prng

dims = st.sampled_from([64, 128, 192])


@given(m=dims, k=dims, n=dims, rank=st.integers(1, 256), seed=st.binary(min_size=32, max_size=32))
def test_noise_factors_have_the_specified_shapes_entries_and_bounds(
    m: int, k: int, n: int, rank: int, seed: bytes
) -> None:
    noise = draw_noise(seed, m, k, n, rank)
    e_left, e_right = noise.e_left.numpy(), noise.e_right.numpy()
    f_left, f_right = noise.f_left.numpy(), noise.f_right.numpy()
    assert e_left.shape == (m, rank) and e_right.shape == (rank, k)
    assert f_left.shape == (k, rank) and f_right.shape == (rank, n)
    assert set(np.unique(e_left)) <= {-1, 1} and set(np.unique(f_right)) <= {-1, 1}
    nonzeros = min(rank, NOISE_BOUND)
    assert (np.count_nonzero(e_right, axis=0) == nonzeros).all()
    assert (np.count_nonzero(f_left, axis=1) == nonzeros).all()
    assert set(np.unique(e_right)) <= {-1, 0, 1} and set(np.unique(f_left)) <= {-1, 0, 1}
    e, f = noise.e().numpy(), noise.f().numpy()
    assert np.array_equal(e, e_left.astype(np.int64) @ e_right.astype(np.int64))
    assert np.array_equal(f, f_left.astype(np.int64) @ f_right.astype(np.int64))
    assert np.abs(e).max() <= NOISE_BOUND and np.abs(f).max() <= NOISE_BOUND
    # the worst payload plus noise still fits int8
    assert PAYLOAD_BOUND + max(np.abs(e).max(), np.abs(f).max()) <= 127


def test_noise_has_full_rank_r_and_depends_on_every_seed_byte() -> None:
    noise = draw_noise(b"\x07" * 32, 128, 128, 128, 32)
    assert np.linalg.matrix_rank(noise.e().numpy().astype(np.float64)) == 32
    assert np.linalg.matrix_rank(noise.f().numpy().astype(np.float64)) == 32
    again = draw_noise(b"\x07" * 32, 128, 128, 128, 32)
    assert np.array_equal(noise.e().numpy(), again.e().numpy())
    other = draw_noise(b"\x07" * 31 + b"\x06", 128, 128, 128, 32)
    assert not np.array_equal(noise.e().numpy(), other.e().numpy())
    assert not np.array_equal(noise.f().numpy(), other.f().numpy())


def test_the_draw_follows_the_normative_byte_layout() -> None:
    """Re-derive E_L and E_R from the raw PRNG stream with plain Python."""
    seed, m, k, n, rank = b"\x42" * 32, 64, 64, 64, 80
    stream = Prng("pouw/noise", seed, 0)
    raw = stream.bytes((m * rank + 7) // 8)
    bits = [(raw[i // 8] >> (i % 8)) & 1 for i in range(m * rank)]
    e_left = [[1 - 2 * bits[i * rank + j] for j in range(rank)] for i in range(m)]
    offsets = [stream.randbelow(rank) for _ in range(k)]
    window = min(rank, 64)
    raw = stream.bytes((k * window + 7) // 8)
    bits = [(raw[i // 8] >> (i % 8)) & 1 for i in range(k * window)]
    e_right = [[0] * k for _ in range(rank)]
    for col in range(k):
        for i in range(window):
            e_right[(offsets[col] + i) % rank][col] = 1 - 2 * bits[col * window + i]
    noise = draw_noise(seed, m, k, n, rank)
    assert noise.e_left.tolist() == e_left
    assert noise.e_right.tolist() == e_right


def test_window_draw_rejects_windows_beyond_the_noise_bound() -> None:
    with pytest.raises(ValueError):
        draw_windows(Prng("x"), 128, 4, 65)
    with pytest.raises(ValueError):
        draw_windows(Prng("x"), 8, 4, 9)
    assert draw_signs(Prng("x"), 3, 5).shape == (3, 5)
