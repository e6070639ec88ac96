"""The chain database: genesis, extending the head, side branches, reorgs, invalid branches, reopening."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain import schema as chain_schema
from chain.errors import InvalidBlock, Reason, StoreError, ValidationError
from chain.genesis import genesis_block, genesis_state
from chain.state import State, get_account
from chain.types import Block
from store import schema
from store.chaindb import (
    BlockStatus,
    ChainDB,
    connect_by_rules,
    decode_undo,
    encode_undo,
    expected_work,
)
from store.kv import KeyValueStore, LevelDBStore, MemoryStore
from tests.chain_store.chains import (
    Branch,
    assert_consistent,
    grow,
    heavy_block,
    import_all,
    open_chaindb,
    state_entries,
    with_bad_state_root,
)
from tests.factories import GENESIS, KEYS, RULES, genesis

StoreFactory = Callable[[], KeyValueStore]


@pytest.fixture(params=["memory", "leveldb"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of fresh stores of one kind; closes what it made."""
    made: list[KeyValueStore] = []

    def make() -> KeyValueStore:
        kv = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / f"db{len(made)}")
        made.append(kv)
        return kv

    yield make
    for kv in made:
        kv.close()


def hashes(blocks: Iterable[Block]) -> list[bytes]:
    return [b.hash for b in blocks]


def status(db: ChainDB, block: Block) -> BlockStatus:
    entry = db.get_index(block.hash)
    assert entry is not None
    return BlockStatus(entry.status)


def fork(branch: Branch, height: int) -> tuple[Block, State]:
    """The block of ``branch`` at ``height`` and its post-state, as a start for another branch."""
    if height == 0:
        return genesis()
    return branch.blocks[height - 1], branch.states[height - 1]


def test_a_new_store_holds_genesis(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store)
    block, state = genesis()
    assert db.head.hash == block.hash == db.genesis_hash == db.canonical_hash(0)
    assert (db.head.height, db.head.work) == (0, expected_work(block.header))
    assert db.get_block(block.hash) == db.block_at(0) == block
    assert db.get_header(block.hash) == block.header
    assert status(db, block) == BlockStatus.VALID and db.is_canonical(block.hash)
    assert state_entries(db) == list(state.items())
    assert db.canonical_hash(1) is None and db.get_block(bytes(32)) is None
    assert_consistent(db, store, {})


def test_extending_the_head_connects_each_block(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store)
    chain = grow(5)
    for block, state in zip(chain.blocks, chain.states, strict=True):
        result = db.import_block(block)
        assert result.imported and result.new_canonical == [block] and result.old_canonical == []
        assert db.head.hash == block.hash and db.head.height == block.height
        assert state_entries(db) == list(state.items())
    assert db.head.work == sum(expected_work(b.header) for b in [genesis()[0], *chain.blocks])
    assert_consistent(db, store, {})


def test_known_unknown_parent_and_bad_height(new_store: StoreFactory) -> None:
    db = open_chaindb(new_store())
    chain = grow(3)
    db.import_block(chain.blocks[0])
    assert db.import_block(chain.blocks[0]).imported is False
    assert db.import_block(genesis()[0]).imported is False
    with pytest.raises(InvalidBlock) as unknown:
        db.import_block(chain.blocks[2])
    assert unknown.value.reason == Reason.UNKNOWN_PARENT
    wrong = chain.blocks[1]
    wrong = dataclasses.replace(wrong, header=dataclasses.replace(wrong.header, height=7))
    with pytest.raises(InvalidBlock) as bad_height:
        db.import_block(wrong)
    assert bad_height.value.reason == Reason.BAD_HEIGHT
    assert db.get_index(wrong.hash) is None and db.head.hash == chain.blocks[0].hash


