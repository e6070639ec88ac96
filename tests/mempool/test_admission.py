"""Mempool admission: what is accepted, each rejection reason, replacement by fee, held (gapped) txs."""

from __future__ import annotations

import pytest

from chain.crypto import CURVE_ORDER
from chain.errors import InvalidTransaction, Reason, ValidationError
from chain.state import State, get_account
from chain.transition import apply_block
from chain.types import COIN, SignedTx, job_id_of
from consensus.mempool import Mempool, MempoolReject
from tests.factories import (
    FEE,
    KEYS,
    RULES,
    genesis,
    job_cancel,
    job_submit,
    next_block,
    transfer,
)
from tests.mempool.support import NOW, SINK, pool, publish

A, B = KEYS[0], KEYS[1]
POOR = KEYS[5]  # no genesis allocation


def state0() -> State:
    return genesis()[1]


def snapshot(mp: Mempool) -> tuple[list[bytes], int]:
    return mp.txids(), mp.size_bytes


def rejects(mp: Mempool, tx: SignedTx, state: State, reason: Reason) -> MempoolReject:
    before = snapshot(mp)
    with pytest.raises(MempoolReject) as err:
        mp.add(tx, state, NOW)
    assert err.value.reason is reason, err.value
    assert snapshot(mp) == before, "a rejection must leave the pool as it was"
    return err.value


def test_accepts_a_valid_transfer_and_answers_queries() -> None:
    mp, state = pool(), state0()
    tx = transfer(A, SINK, COIN, 0)
    result = mp.add(tx, state, NOW)
    assert result.txid == tx.txid and result.ready
    assert result.replaced is None and result.promoted == () and result.removed == ()
    assert tx.txid in mp and len(mp) == 1
    assert mp.get(tx.txid) == tx and mp.get(bytes(32)) is None
    assert mp.size_bytes == len(tx.encode())
    assert mp.txids() == [tx.txid]
    assert mp.pending_for(A.address) == [tx] and mp.pending_for(B.address) == []
    assert mp.next_nonce(A.address, state) == 1
    assert mp.next_nonce(B.address, state) == 0


def test_reject_is_a_typed_transaction_error() -> None:
    assert issubclass(MempoolReject, InvalidTransaction)
    assert issubclass(MempoolReject, ValidationError)


def test_rejects_duplicates() -> None:
    mp, state = pool(), state0()
    tx = transfer(A, SINK, COIN, 0)
    mp.add(tx, state, NOW)
    rejects(mp, tx, state, Reason.ALREADY_KNOWN)


def test_rejects_wrong_chain_id() -> None:
    rejects(pool(), transfer(A, SINK, COIN, 0, chain_id=RULES.chain_id + 1), state0(), Reason.WRONG_CHAIN_ID)


def test_rejects_fee_below_the_floor() -> None:
    tx = transfer(A, SINK, COIN, 0, fee=1)
    rejects(pool(), tx, state0(), Reason.FEE_TOO_LOW)
    # The floor grows with the size: a fee enough for a short memo is not enough for a long one.
    short = transfer(A, SINK, COIN, 0, fee=RULES.required_fee(len(transfer(A, SINK, COIN, 0).encode())))
    pool().add(short, state0(), NOW)
    rejects(pool(), transfer(A, SINK, COIN, 0, fee=short.body.fee, memo=b"m" * 200), state0(), Reason.FEE_TOO_LOW)


def test_rejects_bad_and_high_s_signatures() -> None:
    tx = transfer(A, SINK, COIN, 0)
    forged = SignedTx(body=tx.body, pubkey=B.public_key, signature=tx.signature)
    rejects(pool(), forged, state0(), Reason.BAD_SIGNATURE)
    r, s = tx.signature[:32], int.from_bytes(tx.signature[32:], "big")
    high = SignedTx(body=tx.body, pubkey=tx.pubkey, signature=r + (CURVE_ORDER - s).to_bytes(32, "big"))
    rejects(pool(), high, state0(), Reason.HIGH_S)


def test_rejects_used_nonces() -> None:
    parent, state = genesis()
    block = next_block(state, parent, [transfer(A, SINK, COIN, 0)])
    after = state.apply(apply_block(state, block, RULES))
    rejects(pool(), transfer(A, SINK, 2 * COIN, 0), after, Reason.NONCE_REPLAY)
    pool().add(transfer(A, SINK, 2 * COIN, 1), after, NOW)


