"""Keyed BLAKE3 on the device: operand-leaf hashes and tile tickets as Triton kernels.

This module owns the device side of protocol v3's two BLAKE3 hashes (keyed mode, flag KEYED_HASH,
a 32-byte key the caller passes) and their CPU reference:

* ``leaf_hashes(x, block_rows, key)``: the keyed BLAKE3 of every block of ``block_rows`` rows of a
  contiguous int8 (rows, width) tensor (raw bytes, row-major; the last block may be shorter), as a
  (blocks, 32) uint8 tensor on the tensor's device;
* ``tickets(sigma_m, lanes, key)``: the keyed BLAKE3 of σ_m ‖ tile_index (8 bytes, little-endian) ‖
  the 4 lanes (4-byte big-endian words) for every tile, as a (tiles, 32) uint8 device tensor;
* ``first_winner(tickets, threshold)``: the lowest winning tile and the lowest minimum ticket,
  found on the device (the host copies two indices and two tickets, not every ticket);
* ``leaf_hashes_host`` / ``tickets_host``: the same values from the ``blake3`` package (the
  official Rust bindings), the reference the kernels are tested against.

Design. BLAKE3 splits a message into 1024-byte chunks (16 sequential 64-byte block compressions,
counter = chunk index, CHUNK_START on the first block, CHUNK_END on the last) and merges chaining
values pairwise into PARENT nodes; the final compression carries ROOT (on a single-chunk message,
the chunk's last block). Merging level by level, an odd last node carried up unchanged, builds
exactly BLAKE3's left-balanced tree. The chunk kernel gives every chunk of every leaf one vector
lane (the 16 state words are (BLOCK,) uint32 vectors); then one launch per parent level merges all
leaves at once. A matmul's commitments cost 1 + ceil(log2(chunks per leaf)) launches per operand
and no host synchronisation: the launch sequence depends on shapes only. At m = n = k = 8192 with
BM = BN = 64 an operand is 128 leaves of 512 KiB (512 chunks): 128·512·16 = 1,048,576 chunk
compressions and 128·511 = 65,408 parent ones in 1 + 9 launches; the 16,384 tickets are one launch
of one compression each (``leaf_hash_cost`` counts this for any shape).

Tried and left out: one tree launch per leaf instead of one per level. Halving the vectors with
``tl.reshape``/``tl.split`` in a static loop does exactly the useful work but its compile time
doubles per level (74 s for 4 levels, minutes for 9, on this repository's CPU); a runtime loop over
fixed-width vectors with ``tl.gather`` compiles in 6 s (80 registers, no spills at 512 lanes) but
runs levels x width lane-compressions, 9x the useful parent work at 512 chunks per leaf.

Word loads are little-endian: 32-bit loads when every chunk boundary is 4-aligned (the block's
byte length a multiple of 4), else four byte loads per word; a short last block is zero-padded
with its true length as ``block_len``. The byte order assumes a little-endian device (CUDA, x86,
arm64). ``TRITON_INTERPRET=1`` runs the same kernels on CPU tensors with numpy semantics; the tests
hold them to the ``blake3`` package (tests/pouw_kernels/test_blake3_triton.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import blake3
import numpy as np
import numpy.typing as npt
import torch

from pouw.kernels.triton_gpu import HAVE_TRITON, interpreting, tl, triton

KEY_SIZE = 32
OUT_SIZE = 32
CHUNK_LEN = 1024
BLOCK_LEN = 64

# BLAKE3's domain flags (the kernels write them as literals: 16 | 8 | 2 | 1 is KEYED_HASH | ROOT | ...)
CHUNK_START = 1
CHUNK_END = 2
PARENT = 4
ROOT = 8
KEYED_HASH = 16

# Key and σ_m words travel as i32 kernel arguments; Triton must not turn a word equal to 1 into a constant.
_KEY_ARGS = [f"k{i}" for i in range(8)]
_TICKET_ARGS = [f"w{i}" for i in range(16)]


def _words(data: bytes) -> list[int]:
    """The bytes as little-endian 32-bit words, each as the int32 of its bit pattern: kernel
    arguments (typed i32, never specialised), so no key or σ_m is copied to the device."""
    return [int(w) for w in np.frombuffer(data, dtype="<i4")]


def _check_key(key: bytes, name: str = "key") -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise ValueError(f"{name} must be {KEY_SIZE} bytes")


def _require_triton() -> None:
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed: the device BLAKE3 kernels are unavailable")


if HAVE_TRITON:

    @triton.jit
    def _store_words(out, w0, w1, w2, w3, w4, w5, w6, w7, mask):  # type: ignore[no-untyped-def]
        """Store eight uint32 words (a chaining value or a digest) at ``out`` .. ``out + 7``."""
        tl.store(out + 0, w0.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 1, w1.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 2, w2.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 3, w3.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 4, w4.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 5, w5.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 6, w6.to(tl.int32, bitcast=True), mask=mask)
        tl.store(out + 7, w7.to(tl.int32, bitcast=True), mask=mask)

    @triton.jit
    def _g(a, b, c, d, mx, my):  # type: ignore[no-untyped-def]
        """BLAKE3's quarter-round on uint32 tensors (rotations written out: the interpreter pays
        per nested call)."""
        a = a + b + mx
        d = d ^ a
        d = (d >> 16) | (d << 16)
        c = c + d
        b = b ^ c
        b = (b >> 12) | (b << 20)
        a = a + b + my
        d = d ^ a
        d = (d >> 8) | (d << 24)
        c = c + d
        b = b ^ c
        b = (b >> 7) | (b << 25)
        return a, b, c, d

    @triton.jit
    def _compress(  # type: ignore[no-untyped-def]
        c0, c1, c2, c3, c4, c5, c6, c7,
        m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15,
        counter_lo, counter_hi, block_len, flags,
    ):
        """The first 8 output words of one BLAKE3 compression (the chaining value / root output);
        every argument a uint32 tensor of one shape."""
        zero = tl.zeros_like(c0)  # v8..v11: BLAKE3's IV[0..3] (SHA-256's)
        v0, v1, v2, v3, v4, v5, v6, v7 = c0, c1, c2, c3, c4, c5, c6, c7
        v8 = zero + 0x6A09E667
        v9 = zero + 0xBB67AE85
        v10 = zero + 0x3C6EF372
        v11 = zero + 0xA54FF53A
        v12 = counter_lo
        v13 = counter_hi
        v14 = block_len
        v15 = flags
        for _ in tl.static_range(7):
            v0, v4, v8, v12 = _g(v0, v4, v8, v12, m0, m1)
            v1, v5, v9, v13 = _g(v1, v5, v9, v13, m2, m3)
            v2, v6, v10, v14 = _g(v2, v6, v10, v14, m4, m5)
            v3, v7, v11, v15 = _g(v3, v7, v11, v15, m6, m7)
            v0, v5, v10, v15 = _g(v0, v5, v10, v15, m8, m9)
            v1, v6, v11, v12 = _g(v1, v6, v11, v12, m10, m11)
            v2, v7, v8, v13 = _g(v2, v7, v8, v13, m12, m13)
            v3, v4, v9, v14 = _g(v3, v4, v9, v14, m14, m15)
            # the message permutation [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
            m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15 = (
                m2, m6, m3, m10, m7, m0, m4, m13, m1, m11, m12, m5, m9, m14, m15, m8
            )
        return v0 ^ v8, v1 ^ v9, v2 ^ v10, v3 ^ v11, v4 ^ v12, v5 ^ v13, v6 ^ v14, v7 ^ v15

    @triton.jit
    def _message_word(x_ptr, start, end, j: tl.constexpr, mask, WORDS: tl.constexpr):  # type: ignore[no-untyped-def]
        """Little-endian word j of the 64-byte block at byte ``start`` (int64 lanes); bytes at or
        past ``end`` read as zero."""
        offset = start + 4 * j
        if WORDS:
            word = tl.load(x_ptr + offset // 4, mask=mask & (offset < end), other=0).to(tl.uint32, bitcast=True)
        else:
            b0 = tl.load(x_ptr + offset, mask=mask & (offset < end), other=0).to(tl.uint32)
            b1 = tl.load(x_ptr + offset + 1, mask=mask & (offset + 1 < end), other=0).to(tl.uint32)
            b2 = tl.load(x_ptr + offset + 2, mask=mask & (offset + 2 < end), other=0).to(tl.uint32)
            b3 = tl.load(x_ptr + offset + 3, mask=mask & (offset + 3 < end), other=0).to(tl.uint32)
            word = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
        return word

    @triton.jit(do_not_specialize=_KEY_ARGS)
    def _chunk_kernel(  # type: ignore[no-untyped-def]
        x_ptr, cv_ptr, k0, k1, k2, k3, k4, k5, k6, k7,
        total_bytes, leaf_bytes, chunks_per_leaf, chunks_total, max_blocks,
        BLOCK: tl.constexpr, WORDS: tl.constexpr,
    ):
        """One lane per chunk: the chunk's chaining value (or the leaf's root if it is its only chunk);
        ``max_blocks`` (at most 16) is the most 64-byte blocks any chunk has."""
        g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = g < chunks_total
        leaf = g // chunks_per_leaf
        chunk = g - leaf * chunks_per_leaf
        leaf_start = leaf.to(tl.int64) * leaf_bytes
        leaf_len = tl.minimum(leaf_start + leaf_bytes, total_bytes) - leaf_start
        chunk_start = leaf_start + chunk.to(tl.int64) * 1024
        chunk_len = tl.minimum(leaf_len - chunk.to(tl.int64) * 1024, 1024)
        chunk_end = chunk_start + chunk_len
        blocks = tl.maximum((chunk_len + 63) // 64, 1)
        single = leaf_len <= 1024
        zero = tl.zeros([BLOCK], dtype=tl.uint32)
        c0 = zero + k0.to(tl.uint32, bitcast=True)
        c1 = zero + k1.to(tl.uint32, bitcast=True)
        c2 = zero + k2.to(tl.uint32, bitcast=True)
        c3 = zero + k3.to(tl.uint32, bitcast=True)
        c4 = zero + k4.to(tl.uint32, bitcast=True)
        c5 = zero + k5.to(tl.uint32, bitcast=True)
        c6 = zero + k6.to(tl.uint32, bitcast=True)
        c7 = zero + k7.to(tl.uint32, bitcast=True)
        counter = chunk.to(tl.uint32)
        for b in range(0, max_blocks):
            start = chunk_start + b * 64
            active = valid & (b < blocks)
            block_len = tl.minimum(tl.maximum(chunk_len - b * 64, 0), 64).to(tl.uint32)
            last = b == blocks - 1
            flags = zero + 16  # KEYED_HASH
            flags = tl.where(b == 0, flags | 1, flags)  # CHUNK_START
            flags = tl.where(last, flags | 2, flags)  # CHUNK_END
            flags = tl.where(last & single, flags | 8, flags)  # ROOT
            o0, o1, o2, o3, o4, o5, o6, o7 = _compress(
                c0, c1, c2, c3, c4, c5, c6, c7,
                _message_word(x_ptr, start, chunk_end, 0, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 1, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 2, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 3, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 4, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 5, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 6, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 7, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 8, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 9, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 10, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 11, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 12, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 13, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 14, active, WORDS),
                _message_word(x_ptr, start, chunk_end, 15, active, WORDS),
                counter, zero, block_len, flags,
            )
            c0 = tl.where(active, o0, c0)
            c1 = tl.where(active, o1, c1)
            c2 = tl.where(active, o2, c2)
            c3 = tl.where(active, o3, c3)
            c4 = tl.where(active, o4, c4)
            c5 = tl.where(active, o5, c5)
            c6 = tl.where(active, o6, c6)
            c7 = tl.where(active, o7, c7)
        out = cv_ptr + g.to(tl.int64) * 8
        _store_words(out, c0, c1, c2, c3, c4, c5, c6, c7, valid)

    @triton.jit(do_not_specialize=_KEY_ARGS)
    def _parent_kernel(  # type: ignore[no-untyped-def]
        cv_in_ptr, cv_out_ptr, k0, k1, k2, k3, k4, k5, k6, k7,
        leaves, nodes_in, nodes_in_last, nodes_out, total_out,
        BLOCK: tl.constexpr,
    ):
        """One tree level of every leaf: node j of a leaf merges its nodes 2j and 2j+1 (PARENT; ROOT
        when they are its last two) or carries an odd last node up unchanged."""
        g = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = g < total_out
        leaf = g // nodes_out
        j = g - leaf * nodes_out
        count = tl.where(leaf == leaves - 1, nodes_in_last, nodes_in)
        has_right = valid & (2 * j + 1 < count)
        left = cv_in_ptr + (leaf.to(tl.int64) * nodes_in + 2 * j) * 8
        right = left + 8
        zero = tl.zeros([BLOCK], dtype=tl.uint32)
        l0 = tl.load(left + 0, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l1 = tl.load(left + 1, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l2 = tl.load(left + 2, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l3 = tl.load(left + 3, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l4 = tl.load(left + 4, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l5 = tl.load(left + 5, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l6 = tl.load(left + 6, mask=valid, other=0).to(tl.uint32, bitcast=True)
        l7 = tl.load(left + 7, mask=valid, other=0).to(tl.uint32, bitcast=True)
        flags = tl.where(count == 2, zero + (16 | 4 | 8), zero + (16 | 4))  # KEYED_HASH | PARENT (| ROOT)
        o0, o1, o2, o3, o4, o5, o6, o7 = _compress(
            zero + k0.to(tl.uint32, bitcast=True),
            zero + k1.to(tl.uint32, bitcast=True),
            zero + k2.to(tl.uint32, bitcast=True),
            zero + k3.to(tl.uint32, bitcast=True),
            zero + k4.to(tl.uint32, bitcast=True),
            zero + k5.to(tl.uint32, bitcast=True),
            zero + k6.to(tl.uint32, bitcast=True),
            zero + k7.to(tl.uint32, bitcast=True),
            l0, l1, l2, l3, l4, l5, l6, l7,
            tl.load(right + 0, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 1, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 2, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 3, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 4, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 5, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 6, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            tl.load(right + 7, mask=has_right, other=0).to(tl.uint32, bitcast=True),
            zero, zero, zero + 64, flags,
        )
        out = cv_out_ptr + g.to(tl.int64) * 8
        _store_words(
            out, tl.where(has_right, o0, l0), tl.where(has_right, o1, l1), tl.where(has_right, o2, l2),
            tl.where(has_right, o3, l3), tl.where(has_right, o4, l4), tl.where(has_right, o5, l5),
            tl.where(has_right, o6, l6), tl.where(has_right, o7, l7), valid,
        )  # a node without a right sibling is carried up unchanged

    @triton.jit
    def _swap32(x):  # type: ignore[no-untyped-def]
        """The little-endian word of a big-endian 4-byte encoding."""
        return ((x & 0xFF) << 24) | ((x & 0xFF00) << 8) | ((x >> 8) & 0xFF00) | (x >> 24)

    @triton.jit(do_not_specialize=_TICKET_ARGS)
    def _ticket_kernel(  # type: ignore[no-untyped-def]
        lanes_ptr, out_ptr, tiles,
        w0, w1, w2, w3, w4, w5, w6, w7,
        w8, w9, w10, w11, w12, w13, w14, w15,
        BLOCK: tl.constexpr,
    ):
        """One lane per tile: one compression of the 56-byte message; w0..w7 are the key words,
        w8..w15 the σ_m words (int32 bit patterns)."""
        t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        valid = t < tiles
        index = t.to(tl.int64)
        zero = tl.zeros([BLOCK], dtype=tl.uint32)
        lane = lanes_ptr + index * 4
        d0 = _swap32(tl.load(lane + 0, mask=valid, other=0).to(tl.uint32))
        d1 = _swap32(tl.load(lane + 1, mask=valid, other=0).to(tl.uint32))
        d2 = _swap32(tl.load(lane + 2, mask=valid, other=0).to(tl.uint32))
        d3 = _swap32(tl.load(lane + 3, mask=valid, other=0).to(tl.uint32))
        o0, o1, o2, o3, o4, o5, o6, o7 = _compress(
            zero + w0.to(tl.uint32, bitcast=True),
            zero + w1.to(tl.uint32, bitcast=True),
            zero + w2.to(tl.uint32, bitcast=True),
            zero + w3.to(tl.uint32, bitcast=True),
            zero + w4.to(tl.uint32, bitcast=True),
            zero + w5.to(tl.uint32, bitcast=True),
            zero + w6.to(tl.uint32, bitcast=True),
            zero + w7.to(tl.uint32, bitcast=True),
            zero + w8.to(tl.uint32, bitcast=True),
            zero + w9.to(tl.uint32, bitcast=True),
            zero + w10.to(tl.uint32, bitcast=True),
            zero + w11.to(tl.uint32, bitcast=True),
            zero + w12.to(tl.uint32, bitcast=True),
            zero + w13.to(tl.uint32, bitcast=True),
            zero + w14.to(tl.uint32, bitcast=True),
            zero + w15.to(tl.uint32, bitcast=True),
            (index & 0xFFFFFFFF).to(tl.uint32), (index >> 32).to(tl.uint32),
            d0, d1, d2, d3, zero, zero,
            zero, zero, zero + 56, zero + (16 | 8 | 2 | 1),  # KEYED_HASH | ROOT | CHUNK_END | CHUNK_START
        )
        out = out_ptr + index * 8
        _store_words(out, o0, o1, o2, o3, o4, o5, o6, o7, valid)


def _lanes_per_program(count: int) -> int:
    """Lanes per program: 128 on a GPU (one per thread at 4 warps); under the interpreter as many as
    the work, up to 4096 (it runs numpy per program, so fewer programs run faster)."""
    if interpreting():
        return max(16, min(4096, 1 << max(0, count - 1).bit_length()))
    return 128


def tree_levels(chunks: int) -> int:
    """Parent levels of a BLAKE3 tree over ``chunks`` chunks (0 for one chunk)."""
    return max(0, chunks - 1).bit_length()


class _Forest(NamedTuple):
    """The shape of the leaf trees of a (rows, width) tensor cut into blocks of ``block_rows`` rows."""

    leaves: int
    total: int  # bytes of the tensor
    leaf_bytes: int  # bytes of a full leaf (every leaf but possibly the last)
    per_leaf: int  # chunks of a full leaf
    last_chunks: int  # chunks of the last leaf
    chunks: int  # chunks of all leaves
    max_blocks: int  # 64-byte blocks of the longest chunk (the chunk kernel's loop count)


def _forest(rows: int, width: int, block_rows: int) -> _Forest:
    leaves = -(-rows // block_rows)
    total = rows * width
    leaf_bytes = block_rows * width
    last_bytes = total - (leaves - 1) * leaf_bytes
    per_leaf = max(1, -(-leaf_bytes // CHUNK_LEN))
    last_chunks = max(1, -(-last_bytes // CHUNK_LEN))
    chunks = (leaves - 1) * per_leaf + last_chunks if leaves else 0
    max_blocks = max(1, -(-min(leaf_bytes, CHUNK_LEN) // BLOCK_LEN))
    return _Forest(leaves, total, leaf_bytes, per_leaf, last_chunks, chunks, max_blocks)


def leaf_hash_cost(rows: int, width: int, block_rows: int) -> tuple[int, int]:
    """(compressions, launches) of ``leaf_hashes`` on a (rows, width) tensor: every chunk runs
    ``max_blocks`` compressions (masked past its end), every leaf ``chunks - 1`` parent ones."""
    f = _forest(rows, width, block_rows)
    if f.leaves == 0:
        return 0, 0
    parents = (f.leaves - 1) * (f.per_leaf - 1) + f.last_chunks - 1
    return f.chunks * f.max_blocks + parents, 1 + tree_levels(f.per_leaf)


def leaf_hashes(x: torch.Tensor, block_rows: int, key: bytes) -> torch.Tensor:
    """(ceil(rows / block_rows), 32) uint8 on ``x``'s device: row i is the keyed BLAKE3 of the raw
    bytes of ``x[i * block_rows:(i + 1) * block_rows]`` (row-major; the last block may be shorter).

    ``x`` is a contiguous int8 (rows, width) tensor. The launches (1 + tree levels) depend on the
    shape only; nothing is copied between host and device."""
    _check_key(key)
    if x.dtype != torch.int8 or x.dim() != 2 or not x.is_contiguous():
        raise ValueError("leaf_hashes needs a contiguous 2-D int8 tensor")
    if block_rows < 1:
        raise ValueError("block_rows must be positive")
    _require_triton()
    f = _forest(int(x.shape[0]), int(x.shape[1]), block_rows)
    if f.leaves == 0:
        return torch.empty((0, OUT_SIZE), dtype=torch.uint8, device=x.device)
    key_words = _words(key)
    flat = x.reshape(-1)
    words = f.leaf_bytes % 4 == 0 and f.total % 4 == 0 and flat.data_ptr() % 4 == 0 and f.total > 0
    data = flat.view(torch.int32) if words else flat.view(torch.uint8)
    if f.total == 0:
        data = torch.zeros(4, dtype=torch.uint8, device=x.device)  # never read: every load is masked
    cvs = torch.empty((f.chunks, 8), dtype=torch.int32, device=x.device)
    lanes = _lanes_per_program(f.chunks)
    _chunk_kernel[(triton.cdiv(f.chunks, lanes),)](
        data, cvs, *key_words, f.total, f.leaf_bytes, f.per_leaf, f.chunks, f.max_blocks, BLOCK=lanes, WORDS=words,
    )
    leaves = f.leaves
    nodes, nodes_last = f.per_leaf, f.last_chunks
    while nodes > 1:
        out_nodes, out_last = -(-nodes // 2), -(-nodes_last // 2)
        total_out = (leaves - 1) * out_nodes + out_last
        merged = torch.empty((total_out, 8), dtype=torch.int32, device=x.device)
        lanes = _lanes_per_program(total_out)
        _parent_kernel[(triton.cdiv(total_out, lanes),)](
            cvs, merged, *key_words, leaves, nodes, nodes_last, out_nodes, total_out, BLOCK=lanes,
        )
        cvs, nodes, nodes_last = merged, out_nodes, out_last
    return cvs.view(torch.uint8)


def tickets(sigma_m: bytes, lanes: torch.Tensor, key: bytes) -> torch.Tensor:
    """(tiles, 32) uint8 on ``lanes``' device: row i is the keyed BLAKE3 of
    σ_m ‖ i (8 bytes, little-endian) ‖ the 4 lanes of tile i (each a 4-byte big-endian word).

    ``lanes`` is an int64 (tiles, 4) tensor with every value in [0, 2**32) (the digest lanes are
    < 2**31). One launch; nothing is copied between host and device."""
    _check_key(key)
    _check_key(sigma_m, "sigma_m")
    if lanes.dtype != torch.int64 or lanes.dim() != 2 or lanes.shape[1] != 4:
        raise ValueError("tickets needs an int64 (tiles, 4) lanes tensor")
    _require_triton()
    lanes = lanes.contiguous()
    count = int(lanes.shape[0])
    out = torch.empty((count, 8), dtype=torch.int32, device=lanes.device)
    if count == 0:
        return out.view(torch.uint8)
    block = _lanes_per_program(count)
    _ticket_kernel[(triton.cdiv(count, block),)](lanes, out, count, *_words(key + sigma_m), BLOCK=block)
    return out.view(torch.uint8)


def win_threshold(target: int, tile_work: int, reference_work: int) -> int:
    """The least ticket value that loses: ``ticket · reference_work < target · tile_work`` holds
    iff ``int(ticket, big-endian) < win_threshold(...)`` (ceil of the quotient; may exceed 2**256)."""
    if reference_work < 1:
        raise ValueError("reference_work must be positive")
    return max(0, -(-(target * tile_work) // reference_work))


def _big_endian_words(tickets_u8: torch.Tensor) -> torch.Tensor:
    """(tiles, 8) int64 words of the 32-byte tickets, most significant first."""
    t = tickets_u8.to(torch.int64).reshape(-1, 8, 4)
    return (t[:, :, 0] << 24) | (t[:, :, 1] << 16) | (t[:, :, 2] << 8) | t[:, :, 3]


class TicketScan(NamedTuple):
    """What the host needs from one matmul's tickets: the first winner and the best ticket."""

    winner: int  # lowest tile index whose ticket wins, or -1
    best: int  # lowest tile index holding the minimum ticket, or -1 when there are no tiles
    winner_ticket: bytes | None
    best_ticket: bytes | None