def test_reorg_to_a_longer_branch_and_back(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store)
    replayed: dict[bytes, State] = {}
    a = grow(6, salt=b"A", sender=0, recipient=1, amount=1_000)
    b = grow(5, start=fork(a, 2), salt=b"B", sender=2, recipient=3, amount=7_000)
    import_all(db, a.blocks)

    for block in b.blocks[:4]:  # heights 3..6: never heavier than A's 6 (ties keep the first seen)
        result = db.import_block(block)
        assert result.imported and result.new_canonical == [] and result.old_canonical == []
        assert status(db, block) == BlockStatus.UNVALIDATED
    assert db.head.hash == a.blocks[-1].hash
    assert state_entries(db) == list(a.states[-1].items())
    assert db.tx_location(b.blocks[0].txs[0].txid) is None

    result = db.import_block(b.blocks[4])
    assert hashes(result.new_canonical) == hashes(b.blocks)
    assert hashes(result.old_canonical) == hashes(a.blocks[2:])
    assert db.head.hash == b.blocks[-1].hash and db.head.height == 7
    assert state_entries(db) == list(b.states[-1].items())
    assert get_account(db.state, KEYS[3].address) != get_account(a.states[-1], KEYS[3].address)
    assert all(db.tx_location(blk.txs[0].txid) is None for blk in a.blocks[2:])
    assert all(status(db, blk) == BlockStatus.VALID for blk in a.blocks + b.blocks)
    assert not db.is_canonical(a.blocks[2].hash) and db.is_canonical(a.blocks[1].hash)
    assert_consistent(db, store, replayed)

    a2 = grow(2, start=a.tip, salt=b"A2", sender=0, recipient=1, amount=3_000)
    assert db.import_block(a2.blocks[0]).new_canonical == []  # height 7 ties B's head: stays on B
    result = db.import_block(a2.blocks[1])
    assert hashes(result.new_canonical) == hashes(a.blocks[2:] + a2.blocks)
    assert hashes(result.old_canonical) == hashes(b.blocks)
    assert db.head.hash == a2.blocks[-1].hash
    assert state_entries(db) == list(a2.states[-1].items())
    assert all(db.tx_location(blk.txs[0].txid) is None for blk in b.blocks)
    assert_consistent(db, store, replayed)


def test_a_smaller_target_outweighs_a_longer_chain(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store)
    a = grow(5)
    import_all(db, a.blocks)
    heavy, heavy_state = heavy_block(a.blocks[0], a.states[0], target=GENESIS.target >> 4)
    assert expected_work(heavy.header) > 4 * expected_work(a.blocks[1].header)
    result = db.import_block(heavy)
    assert result.new_canonical == [heavy] and hashes(result.old_canonical) == hashes(a.blocks[1:])
    assert db.head.hash == heavy.hash and db.head.height == 2
    assert state_entries(db) == list(heavy_state.items())
    assert_consistent(db, store, {})


def invalid_branch(start: tuple[Block, State], *, good: int, after: int, salt: bytes) -> Branch:
    """``good`` valid blocks on ``start``, one with a wrong state root, then ``after`` children of it.

    The states are those of the valid blocks the branch was made from (the bad block's is the
    post-state its seal should have committed to).
    """
    valid = grow(good + 1, start=start, salt=salt, sender=2, recipient=3)
    bad = with_bad_state_root(valid.blocks[-1])
    kids = grow(after, start=(bad, valid.states[-1]), salt=salt + b"kid", sender=2, recipient=3)
    return Branch([*valid.blocks[:-1], bad, *kids.blocks], valid.states + kids.states)


