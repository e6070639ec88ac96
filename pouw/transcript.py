"""The noisy-transcript product: operand commitments, the tile transcript, tickets and the win rule.

For each matmul A (m×k) · B (k×n) of training step j (normative; docs/protocol.md Part IV):

1. HA = :func:`commit_rows` of A's row blocks (BM rows a leaf, hashed with keyed BLAKE3), HB = the
   same of B's column blocks (BN columns a leaf).
2. σ_m = H("pouw/sigma-m", pack([σ, j, index, m, k, n, HA, HB])); noise E, F from
   :func:`pouw.noise.draw_noise`.
3. C' = (A+E)(B+F) with k consumed in chunks of t: after chunk c every output element holds its
   running partial sum P_c, and its 32-bit mix state is folded by :func:`fold_chunk` (xor the low
   32 bits of P_c in, multiply by an odd constant, xor-shift the high half down, add c + 1; all
   mod 2**32, a few ops per element per chunk). A tile's digest is four lanes
   Σ_e (h_e · W[lane, e] mod p) mod p, p = 2**31 - 1, over its BM·BN elements, with fixed weights W
   from ``Prng("pouw/mix-weights", BM, BN)``, written as 4-byte big-endian words (16 bytes).
4. ticket = keyed BLAKE3 of σ_m ‖ tile_index (8 bytes LE) ‖ digest; tiles are numbered row-major over
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

import blake3
import numpy as np
import numpy.typing as npt
import torch

from chain.encoding import pack
from chain.errors import Reason, ValidationError
from chain.hashing import HASH_SIZE, merkle_proof_of_hashes, merkle_root_of_hashes, tagged_hash
from pouw.backends import Backend
from pouw.kernels import blake3_triton, triton_gpu
from pouw.kernels import cpu as cpu_kernels
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


LEAF_KEY = blake3.blake3(b"pouw-chain v3: operand leaf").digest()
"""Key of the keyed-BLAKE3 operand leaf hash (Part IV §2): a nothing-up-my-sleeve constant."""
TICKET_KEY = blake3.blake3(b"pouw-chain v3: tile ticket").digest()
"""Key of the keyed-BLAKE3 tile ticket (Part IV §4)."""
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


def operand_leaf(data: bytes | memoryview) -> bytes:
    """The leaf hash of one operand block: keyed BLAKE3 (``LEAF_KEY``) of its raw int8 bytes.

    BLAKE3 is a tree of 1 KiB chunks, so a GPU hashes a block's chunks in parallel
    (pouw/kernels/blake3_triton.py) and gets the same 32 bytes as this CPU reference."""
    return blake3.blake3(data, key=LEAF_KEY).digest()


def block_roots(rows: npt.NDArray[np.int8], block: int) -> list[bytes]:
    """The Merkle leaves of a commitment: :func:`operand_leaf` of each consecutive block of
    ``block`` rows' raw int8 bytes (row-major; the last block may be shorter)."""
    return blake3_triton.leaf_hashes_host(rows, block, LEAF_KEY)


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


@functools.cache
def _mix_weights32(tile_m: int, tile_n: int) -> npt.NDArray[np.uint32]:
    """The lane weights as uint32 (every one is below 2**31), the dtype of the fused CPU kernels."""
    weights: npt.NDArray[np.uint32] = _mix_weights(tile_m, tile_n).numpy().astype(np.uint32)
    weights.flags.writeable = False
    return weights


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


def ticket_message(sigma_m: bytes, tile_index: int, digest: bytes) -> bytes:
    """The 56 bytes a ticket hashes: σ_m ‖ tile index (8 bytes, little-endian) ‖ digest (16 bytes)."""
    return sigma_m + tile_index.to_bytes(8, "little") + digest


def tile_ticket(sigma_m: bytes, tile_index: int, digest: bytes) -> bytes:
    """keyed BLAKE3 (``TICKET_KEY``) of :func:`ticket_message`: one 64-byte block, one compression."""
    return blake3.blake3(ticket_message(sigma_m, tile_index, digest), key=TICKET_KEY).digest()


