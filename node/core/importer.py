"""The block pipeline on the writer thread: stages 2–5 for one decoded block (known parent, not known
invalid, header, winning tile, then the ChainDB import whose ``connect`` runs stage 5), blocks held
for a future timestamp, and the mempool's upkeep when the head moves.

Stage 5 is :func:`consensus.validation.connect_block`, with the verification pool's ``offload``
when the node has one.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from chain.errors import InvalidBlock, PouwError, Reason, StoreError, ValidationError, is_mutation
from chain.state import StateDiff, StateReader, get_job
from chain.transition import apply_block
from chain.types import Block
from consensus.mempool import Mempool
from consensus.pouw_seal import PouwSealVerifier
from consensus.presets import Preset
from consensus.seal import NoProofSealVerifier
from consensus.validation import FutureBlock, check_body_commitments, connect_block
from node import metrics
from node.core.header_tree import HeaderTree
from node.core.models import ModelIndex
from node.core.types import BlockOutcome, BlockStatusText
from node.core.verdicts import Verdicts
from node.core.verify_pool import PoolChecks, VerifyPool
from store import schema
from store.chaindb import BlockStatus, ChainDB, ImportResult
from store.kv import KeyValueStore, StoreWriteError

log = logging.getLogger("pouw.node.chain")

MAX_HELD_FUTURE = 64
UNVERIFIABLE = "unverifiable-tile"
"""The reason of a side block dropped because its job is unknown at the head (no work shown)."""
STORE_PAUSED = "store-paused"
"""The reason of a block held because block import is paused (the store refused a write)."""


def check_commitments(block: Block) -> None:
    """Context-free: the body matches what the header and seal commit to (tx root and work hash),
    checked before anything of the block is stored (a mismatch is a mutation, see
    :func:`chain.errors.is_mutation`): :func:`consensus.validation.check_body_commitments`."""
    check_body_commitments(block)


class BlockImporter:
    """Validates and stores blocks. Attach a ChainDB and verifier before use."""

    def __init__(self, preset: Preset, mempool: Mempool, headers: HeaderTree, verdicts: Verdicts,
                 models: ModelIndex, pool: VerifyPool, clock: Callable[[], float] = time.time) -> None:
        self.preset = preset
        self.mempool = mempool
        self.headers = headers
        self.verdicts = verdicts
        self.models = models
        self.pool = pool
        self.clock = clock
        self.held: OrderedDict[bytes, Block] = OrderedDict()
        self.paused: str | None = None
        self._prestarted: OrderedDict[bytes, tuple[bytes, PoolChecks]] = OrderedDict()
        """Why block import is paused (a write to the store failed: disk full), or None."""
        self.blocks_imported = 0
        self.blocks_rejected = 0
        self._db: ChainDB | None = None
        self.verifier: PouwSealVerifier | NoProofSealVerifier = NoProofSealVerifier()

    def attach(self, db: ChainDB, verifier: PouwSealVerifier | NoProofSealVerifier) -> None:
        self._db = db
        self.verifier = verifier

    @property
    def db(self) -> ChainDB:
        if self._db is None:
            raise PouwError("importer has no chain database")
        return self._db

    def connect(self, pre: StateReader, block: Block) -> StateDiff:
        """The ChainDB's ``connect``: stage 5, in the verification pool when there is one (checks
        :meth:`prestart` began for this block on this parent are used, not started again)."""
        offload = self.pool.offload(self.verifier)
        if offload is None:
            return connect_block(self.preset, self.verifier, pre, block)
        started = self._prestarted.pop(block.hash, None)
        if started is not None and started[0] == block.header.prev_hash == self.db.head.hash:
            checks = started[1]
            return connect_block(self.preset, self.verifier, pre, block, lambda _pre, _block: checks)
        return connect_block(self.preset, self.verifier, pre, block, offload)

    def prestart(self, block: Block) -> PoolChecks | None:
        """For a block that extends the head: start its signature and replay checks in the pool now,
        so the writer thread need not wait for them (the caller awaits them, then imports). None
        when the block does not extend the head, is known, or cannot be checked yet."""
        offload = self.pool.offload(self.verifier)
        if offload is None or self.paused is not None or block.header.prev_hash != self.db.head.hash:
            return None
        if block.hash in self.verdicts or self.db.get_index(block.hash) is not None:
            return None
        try:
            self.headers.check(block.header)
            state = self.db.state
            if isinstance(self.verifier, PouwSealVerifier):
                self.verifier.check_tile(block.header, block.seal, state)  # cheap checks before a replay
            check_commitments(block)
            checks = offload(state, block)
        except ValidationError:
            return None  # import_block reports it, in the pipeline's order
        if not isinstance(checks, PoolChecks):
            return None
        self._prestarted[block.hash] = (block.header.prev_hash, checks)
        while len(self._prestarted) > MAX_HELD_FUTURE:
            self._prestarted.popitem(last=False)
        return checks

    def reconnect(self, pre: StateReader, block: Block) -> StateDiff:
        """The ChainDB's ``reconnect``, for a stored block that connected before from the same bytes:
        its signatures and replay passed then and cannot fail now, so only the transition runs
        (a valid side branch is not re-verified for every tip that extends it)."""
        check_commitments(block)
        return apply_block(pre, block, self.preset.chain_rules, check_signatures=False)

    def import_block(self, block: Block) -> tuple[BlockOutcome, ImportResult | None]:
        """Stages 2–5 for one decoded block."""
        block_hash = block.hash
        height = block.height
        known_reason = self.verdicts.reason(block_hash)
        if known_reason is not None:
            return BlockOutcome(BlockStatusText.INVALID, block_hash, height, Reason.KNOWN_INVALID.value,
                                known_reason), None
        known = self.db.get_index(block_hash)
        if known is not None:
            if known.status == BlockStatus.INVALID:
                return BlockOutcome(BlockStatusText.INVALID, block_hash, height, Reason.KNOWN_INVALID.value), None
            return BlockOutcome(BlockStatusText.KNOWN, block_hash, height), None
        parent_index = self.db.get_index(block.header.prev_hash)
        if parent_index is None:
            return BlockOutcome(BlockStatusText.ORPHAN, block_hash, height, Reason.UNKNOWN_PARENT.value), None
        if self.paused is not None:
            return self._hold(block, STORE_PAUSED, self.paused), None
        try:
            if parent_index.status == BlockStatus.INVALID:
                raise InvalidBlock(Reason.KNOWN_INVALID, "parent is invalid")
            self.headers.check(block.header)
            if isinstance(self.verifier, PouwSealVerifier):
                # v2: a pure function of the header and seal, whatever branch created the job
                began = time.perf_counter()
                self.verifier.check_tile(block.header, block.seal)
                metrics.observe_verification("tile", time.perf_counter() - began)
            check_commitments(block)
            self.models.store_model(block)
            began = time.perf_counter()
            result = self.db.import_block(block)  # stage 5 (transition, signatures, replay) and the write
            metrics.observe_verification("connect", time.perf_counter() - began)
        except FutureBlock as exc:
            return self._hold(block, exc.reason.value, exc.detail), None
        except StoreWriteError as exc:
            self.pause(exc)
            return self._hold(block, STORE_PAUSED, str(exc)), None
        except ValidationError as exc:
            self.blocks_rejected += 1
            if is_mutation(exc.reason):
                log.info("dropped mutated block %d %s: %s", height, block_hash.hex()[:16], exc)
            else:
                self.verdicts.remember_invalid(block_hash, f"{exc.reason.value}: {exc.detail}")
                self.headers.invalidate(block_hash)
                log.info("rejected block %d %s: %s", height, block_hash.hex()[:16], exc)
            return BlockOutcome(BlockStatusText.INVALID, block_hash, height, exc.reason.value, exc.detail), None
        self.blocks_imported += 1
        self.headers.block_stored(block)
        became_tip = self.db.head.hash == block_hash or any(b.hash == block_hash for b in result.new_canonical)
        try:
            self.models.record_evaluations(result)
        except StoreError as exc:  # a node index, not the chain: report and carry on
            log.warning("evaluation history not written: %s", exc)
        return BlockOutcome(BlockStatusText.ACCEPTED, block_hash, height, became_tip=became_tip), result

    def _hold(self, block: Block, reason: str, detail: str) -> BlockOutcome:
        """Keep ``block`` to retry later (bounded; the oldest is dropped), unpunished and unjudged."""
        self.held[block.hash] = block
        while len(self.held) > MAX_HELD_FUTURE:
            self.held.popitem(last=False)
        return BlockOutcome(BlockStatusText.HELD, block.hash, block.height, reason, detail)

    def pause(self, exc: StoreWriteError) -> None:
        """A store write failed: stop importing blocks (the store is unchanged) until :meth:`resume`."""
        if self.paused is None:
            cause = "the disk is full" if exc.no_space else "a write to the store failed"
            log.error("block import paused: %s (%s); the node keeps serving and retries the held blocks "
                      "periodically once the store accepts writes again", cause, exc)
        self.paused = str(exc)

    def resume(self, store: KeyValueStore) -> bool:
        """Try to end a pause: reopen the store and write a probe. True when imports may go on."""
        if self.paused is None:
            return True
        try:
            store.reopen()
            store.put(schema.PROBE_KEY, b"\x01")
        except StoreWriteError as exc:
            self.paused = str(exc)
            return False
        except StoreError as exc:
            log.warning("store still unavailable: %s", exc)
            return False
        log.warning("block import resumed: the store accepts writes again")
        self.paused = None
        return True

    def take_held(self) -> list[Block]:
        """The blocks held for a future timestamp, forgotten here (the caller resubmits them)."""
        held, self.held = list(self.held.values()), OrderedDict()
        return held

    def update_mempool(self, result: ImportResult) -> None:
        """The head moved: re-add undone blocks' txs, drop the new blocks' txs, revalidate."""
        now = int(self.clock())
        state = self.db.state
        for block in result.old_canonical:
            self.mempool.readd(list(block.txs), state, now)
        for block in result.new_canonical:
            self.mempool.remove_for_block(list(block.txs), state)
        # Rewards of undone blocks vanished: their miners' pending txs may no longer be affordable; and
        # a job a block trained may have finished, which invalidates its owner's pending cancel.
        touched = {block.header.miner for block in result.old_canonical}
        for block in result.new_canonical:
            job = get_job(state, block.header.job_id)
            if job is not None:
                touched.add(job.owner)
        self.mempool.revalidate(touched, state)
