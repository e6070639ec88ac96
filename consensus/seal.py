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


def trajectory_seed(job_id: bytes, start_state_hash: bytes, miner: bytes) -> bytes:
    """τ: picks the batches of a miner's trajectory; independent of the block template, so a miner
    keeps its training progress when it refreshes its template. It includes the miner, so a new
    miner address (a new σ) means a new trajectory: re-rolling σ that way costs real training."""
    return tagged_hash("pouw/trajectory", job_id + start_state_hash + miner)
