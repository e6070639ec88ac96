"""The parameters the state transition needs from consensus, passed in as one immutable value.

chain/ owns the state machine; consensus/ owns the numbers (fees, subsidy schedule, the reward's
work share, the job-fee burn) and the PoUW hooks (a job's initial model hash, its MACs per step,
job-spec limits). Passing them in keeps chain/ free of pouw/ and
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


def _one_mac(spec: JobSpec) -> int:
    return 1


def _one_block(target: int) -> int:
    return 1


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
    macs_per_step: Callable[[JobSpec], int] = _one_mac
    """Multiply-accumulates one training step of a job costs (the unit of useful work)."""
    expected_block_work: Callable[[int], int] = _one_block
    """Expected MACs of a block at a target: the useful work that earns the full subsidy."""
    min_subsidy_fee_per_mmac: int = 0
    """A client job earns its miner the subsidy only if it pays at least this many base units per
    2^20 MACs (built-in jobs always do); see docs/protocol.md §8."""
    job_fee_burn: tuple[int, int] = (0, 1)
    """(numerator, denominator): the share of released job pay that is burned (rounded up)."""

    def required_fee(self, encoded_size: int) -> int:
        return self.min_fee + self.fee_per_byte * encoded_size
