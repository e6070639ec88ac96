"""The noisy-transcript product as one Triton kernel: the GPU path, bit-identical to the reference.

One program computes one BM×BN output tile of C' = (A+E)(B+F) and its digest lanes:

* the inner dimension in chunks of t, each chunk as int8 ``tl.dot`` blocks of BK accumulating in
  int32 registers (exact: |P_c| <= k·127² < 2**31 for every width the protocol allows);
* after each chunk, the 32-bit mix of docs/protocol.md Part IV §4 on the accumulator tile, in
  registers (the epilogue of the chunk: xor, multiply, shift, xor, add in uint32);
* after the last chunk, the four lanes ``Σ (h · W[l] mod p) mod p`` reduced in the kernel, so a
  matmul returns C' and a (tiles, 4) int64 tensor, both left on the device (the tickets are hashed
  from the lanes on the device too: pouw/kernels/blake3_triton.py).

``TRITON_INTERPRET=1`` runs the same kernel on CPU tensors with numpy semantics; the tests hold it
to the reference (tests/pouw_kernels/test_triton_interpret.py). On a GPU the kernel is compiled;
this repository has not run it on one yet (no device was available), so CUDA numbers are absent.

What stays on the host (docs/protocol.md Part IV §2, §13): the Merkle nodes above the operand
leaves (a few per matmul), σ_m and the noise draws (SHAKE-256, a few bits per row); the leaves come
back in one 32-byte-per-block copy and the noise factors go out, expanded on the device.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def _load_triton() -> tuple[Any, Any]:
    try:
        import triton
        import triton.language as tl
    except ImportError:  # no GPU toolchain: the CPU kernels and the torch reference remain
        return None, None
    return triton, tl


triton, tl = _load_triton()
HAVE_TRITON = triton is not None
MIX_MULTIPLIER = 0x7FEB352D
MIX_PRIME = (1 << 31) - 1


def interpreting() -> bool:
    """Whether kernels run under the Triton interpreter (CPU tensors, numpy semantics)."""
    return os.environ.get("TRITON_INTERPRET", "") == "1"


if HAVE_TRITON:

    @triton.jit
    def _noisy_tile_kernel(  # type: ignore[no-untyped-def]
        a_ptr, b_ptr, c_ptr, w_ptr, lanes_ptr,
        m, n, k,
        stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
        CHUNK: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,  # type: ignore[name-defined]
    ):
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rows = pid_m * BM + tl.arange(0, BM)
        cols = pid_n * BN + tl.arange(0, BN)
        acc = tl.zeros((BM, BN), dtype=tl.int32)
        h = tl.zeros((BM, BN), dtype=tl.uint32)
        chunks = tl.cdiv(k, CHUNK)
        for c in range(0, chunks):
            start = c * CHUNK
            stop = tl.minimum(start + CHUNK, k)
            for kk in range(start, stop, BK):
                ks = kk + tl.arange(0, BK)
                kmask = ks < stop
                a = tl.load(a_ptr + rows[:, None] * stride_am + ks[None, :] * stride_ak, mask=kmask[None, :], other=0)
                b = tl.load(b_ptr + ks[:, None] * stride_bk + cols[None, :] * stride_bn, mask=kmask[:, None], other=0)
                acc += tl.dot(a, b, out_dtype=tl.int32)
            x = acc.to(tl.uint32, bitcast=True)
            u = (h ^ x) * MIX_MULTIPLIER
            h = (u ^ (u >> 16)) + (c + 1)
        tl.store(c_ptr + rows[:, None] * stride_cm + cols[None, :] * stride_cn, acc)
        tile = pid_m * tl.num_programs(1) + pid_n
        offs = tl.arange(0, BM)[:, None] * BN + tl.arange(0, BN)[None, :]
        wide = h.to(tl.int64)
        for lane in range(0, 4):
            w = tl.load(w_ptr + lane * BM * BN + offs)
            prod = wide * w
            part = (prod & MIX_PRIME) + (prod >> 31)
            total = tl.sum(tl.sum(part, axis=1), axis=0)
            tl.store(lanes_ptr + tile * 4 + lane, total % MIX_PRIME)


def block_k(chunk: int) -> int:
    """The ``tl.dot`` depth: 32 (the int8 MMA's K) or the chunk if smaller, at least 16."""
    return max(16, min(32, 1 << (chunk - 1).bit_length()))


def triton_transcript(
    a_noisy: torch.Tensor, b_noisy: torch.Tensor, chunk: int, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C' int32 (m, n), lanes int64 (tiles, 4)), both on the device, of int8 ``a_noisy`` (m×k),
    ``b_noisy`` (k×n) on one device (CUDA, or CPU under ``TRITON_INTERPRET=1``); ``weights`` the
    (4, BM, BN) lane weights. Nothing is copied to the host."""
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed")
    m, k = a_noisy.shape
    n = b_noisy.shape[1]
    tile_m, tile_n = int(weights.shape[1]), int(weights.shape[2])
    if tile_m < 16 or tile_n < 16:
        raise ValueError("tl.dot needs tiles of at least 16 x 16")
    c_noisy = torch.empty((m, n), dtype=torch.int32, device=a_noisy.device)
    lanes = torch.empty(((m // tile_m) * (n // tile_n), 4), dtype=torch.int64, device=a_noisy.device)
    w = weights.to(device=a_noisy.device, dtype=torch.int64).contiguous()
    grid = (m // tile_m, n // tile_n)
    _noisy_tile_kernel[grid](
        a_noisy, b_noisy, c_noisy, w, lanes,
        m, n, k,
        a_noisy.stride(0), a_noisy.stride(1), b_noisy.stride(0), b_noisy.stride(1),
        c_noisy.stride(0), c_noisy.stride(1),
        CHUNK=chunk, BM=tile_m, BN=tile_n, BK=block_k(chunk),
    )
    return c_noisy, lanes
