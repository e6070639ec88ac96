"""The security rule t <= r and the per-chunk mix, by counting multiply-accumulates of shortcuts.

An attacker who picks A = 0 gets A + E = E_L·E_R of rank r. He can then produce a tile's partial
sums as P_c = E_L[I,:]·Y_c with Y_c = Σ_{c' <= c} E_R[:, chunk c']·(B+F)[chunk c', J]: the Y_c are
shared by every row tile of a column, and each chunk costs him BM·r·BN per tile against the
honest BM·t·BN. The nonlinear per-chunk mix forces him to materialise every P_c, so with t <= r
his shortcut is never cheaper; with t > r it would be.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pouw.noise import draw_noise, exact_matmul
from pouw.params import DEVNET, PRESETS, PouwParams
from pouw.transcript import digest_bytes, fold_chunk, tile_digest, tile_lanes, transcript


class Counter:
    """An exact integer matmul that counts its multiply-accumulates."""

    def __init__(self) -> None:
        self.macs = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.macs += x.shape[0] * x.shape[1] * y.shape[1]
        return exact_matmul(x, y)


def honest_tile(
    params: PouwParams, sigma_m: bytes, shape: tuple[int, int, int], b_cols: np.ndarray
) -> tuple[bytes, int]:
    """Tile 0 of the noisy product with A = 0, the honest way: BM·k·BN MACs."""
    m, k, n = shape
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    a_noisy = noise.e(slice(0, params.tile_m))
    b_noisy = torch.from_numpy(b_cols.astype(np.int64)).T + noise.f(slice(0, params.tile_n))
    count = Counter()
    _, state = transcript(a_noisy, b_noisy, params.chunk, count)
    return digest_bytes(tile_lanes(state, params.tile_m, params.tile_n)[0]), count.macs


def low_rank_tile(
    params: PouwParams, sigma_m: bytes, shape: tuple[int, int, int], b_cols: np.ndarray
) -> tuple[bytes, int, int]:
    """Tile 0 through the rank-r factors: (digest, MACs for this tile, MACs shared by its column)."""
    m, k, n = shape
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    b_noisy = torch.from_numpy(b_cols.astype(np.int64)).T + noise.f(slice(0, params.tile_n))
    e_left, e_right = noise.e_left[: params.tile_m], noise.e_right
    shared, own = Counter(), Counter()
    y = torch.zeros((params.rank, params.tile_n), dtype=torch.int64)
    state = torch.zeros((params.tile_m, params.tile_n), dtype=torch.int64)
    for c, start in enumerate(range(0, k, params.chunk)):
        stop = min(start + params.chunk, k)
        y = y + shared(e_right[:, start:stop], b_noisy[start:stop])
        state = fold_chunk(state, own(e_left, y), c)
    return digest_bytes(tile_lanes(state, params.tile_m, params.tile_n)[0]), own.macs, shared.macs


def attack(params: PouwParams, m: int, k: int, n: int) -> tuple[int, float]:
    """(honest MACs, attacker MACs amortised over the column's row tiles) for tile 0 of A = 0."""
    rng = np.random.default_rng(k)
    b_cols = rng.integers(-63, 64, size=(params.tile_n, k), dtype=np.int8)
    sigma_m = bytes([k % 256]) * 32
    honest, honest_macs = honest_tile(params, sigma_m, (m, k, n), b_cols)
    shortcut, own, shared = low_rank_tile(params, sigma_m, (m, k, n), b_cols)
    zero_rows = np.zeros((params.tile_m, k), dtype=np.int8)
    assert honest == shortcut == tile_digest(params, sigma_m, (m, k, n), 0, zero_rows, b_cols)
    return honest_macs, own + shared / (m // params.tile_m)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_with_the_presets_the_low_rank_shortcut_is_never_cheaper(name: str) -> None:
    params = PRESETS[name]
    k = 4 * params.chunk
    honest, shortcut = attack(params, 8 * params.tile_m, k, params.tile_n)
    assert honest == params.tile_m * k * params.tile_n
    assert shortcut >= honest  # even with the shared half spread over eight row tiles
    assert shortcut * params.chunk >= honest * params.rank  # advantage t/r, within the shared part


def test_chunks_longer_than_the_rank_would_let_the_shortcut_win() -> None:
    broken = dataclasses.replace(DEVNET, rank=16, chunk=64)  # t = 4r: forbidden by validate()
    honest, shortcut = attack(broken, 8 * broken.tile_m, 256, broken.tile_n)
    assert shortcut < 0.5 * honest


# --- the 32-bit mix: what it must force (docs/protocol.md Part IV §9) ----------------------------


def linear_fold(state: torch.Tensor, partial: torch.Tensor, chunk_index: int) -> torch.Tensor:
    """A cheap but *linear* transcript step, h' = h + (c+1)·P mod 2**32: what the mix must not be."""
    return (state + (chunk_index + 1) * partial) & 0xFFFFFFFF


def folded_shortcut(
    params: PouwParams, sigma_m: bytes, shape: tuple[int, int, int], b_cols: np.ndarray
) -> tuple[torch.Tensor, int]:
    """The attacker of A = 0 who never materialises a P_c: he folds the chunks' rank-r factors Y_c
    linearly (Σ_c (C−c)·Y'_c with Y'_c the chunk's own term) and expands once per tile."""
    m, k, n = shape
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    b_noisy = torch.from_numpy(b_cols.astype(np.int64)).T + noise.f(slice(0, params.tile_n))
    shared, own = Counter(), Counter()
    folded = torch.zeros((params.rank, params.tile_n), dtype=torch.int64)
    starts = list(range(0, k, params.chunk))
    for c, start in enumerate(starts):
        stop = min(start + params.chunk, k)
        weight = sum(c2 + 1 for c2 in range(c, len(starts)))  # Y'_c appears in P_c .. P_{C-1}
        folded = folded + weight * shared(noise.e_right[:, start:stop], b_noisy[start:stop])
    state = own(noise.e_left[: params.tile_m], folded) & 0xFFFFFFFF
    return state, own.macs + shared.macs // (m // params.tile_m)


def honest_states(
    params: PouwParams, sigma_m: bytes, shape: tuple[int, int, int], b_cols: np.ndarray, fold: object
) -> tuple[torch.Tensor, int]:
    m, k, n = shape
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    a_noisy = noise.e(slice(0, params.tile_m))
    b_noisy = torch.from_numpy(b_cols.astype(np.int64)).T + noise.f(slice(0, params.tile_n))
    count = Counter()
    partial = torch.zeros((params.tile_m, params.tile_n), dtype=torch.int64)
    state = torch.zeros_like(partial)
    for c, start in enumerate(range(0, k, params.chunk)):
        stop = min(start + params.chunk, k)
        partial = partial + count(a_noisy[:, start:stop], b_noisy[start:stop])
        state = fold(state, partial, c)  # type: ignore[operator]
    return state, count.macs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_linear_mix_would_let_the_attacker_expand_once_per_tile(name: str) -> None:
    """Counted MACs: with a linear step the A = 0 attacker pays one rank-r expansion per tile
    (≈ r/k of the honest work) and still gets the right states; the real mix defeats the fold."""
    params = PRESETS[name]
    m, k, n = 16 * params.tile_m, 16 * params.chunk, params.tile_n
    rng = np.random.default_rng(5)
    b_cols = rng.integers(-63, 64, size=(params.tile_n, k), dtype=np.int8)
    sigma_m = b"\x42" * 32
    honest, honest_macs = honest_states(params, sigma_m, (m, k, n), b_cols, linear_fold)
    cheap, cheap_macs = folded_shortcut(params, sigma_m, (m, k, n), b_cols)
    assert torch.equal(honest, cheap)  # the fold reproduces a linear transcript exactly
    assert cheap_macs * 3 < honest_macs  # ... at a fraction of the honest MACs (r/16t + r/16BM)
    real, real_macs = honest_states(params, sigma_m, (m, k, n), b_cols, fold_chunk)
    assert real_macs == honest_macs
    assert (real != cheap).float().mean() > 0.99  # the same fold misses nearly every element


def test_the_mix_leaves_no_exploitable_low_bits() -> None:
    """Every bit of P_c matters: for a fixed state the step is a bijection of P_c mod 2**32 (and
    |P_c| < 2**31, so the residue is P_c), hence changing any bit of any partial sum changes the
    state; one step later the change has reached the low byte. An attacker who computes the
    partial sums modulo 2**b (narrow, wrapping accumulators) gets wrong states."""
    rng = np.random.default_rng(8)
    partial = torch.from_numpy(rng.integers(-(1 << 27), 1 << 27, size=(64, 64), dtype=np.int64))
    state = torch.from_numpy(rng.integers(0, 1 << 32, size=(64, 64), dtype=np.int64))
    later = torch.from_numpy(rng.integers(-(1 << 27), 1 << 27, size=(64, 64), dtype=np.int64))
    base = fold_chunk(state, partial, 3)
    base_next = fold_chunk(base, partial + later, 4)
    for bit in (0, 8, 16, 24, 30):
        high_only = partial + (1 << bit)  # same low `bit` bits, a different sum
        moved = fold_chunk(state, high_only, 3)
        assert bool((moved != base).all()), bit
        moved_next = fold_chunk(moved, high_only + later, 4)
        low_byte_changed = ((moved_next ^ base_next) & 0xFF) != 0
        assert low_byte_changed.float().mean() > 0.9, bit
    # and the step is a bijection of h for a fixed P (no state collapses): distinct h stay distinct
    h = torch.arange(1 << 16, dtype=torch.int64) * 65537
    assert len(set(fold_chunk(h, torch.full_like(h, -12345), 0).tolist())) == 1 << 16


def test_the_mix_is_nonlinear_in_the_partial_sums_over_the_integers_and_gf2() -> None:
    rng = np.random.default_rng(9)
    zero = torch.zeros(4096, dtype=torch.int64)
    x = torch.from_numpy(rng.integers(-(1 << 26), 1 << 26, size=4096, dtype=np.int64))
    y = torch.from_numpy(rng.integers(-(1 << 26), 1 << 26, size=4096, dtype=np.int64))
    f0, fx, fy = fold_chunk(zero, zero, 0), fold_chunk(zero, x, 0), fold_chunk(zero, y, 0)
    additive = (fold_chunk(zero, x + y, 0) - fx - fy + f0) & 0xFFFFFFFF
    xor_linear = fold_chunk(zero, (x ^ y) & 0xFFFFFFFF, 0) ^ fx ^ fy ^ f0
    assert (additive != 0).float().mean() > 0.99
    assert (xor_linear != 0).float().mean() > 0.99
