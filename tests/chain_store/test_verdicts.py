"""The chain database's verdicts: a mutated block is never marked invalid, and a branch that
connected once is not verified again for every tip that extends it."""

from __future__ import annotations

from chain.errors import InvalidBlock, Reason, is_mutation
from chain.state import StateDiff, StateReader
from chain.types import Block
from store.chaindb import BlockStatus, ChainDB, connect_by_rules
from store.kv import MemoryStore
from tests.chain_store.chains import grow, import_all
from tests.chain_store.test_chaindb import fork, invalid_branch
from tests.factories import RULES, genesis


def test_mutation_reasons() -> None:
    assert is_mutation(Reason.BAD_TX_ROOT) and is_mutation(Reason.MUTATED)
    assert not any(is_mutation(r) for r in (Reason.BAD_SEAL, Reason.BAD_STATE_ROOT, Reason.BAD_SIGNATURE))


def test_a_mutated_block_is_not_stored_nor_marked_invalid() -> None:
    mutated: set[bytes] = set()
    by_rules = connect_by_rules(RULES)

    def connect(pre: StateReader, block: Block) -> StateDiff:
        if block.hash in mutated:
            raise InvalidBlock(Reason.MUTATED, "work does not match its commitment")
        return by_rules(pre, block)

    block, state = genesis()
    db = ChainDB(MemoryStore(), block, state, connect)
    a = grow(3)
    import_all(db, a.blocks[:2])
    mutated.add(a.blocks[2].hash)
    try:
        db.import_block(a.blocks[2])
        raise AssertionError("the mutated block was accepted")
    except InvalidBlock as exc:
        assert exc.reason is Reason.MUTATED
    assert db.get_index(a.blocks[2].hash) is None and db.head.hash == a.blocks[1].hash
    mutated.clear()  # the genuine bytes arrive under the same hash
    assert db.import_block(a.blocks[2]).new_canonical == [a.blocks[2]]


def test_a_valid_side_branch_is_verified_once() -> None:
    connected: list[bytes] = []
    reconnected: list[bytes] = []
    by_rules = connect_by_rules(RULES)

    def connect(pre: StateReader, block: Block) -> StateDiff:
        connected.append(block.hash)
        return by_rules(pre, block)

    def reconnect(pre: StateReader, block: Block) -> StateDiff:
        reconnected.append(block.hash)
        return by_rules(pre, block)

    block, state = genesis()
    db = ChainDB(MemoryStore(), block, state, connect, reconnect=reconnect)
    a = grow(5)
    import_all(db, a.blocks)
    b = invalid_branch(fork(a, 2), good=2, after=2, salt=b"B")  # heights 3, 4, bad 5, 6, 7
    good3, good4, bad5, kid6, _ = b.blocks
    import_all(db, [good3, good4, bad5])
    connected.clear()
    try:
        db.import_block(kid6)  # heavier: connects 3 and 4, fails at 5
    except InvalidBlock:
        pass
    assert connected == [good3.hash, good4.hash, bad5.hash]
    assert db.get_index(good4.hash).status == BlockStatus.VALID  # type: ignore[union-attr]
    # every later tip on the good part of the branch: 3 and 4 are not verified again
    for salt in (b"x", b"y"):
        connected.clear()
        reconnected.clear()
        tips = grow(db.head.height - 3, start=(good4, b.states[1]), salt=salt)  # one block heavier
        import_all(db, tips.blocks[:-1])
        assert db.head.hash == a.blocks[-1].hash
        assert db.import_block(tips.blocks[-1]).new_canonical[:2] == [good3, good4]
        assert reconnected == [good3.hash, good4.hash]
        assert good3.hash not in connected and good4.hash not in connected
        # back to a heavier main chain for the next round
        more = grow(4, start=a.tip, salt=salt)
        import_all(db, more.blocks)
        a = more
