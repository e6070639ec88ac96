"""Property: whatever was offered, mined, reorged or expired, a block template applies cleanly.

Random sessions mix transfers (between the senders too, so balances move), job submits and cancels,
dataset publications that conflict across senders, replacements, gaps, replays and fee-floor
misses, with blocks mined from the pool's own templates, reorgs of the last block and expiry.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chain.errors import Reason
from chain.state import State, get_account
from chain.transition import Overlay, apply_block, apply_tx
from chain.types import COIN, Block, SignedTx, job_id_of
from consensus.mempool import Mempool, MempoolReject
from tests.factories import FEE, GENESIS_BLOCK, RULES, job_cancel, job_submit, key, next_block, transfer
from tests.mempool.support import EXPIRY, NOW, funded, pool, publish

SENDERS = [key(200 + i) for i in range(4)]
OUTSIDER = key(300)
ADDRESSES = [k.address for k in SENDERS] + [OUTSIDER.address]
START = funded(SENDERS, balance=6 * COIN)


@dataclass(frozen=True)
class Offer:
    sender: int
    kind: str
    nonce_offset: int
    fee_step: int
    amount: int
    recipient: int
    variant: int


@dataclass(frozen=True)
class Mine:
    max_txs: int
    max_bytes: int


@dataclass(frozen=True)
class Reorg:
    pass


@dataclass(frozen=True)
class Wait:
    seconds: int


offers = st.builds(
    Offer,
    sender=st.integers(0, len(SENDERS) - 1),
    kind=st.sampled_from(["transfer", "transfer", "submit", "cancel", "publish"]),
    nonce_offset=st.sampled_from([0, 0, 1, -1, 2, 3]),
    fee_step=st.sampled_from([1, 2, 3, 5, 0]),
    amount=st.sampled_from([COIN, 2 * COIN, COIN // 10, 3 * COIN]),
    recipient=st.integers(0, len(ADDRESSES) - 1),
    variant=st.integers(0, 2),
)
steps = st.lists(
    st.one_of(
        offers,
        st.builds(Mine, max_txs=st.integers(1, 12), max_bytes=st.sampled_from([10**6, 2_000, 400])),
        st.builds(Wait, seconds=st.sampled_from([60, EXPIRY // 2, 0])),
        st.just(Reorg()),
    ),
    min_size=10,
    max_size=50,
)


class Session:
    def __init__(self) -> None:
        self.mp: Mempool = pool(max_txs=24, max_bytes=6_000, per_account=5, max_nonce_gap=2)
        self.history: list[tuple[Block, State]] = [(GENESIS_BLOCK, START)]
        self.submits: dict[int, list[bytes]] = {i: [] for i in range(len(SENDERS))}
        self.now = NOW

    @property
    def state(self) -> State:
        return self.history[-1][1]

    def build(self, offer: Offer) -> SignedTx:
        sender = SENDERS[offer.sender]
        nonce = max(0, self.mp.next_nonce(sender.address, self.state) + offer.nonce_offset)
        fee = 500 if offer.fee_step == 0 else FEE * offer.fee_step + offer.variant
        if offer.kind == "submit":
            return job_submit(sender, nonce, steps=1 + offer.variant, fee_per_step=offer.amount // 4, fee=fee)
        if offer.kind == "cancel":
            known = self.submits[offer.sender]
            job_id = job_id_of(known[offer.variant % len(known)]) if known else bytes(32)
            return job_cancel(sender, nonce, job_id, fee=fee)
        if offer.kind == "publish":
            return publish(sender, nonce, b"data-%d" % offer.variant, fee=fee)
        return transfer(sender, ADDRESSES[offer.recipient], offer.amount, nonce, fee=fee)

    def offer(self, offer: Offer) -> None:
        tx = self.build(offer)
        try:
            result = self.mp.add(tx, self.state, self.now)
        except MempoolReject as exc:
            assert (tx.txid in self.mp) == (exc.reason is Reason.ALREADY_KNOWN)
            return
        assert tx.txid in self.mp
        assert result.replaced is None or result.replaced.txid not in self.mp
        assert all(gone.txid not in self.mp for gone in result.removed)
        if offer.kind == "submit":
            self.submits[offer.sender].append(tx.txid)

    def mine(self, step: Mine) -> None:
        parent, state = self.history[-1]
        txs = self.mp.select(state, step.max_txs, step.max_bytes)
        assert len(txs) <= step.max_txs and sum(len(tx.encode()) for tx in txs) <= step.max_bytes
        block = next_block(state, parent, txs, salt=bytes([len(self.history) % 256]))
        post = state.apply(apply_block(state, block, RULES))
        self.history.append((block, post))
        self.mp.remove_for_block(block.txs, post)
        assert all(tx.txid not in self.mp for tx in block.txs)

    def reorg(self) -> None:
        if len(self.history) > 1:
            block, _ = self.history.pop()
            self.mp.readd(block.txs, self.state, self.now)

    def check(self) -> None:
        mp, state = self.mp, self.state
        txids = mp.txids()
        assert len(txids) == len(set(txids)) == len(mp) <= mp.max_txs
        assert mp.size_bytes == sum(len(mp.get(t).encode()) for t in txids) <= mp.max_bytes  # type: ignore[union-attr]
        for address in ADDRESSES:
            nonces = [tx.body.nonce for tx in mp.pending_for(address)]
            assert nonces == sorted(set(nonces))
            assert len(nonces) <= mp.max_per_account
            assert mp.next_nonce(address, state) >= get_account(state, address).nonce
        # The property: the template applies, in order, signatures included.
        header = next_block(state, self.history[-1][0]).header
        overlay = Overlay(state)
        for tx in mp.select(state, 10**6, 10**9):
            apply_tx(overlay, tx, header, RULES)


def run(session: Session, step: Offer | Mine | Reorg | Wait) -> None:
    if isinstance(step, Offer):
        session.offer(step)
    elif isinstance(step, Mine):
        session.mine(step)
    elif isinstance(step, Reorg):
        session.reorg()
    else:
        session.now += step.seconds
        expired = session.mp.expire(session.now)
        assert all(tx.txid not in session.mp for tx in expired)
    session.check()


@settings(max_examples=60, deadline=None)
@given(steps)
def test_templates_always_apply_cleanly(script: list[Offer | Mine | Reorg | Wait]) -> None:
    session = Session()
    for step in script:
        run(session, step)


def random_step(rng: random.Random) -> Offer | Mine | Reorg | Wait:
    roll = rng.random()
    if roll < 0.75:
        return Offer(
            sender=rng.randrange(len(SENDERS)),
            kind=rng.choice(["transfer", "transfer", "submit", "cancel", "publish"]),
            nonce_offset=rng.randint(-1, 3), fee_step=rng.randint(0, 6), amount=rng.randint(1, 3 * COIN),
            recipient=rng.randrange(len(ADDRESSES)), variant=rng.randrange(3),
        )
    if roll < 0.87:
        return Mine(max_txs=rng.randint(1, 12), max_bytes=rng.choice([400, 2_000, 10**6]))
    if roll < 0.93:
        return Reorg()
    return Wait(seconds=rng.randint(0, EXPIRY))


@pytest.mark.parametrize("seed", range(16))
def test_long_random_sessions(seed: int) -> None:
    """Hypothesis favours short, simple scripts; seeded long sessions reach the deep states
    (promotions, evictions, replacements in full pools) far more often."""
    rng = random.Random(seed)
    session = Session()
    for _ in range(200):
        run(session, random_step(rng))
