"""Seal verification behind one interface, so tests can swap in a no-proof seal (py-evm style).

:class:`SealVerifier` has two stages, matching the validation pipeline: ``check_tile`` (stage 4,
milliseconds, needs only the header and seal) and ``check_work`` (the trajectory replay of stage 5,
needs the pre-state for the job's start model). :class:`NoProofSealVerifier` accepts any seal;
:class:`consensus.pouw_seal.PouwSealVerifier` checks the proof of useful work.
"""

from __future__ import annotations

from typing import Protocol

from chain.hashing import tagged_hash
from chain.state import StateReader
from chain.types import Block, Header, Seal


class SealVerifier(Protocol):
    def check_tile(self, header: Header, seal: Seal) -> None:
        """Raise InvalidBlock unless the seal's winning tile beats the header's target."""

    def check_work(self, pre: StateReader, block: Block) -> None:
        """Raise InvalidBlock unless the claimed training replays bit-exactly from the job's state."""


class NoProofSealVerifier:
    """Accepts every seal: for tests of everything but the proof of work."""

    def check_tile(self, header: Header, seal: Seal) -> None:
        return None

    def check_work(self, pre: StateReader, block: Block) -> None:
        return None


def trajectory_seed(job_id: bytes, start_state_hash: bytes, miner: bytes, shard_nonce: int) -> bytes:
    """τ = H("pouw/trajectory", job_id ‖ start_state_hash ‖ miner ‖ shard_nonce as 8 big-endian
    bytes): picks the batches of a miner's shard. Independent of the rest of the block template, so
    a miner keeps its training progress when it refreshes its template. It includes the miner and
    the shard nonce, the two knobs of σ a miner can turn without training another job: a new value
    of either is a new trajectory from the job's start state, so a fresh σ costs real training."""
    if not 0 <= shard_nonce < 1 << 64:
        raise ValueError("shard nonce out of range")
    return tagged_hash("pouw/trajectory", job_id + start_state_hash + miner + shard_nonce.to_bytes(8, "big"))


def header_trajectory_seed(header: Header) -> bytes:
    """τ of the shard a header names."""
    return trajectory_seed(header.job_id, header.start_state_hash, header.miner, header.shard_nonce)
