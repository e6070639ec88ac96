"""The pool and the chain: block templates, connected blocks, reorgs, expiry, and a 2000-tx load."""

from __future__ import annotations

import dataclasses

from chain.errors import Reason
from chain.state import State, get_account
from chain.transition import Overlay, apply_block, apply_tx
from chain.types import COIN, Block, SignedTx
from consensus.mempool import Mempool, MempoolReject
from tests.factories import FEE, KEYS, RULES, build_chain, genesis, key, next_block, transfer
from tests.mempool.support import EXPIRY, NOW, SINK, funded, pool, publish

A, B, C = KEYS[0], KEYS[1], KEYS[2]


def applies_cleanly(state: State, parent: Block, txs: list[SignedTx]) -> None:
    overlay = Overlay(state)
    header = next_block(state, parent).header
    for tx in txs:
        apply_tx(overlay, tx, header, RULES)


def mine(state: State, parent: Block, txs: list[SignedTx]) -> tuple[Block, State]:
    block = next_block(state, parent, txs)
    return block, state.apply(apply_block(state, block, RULES))


def test_select_takes_the_best_fee_rate_first_within_nonce_order() -> None:
    parent, state = genesis()
    mp = pool()
    a0 = transfer(A, SINK, COIN, 0, fee=FEE)
    a1 = transfer(A, SINK, COIN, 1, fee=9 * FEE)  # rich child of a poor parent
    b0 = transfer(B, SINK, COIN, 0, fee=5 * FEE)
    c0 = transfer(C, SINK, COIN, 0, fee=3 * FEE)
    for tx in (a1, a0, b0, c0):
        mp.add(tx, state, NOW)
    chosen = mp.select(state, 100, 10**6)
    assert chosen == [b0, c0, a0, a1]
    applies_cleanly(state, parent, chosen)
    # Limits: by count, by bytes (a sender that does not fit contributes nothing more).
    assert mp.select(state, 2, 10**6) == [b0, c0]
    size = len(b0.encode())
    assert mp.select(state, 100, size) == [b0]
    small_rules_pool = Mempool(dataclasses.replace(RULES, max_block_txs=1), 100, 10**6, EXPIRY, 8)
    small_rules_pool.add(b0, state, NOW)
    small_rules_pool.add(c0, state, NOW)
    assert small_rules_pool.select(state, 100, 10**6) == [b0]


def test_select_skips_txs_that_conflict_across_senders() -> None:
    """Two senders publish the same dataset: only the better payer's can go in a block."""
    parent, state = genesis()
    mp = pool()
    first = publish(A, 0, b"same", fee=2 * FEE)
    second = publish(B, 0, b"same", fee=FEE)
    after = transfer(B, SINK, COIN, 1)
    for tx in (first, second, after):
        mp.add(tx, state, NOW)
    chosen = mp.select(state, 100, 10**6)
    assert chosen == [first]
    mine(state, parent, chosen)  # a valid block


