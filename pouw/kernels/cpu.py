"""CPU kernels of the noisy-transcript product (numba, compiled once and cached on disk).

The fused transcript (:func:`fused_transcript`) walks the output in row blocks of whole tiles
small enough to stay in cache; for each block and each chunk c of the inner dimension it asks the
backend for the chunk's exact product (MKL float32 GEMM on a CPU, exact for |x| <= 127 and
t <= 1024) and then, in one numba pass over the block, adds it to the int32 running sums P_c and
folds every element's 32-bit mix state; after the last chunk it folds the block's tiles into their
four digest lanes. The chunk GEMM, the running sums, the mix and the lanes of a block therefore
run back to back on data that is still in L2, and nothing of size m·n is written per chunk.

:func:`sparse_rows` builds the windowed noise without a GEMM: row c of ``W·D`` for a ternary ``W``
with a few non-zeros per row is a handful of int16 vector adds of rows of ``D``.

Every function here has a pure torch/numpy fallback, used when numba cannot be imported (or when
``POUW_NO_NUMBA=1``); both are bit-identical to the reference in pouw/transcript.py, which the
tests check.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

MASK32 = 0xFFFFFFFF
MIX_MULTIPLIER = 0x7FEB352D
MIX_PRIME = (1 << 31) - 1
LANES = 4
BLOCK_BYTES = 1 << 18
"""Target size of one row block's chunk product: a few hundred KiB, inside L2."""

def _load_numba() -> Any:
    if os.environ.get("POUW_NO_NUMBA"):
        return None
    try:
        import numba
    except ImportError:  # the pure fallback below computes the same bits, only slower
        return None
    return numba


_numba = _load_numba()
HAVE_NUMBA = _numba is not None


def _jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    if _numba is None:
        return fn
    jitted: Callable[..., Any] = _numba.njit(cache=True, nogil=True, boundscheck=False)(fn)
    return jitted


def _accumulate_mix_py(chunk: Any, partial: Any, state: Any, chunk_index: int) -> None:
    """numba body over flat arrays: ``partial += chunk``; fold every state (see ``fold_chunk``).

    In uint32 arithmetic, which wraps mod 2**32 exactly as the reference's masked int64 does:
    x = P mod 2**32, u = (h ^ x)·M, h' = (u ^ (u >> 16)) + c + 1."""
    add = np.uint32(chunk_index + 1)
    mul = np.uint32(MIX_MULTIPLIER)
    shift = np.uint32(16)
    for j in range(partial.size):
        p = partial[j] + np.int32(chunk[j])
        partial[j] = p
        u = np.uint32(np.uint32(state[j] ^ np.uint32(p)) * mul)
        state[j] = np.uint32(np.uint32(u ^ (u >> shift)) + add)


