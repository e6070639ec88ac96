"""Seal rejections: which check of the proof-of-useful-work verification failed first.

Every rejection by :mod:`pouw.verify` is a :class:`SealError` (an ``InvalidBlock`` with reason
``BAD_SEAL``) whose ``check`` names the first failed check, in the order the verifier runs them
(cheap checks first). No other exception escapes the verifier for bad input.
"""

from __future__ import annotations

from enum import StrEnum

from chain.errors import InvalidBlock, Reason


class SealCheck(StrEnum):
    """The checks of ``verify_seal``, roughly in the order they run (see pouw/verify.py)."""

    CONFIG = "config"  # the job's model does not fit the preset's caps
    STEPS = "steps"  # steps outside 1..max_steps_per_block, or the winning step is not the last
    SIZE = "size"  # proof or work bytes over their bound
    DECODE = "decode"  # not the canonical encoding of a TileProof / WorkData / ModelState
    INDICES = "indices"  # matmul index, shape, tile index or operand sizes out of range
    OPERAND_RANGE = "operand-range"  # a payload entry with |v| > 63
    MERKLE_A = "merkle-a"  # tile rows do not open the commitment HA
    MERKLE_B = "merkle-b"  # tile columns do not open the commitment HB
    TARGET = "target"  # the recomputed ticket does not win
    TRAJECTORY = "trajectory"  # checkpoint hashes: wrong count, wrong root, wrong start
    FINAL_STATE = "final-state"  # final state does not hash to the claimed final_state_hash
    CHECKPOINT = "checkpoint"  # a sampled checkpoint state does not hash to its leaf
    REPLAY = "replay"  # a replayed segment does not end on its committed state hash
    OPERANDS = "operands"  # the winning step's real operands do not commit to HA/HB


class SealError(InvalidBlock):
    """A seal that fails proof-of-useful-work verification."""

    def __init__(self, check: SealCheck, detail: str = "") -> None:
        self.check = check
        super().__init__(Reason.BAD_SEAL, f"{check.value}: {detail}" if detail else check.value)
