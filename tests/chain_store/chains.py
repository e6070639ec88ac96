"""Helpers for the block-store tests: opening chain databases, building branches, checking a store.

Branches are real chains from tests.factories (signed transfers, the built-in job); a branch's
expected state is the one the factories computed by applying its blocks from genesis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from chain.builder import make_header, seal_block
from chain.hashing import tagged_hash
from chain.state import State, get_account, get_job
from chain.transition import apply_block
from chain.types import ZERO_HASH, Block
from store import schema
from store.chaindb import (
    DEFAULT_MAX_REORG_DEPTH,
    BlockIndex,
    BlockStatus,
    ChainDB,
    TxLocation,
    connect_by_rules,
    decode_undo,
)
from store.kv import KeyValueStore
from tests.factories import BUILTIN, KEYS, RULES, genesis, next_block, transfer


def open_chaindb(store: KeyValueStore, *, max_reorg_depth: int = DEFAULT_MAX_REORG_DEPTH) -> ChainDB:
    block, state = genesis()
    return ChainDB(store, block, state, connect_by_rules(RULES), max_reorg_depth=max_reorg_depth)


@dataclass
class Branch:
    blocks: list[Block]
    states: list[State]
    """``states[i]`` is the post-state of ``blocks[i]``."""

    @property
    def tip(self) -> tuple[Block, State]:
        return self.blocks[-1], self.states[-1]


def grow(
    n: int, *, start: tuple[Block, State] | None = None, salt: bytes = b"", sender: int = 0,
    recipient: int = 1, amount: int = 1_000,
) -> Branch:
    """``n`` blocks on ``start`` (default genesis), each with a transfer of ``amount`` + its index."""
    start = start or genesis()
    nonce = get_account(start[1], KEYS[sender].address).nonce
    txs_at = [[transfer(KEYS[sender], KEYS[recipient].address, amount + i, nonce + i)] for i in range(n)]
    parent, state = start
    branch = Branch([], [])
    for i in range(n):
        parent = next_block(state, parent, txs_at[i], salt=salt + bytes([i % 256]))
        state = state.apply(apply_block(state, parent, RULES))
        branch.blocks.append(parent)
        branch.states.append(state)
    return branch


def heavy_block(parent: Block, pre: State, *, target: int, salt: bytes = b"") -> tuple[Block, State]:
    """A valid child of ``parent`` with its own ``target`` (smaller target = more work)."""
    job = get_job(pre, BUILTIN.job_id)
    if job is None:
        raise ValueError("genesis has no built-in job")
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=target, miner=KEYS[6].address, job_id=BUILTIN.job_id,
        start_state_hash=job.state_hash, txs=(),
    )
    block = seal_block(
        pre, header, (), RULES, steps=1,
        final_state_hash=tagged_hash("pouw/test-model", job.state_hash + salt),
        trajectory_root=ZERO_HASH, proof=b"", work=salt,
    )
    return block, pre.apply(apply_block(pre, block, RULES))


def with_bad_state_root(block: Block) -> Block:
    """``block`` with a wrong post-state commitment (so a different hash, and invalid)."""
    return dataclasses.replace(block, seal=dataclasses.replace(block.seal, state_root=bytes(32)))


def state_entries(db: ChainDB) -> list[tuple[bytes, bytes]]:
    return list(db.state.items())


def import_all(db: ChainDB, blocks: Sequence[Block]) -> None:
    for block in blocks:
        db.import_block(block)


def assert_consistent(db: ChainDB, store: KeyValueStore, replayed: dict[bytes, State]) -> None:
    """The store invariants, checked against a replay of the canonical chain through the transition.

    ``replayed`` memoises post-states by block hash across calls (each block is applied once).
    """
    head = db.head
    genesis_block, state = genesis()
    assert db.canonical_hash(0) == genesis_block.hash
    parent_hash = genesis_block.hash
    tx_count = 0
    for height in range(1, head.height + 1):
        block_hash = db.canonical_hash(height)
        assert block_hash is not None, f"canonical index has a hole at {height}"
        block = db.get_block(block_hash)
        assert block is not None and block.hash == block_hash and block.height == height
        assert block.header.prev_hash == parent_hash
        index = db.get_index(block_hash)
        assert index is not None and index.status == BlockStatus.VALID and index.height == height
        undo = store.get(schema.undo_key(block_hash))
        assert undo is not None, f"no undo record for canonical block at {height}"
        decode_undo(undo)
        if block_hash not in replayed:
            replayed[block_hash] = state.apply(apply_block(state, block, RULES))
        state = replayed[block_hash]
        for position, tx in enumerate(block.txs):
            assert db.tx_location(tx.txid) == TxLocation(block_hash, position)
        tx_count += len(block.txs)
        parent_hash = block_hash
    assert parent_hash == head.hash
    assert db.canonical_hash(head.height + 1) is None
    assert state_entries(db) == list(state.items())
    # No stale records from blocks that left the canonical chain.
    assert sum(1 for _ in store.iterate(schema.DB_UNDO)) == head.height
    assert sum(1 for _ in store.iterate(schema.DB_CANONICAL)) == head.height + 1
    assert sum(1 for _ in store.iterate(schema.DB_TX)) == tx_count
    # Fork choice: no block that is not known invalid outweighs the head.
    for _, raw in store.iterate(schema.DB_INDEX):
        entry = BlockIndex.decode(raw)
        assert entry.status == BlockStatus.INVALID or entry.work <= head.work
