"""The chain database: the block tree, the canonical chain, the head state and block import.

Owns what a node keeps about the chain in one :class:`~store.kv.KeyValueStore`: blocks and
headers by hash, a :class:`BlockIndex` entry per block, the canonical height → hash index, the head
state, an undo record per canonical block, the tx index and the head pointer (key layouts in
:mod:`store.schema`). Fork choice is most cumulative expected work, ties to the first seen.

``import_block`` (py-evm style) stores a block, and when its chain is heavier than the head, makes
it the head: it rolls back to the fork point with undo records and connects the new branch through
the ``connect`` function it was given (validate + apply, see :func:`connect_by_rules`). A branch
that fails validation is marked invalid and the head stays where it was. Every import, a whole
reorg included, is computed in memory over :class:`PendingWrites` and written as ONE atomic batch,
so a crash at any point leaves the store at the head before or after the import
(docs/protocol.md Part V gives the format and the argument).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum
from types import TracebackType
from typing import TypeVar

from chain.encoding import BigUInt, Container, UInt, pack, unpack, wire
from chain.errors import InvalidBlock, InvalidEncoding, Reason, StoreError, ValidationError, is_mutation
from chain.rules import ChainRules
from chain.state import StateDiff, StateReader, merge_sorted, state_root_of
from chain.transition import apply_block
from chain.types import HASH32, ZERO_HASH, Block, Header, SealedHeader, SignedTx, Transfer, block_hash_of
from store import schema
from store.kv import KeyValueReader, KeyValueStore

Connect = Callable[[StateReader, Block], StateDiff]
"""Validates ``block`` against the state of its parent and returns its state diff, or raises
:class:`~chain.errors.ValidationError`."""
WorkOf = Callable[[Header], int]
"""A block's expected work, from its header."""

DEFAULT_MAX_REORG_DEPTH = 1 << 32
WORK_BYTES = 48
"""Cumulative work is stored in 384 bits: room for 2^128 blocks of the largest per-block work."""

C = TypeVar("C", bound=Container)


def tx_addresses(tx: SignedTx) -> set[bytes]:
    """The accounts a transaction touches by name: its sender and, for a transfer, its recipient."""
    touched = {tx.sender}
    if isinstance(tx.body, Transfer):
        touched.add(tx.body.to)
    return touched


def expected_work(header: Header) -> int:
    """The default work of a block: about how many tickets it takes to find one below its target."""
    return (1 << 256) // (header.target + 1)


def connect_by_rules(rules: ChainRules) -> Connect:
    """The plain state transition as a ``connect`` (consensus passes one that checks the seal too)."""

    def connect(pre: StateReader, block: Block) -> StateDiff:
        return apply_block(pre, block, rules)

    return connect


class BlockStatus(IntEnum):
    VALID = 1
    """Connected (fully validated) at least once; canonical or not."""
    INVALID = 2
    """Failed validation, or descends from a block that did."""
    UNVALIDATED = 3
    """Stored on a side branch that was never heavier than the head."""


@dataclass(frozen=True, slots=True)
class BlockIndex(Container):
    """What the store knows about a block besides its bytes."""

    height: int = wire(UInt(64))
    parent: bytes = wire(HASH32)
    work: int = wire(BigUInt(WORK_BYTES))
    """Cumulative expected work from genesis up to and including this block."""
    status: int = wire(UInt(8))


@dataclass(frozen=True, slots=True)
class TxLocation(Container):
    """Where a canonical transaction sits: its block and its index in the block's tx list."""

    block_hash: bytes = wire(HASH32)
    position: int = wire(UInt(32))