def first_winner(tickets_u8: torch.Tensor, threshold: int) -> TicketScan:
    """Scan a (tiles, 32) uint8 ticket tensor on its device with torch ops: a tile wins iff its
    ticket, big-endian, is below ``threshold`` (from ``win_threshold``; at least 2**256: every
    tile). The host copies one small tensor (two indices and two tickets), not every ticket."""
    if tickets_u8.dtype != torch.uint8 or tickets_u8.dim() != 2 or tickets_u8.shape[1] != OUT_SIZE:
        raise ValueError("first_winner needs a uint8 (tiles, 32) tensor")
    count = int(tickets_u8.shape[0])
    if count == 0:
        return TicketScan(-1, -1, None, None)
    words = _big_endian_words(tickets_u8)
    device = tickets_u8.device
    if threshold >= 1 << 256:
        wins = torch.ones(count, dtype=torch.bool, device=device)
    else:
        bound = [(max(0, threshold) >> (32 * (7 - i))) & 0xFFFFFFFF for i in range(8)]
        wins = torch.zeros(count, dtype=torch.bool, device=device)
        for i in reversed(range(8)):  # lexicographic less-than, least significant word first
            wins = (words[:, i] < bound[i]) | ((words[:, i] == bound[i]) & wins)
    best = torch.ones(count, dtype=torch.bool, device=device)
    for i in range(8):  # keep the tiles that hold the minimum, word by word
        column = torch.where(best, words[:, i], torch.full_like(words[:, i], 1 << 32))
        best &= column == column.min()
    index = torch.arange(count, device=device)
    none = torch.full_like(index, count)
    found = torch.stack([torch.where(wins, index, none).min(), torch.where(best, index, none).min()])
    rows = tickets_u8[found.clamp(max=count - 1)].to(torch.int64).reshape(-1)
    host = torch.cat([found, rows]).tolist()  # the one device-to-host copy
    winner, minimum = int(host[0]), int(host[1])
    winner_ticket = bytes(host[2:2 + OUT_SIZE]) if winner < count else None
    return TicketScan(winner if winner < count else -1, minimum, winner_ticket, bytes(host[2 + OUT_SIZE:]))