def tile_tickets(sigma_m: bytes, lanes: npt.NDArray[np.int64]) -> list[bytes]:
    """The ticket of every tile from its lanes (tiles, 4), tiles numbered by row: one numba call
    where it can (the same bytes as the ``blake3`` package's, which is the fallback and the tests'
    reference)."""
    fast = cpu_kernels.tile_tickets(sigma_m, lanes, TICKET_KEY)
    return fast if fast is not None else blake3_triton.tickets_host(sigma_m, lanes, TICKET_KEY)


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


_TRITON_ON_CPU = triton_gpu.HAVE_TRITON and triton_gpu.interpreting() and os.environ.get(TRITON_ON_CPU_ENV) == "1"
"""Both variables are read once, at import (triton itself reads ``TRITON_INTERPRET`` when it compiles)."""


def triton_eligible(params: PouwParams, k: int, device: torch.device) -> bool:
    """Whether the Triton kernel computes the transcript: CUDA tensors with triton installed (or
    CPU tensors under ``TRITON_INTERPRET=1`` with ``POUW_TRITON_ON_CPU=1``, for the tests), tiles
    of at least 16 × 16 (``tl.dot``), running sums within int32."""
    if device.type == "cpu" and not _TRITON_ON_CPU:  # the common case, decided first (no env read)
        return False
    if not triton_gpu.HAVE_TRITON or params.tile_m < 16 or params.tile_n < 16 or k * 127 * 127 >= 1 << 31:
        return False
    return device.type == "cuda" or (device.type == "cpu" and _TRITON_ON_CPU)


def transcript_path(backend: Backend) -> str:
    """Which implementation computes this backend's noisy products (for a miner's start-up line):
    the Triton kernels (the GPU path, or the same under the Triton interpreter), the fused CPU
    kernel, or the torch reference. Shapes too small for a kernel fall back to the reference."""
    device = backend.device
    if triton_gpu.HAVE_TRITON and (device.type == "cuda" or (
            device.type == "cpu" and triton_gpu.interpreting() and os.environ.get(TRITON_ON_CPU_ENV) == "1")):
        return "triton" if device.type == "cuda" else "triton (interpreter, on the CPU)"
    if backend.fusable and device.type == "cpu":
        return "fused CPU kernel (numba)" if cpu_kernels.HAVE_NUMBA else "fused CPU kernel (numpy fallback)"
    return "torch reference"


TICKET_SIZE = 32


def scan_tickets(tickets: list[bytes], target: int, tile_work: int, reference_work: int) -> blake3_triton.TicketScan:
    """The first tile that :func:`ticket_wins` and the lowest ticket (the first of equals), of host
    tickets in plain Python: equal-length bytes compare as big-endian integers, and a ticket wins iff
    it is below ``⌈target · tile_work / reference_work⌉`` (``blake3_triton.win_threshold``). Device
    tickets are scanned on their device by ``blake3_triton.first_winner`` instead."""
    if not tickets:
        return blake3_triton.TicketScan(-1, -1, None, None)
    best = min(range(len(tickets)), key=tickets.__getitem__)
    bound = blake3_triton.win_threshold(target, tile_work, reference_work)
    first = next((i for i, t in enumerate(tickets) if int.from_bytes(t, "big") < bound), -1)
    return blake3_triton.TicketScan(first, best, tickets[first] if first >= 0 else None, tickets[best])


