"""The node's chain, as the rest of the node sees it: one async facade over the node core.

:class:`ChainService` is what the HTTP API, the p2p layer and the miner RPC talk to. It owns ONE
dedicated writer thread: every part of the core (:mod:`node.core`) and every ChainDB access runs
there (LevelDB has a single owner and ChainDB a single writer), and the expensive checks —
signatures and the trajectory replay — run in the verification pool while that thread runs the
state transition. Async callers reach the chain only through the facade's coroutines (``read``
runs a query on the writer thread); synchronous callers on the event loop (the p2p backend) read
:attr:`ChainService.view`, an immutable :class:`~node.core.types.ChainView` (a store snapshot and
copies) that the writer thread publishes after every change.

Pipeline (consensus/validation.py gives the normative order): decode and size → known parent →
not known invalid → header (timestamp, ASERT target) → winning tile → [ChainDB import: tx root →
signatures ‖ state transition → trajectory replay]. Blocks from the future are held and retried;
blocks with an unknown parent are reported as orphans for the p2p layer to fetch parents of.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from chain.errors import InvalidBlock, PouwError, StoreError, ValidationError
from chain.state import JobRecord, StateReader, get_account
from chain.types import Block, Header, SealedHeader, SignedTx
from consensus.difficulty import block_work
from consensus.mempool import Mempool
from consensus.pouw_seal import PouwSealVerifier
from consensus.presets import Preset
from consensus.seal import NoProofSealVerifier
from consensus.validation import FutureBlock, HeaderContext, decode_block
from node.core.header_tree import MAX_HEADER_TREE, HeaderDeferred, HeaderTree
from node.core.importer import MAX_HELD_FUTURE, BlockImporter
from node.core.models import ModelIndex
from node.core.templates import MAX_TEMPLATES, TemplateBuilder
from node.core.types import Announcer, BlockOutcome, BlockStatusText, ChainView, HeaderEntry, Template
from node.core.verdicts import MAX_INVALID_REMEMBERED, Verdicts
from node.core.verify_pool import VerifyPool
from node.rejections import SubmissionCounter
from store.chaindb import ChainDB, ChainHead, ImportResult
from store.kv import KeyValueStore, LevelDBStore

__all__ = [
    "MAX_HEADER_TREE", "MAX_HELD_FUTURE", "MAX_INVALID_REMEMBERED", "MAX_TEMPLATES", "Announcer",
    "BlockOutcome", "BlockStatusText", "ChainService", "ChainView", "HeaderEntry", "Template",
]

log = logging.getLogger("pouw.node.chain")

T = TypeVar("T")


class ChainService:
    """The chain as the rest of the node sees it. Create, then ``await start()``; ``await stop()``."""

    def __init__(
        self, preset: Preset, datadir: Path, *, proof: bool = True, verify_workers: int = 1,
        backend: str = "cpu", clock: Callable[[], float] = time.time, store: KeyValueStore | None = None,
        mempool_max_txs: int = 5_000, mempool_max_bytes: int = 16 * 1024 * 1024,
        mempool_expiry: int = 3 * 3600,
    ) -> None:
        self.preset = preset
        self.rules = preset.chain_rules
        self.clock = clock
        self.backend = backend
        self.datadir = datadir
        self._store_arg = store
        self._proof = proof
        self.verifier: PouwSealVerifier | NoProofSealVerifier = NoProofSealVerifier()
        self.genesis, self._genesis_state = preset.genesis()
        self.mempool = Mempool(
            self.rules, max_txs=mempool_max_txs, max_bytes=mempool_max_bytes,
            expiry_seconds=mempool_expiry, max_per_account=64,
        )
        self._db: ChainDB | None = None
        self._store: KeyValueStore | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaindb")
        self._stopped = False
        self.verdicts = Verdicts()
        self.headers = HeaderTree(preset, self.genesis, self.verdicts, clock)
        self.models = ModelIndex()
        self.pool = VerifyPool(verify_workers if proof else 0, backend)
        self.templates = TemplateBuilder(preset, self.mempool, self.headers, clock)
        self.submissions = SubmissionCounter()
        self.importer = BlockImporter(preset, self.mempool, self.headers, self.verdicts, self.models,
                                      self.pool, clock)
        self._view: ChainView | None = None
        self.announcer: Announcer | None = None
        self._tip_listeners: list[Callable[[Block], Awaitable[None] | None]] = []
        self._tx_listeners: list[Callable[[SignedTx], Awaitable[None] | None]] = []
        self.started = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._call(self._open)
        self.pool.start()

    def _open(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._store = self._store_arg or LevelDBStore(self.datadir / "chain")
        started = time.monotonic()
        entries = self._store.verify()  # every checksum: a corrupt store is refused here, in one line
        log.info("store verified: %d entries in %.1f s", entries, time.monotonic() - started)
        if self._proof:
            self.verifier = PouwSealVerifier(self.preset, self.models.model_bytes, self.models.dataset_bytes,
                                             self.backend)
        self._db = ChainDB(
            self._store, self.genesis, self._genesis_state, self.importer.connect,
            lambda header: block_work(header.target), max_reorg_depth=self.preset.max_reorg_depth,
            reconnect=self.importer.reconnect,
        )
        self.models.attach(self._store, self._db, self.verifier)
        self.headers.attach(self._db, self.verifier)
        self.templates.attach(self._db, self.verifier)
        self.importer.attach(self._db, self.verifier)
        self._publish()

    @property
    def running(self) -> bool:
        return self._db is not None or self.pool.running

    async def stop(self) -> None:
        """Stop the pool, close the store and the writer thread. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self.pool.stop()
        if self._db is not None:
            await self._call(self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        self._view = None
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the writer thread, then publish a fresh :attr:`view`."""
        def run() -> T:
            try:
                return fn(*args, **kwargs)
            finally:
                if self._db is not None:
                    try:
                        self._publish()
                    except StoreError as exc:  # readers keep the last view until the store is back
                        log.warning("chain view not refreshed: %s", exc)
        return await self._call(run)

    @property
    def db(self) -> ChainDB:
        """The ChainDB: only for code running on the writer thread (``read``, the core)."""
        if self._db is None:
            raise PouwError("chain service is not started")
        return self._db

    # -- the published view ---------------------------------------------------------------------

    def _publish(self) -> None:
        """On the writer thread: snapshot what event-loop readers may see."""
        db = self.db
        pending = {txid: tx for txid in self.mempool.txids() if (tx := self.mempool.get(txid)) is not None}
        last = self._view
        if last is not None and last.head == db.head and last.best_header == self.headers.best:
            locator, path = last.locator, last.fetch_path
        else:
            locator, path = tuple(self.headers.locator()), tuple(self.headers.fetch_path())
        self._view = ChainView(
            head=db.head, best_header=self.headers.best, reader=db.snapshot(),
            mempool=MappingProxyType(pending), locator=locator, fetch_path=path,
        )

    @property
    def view(self) -> ChainView:
        """The chain after the writer's last change; safe to read from the event loop."""
        if self._view is None:
            raise PouwError("chain service is not started")
        return self._view

    # -- listeners ------------------------------------------------------------------------------

    def on_tip(self, listener: Callable[[Block], Awaitable[None] | None]) -> None:
        self._tip_listeners.append(listener)

    def on_tx(self, listener: Callable[[SignedTx], Awaitable[None] | None]) -> None:
        self._tx_listeners.append(listener)

    async def _notify(self, listeners: list[Callable[[Any], Awaitable[None] | None]], value: Any) -> None:
        for listener in listeners:
            try:
                result = listener(value)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # a listener's bug must not stop block processing
                log.exception("listener failed")

    # -- header tree (writer thread) --------------------------------------------------------------

    @property
    def header_tree(self) -> OrderedDict[bytes, HeaderEntry]:
        return self.headers.entries

    @property
    def best_header(self) -> HeaderEntry:
        return self.headers.best

    def get_header(self, block_hash: bytes) -> Header | None:
        return self.headers.get_header(block_hash)

    def header_work(self, block_hash: bytes) -> int | None:
        return self.headers.header_work(block_hash)

    def header_context(self, parent_hash: bytes) -> HeaderContext:
        return self.headers.header_context(parent_hash)

    def next_target(self, parent_hash: bytes) -> int:
        return self.headers.next_target(parent_hash)

    def accept_header(self, sealed: SealedHeader) -> bool:
        """Writer thread: check and remember one header (see :meth:`HeaderTree.accept`)."""
        return self.headers.accept(sealed)

    async def accept_headers(self, headers: Sequence[SealedHeader]) -> tuple[int, ValidationError | None, int]:
        """Check and remember headers in order, stopping at the first that fails:
        (new headers, the error or None, position of the failing header). A header from the future,
        or one whose tile cannot be checked yet, stops the batch without an error (not punished).

        The winning tiles — the costly part — are checked in the verification pool (or its thread),
        between two short turns on the writer thread, so reads are not queued behind them."""
        items: list[tuple[bytes, bytes, bytes]] = []
        if isinstance(self.verifier, PouwSealVerifier):  # v2: each tile needs only its header and seal
            items = [(sealed.header.encode(), sealed.seal.encode(), b"") for sealed in headers]
        tile_errors = await self.pool.check_tiles(self.preset.name, items)

        def accept() -> tuple[int, ValidationError | None, int]:
            new = 0
            for position, sealed in enumerate(headers):
                checked = position < len(tile_errors)
                try:
                    new += self.headers.accept(sealed, tile_checked=checked,
                                               tile_error=tile_errors[position] if checked else None)
                except (FutureBlock, HeaderDeferred):
                    return new, None, position
                except ValidationError as exc:
                    return new, exc, position
            return new, None, len(headers)

        return await self._write(accept)

    # -- blocks -----------------------------------------------------------------------------------

    def dataset_bytes(self, dataset_id: bytes) -> bytes | None:
        """Writer thread: a published dataset's bytes."""
        return self.models.dataset_bytes(dataset_id)

    def dataset_record_bytes(self, dataset_id: bytes) -> bytes | None:
        """Writer thread: the data of the transaction that published a dataset (a manifest for a
        multi-part one) or a dataset part."""
        return self.models.dataset_record_bytes(dataset_id)

    @property
    def blocks_imported(self) -> int:
        return self.importer.blocks_imported

    @property
    def blocks_rejected(self) -> int:
        return self.importer.blocks_rejected

    async def submit_block(self, block: Block, *, local: bool = True) -> BlockOutcome:
        """Validate and store ``block``. ``local`` blocks (API, miner, retried held blocks) are
        announced to peers when accepted; blocks from p2p are relayed by the p2p layer itself.

        A block that extends the head has its signatures and replay started in the pool first and
        awaited here, off the writer thread; the import then reads their verdict."""
        checks = await self._call(self.importer.prestart, block)
        if checks is not None:
            await checks.wait()
        outcome, result = await self._write(self.importer.import_block, block)
        if result is not None:
            await self._after_head_change(result)
        if local and outcome.status is BlockStatusText.ACCEPTED and self.announcer is not None:
            self.announcer.announce_block(block)
        return outcome

    async def submit_raw_block(self, raw: bytes) -> BlockOutcome:
        """A whole block submitted through the API (counted in ``self.submissions`` like mined work)."""
        try:
            block = decode_block(raw, self.preset)
        except InvalidBlock as exc:
            outcome = BlockOutcome(BlockStatusText.INVALID, bytes(32), -1, exc.reason.value, exc.detail)
        else:
            outcome = await self.submit_block(block)
        return self._count(outcome)

    def _count(self, outcome: BlockOutcome) -> BlockOutcome:
        if outcome.ok:
            self.submissions.accepted()
        elif outcome.status is BlockStatusText.STALE:
            self.submissions.stale()
        elif outcome.status is BlockStatusText.INVALID:
            self.submissions.rejected(outcome.reason, outcome.detail, outcome.height)
        return outcome

    async def _after_head_change(self, result: ImportResult) -> None:
        if not result.new_canonical:
            return
        await self._write(self.importer.update_mempool, result)
        tip = result.new_canonical[-1]
        log.info("new tip %d %s (%d txs)", tip.height, tip.hash.hex()[:16], len(tip.txs))
        await self._notify(self._tip_listeners, tip)

    @property
    def import_paused(self) -> str | None:
        """Why block import is paused (the store refused a write: disk full), or None."""
        return self.importer.paused

    async def retry_held(self) -> list[BlockOutcome]:
        """Retry blocks held for a future timestamp or a paused import, after trying to end a
        pause (the daemon calls this periodically)."""
        if self.importer.paused is not None and self._store is not None:
            store = self._store
            if not await self._write(self.importer.resume, store):
                return []
        held = await self._call(self.importer.take_held)
        return [await self.submit_block(block) for block in held]

    # -- transactions -----------------------------------------------------------------------------

    async def submit_tx(self, tx: SignedTx, *, local: bool = True) -> bytes:
        """Admit ``tx`` to the mempool (raises a ValidationError subclass with the reason); a local
        one is announced to peers."""
        now = int(self.clock())
        await self._write(lambda: self.mempool.add(tx, self.db.state, now))
        await self._notify(self._tx_listeners, tx)
        if local and self.announcer is not None:
            self.announcer.announce_tx(tx)
        return tx.txid

    async def expire_mempool(self, now: int) -> None:
        """Drop pending transactions older than the mempool's expiry."""
        await self._write(self.mempool.expire, now)

    def find_tx(self, txid: bytes) -> tuple[SignedTx, Block | None] | None:
        """Writer thread: a pending tx, or a canonical one with its block."""
        pending = self.mempool.get(txid)
        if pending is not None:
            return pending, None
        where = self.db.tx_location(txid)
        if where is None:
            return None
        block = self.db.get_block(where.block_hash)
        if block is None:
            return None
        return block.txs[where.position], block

    # -- mining -----------------------------------------------------------------------------------

    def best_job(self, state: StateReader, exclude: frozenset[bytes] = frozenset()) -> tuple[bytes, JobRecord]:
        return self.templates.best_job(state, exclude)

    def _template(self, miner: bytes, job_id: bytes | None, exclude: frozenset[bytes] = frozenset(),
                  shard_nonce: int = 0) -> Template:
        """Writer thread: see :meth:`TemplateBuilder.build`."""
        return self.templates.build(miner, job_id, exclude, shard_nonce)

    async def template(self, miner: bytes, job_id: bytes | None = None,
                       exclude: frozenset[bytes] = frozenset(), shard_nonce: int = 0) -> Template:
        return await self._call(self.templates.build, miner, job_id, exclude, shard_nonce)

    def job_start_model(self, job_id: bytes) -> bytes:
        """Writer thread: the encoded model the job's next block trains from."""
        return self.templates.job_start_model(job_id)

    async def submit_work(self, template_id: bytes, steps: int, final_state_hash: bytes,
                          trajectory_root: bytes, proof: bytes, work: bytes,
                          prefix_root: bytes | None = None) -> BlockOutcome:
        """Seal and import a miner's work on one of this node's templates; every answer is counted
        (and a rejection logged) in ``self.submissions``."""
        return self._count(await self._submit_work(template_id, steps, final_state_hash, trajectory_root, proof,
                                                   work, prefix_root))

    async def _submit_work(self, template_id: bytes, steps: int, final_state_hash: bytes,
                           trajectory_root: bytes, proof: bytes, work: bytes,
                           prefix_root: bytes | None) -> BlockOutcome:
        try:
            block = await self._call(self.templates.seal, template_id, steps, final_state_hash,
                                     trajectory_root, proof, work, prefix_root)
        except ValidationError as exc:
            return BlockOutcome(BlockStatusText.INVALID, bytes(32), -1, exc.reason.value, exc.detail)
        if block is None:
            return BlockOutcome(BlockStatusText.STALE, bytes(32), -1, "stale", "the tip moved on")
        return await self.submit_block(block)

    # -- queries (all on the writer thread) -------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a read-only query against the chain on the writer thread."""
        return await self._call(fn, *args, **kwargs)

    @property
    def head(self) -> ChainHead:
        """The head as last published (safe from any thread)."""
        return self._view.head if self._view is not None else self.db.head

    def head_header(self) -> Header:
        header = self.db.get_header(self.db.head.hash)
        if header is None:
            raise PouwError("head header missing")
        return header

    def job_history(self, job_id: bytes, limit: int = 500) -> list[tuple[int, int, int, int, int]]:
        """Writer thread: see :meth:`ModelIndex.job_history`."""
        return self.models.job_history(job_id, limit)

    def recent_blocks(self, count: int, before: int | None = None) -> Iterator[Block]:
        top = self.db.head.height if before is None else min(before, self.db.head.height)
        for height in range(top, max(top - count, -1), -1):
            block = self.db.block_at(height)
            if block is not None:
                yield block

    def account_history(self, address: bytes, limit: int = 50) -> list[dict[str, Any]]:
        """Canonical transactions sent or received by ``address`` (the store's address index), newest first."""
        rows: list[dict[str, Any]] = []
        for _, position, txid in self.db.address_txids(address, limit):
            where = self.db.tx_location(txid)
            block = self.db.get_block(where.block_hash) if where is not None else None
            if block is not None:
                rows.append({"block": block, "tx": block.txs[position]})
        return rows

    def balance(self, address: bytes) -> tuple[int, int]:
        account = get_account(self.db.state, address)
        return account.balance, account.nonce