def test_invalid_block_on_the_heavier_branch(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store)
    a = grow(5)
    import_all(db, a.blocks)
    b = invalid_branch(fork(a, 2), good=2, after=2, salt=b"B")  # heights 3, 4, bad 5, 6, 7
    good3, good4, bad5, kid6, kid7 = b.blocks
    import_all(db, [good3, good4, bad5])  # a side branch: stored, not validated
    assert status(db, bad5) == BlockStatus.UNVALIDATED

    with pytest.raises(InvalidBlock) as failed:
        db.import_block(kid6)  # heavier: the reorg connects 3, 4 then fails at 5
    assert failed.value.reason == Reason.BAD_STATE_ROOT
    assert db.head.hash == a.blocks[-1].hash
    assert state_entries(db) == list(a.states[-1].items())
    assert [status(db, blk) for blk in b.blocks[:4]] == [
        BlockStatus.VALID, BlockStatus.VALID, BlockStatus.INVALID, BlockStatus.INVALID,
    ]
    assert_consistent(db, store, {})

    for rejected in (kid7, kid6, bad5):
        with pytest.raises(InvalidBlock) as known:
            db.import_block(rejected)
        assert known.value.reason == Reason.KNOWN_INVALID
    assert db.get_index(kid7.hash) is None

    more = grow(1, start=a.tip)
    assert db.import_block(more.blocks[0]).new_canonical == more.blocks
    bad_tip = with_bad_state_root(grow(1, start=more.tip, salt=b"x").blocks[0])
    with pytest.raises(InvalidBlock) as extension:
        db.import_block(bad_tip)
    assert extension.value.reason == Reason.BAD_STATE_ROOT
    assert status(db, bad_tip) == BlockStatus.INVALID
    assert db.head.hash == more.blocks[0].hash
    assert_consistent(db, store, {})


def test_side_descendants_of_an_invalid_block_are_rejected_when_reached(
    new_store: StoreFactory,
) -> None:
    store = new_store()
    db = open_chaindb(store)
    a = grow(8)
    import_all(db, a.blocks)
    b = invalid_branch(fork(a, 2), good=2, after=4, salt=b"B")  # 3, 4, bad 5, 6..9
    bad5 = b.blocks[2]
    c = grow(4, start=(bad5, b.states[2]), salt=b"C", sender=2, recipient=3)  # 6..9 off bad 5
    import_all(db, b.blocks[:-1] + c.blocks[:1])  # all side blocks (heights <= 8)
    with pytest.raises(InvalidBlock):
        db.import_block(b.blocks[-1])
    assert status(db, bad5) == BlockStatus.INVALID
    assert status(db, c.blocks[0]) == BlockStatus.UNVALIDATED  # not reached by the failed reorg

    import_all(db, c.blocks[1:3])  # 7, 8: side again
    with pytest.raises(InvalidBlock) as known:
        db.import_block(c.blocks[3])  # heavier, but it descends from bad 5
    assert known.value.reason == Reason.KNOWN_INVALID
    assert all(status(db, blk) == BlockStatus.INVALID for blk in c.blocks)
    assert db.head.hash == a.blocks[-1].hash
    assert_consistent(db, store, {})


def test_reorgs_deeper_than_the_limit_are_refused(new_store: StoreFactory) -> None:
    store = new_store()
    db = open_chaindb(store, max_reorg_depth=2)
    a = grow(4)
    import_all(db, a.blocks)
    deep = grow(4, start=fork(a, 1), salt=b"deep")  # heights 2..5: rolls back 3 blocks
    import_all(db, deep.blocks[:3])
    with pytest.raises(ValidationError) as refused:
        db.import_block(deep.blocks[3])
    assert refused.value.reason == Reason.REORG_TOO_DEEP
    assert db.get_index(deep.blocks[3].hash) is None and db.head.hash == a.blocks[-1].hash
    shallow = grow(3, start=fork(a, 2), salt=b"shallow")  # heights 3..5: rolls back 2
    import_all(db, shallow.blocks)
    assert db.head.hash == shallow.blocks[-1].hash
    assert_consistent(db, store, {})