def test_rejects_nonces_too_far_ahead() -> None:
    mp, state = pool(max_nonce_gap=4), state0()
    mp.add(transfer(A, SINK, COIN, 0), state, NOW)
    # Ready run ends at 1; nonces 2..5 leave a gap of at most 4.
    rejects(mp, transfer(A, SINK, COIN, 6), state, Reason.NONCE_TOO_FAR)
    assert not mp.add(transfer(A, SINK, COIN, 5), state, NOW).ready
    strict = pool(max_nonce_gap=0)
    rejects(strict, transfer(A, SINK, COIN, 1), state, Reason.NONCE_TOO_FAR)


def test_rejects_too_many_from_one_sender() -> None:
    mp, state = pool(per_account=3), state0()
    for nonce in range(3):
        mp.add(transfer(A, SINK, COIN, nonce), state, NOW)
    rejects(mp, transfer(A, SINK, COIN, 3), state, Reason.TOO_MANY_FROM_ACCOUNT)
    mp.add(transfer(B, SINK, COIN, 0), state, NOW)  # the limit is per sender
    # A replacement does not add to the count.
    mp.add(transfer(A, SINK, COIN, 2, fee=2 * FEE), state, NOW)


def test_rejects_what_the_balance_cannot_pay_for_the_whole_run() -> None:
    mp, state = pool(), state0()
    rejects(mp, transfer(POOR, SINK, 1, 0), state, Reason.INSUFFICIENT_BALANCE)
    balance = get_account(state, A.address).balance
    half = balance // 2
    mp.add(transfer(A, SINK, half, 0), state, NOW)
    # Each fits the balance alone; the pending run as a whole does not.
    err = rejects(mp, transfer(A, SINK, half, 1), state, Reason.INSUFFICIENT_BALANCE)
    assert "balance" in err.detail
    # Job escrow counts too: 10^6 steps at 10^8 each is far more than the account holds.
    rejects(mp, job_submit(A, 1, steps=10**6, fee_per_step=COIN), state, Reason.INSUFFICIENT_BALANCE)
    # A held tx must at least be able to pay its own fee.
    rejects(mp, transfer(POOR, SINK, 1, 2), state, Reason.INSUFFICIENT_BALANCE)


def test_rejects_what_the_state_transition_rejects() -> None:
    mp, state = pool(), state0()
    rejects(mp, transfer(A, SINK, 0, 0), state, Reason.ZERO_AMOUNT)
    rejects(mp, job_cancel(A, 0, bytes(32)), state, Reason.UNKNOWN_JOB)
    rejects(mp, job_submit(A, 0, steps=0), state, Reason.BAD_JOB_SPEC)


def test_a_run_may_depend_on_its_own_earlier_txs() -> None:
    """A job submitted and cancelled by pending txs: the cancel is checked after the submit."""
    mp, state = pool(), state0()
    submit = job_submit(A, 0)
    mp.add(submit, state, NOW)
    mp.add(job_cancel(A, 1, job_id_of(submit.txid)), state, NOW)
    assert mp.next_nonce(A.address, state) == 2
    # A second publication of the same dataset by the same sender cannot apply after the first.
    mp.add(publish(A, 2, b"abc"), state, NOW)
    rejects(mp, publish(A, 3, b"abc"), state, Reason.DATASET_EXISTS)


