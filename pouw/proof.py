"""What a seal and a block body carry for the proof of useful work, and the trajectory commitment.

* :class:`TileProof` — the winning tile: where it is (step, matmul, tile), the operand commitments
  HA/HB, the tile's BM rows of A and BN columns of B with their Merkle paths. Encoded, it is the
  seal's ``proof`` bytes.
* :class:`WorkData` — the block body's ``work`` bytes: every checkpoint state hash of the shard,
  the full states at the starts of the segments a validator replays, and the final state.
* :class:`SealClaim` — the four values a seal carries besides its header: ``steps``,
  ``final_state_hash``, ``trajectory_root``, ``proof``.

Trajectory commitment (normative): for a shard of N >= 1 steps from start state S_0 and checkpoint
interval k, the checkpoints are the states at positions 0, k, 2k, ... below N, and N itself; the
trajectory root is ``merkle_root`` over their ``ModelState.hash()`` values in that order. Segment s
runs from position s·k to min((s+1)·k, N); there are ceil(N/k) segments. A validator replays the
first and last segment, the one holding the winning step, and q more drawn by
``Prng("pouw/replay", ticket).sample_without_replacement`` over the remaining segments in order.

Trajectory before the draw (v2, normative): the step at offset i (absolute step j = S_0.step + i)
of a shard mined under lottery seed σ draws its tickets under the step seed
``σ_j = H("pouw/step-seed", pack([σ, j, R_i]))`` (:func:`step_seed`), where the running root
``R_i = merkle_root`` over the leaves at positions 0, k, ..., ⌊i/k⌋·k (:func:`running_root`): every
leaf up to the start of the step's own segment. The winning step is the shard's last, so its
ticket, and the replay plan drawn from that ticket, depend on every leaf but the final one; the
seal carries that root as ``prefix_root`` so the tile is checkable from the header and seal alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chain.encoding import Bytes, Container, ListOf, UInt, pack, wire
from chain.hashing import HASH_SIZE, merkle_root, tagged_hash
from pouw.prng import Prng

# Static encoding caps; the preset's tighter caps are checked by the verifier.
MAX_PATH = 32
MAX_OPERAND_BYTES = 1 << 22
MAX_CHECKPOINTS = 1 << 20
MAX_REPLAYED = 1 << 10
MAX_STATE_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class TileProof(Container):
    """A winning tile of the noisy product at absolute step ``step``, matmul ``matmul_index``.

    ``a_rows`` holds rows tile_row·BM ... +BM of A (row-major int8, BM·k bytes); ``b_cols`` holds
    columns tile_col·BN ... +BN of B, each column's k int8 entries contiguous (BN·k bytes). The
    paths open the tile's row block (resp. column block) against HA (resp. HB), see
    :func:`pouw.transcript.commit_rows`.
    """

    step: int = wire(UInt(64))
    matmul_index: int = wire(UInt(16))
    tile_index: int = wire(UInt(32))
    m: int = wire(UInt(32))
    k: int = wire(UInt(32))
    n: int = wire(UInt(32))
    ha: bytes = wire(Bytes(HASH_SIZE))
    hb: bytes = wire(Bytes(HASH_SIZE))
    a_rows: bytes = wire(Bytes(max_len=MAX_OPERAND_BYTES))
    b_cols: bytes = wire(Bytes(max_len=MAX_OPERAND_BYTES))
    a_path: tuple[bytes, ...] = wire(ListOf(Bytes(HASH_SIZE), MAX_PATH))
    b_path: tuple[bytes, ...] = wire(ListOf(Bytes(HASH_SIZE), MAX_PATH))


@dataclass(frozen=True, slots=True)
class WorkData(Container):
    """The trajectory evidence a block body carries.

    ``checkpoint_hashes`` are the trajectory leaves (positions 0, k, 2k, ..., N); ``checkpoints``
    the encoded states at the start positions of the replayed segments other than segment 0
    (whose start is the job's on-chain state), in increasing segment order; ``final_state`` the
    encoded state after step N, which becomes the job's on-chain state.
    """

    checkpoint_hashes: tuple[bytes, ...] = wire(ListOf(Bytes(HASH_SIZE), MAX_CHECKPOINTS))
    checkpoints: tuple[bytes, ...] = wire(ListOf(Bytes(max_len=MAX_STATE_BYTES), MAX_REPLAYED))
    final_state: bytes = wire(Bytes(max_len=MAX_STATE_BYTES))


@dataclass(frozen=True, slots=True)
class SealClaim:
    """The proof-of-useful-work values of a block seal (the body carries the encoded WorkData)."""

    steps: int
    final_state_hash: bytes
    trajectory_root: bytes
    prefix_root: bytes
    proof: bytes


def segment_count(steps: int, interval: int) -> int:
    return -(-steps // interval)


def checkpoint_positions(steps: int, interval: int) -> list[int]:
    """Positions (steps since the start) of the trajectory leaves: 0, k, 2k, ... below N, then N."""
    return [*range(0, steps, interval), steps]


def trajectory_root(state_hashes: Sequence[bytes]) -> bytes:
    """Root of the trajectory tree over the checkpoint state hashes, in position order."""
    return merkle_root(list(state_hashes))


def running_root(state_hashes: Sequence[bytes], offset: int, interval: int) -> bytes:
    """R_i: the root over the leaves committed before the step at ``offset`` (positions 0, k, ...,
    ⌊offset/k⌋·k); ``state_hashes`` holds at least those leaves, in position order."""
    count = offset // interval + 1
    if len(state_hashes) < count:
        raise ValueError(f"{len(state_hashes)} leaves, the step at offset {offset} needs {count}")
    return trajectory_root(state_hashes[:count])


def prefix_root(leaves: Sequence[bytes]) -> bytes:
    """The running root of a shard's winning (last) step: the root over every leaf but the final one."""
    return trajectory_root(leaves[:-1])


def step_seed(sigma: bytes, step: int, root: bytes) -> bytes:
    """σ_j, the seed the tickets of absolute step ``step`` are drawn under (see the module doc)."""
    return tagged_hash("pouw/step-seed", pack([sigma, step, root]))


def segment_of(offset: int, interval: int) -> int:
    """The segment holding the step taken from position ``offset`` (0-based, since the start)."""
    return offset // interval


def replay_plan(steps: int, interval: int, winning_offset: int, sampled: int, ticket: bytes) -> list[int]:
    """The segments a validator replays, in increasing order (see the module docstring)."""
    count = segment_count(steps, interval)
    mandatory = {0, count - 1, segment_of(winning_offset, interval)}
    others = [s for s in range(count) if s not in mandatory]
    picks = Prng("pouw/replay", ticket).sample_without_replacement(len(others), min(sampled, len(others)))
    return sorted(mandatory | {others[i] for i in picks})