@dataclass(frozen=True, slots=True)
class ChainHead:
    hash: bytes
    height: int
    work: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import changed. Both lists are in ascending height order."""

    imported: bool
    new_canonical: list[Block] = field(default_factory=list)
    old_canonical: list[Block] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading and writing through a batch


class PendingWrites:
    """Writes buffered over a store (``None`` deletes); reads see them; ``commit`` writes one batch."""

    def __init__(self, store: KeyValueStore) -> None:
        self._store = store
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._store.get(key)

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        diff = {k: v for k, v in self._writes.items() if k.startswith(prefix)}
        return merge_sorted(self._store.iterate(prefix), diff)

    def put(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    def commit(self) -> None:
        puts = {k: v for k, v in self._writes.items() if v is not None}
        self._store.write_batch(puts, [k for k, v in self._writes.items() if v is None])
        self._writes.clear()


class StoredState:
    """The head state kept under ``schema.DB_STATE`` in a store or a batch, as a StateReader."""

    def __init__(self, kv: KeyValueReader) -> None:
        self._kv = kv

    def get(self, key: bytes) -> bytes | None:
        return self._kv.get(schema.db_state_key(key))

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        skip = len(schema.DB_STATE)
        return ((k[skip:], v) for k, v in self._kv.iterate(schema.db_state_key(prefix)))


UndoRecord = list[tuple[bytes, bytes | None]]
"""The prior value (None: absent) of every state key a block changed, in key order."""


def encode_undo(record: UndoRecord) -> bytes:
    return pack([[key, prior] for key, prior in record])


def decode_undo(data: bytes) -> UndoRecord:
    try:
        entries = unpack(data)
    except InvalidEncoding as exc:
        raise StoreError(f"undo record is not canonical msgpack: {exc}") from exc
    if type(entries) is not list or not all(map(_is_undo_entry, entries)):
        raise StoreError("undo record is not a list of [key, prior value or nil]")
    return [(key, prior) for key, prior in entries]


def _is_undo_entry(entry: object) -> bool:
    return (
        type(entry) is list and len(entry) == 2 and type(entry[0]) is bytes
        and (entry[1] is None or type(entry[1]) is bytes)
    )


def _short(block_hash: bytes) -> str:
    return block_hash.hex()[:16]


# ---------------------------------------------------------------------------------------------
# The chain database


class ChainReader:
    """Read access to a chain database: blocks, headers, the block index, the canonical chain, the
    tx and address indexes and the head state. Over a store snapshot (:meth:`ChainDB.snapshot`) it
    is an immutable view that any thread may read while the writer moves on."""

    def __init__(self, kv: KeyValueReader, head: ChainHead | None = None) -> None:
        self._store: KeyValueReader = kv
        self._frozen_head = head

    @property
    def head(self) -> ChainHead:
        if self._frozen_head is None:
            raise StoreError("this reader has no head")
        return self._frozen_head

    # -- accessors ----------------------------------------------------------------------------

    @property
    def state(self) -> StateReader:
        """The head state, read live from the store."""
        return StoredState(self._store)

    def get_block(self, block_hash: bytes) -> Block | None:
        block = _load(self._store, schema.block_key(block_hash), Block)
        if block is not None and block.hash != block_hash:
            raise StoreError(f"store is corrupt: the block stored under {_short(block_hash)} hashes to "
                             f"{_short(block.hash)}")
        return block

    def get_header(self, block_hash: bytes) -> Header | None:
        sealed = self.get_sealed_header(block_hash)
        return sealed.header if sealed is not None else None

    def get_sealed_header(self, block_hash: bytes) -> SealedHeader | None:
        """Header and seal without the block body (what headers-first sync sends)."""
        sealed = _load(self._store, schema.header_key(block_hash), SealedHeader)
        if sealed is not None and block_hash_of(sealed.header, sealed.seal) != block_hash:
            raise StoreError(f"store is corrupt: the header stored under {_short(block_hash)} does not hash to it")
        return sealed

    def get_index(self, block_hash: bytes) -> BlockIndex | None:
        return _load(self._store, schema.index_key(block_hash), BlockIndex)

    def canonical_hash(self, height: int) -> bytes | None:
        return self._store.get(schema.canonical_key(height))

    def block_at(self, height: int) -> Block | None:
        block_hash = self.canonical_hash(height)
        return self.get_block(block_hash) if block_hash is not None else None

    def is_canonical(self, block_hash: bytes) -> bool:
        entry = self.get_index(block_hash)
        return entry is not None and self.canonical_hash(entry.height) == block_hash

    def tx_location(self, txid: bytes) -> TxLocation | None:
        return _load(self._store, schema.tx_key(txid), TxLocation)

    def address_txids(self, address: bytes, limit: int) -> list[tuple[int, int, bytes]]:
        """(height, position, txid) of the canonical transactions sent or received by ``address``,
        newest first, at most ``limit`` of them."""
        rows = [
            (int.from_bytes(key[-12:-4], "big"), int.from_bytes(key[-4:], "big"), txid)
            for key, txid in self._store.iterate(schema.DB_ADDRESS_TX + address)
        ]
        return rows[::-1][:limit]


class ChainDB(ChainReader):
    """The node's chain database over one store. Single writer: not safe across threads; other
    threads read a :meth:`snapshot`."""

    def __init__(
        self, store: KeyValueStore, genesis_block: Block, genesis_state: StateReader,
        connect: Connect, work_of: WorkOf = expected_work, *,
        max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH, reconnect: Connect | None = None,
    ) -> None:
        super().__init__(store)
        self._store: KeyValueStore = store
        self._connect = connect
        self._reconnect = reconnect or connect
        """Connects a block whose index says valid (it connected before, from these very bytes):
        the node skips the checks whose verdict cannot change, e.g. signatures and the replay."""
        self._work_of = work_of
        self.max_reorg_depth = max_reorg_depth
        self.genesis_hash = genesis_block.hash
        if store.get(schema.HEAD_KEY) is None:
            self._write_genesis(genesis_block, genesis_state)
        self._check_identity()
        self._head = self._load_head()

    # -- opening ------------------------------------------------------------------------------

    def _write_genesis(self, block: Block, state: StateReader) -> None:
        if next(self._store.iterate(), None) is not None:
            raise StoreError("store holds data but no head pointer; it is not a chain database")
        if block.height != 0 or block.header.prev_hash != ZERO_HASH:
            raise InvalidBlock(Reason.BAD_HEIGHT, "a genesis block has height 0 and no parent")
        if state_root_of(state.items()) != block.seal.state_root:
            raise InvalidBlock(Reason.BAD_STATE_ROOT, "genesis state does not match the genesis block")
        pending = PendingWrites(self._store)
        entry = BlockIndex(height=0, parent=ZERO_HASH, work=self._work_of(block.header),
                           status=BlockStatus.VALID)
        self._put_block(pending, self.genesis_hash, block, entry)
        pending.put(schema.canonical_key(0), self.genesis_hash)
        for key, value in state.items():
            pending.put(schema.db_state_key(key), value)
        pending.put(schema.SCHEMA_KEY, schema.STORE_SCHEMA_VERSION)
        pending.put(schema.GENESIS_KEY, self.genesis_hash)
        pending.put(schema.HEAD_KEY, self.genesis_hash)
        pending.commit()

    def _check_identity(self) -> None:
        version = self._store.get(schema.SCHEMA_KEY)
        if version != schema.STORE_SCHEMA_VERSION:
            raise StoreError(f"store schema {version!r}, this node reads {schema.STORE_SCHEMA_VERSION!r}")
        genesis = self._store.get(schema.GENESIS_KEY)
        if genesis != self.genesis_hash:
            raise StoreError(
                f"store holds the chain of genesis {(genesis or b'').hex()}, "
                f"not {self.genesis_hash.hex()} (wrong network or data directory?)"
            )

    def _load_head(self) -> ChainHead:
        head_hash = self._store.get(schema.HEAD_KEY)
        entry = self.get_index(head_hash) if head_hash is not None else None
        if head_hash is None or entry is None:
            raise StoreError("head pointer is missing or names an unknown block")
        return ChainHead(hash=head_hash, height=entry.height, work=entry.work)

    @property
    def head(self) -> ChainHead:
        return self._head

    def snapshot(self) -> ChainReader:
        """An immutable view of the database as it is now, head included."""
        return ChainReader(self._store.snapshot(), self._head)

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> ChainDB:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- import -------------------------------------------------------------------------------

    def import_block(self, block: Block) -> ImportResult:
        """Store ``block``; make it the head if its chain is heavier. Raises ValidationError."""
        block_hash = block.hash
        known = self.get_index(block_hash)
        if known is not None:
            if known.status == BlockStatus.INVALID:
                raise InvalidBlock(Reason.KNOWN_INVALID, f"block {_short(block_hash)} is invalid")
            return ImportResult(imported=False)
        parent = self.get_index(block.header.prev_hash)
        if parent is None:
            raise InvalidBlock(Reason.UNKNOWN_PARENT, f"parent {_short(block.header.prev_hash)}")
        if parent.status == BlockStatus.INVALID:
            raise InvalidBlock(Reason.KNOWN_INVALID, f"parent {_short(block.header.prev_hash)} is invalid")
        if block.height != parent.height + 1:
            raise InvalidBlock(Reason.BAD_HEIGHT, f"height {block.height}, parent's {parent.height}")
        entry = BlockIndex(height=block.height, parent=block.header.prev_hash,
                           work=parent.work + self._work_of(block.header),
                           status=BlockStatus.UNVALIDATED)
        pending = PendingWrites(self._store)
        self._put_block(pending, block_hash, block, entry)
        if entry.work <= self._head.work:
            pending.commit()
            return ImportResult(imported=True)
        return self._become_head(pending, block_hash, block, entry)

    def _become_head(
        self, pending: PendingWrites, tip_hash: bytes, tip: Block, tip_entry: BlockIndex
    ) -> ImportResult:
        """Reorg to ``tip`` (already in ``pending``), or mark its branch invalid and raise."""
        branch, fork_height = self._branch_above_fork(pending, tip_hash, tip_entry)
        for i, (block_hash, entry) in enumerate(branch):
            if entry.status == BlockStatus.INVALID:  # the tip descends from a block known invalid
                self._mark_invalid(pending, branch[i + 1 :])
                pending.commit()
                raise InvalidBlock(Reason.KNOWN_INVALID, f"ancestor {_short(block_hash)} is invalid")
        depth = self._head.height - fork_height
        if depth > self.max_reorg_depth:
            raise ValidationError(
                Reason.REORG_TOO_DEEP, f"reorg of {depth} blocks > {self.max_reorg_depth}"
            )

        old = self._disconnect_to(pending, fork_height)
        state = StoredState(pending)
        new: list[Block] = []
        for i, (block_hash, entry) in enumerate(branch):
            block = tip if block_hash == tip_hash else _require(pending, schema.block_key(block_hash), Block)
            connect = self._reconnect if entry.status == BlockStatus.VALID else self._connect
            try:
                diff = connect(state, block)
            except ValidationError as exc:
                if is_mutation(exc.reason):
                    # The body does not match the hash: the block behind the hash may be fine. Keep
                    # what connected, judge nothing, store nothing of the tip (docs Part V).
                    self._keep_connected(branch[:i])
                    raise
                self._reject_branch(tip_hash, tip, tip_entry, branch[:i], branch[i:])
                if block_hash == tip_hash:
                    raise
                raise InvalidBlock(
                    exc.reason, f"ancestor {_short(block_hash)} at height {entry.height}: {exc.detail}"
                ) from exc
            self._connect_block(pending, block_hash, entry, block, diff)
            new.append(block)
        pending.put(schema.HEAD_KEY, tip_hash)
        pending.commit()
        self._head = ChainHead(hash=tip_hash, height=tip_entry.height, work=tip_entry.work)
        return ImportResult(imported=True, new_canonical=new, old_canonical=old)

    def _branch_above_fork(
        self, kv: KeyValueReader, tip_hash: bytes, tip_entry: BlockIndex
    ) -> tuple[list[tuple[bytes, BlockIndex]], int]:
        """The blocks from just above the fork point with the canonical chain up to the tip."""
        branch: list[tuple[bytes, BlockIndex]] = []
        block_hash, entry = tip_hash, tip_entry
        while kv.get(schema.canonical_key(entry.height)) != block_hash:
            branch.append((block_hash, entry))
            block_hash = entry.parent
            entry = _require(kv, schema.index_key(block_hash), BlockIndex)
        branch.reverse()
        return branch, entry.height

    def _disconnect_to(self, pending: PendingWrites, fork_height: int) -> list[Block]:
        """Roll the head back to ``fork_height`` with undo records; returns what fell off."""
        removed: list[Block] = []
        for height in range(self._head.height, fork_height, -1):
            block_hash = _require_raw(pending, schema.canonical_key(height))
            block = _require(pending, schema.block_key(block_hash), Block)
            undo = decode_undo(_require_raw(pending, schema.undo_key(block_hash)))
            for key, prior in undo:
                if prior is None:
                    pending.delete(schema.db_state_key(key))
                else:
                    pending.put(schema.db_state_key(key), prior)
            for position, tx in enumerate(block.txs):
                pending.delete(schema.tx_key(tx.txid))
                for address in tx_addresses(tx):
                    pending.delete(schema.address_tx_key(address, height, position))
            pending.delete(schema.undo_key(block_hash))
            pending.delete(schema.canonical_key(height))
            removed.append(block)
        removed.reverse()
        return removed

    def _connect_block(
        self, pending: PendingWrites, block_hash: bytes, entry: BlockIndex, block: Block,
        diff: StateDiff,
    ) -> None:
        undo: UndoRecord = []
        for key in sorted(diff):
            db_key = schema.db_state_key(key)
            undo.append((key, pending.get(db_key)))
            value = diff[key]
            if value is None:
                pending.delete(db_key)
            else:
                pending.put(db_key, value)
        pending.put(schema.undo_key(block_hash), encode_undo(undo))
        pending.put(schema.canonical_key(entry.height), block_hash)
        for position, tx in enumerate(block.txs):
            pending.put(schema.tx_key(tx.txid), TxLocation(block_hash, position).encode())
            for address in tx_addresses(tx):
                pending.put(schema.address_tx_key(address, entry.height, position), tx.txid)
        if entry.status != BlockStatus.VALID:
            pending.put(schema.index_key(block_hash), replace(entry, status=BlockStatus.VALID).encode())

    def _reject_branch(
        self, tip_hash: bytes, tip: Block, tip_entry: BlockIndex,
        connected: list[tuple[bytes, BlockIndex]], failed: list[tuple[bytes, BlockIndex]],
    ) -> None:
        """Record a failed reorg: the head stays (see docs/protocol.md Part V, "Invalid branches")."""
        pending = PendingWrites(self._store)
        self._put_block(pending, tip_hash, tip, tip_entry)
        for block_hash, entry in connected:
            if entry.status != BlockStatus.VALID:
                pending.put(schema.index_key(block_hash), replace(entry, status=BlockStatus.VALID).encode())
        self._mark_invalid(pending, failed)
        pending.commit()

    def _keep_connected(self, connected: list[tuple[bytes, BlockIndex]]) -> None:
        pending = PendingWrites(self._store)
        for block_hash, entry in connected:
            if entry.status != BlockStatus.VALID:
                pending.put(schema.index_key(block_hash), replace(entry, status=BlockStatus.VALID).encode())
        pending.commit()

    @staticmethod
    def _mark_invalid(pending: PendingWrites, blocks: list[tuple[bytes, BlockIndex]]) -> None:
        for block_hash, entry in blocks:
            pending.put(schema.index_key(block_hash), replace(entry, status=BlockStatus.INVALID).encode())

    @staticmethod
    def _put_block(pending: PendingWrites, block_hash: bytes, block: Block, entry: BlockIndex) -> None:
        pending.put(schema.block_key(block_hash), block.encode())
        pending.put(schema.header_key(block_hash), SealedHeader(block.header, block.seal).encode())
        pending.put(schema.index_key(block_hash), entry.encode())


def _load(kv: KeyValueReader, key: bytes, kind: type[C]) -> C | None:
    raw = kv.get(key)
    return _decode(key, raw, kind) if raw is not None else None


def _require(kv: KeyValueReader, key: bytes, kind: type[C]) -> C:
    """A record the store's invariants say exists: its absence means the store is damaged."""
    return _decode(key, _require_raw(kv, key), kind)


def _require_raw(kv: KeyValueReader, key: bytes) -> bytes:
    raw = kv.get(key)
    if raw is None:
        raise StoreError(f"store is missing record {_show(key)}")
    return raw


def _decode(key: bytes, raw: bytes, kind: type[C]) -> C:
    try:
        return kind.decode(raw)
    except InvalidEncoding as exc:
        raise StoreError(f"corrupt {kind.__name__} at {_show(key)}: {exc}") from exc


def _show(key: bytes) -> str:
    return f"{key[:1].decode('ascii', 'replace')}/{key[1:].hex()}"
