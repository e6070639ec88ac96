"""The security rule t <= r, by counting multiply-accumulates of the low-rank shortcut.

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
