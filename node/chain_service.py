"""The node's chain: the ChainDB, the mempool, the validation pipeline and mining templates.

:class:`ChainService` is what the HTTP API, the p2p layer and the miner RPC talk to. It keeps the
event loop free: every ChainDB access runs on ONE dedicated writer thread (LevelDB has a single
owner and ChainDB a single writer), and the expensive checks — signatures and the trajectory replay
— run in a process pool while that thread runs the state transition. Reads that the API serves are
point lookups and run on that thread too, so they always see a consistent head.

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
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from chain import schema
from chain.builder import make_header, seal_block
from chain.chaindb import BlockStatus, ChainDB, ChainHead, ImportResult
from chain.crypto import verify_signature
from chain.encoding import pack, unpack
from chain.errors import InvalidBlock, InvalidTransaction, PouwError, Reason, ValidationError
from chain.hashing import tagged_hash
from chain.state import JobRecord, StateDiff, StateReader, get_account, get_dataset, get_job, iter_jobs
from chain.store import KeyValueStore, LevelDBStore
from chain.transition import apply_block
from chain.types import Block, DatasetPublish, Header, JobCancel, SealedHeader, SignedTx, block_hash_of, tx_root
from consensus.difficulty import block_work, median_time_past
from consensus.mempool import Mempool
from consensus.pouw_seal import PouwSealVerifier, WorkContext, builtin_datasets, verify_work
from consensus.presets import Preset, model_config
from consensus.seal import NoProofSealVerifier
from consensus.validation import (
    FutureBlock,
    HeaderContext,
    check_header,
    connect_block,
    decode_block,
    expected_target,
)
from node.rejections import SubmissionCounter

log = logging.getLogger("pouw.node.chain")


class Announcer(Protocol):
    """Relays what the node accepted from outside p2p (the p2p service implements it)."""

    def announce_block(self, block: Block) -> None: ...

    def announce_tx(self, tx: SignedTx) -> None: ...

T = TypeVar("T")

MAX_INVALID_REMEMBERED = 10_000
MAX_HELD_FUTURE = 64
MAX_TEMPLATES = 64
MAX_ANCHOR_CACHE = 4_096
MAX_HEADER_TREE = 100_000


class BlockStatusText(StrEnum):
    ACCEPTED = "accepted"
    """Stored; ``became_tip`` says whether it is the new head."""
    KNOWN = "known"
    ORPHAN = "orphan"
    """Parent unknown: the caller should fetch the parent."""
    INVALID = "invalid"
    HELD = "held"
    """Timestamp too far in the future: kept and retried, not punished."""
    STALE = "stale"
    """A mining result for a template whose parent is no longer the head."""


@dataclass(frozen=True)
class BlockOutcome:
    status: BlockStatusText
    block_hash: bytes
    height: int
    reason: str | None = None
    detail: str = ""
    became_tip: bool = False

    @property
    def ok(self) -> bool:
        return self.status in (BlockStatusText.ACCEPTED, BlockStatusText.KNOWN)


@dataclass(frozen=True)
class HeaderEntry:
    """A header known to the node, with its hash and the cumulative work of its chain."""

    sealed: SealedHeader
    hash: bytes
    work: int


@dataclass(frozen=True)
class Template:
    """A block template handed to a miner: the header is final; the seal is what mining decides."""

    header: Header
    txs: tuple[SignedTx, ...]
    job: JobRecord
    parent_hash: bytes
    created: float = field(compare=False)
    max_steps_per_block: int = 0

    @property
    def template_id(self) -> bytes:
        return self.header.hash

    @property
    def steps_left(self) -> int:
        """Steps the job has left: a seal claiming more is rejected (``bad-job-progress``)."""
        return self.job.steps_left

    @property
    def max_steps(self) -> int:
        """The most steps a seal on this template may claim: the job's steps left, capped per block."""
        return min(self.job.steps_left, self.max_steps_per_block)