def test_remove_for_block_drops_included_and_invalidated_txs() -> None:
    parent, state = genesis()
    mp = pool()
    a0, a1 = transfer(A, SINK, COIN, 0), transfer(A, SINK, COIN, 1)
    b0 = transfer(B, SINK, COIN, 0)
    c0, c1, c2 = (transfer(C, SINK, COIN, n) for n in range(3))
    for tx in (a0, a1, b0, c0, c1, c2):
        mp.add(tx, state, NOW)
    # The block includes a0 and c0 from the pool, a rival of b0 (another wallet spent B's nonce 0)
    # and a rival of c1 that drains C, so that the pooled c2 can no longer be paid.
    rival_b = transfer(B, SINK, 2 * COIN, 0)
    balance = get_account(state, C.address).balance - COIN - FEE
    drain = transfer(C, SINK, balance - FEE - COIN // 2, 1)
    block, post = mine(state, parent, [a0, rival_b, c0, drain])
    dropped = mp.remove_for_block(block.txs, post)
    assert set(dropped) == {b0, c1, c2}
    assert mp.txids() == [a1.txid]
    assert mp.next_nonce(A.address, post) == 2
    assert mp.next_nonce(C.address, post) == 2
    applies_cleanly(post, block, mp.select(post, 100, 10**6))


def test_readd_after_a_reorg() -> None:
    parent, state = genesis()
    mp = pool()
    txs = [transfer(A, SINK, COIN, 0), transfer(A, SINK, COIN, 1), transfer(B, SINK, COIN, 0)]
    for tx in txs:
        mp.add(tx, state, NOW)
    # Chain 1 includes them all; the pool empties.
    old_block, old_state = mine(state, parent, mp.select(state, 100, 10**6))
    mp.remove_for_block(old_block.txs, old_state)
    assert len(mp) == 0
    mp.add(transfer(A, SINK, COIN, 2), old_state, NOW)  # built on chain 1
    # Chain 2 forks from genesis, longer, and includes B's tx only (nonce 0 spent by a rival).
    rival_b = transfer(B, SINK, 7 * COIN, 0)
    fork, fork_state = build_chain(2, salt=b"fork", txs_at={0: [rival_b]})
    for block in fork:
        mp.remove_for_block(block.txs, fork_state)
    readmitted = mp.readd(old_block.txs, fork_state, NOW + 1)
    assert readmitted == txs[:2]  # B's old tx reuses a spent nonce
    assert mp.next_nonce(A.address, fork_state) == 3
    assert [tx.body.nonce for tx in mp.pending_for(A.address)] == [0, 1, 2]
    chosen = mp.select(fork_state, 100, 10**6)
    assert [tx.body.nonce for tx in chosen] == [0, 1, 2]
    mine(fork_state, fork[-1], chosen)


def test_reorg_that_takes_funds_away_revalidates_the_recipient() -> None:
    parent, state = genesis()
    poor = key(50)
    gift = transfer(A, poor.address, 5 * COIN, 0)
    block, after = mine(state, parent, [gift])
    mp = pool()
    spend = transfer(poor, SINK, 4 * COIN, 0)
    mp.add(spend, after, NOW)
    # The block that funded ``poor`` falls off; the new chain does not include the gift.
    _, fork_state = build_chain(2, salt=b"fork")
    mp.readd(block.txs, fork_state, NOW)
    assert gift.txid in mp and spend.txid not in mp


def test_expiry_drops_old_txs_and_their_dependants() -> None:
    _, state = genesis()
    mp = pool()
    a0 = transfer(A, SINK, COIN, 0)
    b0 = transfer(B, SINK, COIN, 0)
    mp.add(a0, state, NOW)
    mp.add(b0, state, NOW + 10)
    a1 = transfer(A, SINK, COIN, 1)
    mp.add(a1, state, NOW + 20)
    assert mp.expire(NOW + EXPIRY) == []
    assert mp.expire(NOW + EXPIRY + 1) == [a0, a1]  # a1 is young but cannot go without a0
    assert mp.txids() == [b0.txid]
    assert mp.expire(NOW + EXPIRY + 11) == [b0]
    assert len(mp) == 0 and mp.size_bytes == 0
    # A replacement restarts the clock.
    mp.add(transfer(C, SINK, COIN, 0), state, NOW)
    fresh = transfer(C, SINK, COIN, 0, fee=2 * FEE)
    mp.add(fresh, state, NOW + 100)
    assert mp.expire(NOW + EXPIRY + 1) == []
    assert mp.txids() == [fresh.txid]


def test_two_thousand_txs() -> None:
    """Many senders, many txs, a pool that keeps evicting: stays quick and consistent."""
    senders = [key(1000 + i) for i in range(100)]
    parent, state = genesis()
    state = funded(senders)
    mp = Mempool(RULES, 1_500, 10**7, EXPIRY, 25)
    txs = [
        transfer(sender, SINK, COIN, nonce, fee=FEE + 7 * i + nonce)
        for nonce in range(20) for i, sender in enumerate(senders)
    ]
    accepted = evicted = 0
    for tx in txs:
        try:
            evicted += len(mp.add(tx, state, NOW).removed)
            accepted += 1
        except MempoolReject as exc:
            # Cheap senders lose their tails, so their later txs then leave too wide a gap.
            assert exc.reason in (Reason.POOL_FULL, Reason.NONCE_TOO_FAR)
    assert len(mp) == 1_500 == accepted - evicted and evicted > 0
    assert mp.size_bytes == sum(len(mp.get(t).encode()) for t in mp.txids())  # type: ignore[union-attr]
    chosen = mp.select(state, RULES.max_block_txs, 10**7)
    assert len(chosen) == RULES.max_block_txs
    rates = [tx.body.fee for tx in chosen]
    assert rates[0] == max(tx.body.fee for tx in txs if tx.body.nonce == 0)
    applies_cleanly(state, parent, chosen)
    block, post = mine(state, parent, chosen)
    assert mp.remove_for_block(block.txs, post) == []
    assert len(mp) == 500
    applies_cleanly(post, block, mp.select(post, RULES.max_block_txs, 10**7))
