"""The error hierarchy every layer raises: one root, a typed reason per rule.

Validation never uses ``assert`` (``python -O`` strips it); each rule that can reject raises a
subclass of :class:`PouwError` carrying a :class:`Reason`, so callers (the node, the p2p layer,
tests) can tell *which* rule failed without parsing messages.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why something was rejected. Values are stable strings used in logs and the HTTP API."""

    # encoding
    MALFORMED = "malformed"
    TRAILING_BYTES = "trailing-bytes"
    NON_CANONICAL = "non-canonical"
    WRONG_TYPE = "wrong-type"
    WRONG_FIELD_COUNT = "wrong-field-count"
    OUT_OF_RANGE = "out-of-range"
    TOO_LONG = "too-long"
    # transactions
    BAD_SIGNATURE = "bad-signature"
    HIGH_S = "high-s-signature"
    BAD_PUBLIC_KEY = "bad-public-key"
    WRONG_CHAIN_ID = "wrong-chain-id"
    NONCE_GAP = "nonce-gap"
    NONCE_REPLAY = "nonce-replay"
    INSUFFICIENT_BALANCE = "insufficient-balance"
    OVERFLOW = "overflow"
    DUPLICATE_TX = "duplicate-tx"
    FEE_TOO_LOW = "fee-too-low"
    ZERO_AMOUNT = "zero-amount"
    UNKNOWN_JOB = "unknown-job"
    NOT_JOB_OWNER = "not-job-owner"
    JOB_NOT_ACTIVE = "job-not-active"
    BAD_JOB_SPEC = "bad-job-spec"
    UNKNOWN_DATASET = "unknown-dataset"
    DATASET_EXISTS = "dataset-exists"
    # mempool admission (policy, not consensus: see docs/protocol.md Part VI)
    ALREADY_KNOWN = "already-known"
    POOL_FULL = "pool-full"
    REPLACEMENT_FEE_TOO_LOW = "replacement-fee-too-low"
    TOO_MANY_FROM_ACCOUNT = "too-many-from-account"
    NONCE_TOO_FAR = "nonce-too-far"
    # blocks
    BAD_HEIGHT = "bad-height"
    BAD_PREV_HASH = "bad-prev-hash"
    UNKNOWN_PARENT = "unknown-parent"
    KNOWN_INVALID = "known-invalid"
    BAD_TIMESTAMP = "bad-timestamp"
    FUTURE_TIMESTAMP = "future-timestamp"
    BAD_TARGET = "bad-target"
    BAD_TX_ROOT = "bad-tx-root"
    BAD_STATE_ROOT = "bad-state-root"
    BAD_SEAL = "bad-seal"
    BAD_JOB_PROGRESS = "bad-job-progress"
    BLOCK_TOO_LARGE = "block-too-large"
    TOO_MANY_TXS = "too-many-txs"
    BAD_VERSION = "bad-version"
    MUTATED = "mutated-block"
    """The body does not match what the block's hash commits to: the bytes were changed on the way,
    the block (its hash) may still be valid. Never remembered as invalid."""
    # block store
    REORG_TOO_DEEP = "reorg-too-deep"
    # training engine (pouw/)
    BAD_DATASET = "bad-dataset"
    BACKEND_UNAVAILABLE = "backend-unavailable"


MUTATION_REASONS = frozenset({Reason.BAD_TX_ROOT, Reason.MUTATED})


def is_mutation(reason: Reason) -> bool:
    """Whether a failure for ``reason`` may come from a body that the block's hash does not fix
    (Bitcoin's "mutated" blocks): such a block is dropped, and its hash is never remembered as
    invalid — the genuine block may still arrive under the same hash."""
    return reason in MUTATION_REASONS


class PouwError(Exception):
    """Root of every error this project raises on purpose."""


class ValidationError(PouwError):
    """A rule rejected an input. ``reason`` says which rule; ``detail`` is for humans."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)

    def __reduce__(self) -> tuple[type[ValidationError], tuple[Reason, str]]:
        """Pickle by (reason, detail), so the typed error crosses a process pool intact."""
        return type(self), (self.reason, self.detail)


class InvalidEncoding(ValidationError):
    """Bytes that are not the canonical encoding of a value of the expected type."""


class InvalidTransaction(ValidationError):
    """A transaction that breaks a state-transition rule."""


class InvalidBlock(ValidationError):
    """A block that breaks a consensus rule."""


class StoreError(PouwError):
    """The block store is unusable (corrupt, locked, or inconsistent)."""