@dataclass(frozen=True, slots=True)
class TileTickets:
    """What the lottery keeps of one noisy product: its tickets and what opens any tile.

    ``a`` and ``bt`` stay on the operands' device (on a GPU nothing of size m·k is copied to the
    host); ``data`` holds the tickets as bytes (CPU paths) or as a (tiles, 32) uint8 tensor still
    on the device (GPU path), copied once when the step's draws are read."""

    params: PouwParams
    step: int
    index: int
    shape: tuple[int, int, int]
    a: torch.Tensor  # A (m×k int8), on the operands' device
    bt: torch.Tensor  # Bᵀ (n×k int8, B's columns as rows), on the operands' device
    a_blocks: list[bytes]  # leaf hashes of A's row blocks (BM rows each)
    b_blocks: list[bytes]  # leaf hashes of B's column blocks (BN columns each)
    sigma_m: bytes
    data: list[bytes] | torch.Tensor  # per tile, row-major over the grid

    @property
    def ha(self) -> bytes:
        return _root_of_hashes(self.a_blocks)

    @property
    def hb(self) -> bytes:
        return _root_of_hashes(self.b_blocks)

    @property
    def tile_work(self) -> int:
        return self.params.tile_m * self.params.tile_n * self.shape[1]

    @property
    def tile_count(self) -> int:
        m, _, n = self.shape
        return (m // self.params.tile_m) * (n // self.params.tile_n)

    @property
    def tickets(self) -> list[bytes]:
        """Every tile's ticket as bytes (one device→host copy on the GPU path)."""
        if isinstance(self.data, list):
            return self.data
        flat = self.data.cpu().numpy().tobytes()
        return [flat[i : i + TICKET_SIZE] for i in range(0, len(flat), TICKET_SIZE)]

    def scan(self, target: int, reference_work: int) -> blake3_triton.TicketScan:
        """The first winning tile under ``target`` and the lowest ticket: on the device for device
        tickets (one small copy back), in plain Python for host ones."""
        if isinstance(self.data, list):
            return scan_tickets(self.data, target, self.tile_work, reference_work)
        threshold = blake3_triton.win_threshold(target, self.tile_work, reference_work)
        return blake3_triton.first_winner(self.data, threshold)

    @property
    def a_host(self) -> npt.NDArray[np.int8]:
        return self.a.cpu().numpy()

    @property
    def bt_host(self) -> npt.NDArray[np.int8]:
        return self.bt.cpu().numpy()

    def tile_proof(self, tile_index: int) -> TileProof:
        """The proof that opens tile ``tile_index`` (copies only its BM rows and BN columns)."""
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
            a_rows=self.a[tile_row * p.tile_m : (tile_row + 1) * p.tile_m].cpu().numpy().tobytes(),
            b_cols=self.bt[tile_col * p.tile_n : (tile_col + 1) * p.tile_n].cpu().numpy().tobytes(),
            a_path=tuple(merkle_proof_of_hashes(self.a_blocks, tile_row)),
            b_path=tuple(merkle_proof_of_hashes(self.b_blocks, tile_col)),
        )


@dataclass(frozen=True, slots=True)
class NoisyProduct(TileTickets):
    """Everything one noisy-transcript product yields: the lottery's part, and the noise, B+F and
    C' that denoising needs (dropped once the exact product is out: see :meth:`lottery`)."""

    noise: NoiseFactors | None = None  # on the operands' device
    b_noisy: torch.Tensor | None = None
    c_noisy: torch.Tensor | None = None  # (A+E)(B+F), int64 (int32 from the fused and GPU kernels); None
    # when the fused kernel had A·B from a plain product (its lanes took in every partial sum of C')
    fused: bool = False  # computed by the fused CPU kernel: denoise with denoise_fast
    useful: torch.Tensor | None = None  # A·B (int32), when the fused kernel already has it

    def lottery(self) -> TileTickets:
        """The tickets and what opens a tile, without the m·n buffers."""
        return TileTickets(
            self.params, self.step, self.index, self.shape, self.a, self.bt,
            self.a_blocks, self.b_blocks, self.sigma_m, self.data,
        )

    def exact(self, a: torch.Tensor) -> torch.Tensor:
        """The useful product A·B, denoised from C'."""
        if self.useful is not None:
            return self.useful
        if self.noise is None or self.b_noisy is None or self.c_noisy is None:
            raise ValueError("a noisy product without its noise")
        if self.fused:
            return denoise_fast(self.c_noisy, a, self.b_noisy, self.noise)
        if self.c_noisy.device.type == "cuda" and self.params.rank % 8 == 0 and self.params.rank > 16:
            return denoise_limbs(self.c_noisy, a, self.b_noisy, self.noise, torch._int_mm)
        return denoise(self.c_noisy, a, self.b_noisy, self.noise)