class CountingStore(MemoryStore):
    """Counts batches, and fails the next one on request (a write that never reached the disk)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0
        self.fail_next = False

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("simulated write failure")
        self.batches += 1
        super().write_batch(puts, deletes)


def test_every_import_is_one_batch_and_a_failed_write_changes_nothing() -> None:
    store = CountingStore()
    db = open_chaindb(store)
    a = grow(4)
    b = invalid_branch(fork(a, 1), good=1, after=2, salt=b"B")  # 2, bad 3, 4, 5
    c = grow(4, start=fork(a, 1), salt=b"C")  # 2..5
    for block in a.blocks + b.blocks[:3] + c.blocks[:3]:
        before = store.batches
        db.import_block(block)
        assert store.batches == before + 1
    before = store.batches
    with pytest.raises(InvalidBlock):
        db.import_block(b.blocks[3])  # a failed reorg writes its markings in one batch too
    assert store.batches == before + 1

    snapshot = list(store.iterate())
    store.fail_next = True
    with pytest.raises(StoreError):
        db.import_block(c.blocks[3])  # would reorg 3 blocks
    assert list(store.iterate()) == snapshot and db.head.hash == a.blocks[-1].hash
    assert db.import_block(c.blocks[3]).new_canonical == c.blocks
    assert_consistent(db, store, {})


def test_reopen_after_clean_close(tmp_path: Path) -> None:
    a = grow(6, salt=b"A")
    b = grow(5, start=fork(a, 3), salt=b"B", sender=2, recipient=3)
    with open_chaindb(LevelDBStore(tmp_path / "db")) as db:
        import_all(db, a.blocks + b.blocks)
        head, entries = db.head, state_entries(db)
    assert head.hash == b.blocks[-1].hash
    store = LevelDBStore(tmp_path / "db")
    with open_chaindb(store) as db:
        assert db.head == head and state_entries(db) == entries
        assert_consistent(db, store, {})
        more = grow(1, start=b.tip)
        assert db.import_block(more.blocks[0]).new_canonical == more.blocks


def test_opening_checks_the_genesis(tmp_path: Path) -> None:
    with open_chaindb(LevelDBStore(tmp_path / "db")):
        pass
    other = dataclasses.replace(GENESIS, timestamp=GENESIS.timestamp + 1)
    with LevelDBStore(tmp_path / "db") as store, pytest.raises(StoreError, match="genesis"):
        ChainDB(store, genesis_block(other), genesis_state(other), connect_by_rules(RULES))

    with pytest.raises(InvalidBlock) as mismatch:  # a genesis state its block does not commit to
        ChainDB(MemoryStore(), genesis_block(GENESIS), genesis_state(other).apply(
            {chain_schema.account_key(bytes(20)): b"\x92\x01\x00"}), connect_by_rules(RULES))
    assert mismatch.value.reason == Reason.BAD_STATE_ROOT

    foreign = MemoryStore()
    foreign.put(b"unrelated", b"data")
    with pytest.raises(StoreError, match="not a chain database"):
        open_chaindb(foreign)


@given(st.lists(st.tuples(st.binary(max_size=40), st.none() | st.binary(max_size=40)), max_size=8))
def test_undo_records_round_trip(record: list[tuple[bytes, bytes | None]]) -> None:
    assert decode_undo(encode_undo(record)) == record


def test_a_damaged_store_raises_store_error() -> None:
    store = MemoryStore()
    db = open_chaindb(store)
    a = grow(3)
    b = grow(3, start=fork(a, 1), salt=b"B")  # heights 2..4
    import_all(db, a.blocks + b.blocks[:2])
    snapshot = list(store.iterate())
    store.delete(schema.undo_key(a.blocks[2].hash))
    with pytest.raises(StoreError, match="missing"):
        db.import_block(b.blocks[2])  # the reorg needs the undo record it lost
    store.put(schema.undo_key(a.blocks[2].hash), b"\x01")
    with pytest.raises(StoreError, match="undo record"):
        db.import_block(b.blocks[2])
    store.put(schema.index_key(a.blocks[0].hash), b"\x90")
    with pytest.raises(StoreError, match="BlockIndex"):
        db.get_index(a.blocks[0].hash)
    assert db.head.hash == a.blocks[-1].hash and db.get_index(b.blocks[2].hash) is None
    assert {k for k, _ in store.iterate()} == {k for k, _ in snapshot}