def leaf_hashes_host(x: npt.NDArray[np.int8], block_rows: int, key: bytes) -> list[bytes]:
    """The reference of ``leaf_hashes``: keyed BLAKE3 (``blake3`` package) of each block of rows."""
    _check_key(key)
    if block_rows < 1:
        raise ValueError("block_rows must be positive")
    data = np.ascontiguousarray(x)  # row slices of it are contiguous buffers: hashed without a copy
    return [
        blake3.blake3(data[start:start + block_rows].data, key=key).digest()
        for start in range(0, data.shape[0], block_rows)
    ]


def tickets_host(sigma_m: bytes, lanes: npt.NDArray[np.int64] | Sequence[Sequence[int]], key: bytes) -> list[bytes]:
    """The reference of ``tickets``: keyed BLAKE3 of σ_m ‖ index (8 bytes LE) ‖ lanes (4 × 4 bytes BE)."""
    _check_key(key)
    _check_key(sigma_m, "sigma_m")
    rows = np.asarray(lanes, dtype=np.int64).reshape(-1, 4)
    if rows.size and (rows.min() < 0 or rows.max() >= 1 << 32):
        raise ValueError("lanes must lie in [0, 2**32)")
    digests = rows.astype(">u4").tobytes()
    return [
        blake3.blake3(sigma_m + i.to_bytes(8, "little") + digests[16 * i:16 * i + 16], key=key).digest()
        for i in range(rows.shape[0])
    ]
