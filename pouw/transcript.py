"""The noisy-transcript product: operand commitments, the tile transcript, tickets and the win rule.

For each matmul A (m×k) · B (k×n) of training step j (normative; docs/protocol.md Part IV):

1. HA = :func:`commit_rows` of A's row blocks (BM rows a leaf), HB = the same of B's column
   blocks (BN columns a leaf).
2. σ_m = H("pouw/sigma-m", pack([σ, j, index, m, k, n, HA, HB])); noise E, F from
   :func:`pouw.noise.draw_noise`.
3. C' = (A+E)(B+F) with k consumed in chunks of t: after chunk c every output element holds its
   running partial sum P_c, and its 32-bit mix state is folded by :func:`fold_chunk` (xor the low
   32 bits of P_c in, multiply by an odd constant, xor-shift the high half down, add c + 1; all
   mod 2**32, a few ops per element per chunk). A tile's digest is four lanes
   Σ_e (h_e · W[lane, e] mod p) mod p, p = 2**31 - 1, over its BM·BN elements, with fixed weights W
   from ``Prng("pouw/mix-weights", BM, BN)``, written as 4-byte big-endian words (16 bytes).
4. ticket = H("pouw/ticket", pack([σ_m, tile_index, digest])); tiles are numbered row-major over
   the (m/BM)×(n/BN) grid. The tile wins iff int(ticket, big-endian) · reference_work <
   target · tile_work, tile_work = BM·BN·k: every MAC has the same odds whatever the job.
5. The exact product is recovered as C = C' − A·F − E·(B+F).

On a CPU the miner runs the fused kernel of pouw/kernels/cpu.py (chunk GEMMs, running sums, mix
and lanes per cache-sized row block, bit-identical to :func:`transcript` and :func:`tile_lanes`,
which stay the reference and the path of every other device) and :func:`denoise_fast`.

:class:`NoisyTranscriptProduct` is the matmul hook the training engine calls (miner side);
:func:`tile_digest` recomputes one tile's transcript from its rows and columns (validator side).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from chain.encoding import pack
from chain.errors import Reason, ValidationError
from chain.hashing import HASH_SIZE, merkle_proof_of_hashes, merkle_root_of_hashes, tagged_hash
from pouw.backends import Backend
from pouw.kernels import cpu as cpu_kernels
from pouw.kernels import triton_gpu
from pouw.noise import NoiseFactors, draw_noise, exact_matmul
from pouw.params import PAYLOAD_BOUND, PouwParams
from pouw.prng import Prng
from pouw.proof import TileProof

MIX_PRIME = (1 << 31) - 1
DIGEST_LANES = 4
MASK32 = 0xFFFFFFFF
MIX_MULTIPLIER = 0x7FEB352D
"""Odd and below 2**31, so ``(h ^ x) * MIX_MULTIPLIER`` of 32-bit values fits int64 without overflow."""

IntMatmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- commitments and seeds -------------------------------------------------------------------------


_LEAF_HASHER = hashlib.blake2b(digest_size=HASH_SIZE, person=b"pouw/mk-leaf")
_NODE_HASHER = hashlib.blake2b(digest_size=HASH_SIZE, person=b"pouw/mk-node")


def _root_of_hashes(level: list[bytes]) -> bytes:
    """``merkle_root_of_hashes`` (odd last node promoted), from copies of the node hasher."""
    if not level:
        return merkle_root_of_hashes(level)
    nodes = level
    while len(nodes) > 1:
        nxt = []
        for i in range(0, len(nodes) - 1, 2):
            hasher = _NODE_HASHER.copy()
            hasher.update(nodes[i] + nodes[i + 1])
            nxt.append(hasher.digest())
        if len(nodes) % 2:
            nxt.append(nodes[-1])
        nodes = nxt
    return nodes[0]


def block_roots(rows: npt.NDArray[np.int8], block: int) -> list[bytes]:
    """The Merkle leaves of a commitment: ``merkle_leaf`` of each consecutive block of ``block`` rows'
    raw int8 bytes (row-major; the last block may be shorter)."""
    data = np.ascontiguousarray(rows, dtype=np.int8)
    leaves = []
    for start in range(0, len(data), block):
        hasher = _LEAF_HASHER.copy()
        hasher.update(data[start : start + block].tobytes())
        leaves.append(hasher.digest())
    return leaves


def commit_rows(rows: npt.NDArray[np.int8], block: int) -> bytes:
    """HA (rows of A, ``block`` = BM) or HB (rows of Bᵀ, ``block`` = BN): the Merkle root over the
    row blocks, one leaf per block of ``block`` rows (a tile's operand block: it opens with one
    path of ``log2(rows/block)`` hashes, and costs one hash per block, not one per row)."""
    return _root_of_hashes(block_roots(rows, block))


def matmul_seed(header_seed: bytes, step: int, index: int, shape: tuple[int, int, int], ha: bytes, hb: bytes) -> bytes:
    """σ_m of matmul ``index`` of step ``step`` with operand commitments HA, HB."""
    m, k, n = shape
    return tagged_hash("pouw/sigma-m", pack([header_seed, step, index, m, k, n, ha, hb]))


# --- transcript mix --------------------------------------------------------------------------------


def fold_chunk(state: torch.Tensor, partial: torch.Tensor, chunk_index: int) -> torch.Tensor:
    """One transcript step per element, all mod 2**32 on int64 tensors holding 32-bit values:
    x = P mod 2**32; u = (h XOR x) · M; h' = (u XOR (u >> 16)) + c + 1, M = ``MIX_MULTIPLIER``."""
    u = ((state ^ (partial & MASK32)) * MIX_MULTIPLIER) & MASK32
    return ((u ^ (u >> 16)) + (chunk_index + 1)) & MASK32


