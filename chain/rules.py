"""The parameters the state transition needs from consensus, passed in as one immutable value.

chain/ owns the state machine; consensus/ owns the numbers (fees, subsidy schedule) and the PoUW
hooks (a job's initial model hash, job-spec limits). Passing them in keeps chain/ free of pouw/ and
of the presets, and lets tests run the transition with simple rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chain.types import JobSpec


def _no_spec_check(spec: JobSpec) -> None:
    return None


def _unknown_shape(data: bytes) -> tuple[int, int]:
    return 0, 0


def _hash_seed(spec: JobSpec, seed: bytes) -> bytes:
    from chain.hashing import tagged_hash

    return tagged_hash("pouw/test-init", spec.encode() + seed)


@dataclass(frozen=True)
class ChainRules:
    chain_id: int
    min_fee: int = 1_000
    """Smallest fee a transaction may pay, in base units."""
    fee_per_byte: int = 1
    """Added to ``min_fee`` per byte of the encoded transaction (datasets pay for their size)."""
    max_block_txs: int = 1_000
    subsidy: Callable[[int], int] = lambda height: 50 * 10**8
    """Base units minted to the miner of the block at ``height``."""
    initial_model_hash: Callable[[JobSpec, bytes], bytes] = _hash_seed
    """Hash of a job's protocol-drawn initial model, given its spec and init seed."""
    validate_job_spec: Callable[[JobSpec], None] = _no_spec_check
    """Raises :class:`chain.errors.InvalidTransaction` (``BAD_JOB_SPEC``) for specs consensus forbids."""
    dataset_shape: Callable[[bytes], tuple[int, int]] = _unknown_shape
    """(features, classes) of a published dataset's bytes; raises InvalidTransaction (``BAD_DATASET``)
    for bytes that are no dataset. (0, 0) means unknown: job specs are then not checked against it."""

    def required_fee(self, encoded_size: int) -> int:
        return self.min_fee + self.fee_per_byte * encoded_size