def _tile_lanes_py(state: Any, weights: Any, tile_m: int, tile_n: int, out: Any) -> None:
    """numba body: ``out[t, l] = Σ (h · W[l] mod p) mod p`` over the tiles of a row block.

    ``(x & p) + (x >> 31)`` is congruent to ``x`` mod p = 2**31 - 1, so the sum of these partial
    reductions, reduced once at the end, equals the sum of the fully reduced terms (and stays
    below 2**46 for a 64 × 64 tile)."""
    rows, cols = state.shape
    col_tiles = cols // tile_n
    for tr in range(rows // tile_m):
        for tc in range(col_tiles):
            acc0 = np.int64(0)
            acc1 = np.int64(0)
            acc2 = np.int64(0)
            acc3 = np.int64(0)
            for i in range(tile_m):
                for j in range(tile_n):
                    h = np.int64(state[tr * tile_m + i, tc * tile_n + j])
                    x0 = h * weights[0, i, j]
                    x1 = h * weights[1, i, j]
                    x2 = h * weights[2, i, j]
                    x3 = h * weights[3, i, j]
                    acc0 += (x0 & 2147483647) + (x0 >> 31)
                    acc1 += (x1 & 2147483647) + (x1 >> 31)
                    acc2 += (x2 & 2147483647) + (x2 >> 31)
                    acc3 += (x3 & 2147483647) + (x3 >> 31)
            t = tr * col_tiles + tc
            out[t, 0] = acc0 % 2147483647
            out[t, 1] = acc1 % 2147483647
            out[t, 2] = acc2 % 2147483647
            out[t, 3] = acc3 % 2147483647


def _sparse_rows_py(w: Any, d: Any, out: Any) -> None:
    """numba body: ``out = W·D`` for ternary ``W`` (q×r, few non-zeros a row), ``D`` (r×w) ±1."""
    q, r = w.shape
    width = d.shape[1]
    acc = np.zeros(width, dtype=np.int16)
    for c in range(q):
        acc[:] = 0
        for i in range(r):
            s = w[c, i]
            if s == 1:
                for x in range(width):
                    acc[x] += d[i, x]
            elif s == -1:
                for x in range(width):
                    acc[x] -= d[i, x]
        for x in range(width):
            out[c, x] = acc[x]


def _scatter_windows_py(offsets: Any, signs: Any, out: Any) -> None:
    """numba body: column c of ``out`` (r×cols, zeroed) gets ``signs[c, i]`` at row (o_c + i) mod r."""
    rank = out.shape[0]
    for c in range(signs.shape[0]):
        for i in range(signs.shape[1]):
            out[(offsets[c] + i) % rank, c] = signs[c, i]


_accumulate_mix = _jit(_accumulate_mix_py)
_scatter_windows_jit = _jit(_scatter_windows_py)
_tile_lanes_jit = _jit(_tile_lanes_py)
_sparse_rows_jit = _jit(_sparse_rows_py)


def scatter_windows(offsets: npt.NDArray[np.int64], signs: npt.NDArray[np.int8], rank: int) -> npt.NDArray[np.int8]:
    """The r×cols windowed ternary matrix of ``pouw.noise.draw_windows`` from its offsets and signs."""
    cols, nonzeros = signs.shape
    out = np.zeros((rank, cols), dtype=np.int8)
    if HAVE_NUMBA:
        _scatter_windows_jit(offsets, np.ascontiguousarray(signs), out)
    else:
        rows = (offsets[:, None] + np.arange(nonzeros)[None, :]) % rank
        out[rows, np.arange(cols)[:, None]] = signs
    return out


def sparse_rows(w: npt.NDArray[np.int8], d: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """``W·D`` as int8, for ternary ``W`` (q×r) and ``D`` (r×w), when every row of ``W`` has at most
    127 non-zeros and ``D`` is ±1 (so every partial sum fits int16 and the result int8)."""
    if not HAVE_NUMBA:
        product = w.astype(np.float32) @ d.astype(np.float32)
        return product.astype(np.int8)
    out = np.empty((w.shape[0], d.shape[1]), dtype=np.int8)
    _sparse_rows_jit(np.ascontiguousarray(w), np.ascontiguousarray(d), out)
    return out


def _accumulate_mix_torch(chunk: torch.Tensor, partial: torch.Tensor, state: torch.Tensor, c: int) -> None:
    partial += chunk.to(torch.int32)
    wide = state.to(torch.int64)
    u = ((wide ^ (partial.to(torch.int64) & MASK32)) * MIX_MULTIPLIER) & MASK32
    state.copy_((((u ^ (u >> 16)) + (c + 1)) & MASK32).to(torch.int64))


def block_rows(m: int, n: int, tile_m: int) -> int:
    """Rows per block: whole tile rows, about ``BLOCK_BYTES`` of float32 chunk product."""
    rows = max(tile_m, (BLOCK_BYTES // (4 * n)) // tile_m * tile_m)
    return min(rows, m)


def fused_transcript(
    a_noisy: torch.Tensor,
    b_noisy: torch.Tensor,
    chunk: int,
    chunk_mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    weights: npt.NDArray[np.int64],
) -> tuple[torch.Tensor, npt.NDArray[np.int64]]:
    """(C' as int32 (m, n), the digest lanes (tiles, 4) row-major) of the noisy product.

    ``a_noisy`` (m×k) and ``b_noisy`` (k×n) are CPU tensors already in ``chunk_mm``'s dtype;
    ``chunk_mm`` returns the exact product of a (rows×t)·(t×n) piece in any dtype that holds it;
    ``weights`` are the (4, BM, BN) lane weights. |C'| must stay below 2**31 (k·127² does for every
    width this protocol allows).
    """
    m, k = a_noisy.shape
    n = b_noisy.shape[1]
    tile_m, tile_n = weights.shape[1], weights.shape[2]
    c_noisy = torch.zeros((m, n), dtype=torch.int32)
    lanes = np.empty(((m // tile_m) * (n // tile_n), LANES), dtype=np.int64)
    rows = block_rows(m, n, tile_m)
    starts = list(range(0, k, chunk))
    a_chunks = [a_noisy[:, s : s + chunk].contiguous() for s in starts]  # row slices stay contiguous
    b_chunks = [b_noisy[s : s + chunk] for s in starts]
    if HAVE_NUMBA:
        state_np = np.zeros((rows, n), dtype=np.uint32)
    else:
        state_t = torch.zeros((rows, n), dtype=torch.int64)
    tiles_per_row = n // tile_n
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        partial = c_noisy[r0:r1]
        if HAVE_NUMBA:
            state = state_np[: r1 - r0]
            state[:] = 0
            partial_flat = partial.numpy().reshape(-1)  # a row block of a contiguous tensor: a view
            state_flat = state.reshape(-1)
            for c in range(len(starts)):
                product = chunk_mm(a_chunks[c][r0:r1], b_chunks[c])
                _accumulate_mix(product.numpy().reshape(-1), partial_flat, state_flat, c)
            block_lanes = lanes[(r0 // tile_m) * tiles_per_row : (r1 // tile_m) * tiles_per_row]
            _tile_lanes_jit(state, weights, tile_m, tile_n, block_lanes)
        else:
            state_block = state_t[: r1 - r0]
            state_block.zero_()
            for c in range(len(starts)):
                _accumulate_mix_torch(chunk_mm(a_chunks[c][r0:r1], b_chunks[c]), partial, state_block, c)
            block_lanes = lanes[(r0 // tile_m) * tiles_per_row : (r1 // tile_m) * tiles_per_row]
            block_lanes[:] = _tile_lanes_torch(state_block, torch.from_numpy(weights), tile_m, tile_n)
    return c_noisy, lanes


def _tile_lanes_torch(state: torch.Tensor, weights: torch.Tensor, tile_m: int, tile_n: int) -> npt.NDArray[np.int64]:
    m, n = state.shape
    grid = state.reshape(m // tile_m, tile_m, n // tile_n, tile_n).permute(0, 2, 1, 3)
    lanes = [((grid * weights[lane]) % MIX_PRIME).sum(dim=(2, 3)) % MIX_PRIME for lane in range(LANES)]
    return torch.stack(lanes, dim=-1).reshape(-1, LANES).numpy()