@functools.cache
def _mix_weights(tile_m: int, tile_n: int) -> torch.Tensor:
    draws = Prng("pouw/mix-weights", tile_m, tile_n).randbelow_array(MIX_PRIME - 1, DIGEST_LANES * tile_m * tile_n)
    return torch.from_numpy(draws + 1).reshape(DIGEST_LANES, tile_m, tile_n)


def mix_weights(tile_m: int, tile_n: int, device: torch.device) -> torch.Tensor:
    """The (4, BM, BN) lane weights in [1, p) that fold a tile's element states to its digest."""
    return _mix_weights(tile_m, tile_n).to(device)


def transcript(
    a_noisy: torch.Tensor, b_noisy: torch.Tensor, chunk: int, int_mm: IntMatmul
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C', element mix states), both int64 (m, n), of the noisy product in chunks of ``chunk``."""
    m, k = a_noisy.shape
    n = b_noisy.shape[1]
    partial = torch.zeros((m, n), dtype=torch.int64, device=a_noisy.device)
    state = torch.zeros_like(partial)
    for c, start in enumerate(range(0, k, chunk)):
        stop = min(start + chunk, k)
        partial += int_mm(a_noisy[:, start:stop], b_noisy[start:stop, :]).to(torch.int64)
        state = fold_chunk(state, partial, c)
    return partial, state


def tile_lanes(state: torch.Tensor, tile_m: int, tile_n: int) -> npt.NDArray[np.int64]:
    """The digest lanes of every tile, shape (tiles, 4), tiles row-major over the grid."""
    m, n = state.shape
    grid = state.reshape(m // tile_m, tile_m, n // tile_n, tile_n).permute(0, 2, 1, 3)
    weights = mix_weights(tile_m, tile_n, state.device)
    lanes = [((grid * weights[lane]) % MIX_PRIME).sum(dim=(2, 3)) % MIX_PRIME for lane in range(DIGEST_LANES)]
    return torch.stack(lanes, dim=-1).reshape(-1, DIGEST_LANES).cpu().numpy()


def digest_bytes(lanes: npt.NDArray[np.int64]) -> bytes:
    return b"".join(int(v).to_bytes(4, "big") for v in lanes)


def tile_ticket(sigma_m: bytes, tile_index: int, digest: bytes) -> bytes:
    return tagged_hash("pouw/ticket", pack([sigma_m, tile_index, digest]))


def ticket_wins(ticket: bytes, target: int, tile_work: int, reference_work: int) -> bool:
    """The win rule, in integers: ticket · reference_work < target · tile_work."""
    return int.from_bytes(ticket, "big") * reference_work < target * tile_work


def tile_digest(
    params: PouwParams,
    sigma_m: bytes,
    shape: tuple[int, int, int],
    tile_index: int,
    a_rows: npt.NDArray[np.int8],
    b_cols: npt.NDArray[np.int8],
) -> bytes:
    """Validator side: the digest of one tile from its BM rows of A and BN columns of B (as rows)."""
    m, k, n = shape
    tile_row, tile_col = divmod(tile_index, n // params.tile_n)
    rows = slice(tile_row * params.tile_m, (tile_row + 1) * params.tile_m)
    cols = slice(tile_col * params.tile_n, (tile_col + 1) * params.tile_n)
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    a_noisy = torch.from_numpy(a_rows.astype(np.int64)) + noise.e(rows)
    b_noisy = torch.from_numpy(b_cols.astype(np.int64)).T + noise.f(cols)
    _, state = transcript(a_noisy, b_noisy, params.chunk, exact_matmul)
    return digest_bytes(tile_lanes(state, params.tile_m, params.tile_n)[0])


# --- the miner's hook ------------------------------------------------------------------------------


def denoise(c_noisy: torch.Tensor, a: torch.Tensor, b_noisy: torch.Tensor, noise: NoiseFactors) -> torch.Tensor:
    """C = C' − A·F − E·(B+F), exactly, as int32, with ``noise`` on the operands' device.

    The factored products cost O(r(mk + kn + mn)) and run in float64: every intermediate is an
    integer far below 2**53, so any summation order is exact (on CUDA this trades the int8-limb
    ``_int_mm`` path for simplicity; docs/protocol.md Part IV).
    """
    a_f = exact_matmul(exact_matmul(a, noise.f_left), noise.f_right)
    e_bf = exact_matmul(noise.e_left, exact_matmul(noise.e_right, b_noisy))
    return (c_noisy - a_f - e_bf).to(torch.int32)


FLOAT32_EXACT = 1 << 24


def denoise_fast(
    c_noisy: torch.Tensor, a: torch.Tensor, b_noisy: torch.Tensor, noise: NoiseFactors
) -> torch.Tensor:
    """:func:`denoise` on the CPU in as few float32 GEMMs as exactness allows, bit-identical.

    ``C = C' − [A·F_L | E_L] · [F_R ; E_R·(B+F)]``: one GEMM of inner width 2r after two thin ones.
    ``A·F_L`` (|.| <= 63·k) and ``E_R·(B+F)`` (|.| <= 127·k) are exact in float32 for k < 2**17; the
    last product is exact in float32 when ``max_i ‖(A·F_L)_i‖₁ + max_j ‖(E_R·(B+F))_j‖₁ <= 2**24``
    (E_L and F_R are ±1, so that bounds every partial sum), else it runs in float64.
    """
    k = a.shape[1]
    if k >= 1 << 17:
        return denoise(c_noisy, a, b_noisy, noise)
    bf = b_noisy if b_noisy.dtype == torch.float32 else b_noisy.to(torch.float32)
    af = a.to(torch.float32) @ noise.f_left.to(torch.float32)
    y = noise.e_right.to(torch.float32) @ bf
    bound = float(af.abs().sum(1, dtype=torch.float64).max()) + float(y.abs().sum(0, dtype=torch.float64).max())
    dtype = torch.float32 if bound <= FLOAT32_EXACT else torch.float64
    left = torch.cat([af.to(dtype), noise.e_left.to(dtype)], dim=1)
    right = torch.cat([noise.f_right.to(dtype), y.to(dtype)], dim=0)
    return c_noisy.to(torch.int32) - (left @ right).to(torch.int32)


LIMB_BITS = 7


def int8_limbs(x: torch.Tensor, count: int) -> list[torch.Tensor]:
    """Balanced base-128 limbs of int64 ``x``: ``x = Σ_j 128**j · limb_j``, every limb int8, the low
    ones in [−64, 63]; exact when ``|x| < 64 · 128**(count − 1)`` (the top limb then fits int8)."""
    limbs = []
    rest = x
    for _ in range(count - 1):
        low = ((rest + 64) & 127) - 64
        limbs.append(low.to(torch.int8))
        rest = (rest - low) >> LIMB_BITS
    limbs.append(rest.to(torch.int8))
    return limbs


def limb_count(bound: int) -> int:
    """Limbs that :func:`int8_limbs` needs for values of magnitude below ``bound``."""
    count = 1
    while 64 * 128 ** (count - 1) <= bound:
        count += 1
    return count


def denoise_limbs(
    c_noisy: torch.Tensor, a: torch.Tensor, b_noisy: torch.Tensor, noise: NoiseFactors, int_mm: IntMatmul
) -> torch.Tensor:
    """:func:`denoise` with int8 products only (the GPU path: ``_int_mm`` on tensor cores).

    ``A·F_L`` and ``E_R·(B+F)`` are int8 products (|.| <= 127·k, int32 exact); the last product's
    wide operands are split into int8 limbs (3 limbs for every width up to 8192), each limb product
    ``limb · (±1 matrix)`` accumulates at most ``64 · r`` in int32, and the limb products are
    shifted and summed in int64. No float anywhere, so it is exact on any device."""
    k = a.shape[1]
    af = int_mm(a.contiguous(), noise.f_left.contiguous()).to(torch.int64)  # m × r
    y = int_mm(noise.e_right.contiguous(), b_noisy.contiguous()).to(torch.int64)  # r × n
    count = limb_count(127 * k + 1)
    correction = torch.zeros_like(c_noisy, dtype=torch.int64)
    f_right, e_left = noise.f_right.contiguous(), noise.e_left.contiguous()
    for j, (af_j, y_j) in enumerate(zip(int8_limbs(af, count), int8_limbs(y, count), strict=True)):
        part = int_mm(af_j.contiguous(), f_right).to(torch.int64) + int_mm(e_left, y_j.contiguous()).to(torch.int64)
        correction += part << (LIMB_BITS * j)
    return (c_noisy.to(torch.int64) - correction).to(torch.int32)


def fused_eligible(backend: Backend | None, params: PouwParams, k: int, device: torch.device) -> bool:
    """Whether the fused CPU kernel applies: CPU tensors, chunks the backend's GEMM keeps exact,
    and running sums within int32 (k · 127² < 2**31)."""
    return (
        backend is not None
        and backend.fusable
        and device.type == "cpu"
        and params.chunk <= backend.max_chunk
        and k * 127 * 127 < 1 << 31
    )


TRITON_ON_CPU_ENV = "POUW_TRITON_ON_CPU"


def triton_eligible(params: PouwParams, k: int, device: torch.device) -> bool:
    """Whether the Triton kernel computes the transcript: CUDA tensors with triton installed (or
    CPU tensors under ``TRITON_INTERPRET=1`` with ``POUW_TRITON_ON_CPU=1``, for the tests), tiles
    of at least 16 × 16 (``tl.dot``), running sums within int32."""
    if not triton_gpu.HAVE_TRITON or params.tile_m < 16 or params.tile_n < 16 or k * 127 * 127 >= 1 << 31:
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and triton_gpu.interpreting() and os.environ.get(TRITON_ON_CPU_ENV) == "1"


@dataclass(frozen=True, slots=True)
class NoisyProduct:
    """Everything one noisy-transcript product yields: commitments, seed, noise, C', tickets."""

    params: PouwParams
    step: int
    index: int
    shape: tuple[int, int, int]
    a_host: npt.NDArray[np.int8]  # A, on the CPU
    bt_host: npt.NDArray[np.int8]  # Bᵀ, on the CPU (B's columns as rows)
    a_blocks: list[bytes]  # Merkle roots of A's row blocks (BM rows each)
    b_blocks: list[bytes]  # Merkle roots of B's column blocks (BN columns each)
    sigma_m: bytes
    noise: NoiseFactors  # on the operands' device
    b_noisy: torch.Tensor
    c_noisy: torch.Tensor  # (A+E)(B+F), int64 (int32 from the fused CPU kernel)
    tickets: list[bytes]  # per tile, row-major over the grid
    fused: bool = False  # computed by the fused CPU kernel: denoise with denoise_fast
    useful: torch.Tensor | None = None  # A·B (int32), when the fused kernel already denoised it

    @property
    def ha(self) -> bytes:
        return merkle_root_of_hashes(self.a_blocks)

    @property
    def hb(self) -> bytes:
        return merkle_root_of_hashes(self.b_blocks)

    @property
    def tile_work(self) -> int:
        return self.params.tile_m * self.params.tile_n * self.shape[1]

    def tile_proof(self, tile_index: int) -> TileProof:
        """The proof that opens tile ``tile_index``."""
        p, (m, k, n) = self.params, self.shape
        tile_row, tile_col = divmod(tile_index, n // p.tile_n)
        return TileProof(
            step=self.step,
            matmul_index=self.index,
            tile_index=tile_index,
            m=m,
            k=k,
            n=n,
            ha=self.ha,
            hb=self.hb,
            a_rows=self.a_host[tile_row * p.tile_m : (tile_row + 1) * p.tile_m].tobytes(),
            b_cols=self.bt_host[tile_col * p.tile_n : (tile_col + 1) * p.tile_n].tobytes(),
            a_path=tuple(merkle_proof_of_hashes(self.a_blocks, tile_row)),
            b_path=tuple(merkle_proof_of_hashes(self.b_blocks, tile_col)),
        )

    def exact(self, a: torch.Tensor) -> torch.Tensor:
        """The useful product A·B, denoised from C'."""
        if self.fused:
            if self.useful is not None:
                return self.useful
            return denoise_fast(self.c_noisy, a, self.b_noisy, self.noise)
        if self.c_noisy.device.type == "cuda" and self.params.rank % 8 == 0 and self.params.rank > 16:
            return denoise_limbs(self.c_noisy, a, self.b_noisy, self.noise, torch._int_mm)
        return denoise(self.c_noisy, a, self.b_noisy, self.noise)


def noisy_product(
    params: PouwParams,
    header_seed: bytes,
    step: int,
    index: int,
    a: torch.Tensor,
    b: torch.Tensor,
    int_mm: IntMatmul,
    backend: Backend | None = None,
) -> NoisyProduct:
    """Steps 1-4 of the module docstring for A·B (int8, on any device): commit, seed, noise, transcript,
    tickets. ``int_mm`` multiplies the noisy int8 chunks exactly (the backend's tensor-core path);
    given the ``backend`` of CPU tensors, the fused CPU kernel runs instead (same bits)."""
    m, k = a.shape
    n = b.shape[1]
    if m % params.tile_m or n % params.tile_n:
        raise ValidationError(Reason.OUT_OF_RANGE, f"product {m}x{n} is not a grid of tiles")
    if int(a.abs().max()) > PAYLOAD_BOUND or int(b.abs().max()) > PAYLOAD_BOUND:
        raise ValidationError(Reason.OUT_OF_RANGE, f"matmul operand beyond ±{PAYLOAD_BOUND}")
    a_host = a.cpu().numpy()
    bt_host = cpu_kernels.transpose_int8(b.cpu().numpy())
    a_blocks, b_blocks = block_roots(a_host, params.tile_m), block_roots(bt_host, params.tile_n)
    ha, hb = _root_of_hashes(a_blocks), _root_of_hashes(b_blocks)
    sigma_m = matmul_seed(header_seed, step, index, (m, k, n), ha, hb)
    noise = draw_noise(sigma_m, m, k, n, params.rank).to(a.device)
    fused = backend is not None and fused_eligible(backend, params, k, a.device)
    useful = None
    if triton_eligible(params, k, a.device):
        a_noisy = a + noise.e().to(torch.int8)
        b_noisy = b + noise.f().to(torch.int8)
        c_noisy, lanes = triton_gpu.triton_transcript(
            a_noisy, b_noisy, params.chunk, mix_weights(params.tile_m, params.tile_n, a.device)
        )
    elif fused and backend is not None:
        weights = _mix_weights(params.tile_m, params.tile_n).numpy()
        done = None
        if backend.kind == "float32":
            done = cpu_kernels.fused_product(a, b, noise, params.chunk, weights, backend.int_mm)
        if done is not None:
            c_noisy, lanes, b_noisy, useful = done
        else:
            e, f = noise.dense()
            a_noisy = backend.prepare(a + e)
            b_noisy = backend.prepare(b + f)
            c_noisy, lanes = cpu_kernels.fused_transcript(
                a_noisy, b_noisy, params.chunk, backend.chunk_mm, weights, backend.chunk_dtype
            )
    else:
        a_noisy = a + noise.e().to(torch.int8)
        b_noisy = b + noise.f().to(torch.int8)
        c_noisy, state = transcript(a_noisy, b_noisy, params.chunk, int_mm)
        lanes = tile_lanes(state, params.tile_m, params.tile_n)
    tickets = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(lanes)]
    return NoisyProduct(
        params,
        step,
        index,
        (m, k, n),
        a_host,
        bt_host,
        a_blocks,
        b_blocks,
        sigma_m,
        noise,
        b_noisy,
        c_noisy,
        tickets,
        fused,
        useful,
    )


class NoisyTranscriptProduct:
    """The matmul hook of one training step under lottery seed σ: returns the exact product and
    records the step's tickets. After the step, ``winner`` is the first winning tile's proof (lowest
    matmul index, then lowest tile index), or None."""

    def __init__(self, params: PouwParams, header_seed: bytes, step: int, target: int, backend: Backend) -> None:
        self.params = params
        self.header_seed = header_seed
        self.step = step
        self.target = target
        self.backend = backend
        self.tiles_evaluated = 0
        self.macs = 0
        self.best_ticket: bytes | None = None
        self.winner: TileProof | None = None
        self.winning_ticket: bytes | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        product = noisy_product(
            self.params, self.header_seed, self.step, index, a, b, self.backend.int_mm, self.backend
        )
        for tile_index, ticket in enumerate(product.tickets):
            if self.best_ticket is None or ticket < self.best_ticket:
                self.best_ticket = ticket
            if self.winner is None and ticket_wins(ticket, self.target, product.tile_work, self.params.reference_work):
                self.winner = product.tile_proof(tile_index)
                self.winning_ticket = ticket
        self.tiles_evaluated += len(product.tickets)
        m, k, n = product.shape
        self.macs += m * k * n
        return product.exact(a)
