"""A full pool: who is evicted for a better-paying tx, and when the newcomer is refused instead."""

from __future__ import annotations

import pytest

from chain.errors import Reason
from chain.types import COIN
from consensus.mempool import MempoolReject
from tests.factories import FEE, KEYS, genesis, transfer
from tests.mempool.support import NOW, SINK, pool, publish

A, B, C, D = KEYS[0], KEYS[1], KEYS[2], KEYS[3]


def test_full_by_count_evicts_the_cheapest_for_a_better_payer() -> None:
    mp, state = pool(max_txs=3), genesis()[1]
    cheap = transfer(A, SINK, COIN, 0, fee=FEE)
    mid = transfer(B, SINK, COIN, 0, fee=2 * FEE)
    high = transfer(C, SINK, COIN, 0, fee=3 * FEE)
    for tx in (cheap, mid, high):
        mp.add(tx, state, NOW)
    before = mp.txids()
    # Paying the same per byte as the cheapest is not enough.
    with pytest.raises(MempoolReject) as err:
        mp.add(transfer(D, SINK, COIN, 0, fee=FEE), state, NOW)
    assert err.value.reason is Reason.POOL_FULL
    assert mp.txids() == before
    better = transfer(D, SINK, COIN, 0, fee=FEE + 1)
    result = mp.add(better, state, NOW)
    assert result.removed == (cheap,)
    assert set(mp.txids()) == {mid.txid, high.txid, better.txid}
    assert len(mp) == 3


def test_only_txs_without_dependants_are_evicted() -> None:
    mp, state = pool(max_txs=3), genesis()[1]
    parent = transfer(A, SINK, COIN, 0, fee=FEE)  # cheapest, but nonce 1 depends on it
    child = transfer(A, SINK, COIN, 1, fee=10 * FEE)
    other = transfer(B, SINK, COIN, 0, fee=2 * FEE)
    for tx in (parent, child, other):
        mp.add(tx, state, NOW)
    result = mp.add(transfer(C, SINK, COIN, 0, fee=3 * FEE), state, NOW)
    assert result.removed == (other,)
    assert parent.txid in mp and child.txid in mp


def test_evicting_a_tail_exposes_its_predecessor() -> None:
    """Room for a large tx is made by evicting a sender's tail and then the tx before it."""
    filler = transfer(A, SINK, COIN, 0)
    size = len(filler.encode())
    mp, state = pool(max_bytes=4 * size + 10), genesis()[1]
    a0 = transfer(A, SINK, COIN, 0, fee=FEE)
    a1 = transfer(A, SINK, COIN, 1, fee=2 * FEE)
    b0 = transfer(B, SINK, COIN, 0, fee=8 * FEE)
    for tx in (a0, a1, b0):
        mp.add(tx, state, NOW)
    big = publish(C, 0, b"x" * (2 * size), fee=20 * FEE)  # needs two slots freed
    result = mp.add(big, state, NOW)
    assert result.removed == (a1, a0)
    assert set(mp.txids()) == {b0.txid, big.txid}
    assert mp.size_bytes <= mp.max_bytes


def test_refused_when_only_better_payers_could_make_room() -> None:
    filler = transfer(A, SINK, COIN, 0)
    size = len(filler.encode())
    mp, state = pool(max_bytes=3 * size + 10), genesis()[1]
    cheap = transfer(A, SINK, COIN, 0, fee=FEE)
    rich = transfer(B, SINK, COIN, 0, fee=50 * FEE)
    mp.add(cheap, state, NOW)
    mp.add(rich, state, NOW)
    before = mp.txids()
    # Evicting ``cheap`` alone is not enough; ``rich`` pays more per byte than the newcomer.
    big = publish(C, 0, b"x" * (2 * size), fee=20 * FEE)
    with pytest.raises(MempoolReject) as err:
        mp.add(big, state, NOW)
    assert err.value.reason is Reason.POOL_FULL
    assert mp.txids() == before
    # The pool's heap survived the failed plan: once full, the next newcomer still evicts ``cheap``.
    assert mp.add(transfer(D, SINK, COIN, 0, fee=2 * FEE), state, NOW).removed == ()
    assert mp.add(transfer(C, SINK, COIN, 0, fee=3 * FEE), state, NOW).removed == (cheap,)
    assert rich.txid in mp


def test_a_tx_bigger_than_the_pool_is_refused() -> None:
    mp, state = pool(max_bytes=100), genesis()[1]
    with pytest.raises(MempoolReject) as err:
        mp.add(transfer(A, SINK, COIN, 0), state, NOW)
    assert err.value.reason is Reason.POOL_FULL


def test_a_sender_never_evicts_its_own_predecessors() -> None:
    mp, state = pool(max_txs=2), genesis()[1]
    mp.add(transfer(A, SINK, COIN, 0, fee=FEE), state, NOW)
    mp.add(transfer(A, SINK, COIN, 1, fee=FEE), state, NOW)
    with pytest.raises(MempoolReject) as err:
        mp.add(transfer(A, SINK, COIN, 2, fee=100 * FEE), state, NOW)
    assert err.value.reason is Reason.POOL_FULL
    # But another sender's better tx evicts A's tail.
    result = mp.add(transfer(B, SINK, COIN, 0, fee=2 * FEE), state, NOW)
    assert [tx.body.nonce for tx in result.removed] == [1]
    assert mp.next_nonce(A.address, state) == 1


def test_replacement_in_a_full_pool_makes_room_for_its_extra_bytes() -> None:
    filler = transfer(A, SINK, COIN, 0)
    size = len(filler.encode())
    mp, state = pool(max_bytes=2 * size + 10), genesis()[1]
    a0 = transfer(A, SINK, COIN, 0, fee=FEE)
    b0 = transfer(B, SINK, COIN, 0, fee=FEE)
    mp.add(a0, state, NOW)
    mp.add(b0, state, NOW)
    bigger = transfer(A, SINK, COIN, 0, fee=5 * FEE, memo=b"y" * 40)
    result = mp.add(bigger, state, NOW)
    assert result.replaced == a0 and result.removed == (b0,)
    assert mp.txids() == [bigger.txid]