def _check_payload(*operands: npt.NDArray[np.int8]) -> None:
    """Every entry within ±``PAYLOAD_BOUND`` (min and max: no int8 ``abs``, which keeps −128)."""
    for x in operands:
        if not cpu_kernels.within(x, PAYLOAD_BOUND):
            raise ValidationError(Reason.OUT_OF_RANGE, f"matmul operand beyond ±{PAYLOAD_BOUND}")


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
    given the ``backend`` of CPU tensors, the fused CPU kernel runs instead (same bits); on a GPU
    (or under the Triton interpreter) the device path of :func:`_device_product` does."""
    m, k = a.shape
    n = b.shape[1]
    if m % params.tile_m or n % params.tile_n:
        raise ValidationError(Reason.OUT_OF_RANGE, f"product {m}x{n} is not a grid of tiles")
    if triton_eligible(params, k, a.device):
        return _device_product(params, header_seed, step, index, a, b, int_mm)
    a_host = a.cpu().numpy()
    if b.device.type == "cpu":
        bt_host, ok = cpu_kernels.transposed_within(a_host, b.numpy(), PAYLOAD_BOUND)  # one numba call
        if not ok:
            raise ValidationError(Reason.OUT_OF_RANGE, f"matmul operand beyond ±{PAYLOAD_BOUND}")
        bt = torch.from_numpy(bt_host)
    else:
        bt = b.T.contiguous()
        bt_host = bt.cpu().numpy()
        _check_payload(a_host, bt_host)
    a_blocks = block_roots(a_host, params.tile_m)
    b_blocks = block_roots(bt_host, params.tile_n)
    sigma_m = matmul_seed(header_seed, step, index, (m, k, n), _root_of_hashes(a_blocks), _root_of_hashes(b_blocks))
    noise = draw_noise(sigma_m, m, k, n, params.rank)  # CPU tensors
    if a.device.type != "cpu":
        noise = noise.to(a.device)
    fused = backend is not None and fused_eligible(backend, params, k, a.device)
    useful = None
    if fused and backend is not None:
        weights = _mix_weights32(params.tile_m, params.tile_n)
        done = None
        if backend.kind == "float32":  # A+E, B+F, C' and lanes, and A·B by the cheaper exact route
            done = cpu_kernels.fused_product(a, b, noise, params.chunk, weights, backend.int_mm)
        else:  # a small product is one numba call whatever the backend's GEMM (its own exact float32)
            done = cpu_kernels.small_product(a, b, noise, params.chunk, weights)
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
    return NoisyProduct(
        params, step, index, (m, k, n), a, bt, a_blocks, b_blocks, sigma_m, tile_tickets(sigma_m, lanes),
        noise, b_noisy, c_noisy, fused, useful,
    )


def _leaf_list(flat: npt.NDArray[np.uint8]) -> list[bytes]:
    data = flat.tobytes()
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def _device_product(
    params: PouwParams, header_seed: bytes, step: int, index: int, a: torch.Tensor, b: torch.Tensor,
    int_mm: IntMatmul, on_phase: Callable[[str], None] | None = None,
) -> NoisyProduct:
    """The GPU path (pouw/kernels): everything of size m·k, k·n or m·n stays on the device.

    The operand leaves are hashed on the device (keyed BLAKE3, one vector lane per 1 KiB chunk),
    and come back to the host in one copy together with the operands' extremes (the payload check):
    32 bytes per BM rows, the only device→host transfer of the product, needed because σ_m and
    the noise draws (SHAKE-256, inherently serial) are the host's. The noise factors (a few bits
    per row) go the other way and are expanded on the device by int8 GEMMs of inner width r; the
    Triton kernel computes C' and the tile lanes, a second kernel the tickets, which stay on the
    device until the step's draws are read (one copy per matmul, at the end of the step).
    ``on_phase`` (benchmarks) is called with each phase's name as it ends."""
    lap = on_phase if on_phase is not None else (lambda phase: None)
    m, k = a.shape
    n = b.shape[1]
    a = a.contiguous()
    bt = b.T.contiguous()
    leaves = torch.cat([blake3_triton.leaf_hashes(a, params.tile_m, LEAF_KEY).reshape(-1),
                        blake3_triton.leaf_hashes(bt, params.tile_n, LEAF_KEY).reshape(-1)])
    extremes = torch.stack([a.min(), a.max(), bt.min(), bt.max()]).view(torch.uint8)
    host = torch.cat([leaves, extremes]).cpu().numpy()  # the product's one device-to-host copy
    if int(np.abs(host[-4:].view(np.int8).astype(np.int16)).max()) > PAYLOAD_BOUND:
        raise ValidationError(Reason.OUT_OF_RANGE, f"matmul operand beyond ±{PAYLOAD_BOUND}")
    split = HASH_SIZE * (m // params.tile_m)
    a_blocks, b_blocks = _leaf_list(host[:split]), _leaf_list(host[split:-4])
    sigma_m = matmul_seed(header_seed, step, index, (m, k, n), _root_of_hashes(a_blocks), _root_of_hashes(b_blocks))
    lap("commit")
    noise = draw_noise(sigma_m, m, k, n, params.rank).to(a.device)
    a_noisy = a + int_mm(noise.e_left, noise.e_right).to(torch.int8)  # |E| <= 64: exact in int32
    b_noisy = b + int_mm(noise.f_left, noise.f_right).to(torch.int8)
    lap("noise")
    c_noisy, lanes = triton_gpu.triton_transcript(
        a_noisy, b_noisy, params.chunk, mix_weights(params.tile_m, params.tile_n, a.device)
    )
    lap("transcript")
    tickets = blake3_triton.tickets(sigma_m, lanes, TICKET_KEY)
    return NoisyProduct(
        params, step, index, (m, k, n), a, bt, a_blocks, b_blocks, sigma_m, tickets, noise, b_noisy, c_noisy, False
    )


class NoisyTranscriptProduct:
    """The matmul hook of one training step under lottery seed σ: returns the exact product and
    records the step's tickets. After the step, ``winner`` is the first winning tile's proof (lowest
    matmul index, then lowest tile index), or None, and ``best_ticket`` the lowest ticket drawn.

    The draws are read once, when one of those is first asked for: on the GPU path that is one
    copy of each matmul's tickets per step, and no host round trip for them during the step."""

    def __init__(self, params: PouwParams, header_seed: bytes, step: int, target: int, backend: Backend) -> None:
        self.params = params
        self.header_seed = header_seed
        self.step = step
        self.target = target
        self.backend = backend
        self.tiles_evaluated = 0
        self.macs = 0
        self._pending: list[TileTickets] = []
        self._best: bytes | None = None
        self._winner: TileProof | None = None
        self._winning_ticket: bytes | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        product = noisy_product(
            self.params, self.header_seed, self.step, index, a, b, self.backend.int_mm, self.backend
        )
        self._pending.append(product.lottery())
        self.tiles_evaluated += product.tile_count
        m, k, n = product.shape
        self.macs += m * k * n
        return product.exact(a)

    def _read_draws(self) -> None:
        for draws in self._pending:
            found = draws.scan(self.target, self.params.reference_work)
            if found.best_ticket is not None and (self._best is None or found.best_ticket < self._best):
                self._best = found.best_ticket
            if self._winner is None and found.winner >= 0:
                self._winner = draws.tile_proof(found.winner)
                self._winning_ticket = found.winner_ticket
        self._pending.clear()

    @property
    def best_ticket(self) -> bytes | None:
        self._read_draws()
        return self._best

    @property
    def winner(self) -> TileProof | None:
        self._read_draws()
        return self._winner

    @property
    def winning_ticket(self) -> bytes | None:
        self._read_draws()
        return self._winning_ticket