def _verify_in_worker(ctx: WorkContext | None, raw_block: bytes, backend: str) -> tuple[str | None, str | None]:
    """Process-pool task: (signature error, work error) as "reason: detail" strings, None if fine."""
    block = Block.decode(raw_block)
    sig_error = None
    for index, tx in enumerate(block.txs):
        try:
            verify_signature(tx.pubkey, tx.digest, tx.signature)
        except InvalidTransaction as exc:
            sig_error = f"{exc.reason.value}|tx {index}: {exc.detail}"
            break
    work_error = None
    if ctx is not None:
        try:
            verify_work(ctx, block, backend)
        except InvalidBlock as exc:
            work_error = f"{exc.reason.value}|{exc.detail}"
    return sig_error, work_error


def _worker_init() -> None:
    """Verification workers replay small matmuls, which run fastest single-threaded."""
    import torch

    torch.set_num_threads(1)


def _raise_encoded(error: str) -> None:
    reason, _, detail = error.partition("|")
    raise InvalidBlock(Reason(reason), detail)


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
        self._verify_workers = verify_workers
        self.verifier: PouwSealVerifier | NoProofSealVerifier
        self.genesis, self._genesis_state = preset.genesis()
        self.mempool = Mempool(
            self.rules, max_txs=mempool_max_txs, max_bytes=mempool_max_bytes,
            expiry_seconds=mempool_expiry, max_per_account=64,
        )
        self._db: ChainDB | None = None
        self._store: KeyValueStore | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="chaindb")
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._invalid: OrderedDict[bytes, str] = OrderedDict()
        self._held: OrderedDict[bytes, Block] = OrderedDict()
        self._templates: OrderedDict[bytes, Template] = OrderedDict()
        self._anchors: OrderedDict[bytes, bytes] = OrderedDict()
        self._initial_evaluations: dict[bytes, tuple[int, int, int]] = {}
        self.header_tree: OrderedDict[bytes, HeaderEntry] = OrderedDict()
        self.best_header = HeaderEntry(SealedHeader(self.genesis.header, self.genesis.seal), self.genesis.hash, 0)
        self.announcer: Announcer | None = None
        self._tip_listeners: list[Callable[[Block], Awaitable[None] | None]] = []
        self._tx_listeners: list[Callable[[SignedTx], Awaitable[None] | None]] = []
        self.started = time.monotonic()
        self.blocks_imported = 0
        self.blocks_rejected = 0
        self.submissions = SubmissionCounter()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._call(self._open)
        if self._verify_workers > 0 and self._proof:
            ctx = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self._verify_workers, mp_context=ctx, initializer=_worker_init
            )

    def _open(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._store = self._store_arg or LevelDBStore(self.datadir / "chain")
        if self._proof:
            self.verifier = PouwSealVerifier(self.preset, self._model_bytes, self.dataset_bytes, self.backend)
        else:
            self.verifier = NoProofSealVerifier()
        self._db = ChainDB(
            self._store, self.genesis, self._genesis_state, self._connect,
            lambda header: block_work(header.target), max_reorg_depth=self.preset.max_reorg_depth,
        )
        self._prune_header_tree()

    async def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    @property
    def db(self) -> ChainDB:
        if self._db is None:
            raise PouwError("chain service is not started")
        return self._db

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

    # -- stores the verifier reads ----------------------------------------------------------------

    def _model_bytes(self, model_hash: bytes) -> bytes | None:
        return self._store.get(schema.model_key(model_hash)) if self._store is not None else None

    def dataset_bytes(self, dataset_id: bytes) -> bytes | None:
        """A published dataset's bytes, read from the transaction that published it."""
        record = get_dataset(self.db.state, dataset_id)
        if record is None or record.txid == bytes(32):
            return None
        where = self.db.tx_location(record.txid)
        block = self.db.get_block(where.block_hash) if where is not None else None
        if block is None:
            return None
        body = block.txs[where.position].body  # type: ignore[union-attr]
        return body.data if isinstance(body, DatasetPublish) else None

    # -- the ChainDB's connect: stage 5 ---------------------------------------------------------

    def _connect(self, pre: StateReader, block: Block) -> StateDiff:
        """Stage 5 (consensus.validation.connect_block); with a process pool, its signatures and
        trajectory replay run there while this thread runs the transition, and failures are still
        reported in the pipeline's order."""
        if self._pool is None:
            return connect_block(self.preset, self.verifier, pre, block)
        if tx_root(block.txs) != block.header.tx_root:
            raise InvalidBlock(Reason.BAD_TX_ROOT, "tx root does not match the transactions")
        ctx = self.verifier.work_context(pre, block) if isinstance(self.verifier, PouwSealVerifier) else None
        future = self._pool.submit(_verify_in_worker, ctx, block.encode(), self.backend)
        try:
            diff: StateDiff | None = apply_block(pre, block, self.rules, check_signatures=False)
            transition_error: InvalidBlock | None = None
        except InvalidBlock as exc:
            diff, transition_error = None, exc
        sig_error, work_error = future.result()
        if sig_error is not None:
            _raise_encoded(sig_error)
        if transition_error is not None:
            raise transition_error
        if work_error is not None:
            _raise_encoded(work_error)
        if diff is None:  # pragma: no cover - either a diff or an error
            raise InvalidBlock(Reason.MALFORMED, "no state diff")
        return diff

    # -- header context ---------------------------------------------------------------------------

    def _ancestor_timestamps(self, parent_hash: bytes, count: int) -> list[int]:
        stamps: list[int] = []
        cursor: bytes | None = parent_hash
        while cursor is not None and len(stamps) < count:
            header = self.get_header(cursor)
            if header is None:
                break
            stamps.append(header.timestamp)
            cursor = header.prev_hash if header.height > 0 else None
        stamps.reverse()
        return stamps

    def _anchor(self, parent_hash: bytes, parent: Header) -> Header | None:
        """The height-1 block of the parent's branch (the ASERT anchor), memoised per block."""
        if parent.height == 0:
            return None
        if parent.height == 1:
            return parent
        chain: list[bytes] = []
        cursor = parent_hash
        anchor_hash: bytes | None = None
        while anchor_hash is None:
            cached = self._anchors.get(cursor)
            if cached is not None:
                anchor_hash = cached
                break
            header = self.get_header(cursor)
            if header is None:
                raise InvalidBlock(Reason.UNKNOWN_PARENT, "broken ancestry")
            if header.height == 1:
                anchor_hash = cursor
                break
            chain.append(cursor)
            cursor = header.prev_hash
        for h in chain:
            self._anchors[h] = anchor_hash
        while len(self._anchors) > MAX_ANCHOR_CACHE:
            self._anchors.popitem(last=False)
        return self.get_header(anchor_hash)

    def header_context(self, parent_hash: bytes) -> HeaderContext:
        parent = self.get_header(parent_hash)
        if parent is None:
            raise InvalidBlock(Reason.UNKNOWN_PARENT, parent_hash.hex())
        return HeaderContext(
            parent=parent, parent_hash=parent_hash,
            median_time_past=median_time_past(self._ancestor_timestamps(parent_hash, 11)),
            anchor=self._anchor(parent_hash, parent),
        )

    def next_target(self, parent_hash: bytes) -> int:
        return expected_target(self.preset, self.header_context(parent_hash), self.genesis.header.target)

    # -- the header tree (headers-first sync) -----------------------------------------------------

    def get_header(self, block_hash: bytes) -> Header | None:
        """A header from the block store or from headers accepted ahead of their blocks."""
        entry = self.header_tree.get(block_hash)
        return entry.sealed.header if entry is not None else self.db.get_header(block_hash)

    def header_work(self, block_hash: bytes) -> int | None:
        entry = self.header_tree.get(block_hash)
        if entry is not None:
            return entry.work
        index = self.db.get_index(block_hash)
        return index.work if index is not None else None

    def accept_header(self, sealed: SealedHeader) -> bool:
        """Cheap checks of a header whose block we do not have yet (parent known, header rules,
        winning tile when the job is known), then remember it. Returns False if already known."""
        header = sealed.header
        block_hash = block_hash_of(header, sealed.seal)
        if block_hash in self.header_tree or self.db.get_index(block_hash) is not None:
            return False
        if block_hash in self._invalid:
            raise InvalidBlock(Reason.KNOWN_INVALID, self._invalid[block_hash])
        parent_work = self.header_work(header.prev_hash)
        if parent_work is None:
            raise InvalidBlock(Reason.UNKNOWN_PARENT, header.prev_hash.hex())
        try:
            check_header(self.preset, header, self.header_context(header.prev_hash), self.genesis.header.target,
                         int(self.clock()))
            if isinstance(self.verifier, PouwSealVerifier):
                self.verifier.check_tile(header, sealed.seal, self.db.state)
        except FutureBlock:
            raise
        except ValidationError as exc:
            self._remember_invalid(block_hash, f"{exc.reason.value}: {exc.detail}")
            raise
        entry = HeaderEntry(sealed, block_hash, parent_work + block_work(header.target))
        self.header_tree[block_hash] = entry
        if entry.work > self.best_header.work:
            self.best_header = entry
        while len(self.header_tree) > MAX_HEADER_TREE:
            self.header_tree.popitem(last=False)
        return True

    def _prune_header_tree(self) -> None:
        """Forget headers whose blocks are now stored; keep the best header pointer honest."""
        for block_hash in [h for h in self.header_tree if self.db.get_index(h) is not None]:
            del self.header_tree[block_hash]
        head = self.db.head
        if self.best_header.hash not in self.header_tree or self.best_header.work <= head.work:
            best = max(self.header_tree.values(), key=lambda e: e.work, default=None)
            if best is None or best.work <= head.work:
                sealed = self.db.get_sealed_header(head.hash)
                if sealed is not None:
                    self.best_header = HeaderEntry(sealed, head.hash, head.work)
            else:
                self.best_header = best

    def _header_stored(self, block: Block) -> None:
        """A block arrived for a header: the block store holds its header from now on."""
        block_hash = block.hash
        self.header_tree.pop(block_hash, None)
        head = self.db.head
        if self.best_header.hash == block_hash or head.work > self.best_header.work:
            self.best_header = HeaderEntry(SealedHeader(block.header, block.seal), block_hash,
                                           self.header_work(block_hash) or head.work)
            if head.work > self.best_header.work:
                self._prune_header_tree()

    # -- blocks -----------------------------------------------------------------------------------

    def _remember_invalid(self, block_hash: bytes, reason: str) -> None:
        self._invalid[block_hash] = reason
        while len(self._invalid) > MAX_INVALID_REMEMBERED:
            self._invalid.popitem(last=False)

    def _import(self, block: Block) -> tuple[BlockOutcome, ImportResult | None]:
        """Stages 2–5 for one decoded block, on the writer thread."""
        block_hash = block.hash
        height = block.height
        if block_hash in self._invalid:
            return BlockOutcome(BlockStatusText.INVALID, block_hash, height, Reason.KNOWN_INVALID.value,
                                self._invalid[block_hash]), None
        known = self.db.get_index(block_hash)
        if known is not None:
            if known.status == BlockStatus.INVALID:
                return BlockOutcome(BlockStatusText.INVALID, block_hash, height, Reason.KNOWN_INVALID.value), None
            return BlockOutcome(BlockStatusText.KNOWN, block_hash, height), None
        parent_index = self.db.get_index(block.header.prev_hash)
        if parent_index is None:
            return BlockOutcome(BlockStatusText.ORPHAN, block_hash, height, Reason.UNKNOWN_PARENT.value), None
        try:
            if parent_index.status == BlockStatus.INVALID:
                raise InvalidBlock(Reason.KNOWN_INVALID, "parent is invalid")
            ctx = self.header_context(block.header.prev_hash)
            check_header(self.preset, block.header, ctx, self.genesis.header.target, int(self.clock()))
            if isinstance(self.verifier, PouwSealVerifier):
                self.verifier.check_tile(block.header, block.seal, self.db.state)
            self._store_model(block)
            result = self.db.import_block(block)
        except FutureBlock as exc:
            self._held[block_hash] = block
            while len(self._held) > MAX_HELD_FUTURE:
                self._held.popitem(last=False)
            return BlockOutcome(BlockStatusText.HELD, block_hash, height, exc.reason.value, exc.detail), None
        except ValidationError as exc:
            self._remember_invalid(block_hash, f"{exc.reason.value}: {exc.detail}")
            self.blocks_rejected += 1
            log.info("rejected block %d %s: %s", height, block_hash.hex()[:16], exc)
            return BlockOutcome(BlockStatusText.INVALID, block_hash, height, exc.reason.value, exc.detail), None
        self.blocks_imported += 1
        self._header_stored(block)
        became_tip = self.db.head.hash == block_hash or any(b.hash == block_hash for b in result.new_canonical)
        self._after_import(result)
        return BlockOutcome(BlockStatusText.ACCEPTED, block_hash, height, became_tip=became_tip), result

    def _store_model(self, block: Block) -> None:
        """Keep the block's final model (content-addressed; harmless if the block later fails)."""
        if not isinstance(self.verifier, PouwSealVerifier) or not block.work:
            return
        from pouw.proof import WorkData

        try:
            final = WorkData.decode(block.work).final_state
        except ValidationError as exc:
            raise InvalidBlock(Reason.BAD_SEAL, f"work: {exc.detail}") from exc
        if tagged_hash("pouw/model", final) == block.seal.final_state_hash and self._store is not None:
            self._store.put(schema.model_key(block.seal.final_state_hash), final)

    def _after_import(self, result: ImportResult) -> None:
        """Node-side bookkeeping after the head moved: the evaluation history of trained jobs."""
        state = self.db.state
        for block in result.new_canonical:
            job = get_job(state, block.header.job_id)
            if job is None or self._store is None:
                continue
            try:
                evaluation = self._evaluate(job)
            except Exception:  # a report, never a reason to fail an import
                log.exception("evaluation of job %s failed", block.header.job_id.hex()[:16])
                continue
            if evaluation is not None:
                correct, total, loss = evaluation
                self._store.put(
                    schema.eval_key(block.header.job_id, block.height),
                    pack([job.steps_done, correct, total, loss]),
                )

    def _evaluate(self, job: JobRecord, initial: bool = False) -> tuple[int, int, int] | None:
        """(correct, total, loss) of the job's current model — or of its initial one — on held-out data."""
        if not isinstance(self.verifier, PouwSealVerifier):
            return None
        from pouw.backends import get_backend
        from pouw.datasets import Dataset
        from pouw.evaluate import evaluate
        from pouw.model import ModelState, init_state

        dataset = builtin_datasets().get(job.spec.dataset_id)
        if dataset is None:
            data = self.dataset_bytes(job.spec.dataset_id)
            if data is None:
                return None
            dataset = Dataset.decode(data)
        config = model_config(job.spec)
        if initial:
            state = init_state(config, job.init_seed)
        else:
            raw = self._model_bytes(job.state_hash)
            if raw is None:
                return None
            state = ModelState.decode(raw, config)
        result = evaluate(config, state, dataset, get_backend("cpu"))
        return result.correct, result.total, result.loss

    async def submit_block(self, block: Block, *, local: bool = True) -> BlockOutcome:
        """Validate and store ``block``. ``local`` blocks (API, miner, retried held blocks) are
        announced to peers when accepted; blocks from p2p are relayed by the p2p layer itself."""
        outcome, result = await self._call(self._import, block)
        if result is not None:
            await self._after_head_change(result)
        if local and outcome.status is BlockStatusText.ACCEPTED and self.announcer is not None:
            self.announcer.announce_block(block)
        return outcome

    async def submit_raw_block(self, raw: bytes) -> BlockOutcome:
        try:
            block = decode_block(raw, self.preset)
        except InvalidBlock as exc:
            return BlockOutcome(BlockStatusText.INVALID, bytes(32), -1, exc.reason.value, exc.detail)
        return await self.submit_block(block)

    async def _after_head_change(self, result: ImportResult) -> None:
        if not result.new_canonical:
            return
        await self._call(self._update_mempool, result)
        tip = result.new_canonical[-1]
        log.info("new tip %d %s (%d txs)", tip.height, tip.hash.hex()[:16], len(tip.txs))
        await self._notify(self._tip_listeners, tip)

    def _update_mempool(self, result: ImportResult) -> None:
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

    async def retry_held(self) -> list[BlockOutcome]:
        """Retry blocks held for a future timestamp (the daemon calls this periodically)."""
        held, self._held = list(self._held.values()), OrderedDict()
        return [await self.submit_block(block) for block in held]

    # -- transactions -----------------------------------------------------------------------------

    async def submit_tx(self, tx: SignedTx, *, local: bool = True) -> bytes:
        """Admit ``tx`` to the mempool (raises a ValidationError subclass with the reason); a local
        one is announced to peers."""
        now = int(self.clock())
        await self._call(self.mempool.add, tx, self.db.state, now)
        await self._notify(self._tx_listeners, tx)
        if local and self.announcer is not None:
            self.announcer.announce_tx(tx)
        return tx.txid

    def find_tx(self, txid: bytes) -> tuple[SignedTx, Block | None] | None:
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
        """The active job that pays best per MAC (the built-in job when none pays), skipping jobs whose
        owner has a cancel pending: those are left to finish, so the cancel can be mined; and skipping
        ``exclude``, the jobs a miner has no draw left on under this tip (docs/protocol.md Part IV §6)."""
        cancelling = {
            tx.body.job_id for txid in self.mempool.txids()
            if (tx := self.mempool.get(txid)) is not None and isinstance(tx.body, JobCancel)
        }
        best: tuple[int, int, bytes, JobRecord] | None = None
        for job_id, job in iter_jobs(state):
            if not job.active or job_id in cancelling or job_id in exclude:
                continue
            macs = model_config(job.spec).macs_per_step()
            # compare fee_per_step / macs exactly: a/b > c/d  <=>  a*d > c*b
            key = (job.spec.fee_per_step, macs)
            if best is None or key[0] * best[1] > best[0] * key[1]:
                best = (key[0], key[1], job_id, job)
        if best is None:
            raise PouwError("no active job to mine" + (" outside the excluded ones" if exclude else ""))
        return best[2], best[3]

    def _template(self, miner: bytes, job_id: bytes | None, exclude: frozenset[bytes] = frozenset()) -> Template:
        head = self.db.head
        parent = self.db.get_header(head.hash)
        if parent is None:
            raise PouwError("head header missing")
        state = self.db.state
        if job_id is None:
            job_id, job = self.best_job(state, exclude)
        else:
            found = get_job(state, job_id)
            if found is None or not found.active:
                raise InvalidBlock(Reason.JOB_NOT_ACTIVE if found else Reason.UNKNOWN_JOB, job_id.hex())
            job = found
        ctx = self.header_context(head.hash)
        now = int(self.clock())
        # A cancel of the job being mined could meet a job this very block finishes: leave it out.
        txs = tuple(
            tx for tx in self.mempool.select(state, self.rules.max_block_txs, self.preset.max_block_bytes // 2)
            if not (isinstance(tx.body, JobCancel) and tx.body.job_id == job_id)
        )
        header = make_header(
            parent=parent, parent_hash=head.hash, timestamp=max(now, ctx.median_time_past + 1),
            target=expected_target(self.preset, ctx, self.genesis.header.target), miner=miner,
            job_id=job_id, start_state_hash=job.state_hash, txs=txs, spec=job.spec,
        )
        template = Template(header=header, txs=txs, job=job, parent_hash=head.hash, created=time.monotonic(),
                            max_steps_per_block=self.preset.pouw.max_steps_per_block)
        self._templates[template.template_id] = template
        while len(self._templates) > MAX_TEMPLATES:
            self._templates.popitem(last=False)
        return template

    async def template(self, miner: bytes, job_id: bytes | None = None,
                       exclude: frozenset[bytes] = frozenset()) -> Template:
        return await self._call(self._template, miner, job_id, exclude)

    def job_start_model(self, job_id: bytes) -> bytes:
        job = get_job(self.db.state, job_id)
        if job is None:
            raise InvalidBlock(Reason.UNKNOWN_JOB, job_id.hex())
        if isinstance(self.verifier, PouwSealVerifier):
            return self.verifier.start_state(job_id, job)
        raise PouwError("this node runs without proofs")

    def _seal(self, template_id: bytes, steps: int, final_state_hash: bytes, trajectory_root: bytes,
              proof: bytes, work: bytes, prefix_root: bytes = bytes(32)) -> Block | None:
        template = self._templates.get(template_id)
        if template is None:
            raise InvalidBlock(Reason.MALFORMED, "unknown or expired template")
        if self.db.head.hash != template.parent_hash:
            return None
        return seal_block(
            self.db.state, template.header, template.txs, self.rules, steps=steps,
            final_state_hash=final_state_hash, trajectory_root=trajectory_root, proof=proof, work=work,
            prefix_root=prefix_root,
        )

    async def submit_work(self, template_id: bytes, steps: int, final_state_hash: bytes,
                          trajectory_root: bytes, proof: bytes, work: bytes,
                          prefix_root: bytes = bytes(32)) -> BlockOutcome:
        """Seal and import a miner's work on one of this node's templates; every answer is counted
        (and a rejection logged) in ``self.submissions``."""
        outcome = await self._submit_work(template_id, steps, final_state_hash, trajectory_root, proof, work,
                                          prefix_root)
        if outcome.ok:
            self.submissions.accepted()
        elif outcome.status is BlockStatusText.STALE:
            self.submissions.stale()
        else:
            self.submissions.rejected(outcome.reason, outcome.detail, outcome.height)
        return outcome

    async def _submit_work(self, template_id: bytes, steps: int, final_state_hash: bytes,
                           trajectory_root: bytes, proof: bytes, work: bytes, prefix_root: bytes) -> BlockOutcome:
        try:
            block = await self._call(self._seal, template_id, steps, final_state_hash, trajectory_root, proof, work,
                                     prefix_root)
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
        return self.db.head

    def head_header(self) -> Header:
        header = self.db.get_header(self.db.head.hash)
        if header is None:
            raise PouwError("head header missing")
        return header

    def job_history(self, job_id: bytes, limit: int = 500) -> list[tuple[int, int, int, int, int]]:
        """(height, steps_done, correct, total, loss) of the job's model: the untrained model at the
        job's creation, then after each block that trained it."""
        job = get_job(self.db.state, job_id)
        if self._store is None or job is None:
            return []
        rows = []
        initial = self._initial_evaluations.get(job_id)
        if initial is None:
            initial = self._evaluate(job, initial=True)
            if initial is not None:
                self._initial_evaluations[job_id] = initial
        if initial is not None:
            rows.append((job.created_height, 0, *initial))
        for key, raw in self._store.iterate(schema.DB_EVAL + job_id):
            height = int.from_bytes(key[-8:], "big")
            steps, correct, total, loss = unpack(raw)
            rows.append((height, steps, correct, total, loss))
        return rows[:1] + rows[1:][-limit:]

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
