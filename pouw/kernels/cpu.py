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

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from pouw.params import NOISE_BOUND

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


def _noisy_rows_py(w: Any, d: Any, base: Any, out: Any, sumsq: Any) -> None:
    """numba body: ``out[c] = float32(base[c] + Σ_i w[c, i]·d[i])`` for ternary ``w`` (q×r) and ±1
    ``d`` (r×width), and ``sumsq[x] = Σ_c out[c, x]²`` (exact, int64): B+F, row-major."""
    q, r = w.shape
    width = d.shape[1]
    acc = np.zeros(width, dtype=np.int16)
    for x in range(width):
        sumsq[x] = 0
    for c in range(q):
        for x in range(width):
            acc[x] = base[c, x]
        for i in range(r):
            s = w[c, i]
            if s == 1:
                for x in range(width):
                    acc[x] += d[i, x]
            elif s == -1:
                for x in range(width):
                    acc[x] -= d[i, x]
        for x in range(width):
            v = acc[x]
            out[c, x] = np.float32(v)
            sumsq[x] += np.int64(v) * np.int64(v)


def _noisy_chunks_py(w: Any, d: Any, base: Any, chunk: int, out: Any, sumsq: Any) -> None:
    """numba body: A+E in float32, chunk-major: chunk c (columns ``[c·t, c·t + width_c)``) is the
    contiguous (m × width_c) matrix at ``out[m·c·t :]``; ``sumsq[i] = ‖(A+E)_i‖²``.

    ``w`` = E_Rᵀ (k×r ternary), ``d`` = E_Lᵀ (r×m, ±1), ``base`` = A (m×k int8). Column l of E is
    the signed sum of the rows of E_Lᵀ its window selects (int16 vector adds over m), built for 64
    columns at a time and then written transposed, with A added, from an L1-sized tile."""
    k, r = w.shape
    m = d.shape[1]
    span = 64
    tmp = np.zeros((span, m), dtype=np.int16)
    for i in range(m):
        sumsq[i] = 0
    for l0 in range(0, k, span):
        l1 = min(l0 + span, k)
        for col in range(l0, l1):
            row = tmp[col - l0]
            for x in range(m):
                row[x] = 0
            for i in range(r):
                s = w[col, i]
                if s == 1:
                    for x in range(m):
                        row[x] += d[i, x]
                elif s == -1:
                    for x in range(m):
                        row[x] -= d[i, x]
        seg = l0
        while seg < l1:  # the pieces of [l0, l1) within one chunk each
            start = (seg // chunk) * chunk
            width = min(chunk, k - start)
            stop = min(l1, start + width)
            for x in range(m):
                total = np.int64(0)
                offset = m * start + x * width - start
                for col in range(seg, stop):
                    v = np.int64(base[x, col]) + np.int64(tmp[col - l0, x])
                    out[offset + col] = np.float32(v)
                    total += v * v
                sumsq[x] += total
            seg = stop


def _mix_float_py(acc: Any, state: Any, chunk_index: int) -> None:
    """numba body: fold every state with the running sum held (exactly) in float32 ``acc``."""
    add = np.uint32(chunk_index + 1)
    mul = np.uint32(MIX_MULTIPLIER)
    shift = np.uint32(16)
    for j in range(state.size):
        p = np.int32(acc[j])
        u = np.uint32(np.uint32(state[j] ^ np.uint32(p)) * mul)
        state[j] = np.uint32(np.uint32(u ^ (u >> shift)) + add)


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
_noisy_rows_jit = _jit(_noisy_rows_py)
_noisy_chunks_jit = _jit(_noisy_chunks_py)
_mix_float = _jit(_mix_float_py)


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
    chunk_mm: Callable[..., torch.Tensor],
    weights: npt.NDArray[np.int64],
    chunk_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, npt.NDArray[np.int64]]:
    """(C' as int32 (m, n), the digest lanes (tiles, 4) row-major) of the noisy product.

    ``a_noisy`` (m×k) and ``b_noisy`` (k×n) are CPU tensors already in ``chunk_mm``'s dtype;
    ``chunk_mm`` returns the exact product of a (rows×t)·(t×n) piece in any dtype that holds it;
    ``weights`` are the (4, BM, BN) lane weights. Given ``chunk_dtype``, ``chunk_mm`` takes an
    ``out=`` buffer of that dtype, allocated once here and reused for every chunk of every block.
    |C'| must stay below 2**31 (k·127² does for every width this protocol allows).
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
    buffer = None if chunk_dtype is None else torch.empty((rows, n), dtype=chunk_dtype)
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        partial = c_noisy[r0:r1]
        if HAVE_NUMBA:
            state = state_np[: r1 - r0]
            state[:] = 0
            partial_flat = partial.numpy().reshape(-1)  # a row block of a contiguous tensor: a view
            state_flat = state.reshape(-1)
            out = None if buffer is None else buffer[: r1 - r0]
            for c in range(len(starts)):
                piece = a_chunks[c][r0:r1]
                product = chunk_mm(piece, b_chunks[c]) if out is None else chunk_mm(piece, b_chunks[c], out=out)
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


# --- the float32 path: the noisy operands built in float32, the running sums accumulated by the GEMM


FLOAT32_EXACT = 1 << 24


def transpose_int8(x: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """A contiguous transpose of an int8 matrix (torch's blocked copy: ~5x numpy's at 2048²)."""
    return torch.from_numpy(np.ascontiguousarray(x)).t().contiguous().numpy()


WIDTH_EXACT = FLOAT32_EXACT // (127 * 127)
"""1040: below this inner width every partial sum of int8 products (|x| <= 127) is exact in float32."""


@dataclass(frozen=True, slots=True)
class NoisyOperands:
    """A+E as float32 chunk matrices (``a_chunks[c]`` = columns ``[c·t, (c+1)·t)``, m×t), B+F (k×n)
    in float32, and the squared norms of A+E's rows and B+F's columns (None when k <= 1040 makes
    them unnecessary)."""

    a_chunks: list[torch.Tensor]
    b: torch.Tensor
    a_sumsq: npt.NDArray[np.int64] | None = None
    b_sumsq: npt.NDArray[np.int64] | None = None

    def product_bound(self) -> int:
        """An integer bound on every |partial sum| of (A+E)(B+F) in any summation order: by
        Cauchy-Schwarz ``Σ_l |a_il·b_lj| <= ‖a_i‖₂·‖b_j‖₂``, else ``k·127²``."""
        if self.a_sumsq is None or self.b_sumsq is None:
            return int(self.b.shape[0]) * 127 * 127
        return math.isqrt(int(self.a_sumsq.max(initial=0)) * int(self.b_sumsq.max(initial=0))) + 1

    def float32_accumulation_exact(self) -> bool:
        """Whether every running sum, in any summation order, is exact in float32."""
        return self.product_bound() <= FLOAT32_EXACT


def noisy_operands(a: torch.Tensor, b: torch.Tensor, noise: Any, chunk: int) -> NoisyOperands:
    """A+E and B+F in float32 straight from the noise factors (``pouw.noise.NoiseFactors`` on the
    CPU) and the int8 operands, without an int8 E or F or a separate conversion.

    Wide products (k > 1040, where the norms are needed) and sparse windows (r > 2·64) take the
    numba kernels (``s`` int16 vector adds per entry, the norms on the way); the others two float32
    GEMMs per operand piece, ``A + E_L·E_R`` by ``addmm`` (exact: every value is at most 63 + r),
    which cost few calls and no Python-level overhead per row for the small products of a step."""
    m, k = a.shape
    n = b.shape[1]
    rank = int(noise.e_left.shape[1])
    starts = range(0, k, chunk)
    if HAVE_NUMBA and (k > WIDTH_EXACT or (rank > 2 * NOISE_BOUND and m * k * NOISE_BOUND >= 1 << 20)):
        e_left, e_right = noise.e_left.numpy(), noise.e_right.numpy()
        f_left, f_right = noise.f_left.numpy(), noise.f_right.numpy()
        flat = np.empty(m * k, dtype=np.float32)
        b_rows = np.empty((k, n), dtype=np.float32)
        a_norms = np.empty(m, dtype=np.int64)
        b_norms = np.empty(n, dtype=np.int64)
        _noisy_chunks_jit(np.ascontiguousarray(e_right.T), np.ascontiguousarray(e_left.T), a.numpy(), chunk, flat,
                          a_norms)
        _noisy_rows_jit(np.ascontiguousarray(f_left), np.ascontiguousarray(f_right), b.numpy(), b_rows, b_norms)
        whole = torch.from_numpy(flat)
        a_chunks = [whole[m * s : m * min(s + chunk, k)].view(m, min(chunk, k - s)) for s in starts]
        return NoisyOperands(a_chunks, torch.from_numpy(b_rows), a_norms, b_norms)
    e_left_f, e_right_f = noise.e_left.to(torch.float32), noise.e_right.to(torch.float32)
    a_chunks = []
    for s in starts:
        piece = a[:, s : s + chunk].to(torch.float32, memory_format=torch.contiguous_format)
        a_chunks.append(piece.addmm_(e_left_f, e_right_f[:, s : s + chunk]))
    b_noisy = b.to(torch.float32).addmm_(noise.f_left.to(torch.float32), noise.f_right.to(torch.float32))
    if k <= WIDTH_EXACT:
        return NoisyOperands(a_chunks, b_noisy)
    a_sumsq = torch.zeros(m, dtype=torch.int64)
    for piece in a_chunks:
        a_sumsq += (piece.to(torch.int64) ** 2).sum(1)
    b_sumsq = (b_noisy.to(torch.int64) ** 2).sum(0)
    return NoisyOperands(a_chunks, b_noisy, a_sumsq.numpy(), b_sumsq.numpy())


@dataclass(frozen=True, slots=True)
class Correction:
    """``C = C' − left·right`` (left = [A·F_L | E_L], m×2r; right = [F_R ; E_R·(B+F)], 2r×n), both
    float32, and a bound on every partial sum of ``left·right`` (‖left_i‖₁ + ‖right_j‖₁: E_L, F_R ±1)."""

    left: torch.Tensor
    right: torch.Tensor
    bound: int


def correction(a: torch.Tensor, b_noisy: torch.Tensor, noise: Any) -> Correction:
    """The denoising factors of ``pouw.transcript.denoise_fast``, in float32: ``A·F_L`` (|.| <= 63·k)
    and ``E_R·(B+F)`` (|.| <= 127·k) are exact for k < 2**17 (the caller checks)."""
    af = a.to(torch.float32) @ noise.f_left.to(torch.float32)
    y = noise.e_right.to(torch.float32) @ b_noisy
    bound = int(af.abs().sum(1, dtype=torch.float64).max()) + int(y.abs().sum(0, dtype=torch.float64).max())
    left = torch.cat([af, noise.e_left.to(torch.float32)], dim=1)
    right = torch.cat([noise.f_right.to(torch.float32), y], dim=0)
    return Correction(left, right, bound)


def fused_float32(
    ops: NoisyOperands,
    chunk: int,
    weights: npt.NDArray[np.int64],
    fix: Correction | None = None,
) -> tuple[torch.Tensor, npt.NDArray[np.int64], torch.Tensor | None]:
    """(C' int32, the digest lanes, C = C' − fix.left·fix.right int32 or None) of the noisy product.

    Like :func:`fused_transcript`, but the GEMM itself keeps the running sums: each chunk product is
    added by ``addmm`` (beta = 1) into a float32 accumulator of the row block, exact while
    :meth:`NoisyOperands.float32_accumulation_exact` holds (the caller checks), and the numba pass
    only converts and mixes. After the last chunk of a block, while it is still in cache, the
    block's C' is stored and, given ``fix`` with ``product_bound + fix.bound < 2**24`` (every partial
    sum of C' − left·right is then exact), the denoised block is one more ``addmm`` (alpha = −1).
    """
    m = ops.a_chunks[0].shape[0]
    k, n = ops.b.shape
    tile_m, tile_n = weights.shape[1], weights.shape[2]
    c_noisy = torch.empty((m, n), dtype=torch.int32)
    useful = None if fix is None else torch.empty((m, n), dtype=torch.int32)
    lanes = np.empty(((m // tile_m) * (n // tile_n), LANES), dtype=np.int64)
    rows = block_rows(m, n, tile_m)
    starts = list(range(0, k, chunk))
    b_chunks = [ops.b[s : s + chunk] for s in starts]
    acc_buffer = torch.empty((rows, n), dtype=torch.float32)
    state_buffer = np.zeros((rows, n), dtype=np.uint32)
    tiles_per_row = n // tile_n
    for r0 in range(0, m, rows):
        r1 = min(r0 + rows, m)
        acc = acc_buffer[: r1 - r0]
        acc.zero_()
        state = state_buffer[: r1 - r0]
        state[:] = 0
        acc_flat, state_flat = acc.numpy().reshape(-1), state.reshape(-1)
        for c in range(len(starts)):
            acc.addmm_(ops.a_chunks[c][r0:r1], b_chunks[c])
            if HAVE_NUMBA:
                _mix_float(acc_flat, state_flat, c)
            else:
                _mix_float_torch(acc, state, c)
        block_lanes = lanes[(r0 // tile_m) * tiles_per_row : (r1 // tile_m) * tiles_per_row]
        if HAVE_NUMBA:
            _tile_lanes_jit(state, weights, tile_m, tile_n, block_lanes)
        else:
            wide = torch.from_numpy(state.astype(np.int64))
            block_lanes[:] = _tile_lanes_torch(wide, torch.from_numpy(weights), tile_m, tile_n)
        c_noisy[r0:r1].copy_(acc)
        if fix is not None and useful is not None:
            acc.addmm_(fix.left[r0:r1], fix.right, alpha=-1)
            useful[r0:r1].copy_(acc)
    return c_noisy, lanes, useful


def _mix_float_torch(acc: torch.Tensor, state: npt.NDArray[np.uint32], c: int) -> None:
    wide = state.astype(np.int64)
    x = acc.to(torch.int64).numpy() & MASK32
    u = ((wide ^ x) * MIX_MULTIPLIER) & MASK32
    state[:] = (((u ^ (u >> 16)) + (c + 1)) & MASK32).astype(np.uint32)


def fused_product(
    a: torch.Tensor,
    b: torch.Tensor,
    noise: Any,
    chunk: int,
    weights: npt.NDArray[np.int64],
    plain_mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, npt.NDArray[np.int64], torch.Tensor, torch.Tensor | None] | None:
    """The float32 CPU noisy product of int8 ``a``·``b`` with ``noise``: (C', lanes, B+F as float32,
    the exact A·B as int32 or None when the denoise bound fails), or None when float32 accumulation
    is not provably exact for these operands (the caller then takes :func:`fused_transcript`).

    A·B comes from the cheaper of two exact routes, by MAC count: denoising C' costs
    ``r·(mk + kn + 2mn)`` (two thin products and one of inner width 2r), a plain product
    ``plain_mm(a, b)`` costs ``mkn``; the plain one wins whenever ``n <~ 4r`` (small layers)."""
    m, k = a.shape
    n = b.shape[1]
    rank = int(noise.e_left.shape[1])
    if chunk > 1024 or k >= 1 << 17:
        return None
    ops = noisy_operands(a, b, noise, chunk)
    if not ops.float32_accumulation_exact():
        return None
    if plain_mm is not None and m * k * n <= rank * (m * k + k * n + 2 * m * n):
        c_noisy, lanes, _ = fused_float32(ops, chunk, weights)
        return c_noisy, lanes, ops.b, plain_mm(a, b)
    fix = correction(a, ops.b, noise)
    if ops.product_bound() + fix.bound > FLOAT32_EXACT:
        c_noisy, lanes, useful = fused_float32(ops, chunk, weights)
    else:
        c_noisy, lanes, useful = fused_float32(ops, chunk, weights, fix)
    return c_noisy, lanes, ops.b, useful
