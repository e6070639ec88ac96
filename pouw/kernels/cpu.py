"""CPU kernels of the noisy-transcript product (numba, compiled once and cached on disk).

The fused transcript (:func:`fused_transcript`) walks the output in row blocks of whole tiles
small enough to stay in cache; for each block and each chunk c of the inner dimension it asks the
backend for the chunk's exact product (MKL float32 GEMM on a CPU, exact for |x| <= 127 and
t <= 1024) and then, in one numba pass over the block, adds it to the int32 running sums P_c and
folds every element's 32-bit mix state; after the last chunk it folds the block's tiles into their
four digest lanes. The chunk GEMM, the running sums, the mix and the lanes of a block therefore
run back to back on data that is still in L2, and nothing of size m·n is written per chunk.

With the float32 backend (the fastest exact GEMM of an AVX2 CPU) :func:`fused_product` goes
further: :func:`noisy_operands` builds A+E and B+F in float32 straight from the noise factors (with
the row and column norms), :func:`fused_float32` lets ``addmm`` keep the running sums in a float32
accumulator (exact by Cauchy-Schwarz, checked per product) so the numba pass only converts and
mixes, and the useful product comes from the cheaper exact route: a plain GEMM for narrow layers,
else the denoising correction folded into the block loop. :func:`small_product` does all of it in
one numba call for the small products of a training step, where torch's per-call cost dominates.

:func:`sparse_rows` builds the windowed noise without a GEMM: row c of ``W·D`` for a ternary ``W``
with a few non-zeros per row is a handful of int16 vector adds of rows of ``D``. The float32 noisy
operands come from int8 vector adds (exact: a payload entry, |x| <= 63, plus at most 64 terms ±1
stays within ±127), by windows (:func:`_window_sums_py`: about s/4 adds of signed four-row groups
per output row, read from the windows' compact form) or, when r <= 64, row by row (:func:`_noisy_rows_t_py`,
no transposes). The small products' GEMMs are a 4×4-blocked numba loop (:func:`_gemm_acc_py`,
about MKL's speed below 2**21 MACs without its per-call cost), :func:`factor_pair` turns a noise
draw's bytes into its signs (and their transpose) and its windows' offsets and sign masks, and
:func:`tile_tickets` hashes a matmul's tickets with one BLAKE3 compression per tile.

Every function here has a pure torch/numpy fallback, used when numba cannot be imported (or when
``POUW_NO_NUMBA=1``); both are bit-identical to the reference in pouw/transcript.py, which the
tests check.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from pouw.backends import host_copy, host_empty
from pouw.params import NOISE_BOUND, PAYLOAD_BOUND

MASK32 = 0xFFFFFFFF
MIX_MULTIPLIER = 0x7FEB352D
MIX_PRIME = (1 << 31) - 1
LANES = 4
LITTLE_ENDIAN = sys.byteorder == "little"
"""The 64-bit-word transpose reads byte j of a word as column j: true on little-endian hosts."""
BLOCK_BYTES = 1 << 21
"""Target size of one row block's chunk product (2 MiB: 256 rows at n = 2048). Every chunk GEMM
packs its (t × n) slice of B+F again, so taller blocks pack it fewer times. Measured at 2048² on
the emulated AVX2 reference: on a Xeon (2 MiB L2) 1 MiB blocks beat 256 KiB ones by 10 %; on an
AMD EPYC Zen 4 (1 MiB L2) 2 MiB blocks beat 1 MiB ones by 6-9 % (devnet, testnet, mainnet), the
chunk GEMMs of 256 rows costing what one plain GEMM does (128 rows: +10 %), 4 MiB ones lose again."""

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
    reductions, reduced once at the end, equals the sum of the fully reduced terms. ``h`` < 2**32
    and ``W`` < 2**31 are both 32-bit unsigned (pass ``weights`` as uint32): their 64-bit product
    is one ``pmuludq`` lane on AVX2. The sums run per column of the tile (a vector of BN
    accumulators per lane, each below 2**33 · BM), so the inner loop has no carried dependence and
    vectorises; they are added up once per tile (below 2**45 for a 64 × 64 tile)."""
    rows, cols = state.shape
    col_tiles = cols // tile_n
    low = np.uint64(2147483647)
    shift = np.uint64(31)
    acc = np.zeros((LANES, tile_n), dtype=np.uint64)
    for tr in range(rows // tile_m):
        for tc in range(col_tiles):
            acc[:] = 0
            for i in range(tile_m):
                h = state[tr * tile_m + i, tc * tile_n : tc * tile_n + tile_n]
                for lane in range(LANES):
                    w = weights[lane, i]
                    column_sums = acc[lane]
                    for j in range(tile_n):
                        x = np.uint64(h[j]) * np.uint64(w[j])
                        column_sums[j] += (x & low) + (x >> shift)
            t = tr * col_tiles + tc
            for lane in range(LANES):
                total = np.uint64(0)
                for j in range(tile_n):
                    total += acc[lane, j]
                out[t, lane] = total % low


def _add_signed_rows_py(acc: Any, w_row: Any, d: Any) -> None:
    """numba body: ``acc += Σ_i w_row[i]·d[i]`` for a ternary row ``w_row``: one vector add or
    subtract of a row of ``d`` per non-zero (the core of every sparse noise construction here)."""
    for i in range(w_row.shape[0]):
        s = w_row[i]
        if s == 1:
            for x in range(acc.shape[0]):
                acc[x] += d[i, x]
        elif s == -1:
            for x in range(acc.shape[0]):
                acc[x] -= d[i, x]


def _load_row_py(acc: Any, row: Any, low: Any, high: Any) -> tuple[Any, Any]:
    """numba body: ``acc[:] = row``, returning the running minimum and maximum with ``row``'s."""
    for x in range(acc.shape[0]):
        v = row[x]
        acc[x] = v
        low = min(low, v)
        high = max(high, v)
    return low, high


_add_signed_rows = _jit(_add_signed_rows_py)
_load_row = _jit(_load_row_py)


def _sparse_rows_py(w: Any, d: Any, out: Any) -> None:
    """numba body: ``out = W·D`` for ternary ``W`` (q×r, few non-zeros a row), ``D`` (r×w) ±1."""
    q = w.shape[0]
    width = d.shape[1]
    acc = np.zeros(width, dtype=np.int16)
    for c in range(q):
        acc[:] = 0
        _add_signed_rows(acc, w[c], d)
        for x in range(width):
            out[c, x] = acc[x]


def _noisy_rows_t_py(w: Any, d: Any, base: Any, out: Any, sumsq: Any) -> bool:
    """numba body: ``out[c] = float32(base[c] + Σ_i w[c, i]·d[i])`` for ±1 ``w`` (q×r) and ternary
    ``d`` (r×width) with at most 64 non-zeros a column, and ``sumsq[c] = ‖out[c]‖²`` (int32: exact
    for width < 2**17): A+E = A + E_L·E_R row-major, r int8 vector adds a row (every entry of E is a
    sum of s terms ±1: the running sums stay within ±127 while |base| <= 63; returns False, the
    result unusable, when an entry of ``base`` is not). Without the transpose of A that
    :func:`_window_sums_py` needs, and as many adds when r = s (r <= 64)."""
    q = w.shape[0]
    width = d.shape[1]
    acc = np.zeros(width, dtype=np.int8)
    low = np.int8(0)
    high = np.int8(0)
    for c in range(q):
        low, high = _load_row(acc, base[c], low, high)
        _add_signed_rows(acc, w[c], d)
        total = np.int32(0)
        for x in range(width):
            v = np.int32(acc[x])
            out[c, x] = np.float32(v)
            total += v * v
        sumsq[c] = total
    return bool(-PAYLOAD_BOUND <= low and high <= PAYLOAD_BOUND)


def _quad_rows_py(d: Any, quads: Any) -> None:
    """numba body: ``quads[16g + v] = Σ_{j<4} ±d[4g + j]`` for every group g of four rows of a ±1
    ``d`` (r × width) and every sign pattern v (bit j of v set: row 4g + j negated): one vector add
    per entry, each pattern from the one without its lowest bit (``v & (v − 1)``)."""
    rank, width = d.shape
    for g in range(rank // 4):
        first = quads[16 * g]
        for x in range(width):
            first[x] = d[4 * g, x] + d[4 * g + 1, x] + d[4 * g + 2, x] + d[4 * g + 3, x]
        for v in range(1, 16):
            j = 0
            while not (v >> j) & 1:
                j += 1
            source = quads[16 * g + (v & (v - 1))]
            target = quads[16 * g + v]
            row = d[4 * g + j]
            for x in range(width):
                target[x] = source[x] - 2 * row[x]


def _window_sums_py(
    offsets: Any, masks: Any, d: Any, quads: Any, base: Any, rows: int, out: Any, sumsq: Any
) -> bool:
    """numba body: row ``c`` of ``base + W·D`` in float32 for a windowed ``W`` in compact form
    (row c: ±1 on rows ``(offsets[c] + i) mod r`` of the ±1 ``d`` (r × width), signs as masks),
    and ``sumsq[x] = Σ_c out[c, x]²`` (int32: exact for fewer than 2**17 rows, 127²·2**17 < 2**31).

    Stored in the layout of :func:`fused_float32`'s row blocks: the piece of columns ``[r0, r1)``
    (``rows`` wide) and row ``c`` lands at ``out[r0·q + c·(r1−r0) + (x − r0)]`` (q = rows of W);
    with ``rows`` >= width that is plain row-major. For A+E: ``base`` = Aᵀ, ``d`` = E_Lᵀ, W = E_Rᵀ
    (each piece (A+E)ᵀ of a row block, contiguous); for B+F: ``base`` = B, ``d`` = F_R, W = F_L.

    A window's rows come four at a time from ``quads`` (:func:`_quad_rows_py`) wherever they make a
    whole aligned group (rows 4g..4g+3), the four signs picking the pattern; the rows before the
    first group and after the last are added one by one, negated by their mask, ``(x ^ mask) − mask``.
    About s/4 + 3 branch-free int8 vector adds a row (s = 64: 17 or 18, against 32 adds of
    row pairs: 20 % less time at 512², measured). The int8 running sums may wrap while they are
    summed: the result, |base| + s <= 127 while |base| <= 63 (s <= 64), is exact modulo 256 and so
    exact (False, the result unusable, when an entry of ``base`` is beyond ±63)."""
    q, nonzeros = masks.shape
    rank, width = d.shape
    acc = np.zeros(width, dtype=np.int8)
    wide = np.zeros(width, dtype=np.int32)
    low = np.int8(0)
    high = np.int8(0)
    for x in range(width):
        sumsq[x] = 0
    for c in range(q):
        low, high = _load_row(acc, base[c], low, high)
        row = offsets[c]
        i = 0
        while i < nonzeros:
            if row & 3 == 0 and i + 4 <= nonzeros and row + 4 <= rank:
                pattern = (masks[c, i] & 1) | (masks[c, i + 1] & 2) | (masks[c, i + 2] & 4) | (masks[c, i + 3] & 8)
                source = quads[4 * row + pattern]
                for x in range(width):
                    acc[x] += source[x]
                i += 4
                row += 4
            else:
                mask = masks[c, i]
                source = d[row]
                for x in range(width):
                    acc[x] += (source[x] ^ mask) - mask
                i += 1
                row += 1
            if row >= rank:
                row -= rank
        for x in range(width):
            v = np.int32(acc[x])
            wide[x] = v
            sumsq[x] += v * v
        for r0 in range(0, width, rows):  # through slices: the conversions vectorise (indexed, they did not)
            height = min(rows, width - r0)
            piece = out[r0 * q + c * height : r0 * q + (c + 1) * height]
            source_row = wide[r0 : r0 + height]
            for x in range(height):
                piece[x] = np.float32(source_row[x])
    return bool(-PAYLOAD_BOUND <= low and high <= PAYLOAD_BOUND)


def _transpose_py(x: Any, out: Any) -> None:
    """numba body: ``out = xᵀ`` for a contiguous int8 ``x``: by 8 × 8 words where both sides are
    multiples of 8 on a little-endian host (:func:`_transpose8_py`), else entry by entry."""
    rows, cols = x.shape
    if LITTLE_ENDIAN and rows % 8 == 0 and cols % 8 == 0:
        _transpose8_jit(x, out)
        return
    for i in range(rows):
        for j in range(cols):
            out[j, i] = x[i, j]


def _windowed_operand_py(
    offsets: Any, masks: Any, d: Any, base: Any, transpose: bool, rows: int, out: Any, sumsq: Any
) -> bool:
    """numba body: :func:`_window_sums_py` over ``base`` (or, if ``transpose``, over ``baseᵀ``),
    with the four-row table of ``d`` (:func:`_quad_rows_py`) built here: a noisy operand in one call
    (inside a training step each call costs several µs: cold caches)."""
    quads = np.empty((16 * (d.shape[0] // 4), d.shape[1]), dtype=np.int8)
    _quad_rows_jit(d, quads)
    if not transpose:
        return _window_sums_jit(offsets, masks, d, quads, base, rows, out, sumsq)
    base_t = np.empty((base.shape[1], base.shape[0]), dtype=np.int8)
    _transpose_jit(base, base_t)
    return _window_sums_jit(offsets, masks, d, quads, base_t, rows, out, sumsq)


def _mix_float_py(acc: Any, state: Any, chunk_index: int) -> None:
    """numba body: fold every state with the running sum held (exactly) in float32 ``acc``; chunk 0
    starts from h = 0 (so ``state`` need not be zeroed first)."""
    add = np.uint32(chunk_index + 1)
    mul = np.uint32(MIX_MULTIPLIER)
    shift = np.uint32(16)
    if chunk_index == 0:
        for j in range(state.size):
            u = np.uint32(np.uint32(np.int32(acc[j])) * mul)
            state[j] = np.uint32(np.uint32(u ^ (u >> shift)) + add)
        return
    for j in range(state.size):
        p = np.int32(acc[j])
        u = np.uint32(np.uint32(state[j] ^ np.uint32(p)) * mul)
        state[j] = np.uint32(np.uint32(u ^ (u >> shift)) + add)


def _gemm_acc_py(a: Any, b: Any, out: Any) -> None:
    """numba body: ``out += a @ b`` in float32, a 4×4 block of ``a`` per pass over four rows of ``b``
    (the innermost loop runs over contiguous rows of ``b`` and ``out``: vectorised, and each store
    of ``out`` carries four products). Exact in any order while every sum of |products| stays
    below 2**24 (integers: every intermediate is then a representable integer)."""
    m, k = a.shape
    n = b.shape[1]
    k4 = k - k % 4
    i = 0
    while i + 4 <= m:
        out0, out1, out2, out3 = out[i], out[i + 1], out[i + 2], out[i + 3]
        for col in range(0, k4, 4):
            s0, s1, s2, s3 = b[col], b[col + 1], b[col + 2], b[col + 3]
            a00, a01, a02, a03 = a[i, col], a[i, col + 1], a[i, col + 2], a[i, col + 3]
            a10, a11, a12, a13 = a[i + 1, col], a[i + 1, col + 1], a[i + 1, col + 2], a[i + 1, col + 3]
            a20, a21, a22, a23 = a[i + 2, col], a[i + 2, col + 1], a[i + 2, col + 2], a[i + 2, col + 3]
            a30, a31, a32, a33 = a[i + 3, col], a[i + 3, col + 1], a[i + 3, col + 2], a[i + 3, col + 3]
            for x in range(n):
                v0, v1, v2, v3 = s0[x], s1[x], s2[x], s3[x]
                out0[x] += a00 * v0 + a01 * v1 + a02 * v2 + a03 * v3
                out1[x] += a10 * v0 + a11 * v1 + a12 * v2 + a13 * v3
                out2[x] += a20 * v0 + a21 * v1 + a22 * v2 + a23 * v3
                out3[x] += a30 * v0 + a31 * v1 + a32 * v2 + a33 * v3
        for col in range(k4, k):
            source = b[col]
            v0, v1, v2, v3 = a[i, col], a[i + 1, col], a[i + 2, col], a[i + 3, col]
            for x in range(n):
                value = source[x]
                out0[x] += v0 * value
                out1[x] += v1 * value
                out2[x] += v2 * value
                out3[x] += v3 * value
        i += 4
    while i < m:
        row = out[i]
        for col in range(k):
            v = a[i, col]
            source = b[col]
            for x in range(n):
                row[x] += v * source[x]
        i += 1


def _as_float32_py(x: Any, out: Any) -> None:
    rows, cols = x.shape
    for i in range(rows):
        for j in range(cols):
            out[i, j] = np.float32(x[i, j])


def _small_product_py(
    a: Any, b: Any, e_left: Any, e_right: Any, f_left: Any, f_right: Any, chunk: int, weights: Any,
    b_noisy: Any, c_out: Any, useful: Any, lanes: Any,
) -> None:
    """numba body: the whole noisy product of a small A (m×k)·B (k×n) in one call, in float32 (exact:
    k <= 1040, so every partial sum is at most k·127² < 2**24, and every noisy entry at most 63 + r):
    A+E = A + E_L·E_R and B+F = B + F_L·F_R, the chunked running sums and the mix, the tile lanes,
    B+F into ``b_noisy``, C' into ``c_out`` and the plain A·B into ``useful`` (cheaper than
    denoising at these sizes)."""
    m, k = a.shape
    n = b.shape[1]
    rank = e_left.shape[1]
    a_float = np.empty((m, k), dtype=np.float32)
    _as_float32_jit(a, a_float)
    b_float = np.empty((k, n), dtype=np.float32)
    _as_float32_jit(b, b_float)
    e_left_f = np.empty((m, rank), dtype=np.float32)
    _as_float32_jit(e_left, e_left_f)
    e_right_f = np.empty((rank, k), dtype=np.float32)
    _as_float32_jit(e_right, e_right_f)
    f_left_f = np.empty((k, rank), dtype=np.float32)
    _as_float32_jit(f_left, f_left_f)
    f_right_f = np.empty((rank, n), dtype=np.float32)
    _as_float32_jit(f_right, f_right_f)
    a_noisy = a_float.copy()
    _gemm_acc_jit(e_left_f, e_right_f, a_noisy)
    b_noisy[:, :] = b_float
    _gemm_acc_jit(f_left_f, f_right_f, b_noisy)
    partial = np.zeros((m, n), dtype=np.float32)
    state = np.zeros((m, n), dtype=np.uint32)
    mul = np.uint32(MIX_MULTIPLIER)
    shift = np.uint32(16)
    c = 0
    for start in range(0, k, chunk):
        stop = min(start + chunk, k)
        _gemm_acc_jit(a_noisy[:, start:stop], b_noisy[start:stop], partial)
        add = np.uint32(c + 1)
        for i in range(m):
            out = partial[i]
            hold = state[i]
            for x in range(n):
                u = np.uint32(np.uint32(hold[x] ^ np.uint32(np.int32(out[x]))) * mul)
                hold[x] = np.uint32(np.uint32(u ^ (u >> shift)) + add)
        c += 1
    plain = np.zeros((m, n), dtype=np.float32)
    _gemm_acc_jit(a_float, b_float, plain)
    for i in range(m):
        for x in range(n):
            useful[i, x] = np.int32(plain[i, x])
            c_out[i, x] = np.int32(partial[i, x])
    _tile_lanes_jit(state, weights, weights.shape[1], weights.shape[2], lanes)


def _scatter_windows_py(offsets: Any, signs: Any, out: Any) -> None:
    """numba body: column c of ``out`` (r×cols, zeroed) gets ``signs[c, i]`` at row (o_c + i) mod r."""
    rank = out.shape[0]
    for c in range(signs.shape[0]):
        row = offsets[c]  # in [0, rank): the window wraps at most once (nonzeros <= rank)
        for i in range(signs.shape[1]):
            out[row, c] = signs[c, i]
            row += 1
            if row == rank:
                row = 0


def _unpack_masks_py(raw: Any, out: Any) -> None:
    """numba body: ``out[i] = −bit_i`` (flat int8: a window sign mask, bit 1 → −1, else 0) for the
    bits of ``raw``, little-endian within a byte (a byte at a time: eight stores per load, vectorised)."""
    count = out.shape[0]
    full = count // 8
    for byte in range(full):
        value = raw[byte]
        for bit in range(8):
            out[8 * byte + bit] = np.int8(-((value >> bit) & 1))
    for idx in range(8 * full, count):
        out[idx] = np.int8(-((raw[idx >> 3] >> (idx & 7)) & 1))


_unpack_masks = _jit(_unpack_masks_py)


def _unpack_signs_t_py(raw: Any, out_t: Any) -> None:
    """numba body: the transpose (cols×rows) of the rows×cols sign matrix whose row-major bits are
    ``raw`` (cols a multiple of 8, so a row starts on a byte): byte column ``jb`` of the rows is
    gathered once, then each of its eight bits is one contiguous output row."""
    cols, rows = out_t.shape
    row_bytes = cols // 8
    column = np.empty(rows, dtype=np.uint8)
    for jb in range(row_bytes):
        for i in range(rows):
            column[i] = raw[i * row_bytes + jb]
        for bit in range(8):
            target = out_t[8 * jb + bit]
            for i in range(rows):
                target[i] = np.int8(1 - 2 * ((column[i] >> bit) & 1))


_unpack_signs_t = _jit(_unpack_signs_t_py)


def _window_masks_py(raw: Any, start: int, rank: int, offsets: Any, masks: Any) -> None:
    """numba body: from ``raw[start:]``, one little-endian 64-bit word per column (its offset is the
    word mod r: r divides 2**64, no word is rejected), then the columns' window sign bits, as
    masks (bit 1 → −1, else 0)."""
    cols = masks.shape[0]
    low = np.uint64(rank - 1)
    for c in range(cols):
        word = np.uint64(0)
        for byte in range(8):
            word |= np.uint64(raw[start + 8 * c + byte]) << np.uint64(8 * byte)
        offsets[c] = np.int64(word & low)
    _unpack_masks(raw[start + 8 * cols :], masks.reshape(-1))  # bit c·s + i: row-major masks


_window_masks = _jit(_window_masks_py)


def _factor_pair_py(raw: Any, rows: int, rank: int, cols: int, nonzeros: int) -> tuple[Any, Any, Any]:
    """numba body of :func:`factor_pair`: (the r×rows transpose of the signs, the window offsets,
    the window masks), all allocated here, so that the draw of a factor pair is one call."""
    signs_t = np.empty((rank, rows), dtype=np.int8)
    _unpack_signs_t(raw, signs_t)
    offsets = np.empty(cols, dtype=np.int64)
    masks = np.empty((cols, nonzeros), dtype=np.int8)
    _window_masks(raw, (rows * rank + 7) // 8, rank, offsets, masks)
    return signs_t, offsets, masks


def _swap_bits_py(low: Any, high: Any, shift: Any, keep: Any) -> tuple[Any, Any]:
    """numba body: swap the ``keep`` bits of ``high`` with the bits ``shift`` above them in ``low``."""
    t = ((low >> shift) ^ high) & keep
    return low ^ (t << shift), high ^ t


_swap_bits = _jit(_swap_bits_py)


def _transpose8_py(x: Any, out: Any) -> None:
    """numba body: ``out = xᵀ`` for a contiguous int8 ``x`` whose sides are multiples of 8: each
    8 × 8 block is read as eight 64-bit words (one per row), transposed in registers by three
    rounds of masked swaps (bytes, then pairs, then quads), and written as eight words."""
    rows, cols = x.shape
    words = x.view(np.uint64)  # rows × cols/8
    out_words = out.view(np.uint64)  # cols × rows/8
    keep8 = np.uint64(0x00FF00FF00FF00FF)
    keep16 = np.uint64(0x0000FFFF0000FFFF)
    keep32 = np.uint64(0x00000000FFFFFFFF)
    s8 = np.uint64(8)
    s16 = np.uint64(16)
    s32 = np.uint64(32)
    for bi in range(rows // 8):
        r0 = 8 * bi
        for bj in range(cols // 8):
            w0, w1, w2, w3 = words[r0, bj], words[r0 + 1, bj], words[r0 + 2, bj], words[r0 + 3, bj]
            w4, w5, w6, w7 = words[r0 + 4, bj], words[r0 + 5, bj], words[r0 + 6, bj], words[r0 + 7, bj]
            w0, w1 = _swap_bits(w0, w1, s8, keep8)  # bytes
            w2, w3 = _swap_bits(w2, w3, s8, keep8)
            w4, w5 = _swap_bits(w4, w5, s8, keep8)
            w6, w7 = _swap_bits(w6, w7, s8, keep8)
            w0, w2 = _swap_bits(w0, w2, s16, keep16)  # byte pairs
            w1, w3 = _swap_bits(w1, w3, s16, keep16)
            w4, w6 = _swap_bits(w4, w6, s16, keep16)
            w5, w7 = _swap_bits(w5, w7, s16, keep16)
            w0, w4 = _swap_bits(w0, w4, s32, keep32)  # quads
            w1, w5 = _swap_bits(w1, w5, s32, keep32)
            w2, w6 = _swap_bits(w2, w6, s32, keep32)
            w3, w7 = _swap_bits(w3, w7, s32, keep32)
            c0 = 8 * bj
            out_words[c0, bi], out_words[c0 + 1, bi], out_words[c0 + 2, bi], out_words[c0 + 3, bi] = w0, w1, w2, w3
            out_words[c0 + 4, bi], out_words[c0 + 5, bi], out_words[c0 + 6, bi], out_words[c0 + 7, bi] = w4, w5, w6, w7


def _blake3_g_py(v: Any, a: int, b: int, c: int, d: int, mx: Any, my: Any) -> None:
    """numba body: BLAKE3's quarter-round on the state ``v`` (uint64 words holding 32-bit values)."""
    mask = np.uint64(0xFFFFFFFF)
    va = (v[a] + v[b] + mx) & mask
    vd = v[d] ^ va
    vd = ((vd >> np.uint64(16)) | (vd << np.uint64(16))) & mask
    vc = (v[c] + vd) & mask
    vb = v[b] ^ vc
    vb = ((vb >> np.uint64(12)) | (vb << np.uint64(20))) & mask
    va = (va + vb + my) & mask
    vd = vd ^ va
    vd = ((vd >> np.uint64(8)) | (vd << np.uint64(24))) & mask
    vc = (vc + vd) & mask
    vb = vb ^ vc
    vb = ((vb >> np.uint64(7)) | (vb << np.uint64(25))) & mask
    v[a], v[b], v[c], v[d] = va, vb, vc, vd


_blake3_g = _jit(_blake3_g_py)

BLAKE3_PERMUTATION = np.array([2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8], dtype=np.int64)
TICKET_FLAGS = 16 | 8 | 2 | 1  # KEYED_HASH | ROOT | CHUNK_END | CHUNK_START: one block, the whole message


def _tickets_py(key: Any, sigma: Any, lanes: Any, permutation: Any, out: Any) -> bool:
    """numba body: ``out[t]`` = the 8 output words of the keyed BLAKE3 of σ_m ‖ t (8 bytes LE) ‖
    the 4 lanes of tile t (4-byte big-endian words): one compression of one 56-byte block (the
    message words: σ_m's 8, the index's 2, the lanes byte-swapped, 2 of zero padding), chaining
    value = the key, counter 0, block length 56, flags KEYED_HASH | ROOT | CHUNK_END | CHUNK_START.
    Returns False, ``out`` unusable, if a lane lies outside [0, 2**32) (checked here: a numpy
    reduction costs more than all the hashing)."""
    for t in range(lanes.shape[0]):
        for i in range(4):
            if lanes[t, i] < 0 or lanes[t, i] > 0xFFFFFFFF:
                return False
    v = np.zeros(16, dtype=np.uint64)
    m = np.zeros(16, dtype=np.uint64)
    scratch = np.zeros(16, dtype=np.uint64)
    for t in range(lanes.shape[0]):
        for i in range(8):
            m[i] = sigma[i]
            v[i] = key[i]
        m[8] = np.uint64(t & 0xFFFFFFFF)
        m[9] = np.uint64(t >> 32)
        for i in range(4):
            x = np.uint64(lanes[t, i])
            m[10 + i] = (((x & np.uint64(0xFF)) << np.uint64(24)) | ((x & np.uint64(0xFF00)) << np.uint64(8))
                         | ((x >> np.uint64(8)) & np.uint64(0xFF00)) | ((x >> np.uint64(24)) & np.uint64(0xFF)))
        m[14] = 0
        m[15] = 0
        v[8] = np.uint64(0x6A09E667)
        v[9] = np.uint64(0xBB67AE85)
        v[10] = np.uint64(0x3C6EF372)
        v[11] = np.uint64(0xA54FF53A)
        v[12] = 0
        v[13] = 0
        v[14] = np.uint64(56)
        v[15] = np.uint64(TICKET_FLAGS)
        for round_index in range(7):
            _blake3_g(v, 0, 4, 8, 12, m[0], m[1])
            _blake3_g(v, 1, 5, 9, 13, m[2], m[3])
            _blake3_g(v, 2, 6, 10, 14, m[4], m[5])
            _blake3_g(v, 3, 7, 11, 15, m[6], m[7])
            _blake3_g(v, 0, 5, 10, 15, m[8], m[9])
            _blake3_g(v, 1, 6, 11, 12, m[10], m[11])
            _blake3_g(v, 2, 7, 8, 13, m[12], m[13])
            _blake3_g(v, 3, 4, 9, 14, m[14], m[15])
            if round_index < 6:
                for i in range(16):
                    scratch[i] = m[permutation[i]]
                for i in range(16):
                    m[i] = scratch[i]
        for i in range(8):
            out[t, i] = np.uint32(v[i] ^ v[i + 8])
    return True


def _within_py(x: Any, bound: int) -> bool:
    """numba body: every entry of the flat int8 ``x`` within ±``bound``."""
    low = np.int8(0)
    high = np.int8(0)
    for j in range(x.size):
        low = min(low, x[j])
        high = max(high, x[j])
    return bool(-bound <= low and high <= bound)


def _transposed_within_py(a: Any, b: Any, bound: int, bt: Any) -> bool:
    """numba body: ``bt = bᵀ``, and whether every entry of ``a`` and ``b`` lies within ±``bound``."""
    _transpose_jit(b, bt)
    return _within_jit(a.reshape(-1), bound) and _within_jit(bt.reshape(-1), bound)


def _mix_lanes_py(acc: Any, state: Any, chunk_index: int, weights: Any, tile_m: int, tile_n: int, out: Any) -> None:
    """numba body: the last chunk's :func:`_mix_float_py` on a row block (``state`` 2-D, ``acc``
    flat), then its tiles' lanes (:func:`_tile_lanes_py`): two passes, one call."""
    _mix_float(acc, state.reshape(-1), chunk_index)
    _tile_lanes_jit(state, weights, tile_m, tile_n, out)


_accumulate_mix = _jit(_accumulate_mix_py)
_within_jit = _jit(_within_py)
_transpose8_jit = _jit(_transpose8_py)
_tickets_jit = _jit(_tickets_py)
_factor_pair_jit = _jit(_factor_pair_py)
_scatter_windows_jit = _jit(_scatter_windows_py)
_tile_lanes_jit = _jit(_tile_lanes_py)
_sparse_rows_jit = _jit(_sparse_rows_py)
_window_sums_jit = _jit(_window_sums_py)
_quad_rows_jit = _jit(_quad_rows_py)
_noisy_rows_t_jit = _jit(_noisy_rows_t_py)
_gemm_acc_jit = _jit(_gemm_acc_py)
_as_float32_jit = _jit(_as_float32_py)
_small_product_jit = _jit(_small_product_py)
_mix_float = _jit(_mix_float_py)
_transpose_jit = _jit(_transpose_py)
_windowed_operand_jit = _jit(_windowed_operand_py)
_transposed_within_jit = _jit(_transposed_within_py)
_mix_lanes_jit = _jit(_mix_lanes_py)


def scatter_windows(
    offsets: npt.NDArray[np.int64], signs: npt.NDArray[np.int8], rank: int, transposed: bool = False
) -> npt.NDArray[np.int8]:
    """The r×cols windowed ternary matrix of ``pouw.noise.draw_windows`` from its offsets and signs
    (its cols×r transpose, contiguous, if ``transposed``)."""
    cols, nonzeros = signs.shape
    out = np.zeros((cols, rank) if transposed else (rank, cols), dtype=np.int8)
    if HAVE_NUMBA:
        _scatter_windows_jit(offsets, np.ascontiguousarray(signs), out.T if transposed else out)
    else:
        rows = (offsets[:, None] + np.arange(nonzeros)[None, :]) % rank
        (out.T if transposed else out)[rows, np.arange(cols)[:, None]] = signs
    return out


def tile_tickets(sigma_m: bytes, lanes: npt.NDArray[np.int64], key: bytes) -> list[bytes] | None:
    """Every tile's ticket (keyed BLAKE3 of σ_m ‖ index ‖ lanes, see pouw/kernels/blake3_triton.py
    ``tickets_host``, the reference) in one numba call, or None without numba or on a big-endian
    host: one compression a tile instead of a ``blake3`` call each (~2 µs of Python per tile).

    Few numpy calls on purpose: inside a training step each costs several µs (cold caches)."""
    if not HAVE_NUMBA or not LITTLE_ENDIAN or len(key) != 32 or len(sigma_m) != 32:
        return None
    rows = np.ascontiguousarray(lanes, dtype=np.int64).reshape(-1, LANES)
    out = np.empty((rows.shape[0], 8), dtype=np.uint32)
    if not _tickets_jit(_key_words(key), np.frombuffer(sigma_m, dtype=np.uint32), rows, BLAKE3_PERMUTATION, out):
        raise ValueError("lanes must lie in [0, 2**32)")
    data = out.tobytes()  # native uint32 on a little-endian host: the ticket's byte order
    return [data[32 * t : 32 * t + 32] for t in range(rows.shape[0])]


@functools.lru_cache(maxsize=8)
def _key_words(key: bytes) -> npt.NDArray[np.uint32]:
    """A 32-byte BLAKE3 key as its eight little-endian words (read-only: shared between calls)."""
    words = np.frombuffer(key, dtype="<u4").astype(np.uint32)
    words.flags.writeable = False
    return words


def transposed_within(
    a: npt.NDArray[np.int8], b: npt.NDArray[np.int8], bound: int
) -> tuple[npt.NDArray[np.int8], bool]:
    """(bᵀ contiguous, whether every entry of ``a`` and ``b`` lies within ±``bound``): one numba call
    for contiguous operands, else :func:`transpose_int8` and :func:`within`."""
    if HAVE_NUMBA and a.flags.c_contiguous and b.flags.c_contiguous and a.size and b.size:
        bt = np.empty((b.shape[1], b.shape[0]), dtype=np.int8)
        return bt, bool(_transposed_within_jit(a, b, bound, bt))
    bt = transpose_int8(b)
    return bt, within(a, bound) and within(bt, bound)


def within(x: npt.NDArray[np.int8], bound: int) -> bool:
    """Whether every entry of the int8 array ``x`` lies in [−bound, bound] (one pass, no int8 ``abs``)."""
    if not x.size:
        return True
    if HAVE_NUMBA and x.flags.c_contiguous:
        return bool(_within_jit(x.reshape(-1), bound))
    return int(x.max()) <= bound and int(x.min()) >= -bound


def factor_pair(
    raw: bytes, rows: int, rank: int, cols: int, nonzeros: int
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64], npt.NDArray[np.int8]] | None:
    """A factor pair of a power-of-two ``rank`` (a multiple of 8) from its bytes (see
    ``pouw.noise._draw_factor_pair``): (the r×rows transpose of the rows×r signs, the window
    offsets, the window sign masks), or None without numba or for r < 8."""
    if not HAVE_NUMBA or rank % 8:
        return None
    signs_t, offsets, masks = _factor_pair_jit(np.frombuffer(raw, dtype=np.uint8), rows, rank, cols, nonzeros)
    return signs_t, offsets, masks


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
    weights: npt.NDArray[Any],
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
            _tile_lanes_jit(state, weights.astype(np.uint32, copy=False), tile_m, tile_n, block_lanes)
        else:
            state_block = state_t[: r1 - r0]
            state_block.zero_()
            for c in range(len(starts)):
                _accumulate_mix_torch(chunk_mm(a_chunks[c][r0:r1], b_chunks[c]), partial, state_block, c)
            block_lanes = lanes[(r0 // tile_m) * tiles_per_row : (r1 // tile_m) * tiles_per_row]
            block_lanes[:] = _tile_lanes_torch(state_block, _weights64(weights), tile_m, tile_n)
    return c_noisy, lanes


def _weights64(weights: npt.NDArray[Any]) -> torch.Tensor:
    """The lane weights (int64 or uint32) as an int64 tensor, for the torch fallbacks."""
    return torch.from_numpy(weights.astype(np.int64, copy=False))


def _tile_lanes_torch(state: torch.Tensor, weights: torch.Tensor, tile_m: int, tile_n: int) -> npt.NDArray[np.int64]:
    m, n = state.shape
    grid = state.reshape(m // tile_m, tile_m, n // tile_n, tile_n).permute(0, 2, 1, 3)
    lanes = [((grid * weights[lane]) % MIX_PRIME).sum(dim=(2, 3)) % MIX_PRIME for lane in range(LANES)]
    return torch.stack(lanes, dim=-1).reshape(-1, LANES).numpy()


# --- the float32 path: the noisy operands built in float32, the running sums accumulated by the GEMM


FLOAT32_EXACT = 1 << 24


def transpose_int8(x: npt.NDArray[np.int8]) -> npt.NDArray[np.int8]:
    """A contiguous transpose of an int8 matrix: with numba and both sides a multiple of 8 (every
    matmul operand), 8 × 8 byte blocks as 64-bit words (:func:`_transpose8_py`: ~4x torch's copy
    at 512², 2x at 2048²); else numpy's below 2**17 entries (no call overhead), torch's above."""
    rows, cols = x.shape
    if HAVE_NUMBA and LITTLE_ENDIAN and rows % 8 == 0 and cols % 8 == 0 and x.flags.c_contiguous:
        out = np.empty((cols, rows), dtype=np.int8)
        _transpose8_jit(x, out)
        return out
    if x.size < 1 << 17:
        return np.ascontiguousarray(x.T)
    return torch.from_numpy(np.ascontiguousarray(x)).t().contiguous().numpy()


WIDTH_EXACT = FLOAT32_EXACT // (127 * 127)
"""1040: below this inner width every partial sum of int8 products (|x| <= 127) is exact in float32."""


@dataclass(frozen=True, slots=True)
class NoisyOperands:
    """A+E as float32 pieces ``a_pieces[block][c]`` (rows ``[block·rows, (block+1)·rows)``, columns
    ``[c·t, (c+1)·t)``: a contiguous matrix or the transpose of one), B+F (k×n) in float32, and the
    squared norms of A+E's rows and B+F's columns (None when k <= 1040 makes them unnecessary);
    ``a`` is the whole A+E (m×k float32, row-major) when it was built as one matrix."""

    a_pieces: list[list[torch.Tensor]]
    rows: int
    b: torch.Tensor
    a_sumsq: npt.NDArray[np.int64] | None = None
    b_sumsq: npt.NDArray[np.int64] | None = None
    a: torch.Tensor | None = None

    @property
    def m(self) -> int:
        """Rows of A+E: the last row block may be shorter than ``rows``."""
        return (len(self.a_pieces) - 1) * self.rows + int(self.a_pieces[-1][0].shape[0])

    def product_bound(self) -> int:
        """An integer bound on every |partial sum| of (A+E)(B+F) in any summation order: by
        Cauchy-Schwarz ``Σ_l |a_il·b_lj| <= ‖a_i‖₂·‖b_j‖₂``, else ``k·127²``."""
        if self.a_sumsq is None or self.b_sumsq is None:
            return int(self.b.shape[0]) * 127 * 127
        return math.isqrt(int(self.a_sumsq.max(initial=0)) * int(self.b_sumsq.max(initial=0))) + 1

    def float32_accumulation_exact(self) -> bool:
        """Whether every running sum, in any summation order, is exact in float32."""
        return self.product_bound() <= FLOAT32_EXACT


def noisy_operands(a: torch.Tensor, b: torch.Tensor, noise: Any, chunk: int, rows: int | None = None) -> NoisyOperands:
    """A+E and B+F in float32 straight from the noise factors (``pouw.noise.NoiseFactors`` on the
    CPU) and the int8 operands, without an int8 E or F or a separate conversion; A+E in the pieces
    that :func:`fused_float32` multiplies, for row blocks of ``rows`` (default :func:`block_rows`).

    Wide products with r <= 64 (every column of E_R then fully non-zero) build A+E row-major by r
    int8 row adds (:func:`_noisy_rows_t_py`: no transposes of A and E_L, ~14 ms less at 2048² on
    AVX2), the row blocks' chunks being strided views. Other wide products (k > 1040, where the
    exactness check needs the norms) and sparse windows (r > 128) take the numba window kernel
    (:func:`_window_sums_py`: ``s = min(r, 64)`` masked int8 vector adds per entry, from the
    draw's compact windows, every store contiguous, the norms on the way);
    the others ``A + E_L·E_R`` by a float32 ``addmm`` per chunk (exact: every value is at most
    63 + r), a few calls in all for the small products of a step.
    (Measured at 2048² on AVX2: the GEMM route is no faster there, since its strided chunk copies
    and norms cost what the windows save.) Without numba the GEMM route serves every size, with
    float32 sums of squares per chunk (at most t·127² < 2**24, exact) added in float64."""
    m, k = a.shape
    n = b.shape[1]
    if k >= 1 << 17 or chunk > 1024:
        raise ValueError(f"inner width {k} or chunk {chunk} beyond the float32 path")
    rows = block_rows(m, n, 64) if rows is None else rows
    rank = noise.rank
    starts = range(0, k, chunk)
    blocks = range(0, m, rows)
    sparse = rank > 2 * NOISE_BOUND and m * k * NOISE_BOUND >= 1 << 20
    wide = k > WIDTH_EXACT
    compact = noise.compact
    windowed = HAVE_NUMBA and (sparse or wide)
    a_norms: npt.NDArray[np.int64] | None = None
    b_norms: npt.NDArray[np.int64] | None = None
    a_whole: torch.Tensor | None = None
    if HAVE_NUMBA and wide and rank <= NOISE_BOUND:  # r = s: row adds, no transposes, as many adds
        whole2d = np.empty((m, k), dtype=np.float32)
        norms32 = np.empty(m, dtype=np.int32)
        if not _noisy_rows_t_jit(noise.e_left.numpy(), noise.e_right.numpy(), a.numpy(), whole2d, norms32):
            raise ValueError(f"an operand beyond ±{PAYLOAD_BOUND}: its int8 running sums would wrap")
        a_whole = torch.from_numpy(whole2d)
        pieces = [[a_whole[r0 : r0 + rows, s : s + chunk] for s in starts] for r0 in blocks]
        a_norms = norms32.astype(np.int64)
    elif windowed and compact is not None:
        flat = np.empty(m * k, dtype=np.float32)
        norms32 = np.empty(m, dtype=np.int32)
        windows = compact.e_windows  # ~s/4 adds of signed row groups of E_Lᵀ per column of A, on Aᵀ
        a_host = np.ascontiguousarray(a.numpy())
        if not _windowed_operand_jit(windows.offsets, windows.masks, compact.e_left_t, a_host, True, rows, flat,
                                     norms32):
            raise ValueError(f"an operand beyond ±{PAYLOAD_BOUND}: its int8 running sums would wrap")
        pieces = []  # numpy views made tensors once each: a torch view costs several µs here
        for r0 in blocks:
            height = min(rows, m - r0)
            pieces.append([
                torch.from_numpy(flat[r0 * k + s * height : r0 * k + min(s + chunk, k) * height]
                                 .reshape(min(chunk, k - s), height).T)
                for s in starts
            ])
        a_norms = norms32.astype(np.int64) if wide else None
    else:
        e_left_f, e_right_f = noise.e_left.to(torch.float32), noise.e_right.to(torch.float32)
        a_chunks = []
        squares = torch.zeros(m, dtype=torch.float64)
        for s in starts:
            piece = host_copy(a[:, s : s + chunk], torch.float32)
            piece.addmm_(e_left_f, e_right_f[:, s : s + chunk])
            a_chunks.append(piece)
            if wide:
                squares += (piece * piece).sum(1, dtype=torch.float64)
        pieces = [[piece[r0 : r0 + rows] for piece in a_chunks] for r0 in blocks]
        a_norms = squares.to(torch.int64).numpy() if wide else None
    if windowed and compact is not None:
        b_rows = np.empty((k, n), dtype=np.float32)
        norms32 = np.empty(n, dtype=np.int32)
        f_right = np.ascontiguousarray(noise.f_right.numpy())
        windows = compact.f_windows  # ~s/4 adds of signed row groups of F_R per row of B, row-major
        if not _windowed_operand_jit(windows.offsets, windows.masks, f_right, np.ascontiguousarray(b.numpy()), False, n,
                                     b_rows.reshape(-1), norms32):
            raise ValueError(f"an operand beyond ±{PAYLOAD_BOUND}: its int8 running sums would wrap")
        b_noisy = torch.from_numpy(b_rows)
        b_norms = norms32.astype(np.int64) if wide else None
    else:
        b_noisy = host_copy(b, torch.float32).addmm_(noise.f_left.to(torch.float32), noise.f_right.to(torch.float32))
        if wide:
            b_norms = (b_noisy * b_noisy).sum(0, dtype=torch.float64).to(torch.int64).numpy()
    if not wide:
        return NoisyOperands(pieces, rows, b_noisy)
    return NoisyOperands(pieces, rows, b_noisy, a_norms, b_norms, a_whole)


@dataclass(frozen=True, slots=True)
class Correction:
    """``C = C' − left·right`` (left = [A·F_L | E_L], m×2r; right = [F_R ; E_R·(B+F)], 2r×n), both
    float32, and a bound on every partial sum of ``left·right`` (‖left_i‖₁ + ‖right_j‖₁: E_L, F_R ±1)."""

    left: torch.Tensor
    right: torch.Tensor
    bound: int


def correction(a: torch.Tensor, b_noisy: torch.Tensor, noise: Any, a_noisy: torch.Tensor | None = None) -> Correction:
    """The denoising factors of ``pouw.transcript.denoise_fast``, in float32: ``A·F_L`` (|.| <= 63·k)
    and ``E_R·(B+F)`` (|.| <= 127·k) are exact for k < 2**17 (the caller checks).

    Given A+E in float32 (``a_noisy``, r <= 64), ``A·F_L = (A+E)·F_L − E_L·(E_R·F_L)``: no float32
    copy of A; every partial sum is at most 127·k, k or r·k <= 64·k < 2**24, so the same values."""
    f_left = noise.f_left.to(torch.float32)
    if a_noisy is not None and noise.rank <= NOISE_BOUND and a.shape[1] < 1 << 17:
        af = a_noisy @ f_left
        af.sub_(noise.e_left.to(torch.float32) @ (noise.e_right.to(torch.float32) @ f_left))
    else:
        af = host_copy(a, torch.float32) @ f_left
    y = noise.e_right.to(torch.float32) @ b_noisy
    bound = int(af.abs().sum(1, dtype=torch.float64).max()) + int(y.abs().sum(0, dtype=torch.float64).max())
    left = torch.cat([af, noise.e_left.to(torch.float32)], dim=1)
    right = torch.cat([noise.f_right.to(torch.float32), y], dim=0)
    return Correction(left, right, bound)


def fused_float32(
    ops: NoisyOperands,
    chunk: int,
    weights: npt.NDArray[Any],
    fix: Correction | None = None,
    keep_noisy: bool = True,
) -> tuple[torch.Tensor | None, npt.NDArray[np.int64], torch.Tensor | None]:
    """(C' int32 or None, the digest lanes, C = C' − fix.left·fix.right int32 or None) of the noisy
    product.

    Like :func:`fused_transcript`, but the GEMM itself keeps the running sums: each chunk product is
    added by ``addmm`` (beta = 1) into a float32 accumulator of the row block, exact while
    :meth:`NoisyOperands.float32_accumulation_exact` holds (the caller checks), and the numba pass
    only converts and mixes. After the last chunk of a block, while it is still in cache, the
    block's C' is stored (unless ``keep_noisy`` is False: a caller that gets A·B another way needs
    no C', whose every partial sum the lanes have already taken in) and, given ``fix`` with
    ``product_bound + fix.bound < 2**24`` (every partial sum of C' − left·right is then exact), the
    denoised block is one more ``addmm`` (alpha = −1).
    """
    m = ops.m
    k, n = ops.b.shape
    tile_m, tile_n = weights.shape[1], weights.shape[2]
    weights = weights.astype(np.uint32, copy=False)  # every weight is below 2**31
    rows = ops.rows
    if rows % tile_m:
        raise ValueError(f"row blocks of {rows} rows do not hold whole tiles of {tile_m}")
    c_noisy = host_empty((m, n), torch.int32) if keep_noisy else None
    useful = None if fix is None else host_empty((m, n), torch.int32)
    lanes = np.empty(((m // tile_m) * (n // tile_n), LANES), dtype=np.int64)
    b_chunks = [ops.b[s : s + chunk] for s in range(0, k, chunk)]
    acc_buffer = host_empty((rows, n), torch.float32)
    state_buffer = np.empty((rows, n), dtype=np.uint32)  # chunk 0's mix overwrites it (numba)
    tiles_per_row = n // tile_n
    for block, pieces in enumerate(ops.a_pieces):
        r0 = block * rows
        r1 = min(r0 + rows, m)
        acc = acc_buffer[: r1 - r0]
        state = state_buffer[: r1 - r0]
        acc_flat, state_flat = acc.numpy().reshape(-1), state.reshape(-1)
        block_lanes = lanes[(r0 // tile_m) * tiles_per_row : (r1 // tile_m) * tiles_per_row]
        torch.mm(pieces[0], b_chunks[0], out=acc)  # β = 0: no zeroing pass
        if HAVE_NUMBA:
            last = len(b_chunks) - 1
            for c in range(1, last + 1):
                _mix_float(acc_flat, state_flat, c - 1)
                acc.addmm_(pieces[c], b_chunks[c])
            _mix_lanes_jit(acc_flat, state, last, weights, tile_m, tile_n, block_lanes)
        else:
            state[:] = 0
            _mix_float_torch(acc, state, 0)
            for c in range(1, len(b_chunks)):
                acc.addmm_(pieces[c], b_chunks[c])
                _mix_float_torch(acc, state, c)
            wide = torch.from_numpy(state.astype(np.int64))
            block_lanes[:] = _tile_lanes_torch(wide, _weights64(weights), tile_m, tile_n)
        if c_noisy is not None:
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


SMALL_MACS = 1 << 21
"""Products of at most this many MACs (and k <= 1040) run in one numba call (:func:`small_product`):
below ~2M MACs the fixed cost of a dozen torch calls outweighs MKL's faster loops."""


def small_product(
    a: torch.Tensor, b: torch.Tensor, noise: Any, chunk: int, weights: npt.NDArray[Any]
) -> tuple[torch.Tensor, npt.NDArray[np.int64], torch.Tensor, torch.Tensor] | None:
    """(C' int32, lanes, B+F float32, A·B int32) of a small product in one numba call, or None where
    it does not apply (no numba, more than :data:`SMALL_MACS` MACs or k > 1040)."""
    m, k = a.shape
    n = b.shape[1]
    if not HAVE_NUMBA or m * k * n > SMALL_MACS or k > WIDTH_EXACT:
        return None
    b_noisy = np.empty((k, n), dtype=np.float32)
    c_noisy = np.empty((m, n), dtype=np.int32)
    useful = np.empty((m, n), dtype=np.int32)
    lanes = np.empty(((m // weights.shape[1]) * (n // weights.shape[2]), LANES), dtype=np.int64)
    _small_product_jit(
        a.numpy(), b.numpy(), noise.e_left.numpy(), noise.e_right.numpy(), noise.f_left.numpy(),
        noise.f_right.numpy(), chunk, weights.astype(np.uint32, copy=False), b_noisy, c_noisy, useful, lanes,
    )
    return torch.from_numpy(c_noisy), lanes, torch.from_numpy(b_noisy), torch.from_numpy(useful)


def plain_is_cheaper(m: int, k: int, n: int, rank: int) -> bool:
    """Whether a plain product (``mkn`` MACs) recovers A·B cheaper than denoising C'
    (``r·(mk + kn + 2mn)`` MACs: two thin products and one of inner width 2r)."""
    return m * k * n <= rank * (m * k + k * n + 2 * m * n)


def fused_product(
    a: torch.Tensor,
    b: torch.Tensor,
    noise: Any,
    chunk: int,
    weights: npt.NDArray[Any],
    plain_mm: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor | None, npt.NDArray[np.int64], torch.Tensor, torch.Tensor | None] | None:
    """The float32 CPU noisy product of int8 ``a``·``b`` with ``noise``: (C' (None when A·B came
    from ``plain_mm``: nothing needs it then), lanes, B+F as float32, the exact A·B as int32 or None
    when the denoise bound fails), or None when float32 accumulation is not provably exact for these
    operands (the caller then takes :func:`fused_transcript`).

    A·B comes from the cheaper of two exact routes, by MAC count: denoising C' costs
    ``r·(mk + kn + 2mn)`` (two thin products and one of inner width 2r), a plain product
    ``plain_mm(a, b)`` costs ``mkn``; the plain one wins whenever ``n <~ 4r`` (small layers)."""
    m, k = a.shape
    n = b.shape[1]
    rank = noise.rank
    if chunk > 1024 or k >= 1 << 17:
        return None
    if plain_mm is not None and (small := small_product(a, b, noise, chunk, weights)) is not None:
        return small
    plain = plain_mm if plain_mm is not None and plain_is_cheaper(m, k, n, rank) else None
    # A·B first, while A and B are still in cache, where float32 accumulation cannot be refused
    useful = plain(a, b) if plain is not None and k <= WIDTH_EXACT else None
    ops = noisy_operands(a, b, noise, chunk, block_rows(m, n, weights.shape[1]))
    if not ops.float32_accumulation_exact():
        return None
    if plain is not None:
        _, lanes, _ = fused_float32(ops, chunk, weights, keep_noisy=False)
        return None, lanes, ops.b, useful if useful is not None else plain(a, b)
    fix = correction(a, ops.b, noise, ops.a)
    if ops.product_bound() + fix.bound > FLOAT32_EXACT:
        c_noisy, lanes, useful = fused_float32(ops, chunk, weights)
    else:
        c_noisy, lanes, useful = fused_float32(ops, chunk, weights, fix)
    return c_noisy, lanes, ops.b, useful