def test_replacement_needs_ten_percent_and_the_min_fee_more() -> None:
    mp, state = pool(), state0()
    base = 5 * RULES.min_fee  # its 10 % is less than the min fee, so the min fee is the bump
    old = transfer(A, SINK, COIN, 0, fee=base)
    mp.add(old, state, NOW)
    rejects(mp, transfer(A, SINK, 2 * COIN, 0, fee=base + RULES.min_fee - 1), state, Reason.REPLACEMENT_FEE_TOO_LOW)
    new = transfer(A, SINK, 2 * COIN, 0, fee=base + RULES.min_fee)
    result = mp.add(new, state, NOW)
    assert result.replaced == old and result.ready
    assert old.txid not in mp and new.txid in mp and len(mp) == 1
    assert mp.size_bytes == len(new.encode())
    # For a large fee the 10 % dominates the min fee.
    big = 100 * FEE
    mp.add(transfer(B, SINK, COIN, 0, fee=big), state, NOW)
    rejects(mp, transfer(B, SINK, 2 * COIN, 0, fee=big + RULES.min_fee), state, Reason.REPLACEMENT_FEE_TOO_LOW)
    mp.add(transfer(B, SINK, 2 * COIN, 0, fee=big + big // 10), state, NOW)


def test_replacement_that_would_break_a_later_tx_is_refused() -> None:
    mp, state = pool(), state0()
    balance = get_account(state, A.address).balance
    mp.add(transfer(A, SINK, COIN, 0), state, NOW)
    mp.add(transfer(A, SINK, balance // 2, 1), state, NOW)
    fine = mp.add(transfer(A, SINK, 2 * COIN, 0, fee=2 * FEE), state, NOW)
    assert fine.ready and fine.promoted == ()  # nonce 1 was ready already
    err = rejects(mp, transfer(A, SINK, balance // 2, 0, fee=3 * FEE), state, Reason.INSUFFICIENT_BALANCE)
    assert "nonce 1" in err.detail
    # Replacing the later tx itself is fine.
    mp.add(transfer(A, SINK, balance // 4, 1, fee=3 * FEE), state, NOW)


def test_gapped_txs_are_held_then_promoted_in_order() -> None:
    mp, state = pool(), state0()
    held = [transfer(A, SINK, COIN, n) for n in (2, 3)]
    for tx in held:
        result = mp.add(tx, state, NOW)
        assert not result.ready
    assert mp.next_nonce(A.address, state) == 0
    assert mp.select(state, 100, 10**6) == []
    assert mp.add(transfer(A, SINK, COIN, 0), state, NOW).promoted == ()
    result = mp.add(transfer(A, SINK, COIN, 1), state, NOW)
    assert result.ready and result.promoted == tuple(held)
    assert mp.next_nonce(A.address, state) == 4
    assert [tx.body.nonce for tx in mp.select(state, 100, 10**6)] == [0, 1, 2, 3]


def test_filling_a_gap_drops_held_txs_that_no_longer_apply() -> None:
    mp, state = pool(), state0()
    balance = get_account(state, A.address).balance
    doomed = transfer(A, SINK, balance // 2, 2)
    after = transfer(A, SINK, COIN, 3)
    mp.add(doomed, state, NOW)
    mp.add(after, state, NOW)
    mp.add(transfer(A, SINK, COIN, 0), state, NOW)
    result = mp.add(transfer(A, SINK, balance // 2, 1), state, NOW)
    assert result.promoted == () and result.removed == (doomed, after)
    assert len(mp) == 2 and mp.next_nonce(A.address, state) == 2


def test_readd_skips_the_signature_check_but_nothing_else() -> None:
    state = state0()
    tx = transfer(A, SINK, COIN, 0)
    forged = SignedTx(body=tx.body, pubkey=tx.pubkey, signature=bytes(64))  # never from a valid block
    mp = pool()
    assert mp.readd([forged], state, NOW) == [forged]
    assert mp.readd([transfer(POOR, SINK, 1, 0)], state, NOW) == []
    assert len(mp) == 1


def test_constructor_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Mempool(RULES, 0, 1000, 10, 4)
    with pytest.raises(ValueError):
        Mempool(RULES, 10, 1000, 10, 4, max_nonce_gap=-1)


def test_account_change_behind_the_pools_back_is_noticed() -> None:
    """If the state moved on without ``remove_for_block``, the next add catches the sender up."""
    mp, state = pool(), state0()
    first = transfer(A, SINK, COIN, 0)
    mp.add(first, state, NOW)
    mp.add(transfer(A, SINK, COIN, 1), state, NOW)
    parent = genesis()[0]
    rival = transfer(A, SINK, 5 * COIN, 0)  # a different tx with nonce 0 was mined
    after = state.apply(apply_block(state, next_block(state, parent, [rival]), RULES))
    result = mp.add(transfer(A, SINK, COIN, 2), after, NOW)
    assert result.ready and result.removed == (first,)
    assert mp.next_nonce(A.address, after) == 3
