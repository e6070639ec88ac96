"""The noisy-transcript product: operand commitments, the tile transcript, tickets and the win rule.

For each matmul A (m×k) · B (k×n) of training step j (normative; docs/protocol.md Part IV):

1. HA = :func:`commit_rows` of A's rows, HB = :func:`commit_rows` of B's columns.
2. σ_m = H("pouw/sigma-m", pack([σ, j, index, m, k, n, HA, HB])); noise E, F from
   :func:`pouw.noise.draw_noise`.
3. C' = (A+E)(B+F) with k consumed in chunks of t: after chunk c every output element holds its
   running partial sum P_c, and its mix state is folded by :func:`fold_chunk` (a cubic map modulo
   the prime p = 2**31 - 1, int64 arithmetic without overflow, so it runs alike on numpy, CPU and
   CUDA tensors). A tile's digest is four lanes Σ_e (h_e · W[lane, e] mod p) mod p over its BM·BN
   elements, with fixed weights W from ``Prng("pouw/mix-weights", BM, BN)``, written as 4-byte
   big-endian words (16 bytes).
4. ticket = H("pouw/ticket", pack([σ_m, tile_index, digest])); tiles are numbered row-major over
   the (m/BM)×(n/BN) grid. The tile wins iff int(ticket, big-endian) · reference_work <
   target · tile_work, tile_work = BM·BN·k: every MAC has the same odds whatever the job.
5. The exact product is recovered as C = C' − A·F − E·(B+F).

:class:`NoisyTranscriptProduct` is the matmul hook the training engine calls (miner side);
:func:`tile_digest` recomputes one tile's transcript from its rows and columns (validator side).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from chain.encoding import pack
from chain.errors import Reason, ValidationError
from chain.hashing import merkle_leaf, merkle_proof_of_hashes, merkle_root_of_hashes, tagged_hash
from pouw.backends import Backend
from pouw.noise import NoiseFactors, draw_noise, exact_matmul
from pouw.params import PAYLOAD_BOUND, PouwParams
from pouw.prng import Prng
from pouw.proof import TileProof

MIX_PRIME = (1 << 31) - 1
DIGEST_LANES = 4

IntMatmul = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- commitments and seeds -------------------------------------------------------------------------


def block_roots(rows: npt.NDArray[np.int8], block: int) -> list[bytes]:
    """Merkle roots of consecutive blocks of ``block`` rows; leaf i is ``merkle_leaf(row_i bytes)``."""
    leaves = [merkle_leaf(row.tobytes()) for row in np.ascontiguousarray(rows, dtype=np.int8)]
    return [merkle_root_of_hashes(leaves[i : i + block]) for i in range(0, len(leaves), block)]


def commit_rows(rows: npt.NDArray[np.int8], block: int) -> bytes:
    """HA (rows of A) or HB (rows of Bᵀ): the Merkle root over the rows' raw int8 bytes.

    With ``block`` a power of two dividing the row count, aligned blocks of rows are whole
    subtrees, so this equals ``merkle_root`` over the rows and a tile's block opens with one path.
    """
    return merkle_root_of_hashes(block_roots(rows, block))


def matmul_seed(header_seed: bytes, step: int, index: int, shape: tuple[int, int, int], ha: bytes, hb: bytes) -> bytes:
    """σ_m of matmul ``index`` of step ``step`` with operand commitments HA, HB."""
    m, k, n = shape
    return tagged_hash("pouw/sigma-m", pack([header_seed, step, index, m, k, n, ha, hb]))


# --- transcript mix --------------------------------------------------------------------------------


def fold_chunk(state: torch.Tensor, partial: torch.Tensor, chunk_index: int) -> torch.Tensor:
    """One transcript step per element: u = (h + P mod p) mod p; h' = (u³ mod p + c + 1) mod p."""
    u = (state + partial % MIX_PRIME) % MIX_PRIME
    return ((u * u) % MIX_PRIME * u + (chunk_index + 1)) % MIX_PRIME


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
    c_noisy: torch.Tensor  # (A+E)(B+F), int64
    tickets: list[bytes]  # per tile, row-major over the grid

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
        return denoise(self.c_noisy, a, self.b_noisy, self.noise)


def noisy_product(
    params: PouwParams,
    header_seed: bytes,
    step: int,
    index: int,
    a: torch.Tensor,
    b: torch.Tensor,
    int_mm: IntMatmul,
) -> NoisyProduct:
    """Steps 1-4 of the module docstring for A·B (int8, on any device): commit, seed, noise, transcript,
    tickets. ``int_mm`` multiplies the noisy int8 chunks exactly (the backend's tensor-core path)."""
    m, k = a.shape
    n = b.shape[1]
    if m % params.tile_m or n % params.tile_n:
        raise ValidationError(Reason.OUT_OF_RANGE, f"product {m}x{n} is not a grid of tiles")
    if int(a.abs().max()) > PAYLOAD_BOUND or int(b.abs().max()) > PAYLOAD_BOUND:
        raise ValidationError(Reason.OUT_OF_RANGE, f"matmul operand beyond ±{PAYLOAD_BOUND}")
    a_host = a.cpu().numpy()
    bt_host = np.ascontiguousarray(b.cpu().numpy().T)
    a_blocks, b_blocks = block_roots(a_host, params.tile_m), block_roots(bt_host, params.tile_n)
    ha, hb = merkle_root_of_hashes(a_blocks), merkle_root_of_hashes(b_blocks)
    sigma_m = matmul_seed(header_seed, step, index, (m, k, n), ha, hb)
    noise = draw_noise(sigma_m, m, k, n, params.rank).to(a.device)
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
        product = noisy_product(self.params, self.header_seed, self.step, index, a, b, self.backend.int_mm)
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
