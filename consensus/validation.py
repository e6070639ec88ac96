"""The block validation pipeline, cheap checks first (normative order, docs/protocol.md "Validation").

1. size and encoding                      :func:`decode_block`
2. known parent, not already invalid      (the node, against its ChainDB)
3. header: version, height, timestamp (> median of the last 11, <= local clock + 2 h; a block from
   the future is *held*, not punished), target == ASERT value            :func:`check_header`
4. winning tile                           ``SealVerifier.check_tile``
5. tx root, signatures (process pool), state transition, post-state root, trajectory replay
                                          :func:`connect_block`

Each stage raises :class:`chain.errors.InvalidBlock` (or a subclass) with the rule's reason. Stage 3
needs the parent's ancestry, given as a :class:`HeaderContext`; stage 5 runs inside the ChainDB's
``connect`` callback when a block is about to become canonical. The local clock is an argument:
nothing here reads the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chain.encoding import MAX_MESSAGE_BYTES
from chain.errors import InvalidBlock, InvalidEncoding, Reason, ValidationError
from chain.genesis import BLOCK_VERSION
from chain.state import StateDiff, StateReader
from chain.transition import apply_block
from chain.types import Block, Header, tx_root
from consensus.difficulty import MAX_FUTURE_SECONDS, asert_target
from consensus.presets import Preset
from consensus.seal import SealVerifier


class FutureBlock(InvalidBlock):
    """A block stamped more than 2 h ahead of the local clock: held and retried, not punished."""


@dataclass(frozen=True)
class HeaderContext:
    """What header checks need to know about the parent's branch."""

    parent: Header
    parent_hash: bytes
    median_time_past: int
    anchor: Header | None
    """The branch's block at height 1 (the ASERT anchor); None when the parent is genesis."""


def decode_block(raw: bytes, preset: Preset) -> Block:
    if len(raw) > min(preset.max_block_bytes, MAX_MESSAGE_BYTES):
        raise InvalidBlock(Reason.BLOCK_TOO_LARGE, f"{len(raw)} bytes > {preset.max_block_bytes}")
    try:
        return Block.decode(raw)
    except InvalidEncoding as exc:
        raise InvalidBlock(exc.reason, f"block encoding: {exc.detail}") from exc


def expected_target(preset: Preset, ctx: HeaderContext, genesis_target: int) -> int:
    """Block 1 keeps the genesis target; later blocks follow ASERT anchored at block 1."""
    if ctx.anchor is None:
        return genesis_target
    return asert_target(
        anchor_target=ctx.anchor.target, anchor_height=ctx.anchor.height,
        anchor_timestamp=ctx.anchor.timestamp, parent_height=ctx.parent.height,
        parent_timestamp=ctx.parent.timestamp, block_time=preset.block_time,
        half_life=preset.half_life,
    )


def check_header(preset: Preset, header: Header, ctx: HeaderContext, genesis_target: int, now: int) -> None:
    if header.version != BLOCK_VERSION:
        raise InvalidBlock(Reason.BAD_VERSION, f"version {header.version}")
    if header.prev_hash != ctx.parent_hash:
        raise InvalidBlock(Reason.BAD_PREV_HASH, "header does not name this parent")
    if header.height != ctx.parent.height + 1:
        raise InvalidBlock(Reason.BAD_HEIGHT, f"height {header.height} after {ctx.parent.height}")
    if header.timestamp <= ctx.median_time_past:
        raise InvalidBlock(
            Reason.BAD_TIMESTAMP, f"timestamp {header.timestamp} <= median time past {ctx.median_time_past}"
        )
    if header.timestamp > now + MAX_FUTURE_SECONDS:
        raise FutureBlock(Reason.FUTURE_TIMESTAMP, f"timestamp {header.timestamp} is > 2 h ahead of {now}")
    want = expected_target(preset, ctx, genesis_target)
    if header.target != want:
        raise InvalidBlock(Reason.BAD_TARGET, f"target {header.target:#x} != {want:#x}")


class OffloadedChecks(Protocol):
    """The signature and trajectory-replay checks of one block, running elsewhere (a process pool)."""

    def signature_error(self) -> ValidationError | None:
        """The first bad signature's error (waits for the checks), or None."""

    def work_error(self) -> ValidationError | None:
        """The replay's error (waits for the checks), or None."""


Offload = Callable[[StateReader, Block], OffloadedChecks]
"""Starts a block's signature and replay checks elsewhere; called after the tx root is checked."""


def connect_block(
    preset: Preset, verifier: SealVerifier, pre: StateReader, block: Block, offload: Offload | None = None
) -> StateDiff:
    """Stage 5, everything that needs the pre-state, in order: tx root, signatures and the state
    transition (with the post-state root), then the trajectory replay.

    With ``offload`` the signatures and the replay run elsewhere (the node's process pool) while
    this thread runs the transition; the first failure is still reported in the order above."""
    if tx_root(block.txs) != block.header.tx_root:
        raise InvalidBlock(Reason.BAD_TX_ROOT, "tx root does not match the transactions")
    if offload is None:
        diff = apply_block(pre, block, preset.chain_rules)
        verifier.check_work(pre, block)
        return diff
    checks = offload(pre, block)
    transition_error: ValidationError | None = None
    try:
        diff = apply_block(pre, block, preset.chain_rules, check_signatures=False)
    except ValidationError as exc:
        transition_error = exc
    for error in (checks.signature_error(), transition_error, checks.work_error()):
        if error is not None:
            raise error
    return diff
