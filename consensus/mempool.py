"""The transaction pool: admission, replacement by fee, eviction, expiry and block templates.

Everything here is node *policy*, not consensus (normative text: docs/protocol.md Part VI). The pool owns
the pending transactions and their bookkeeping; it reads the chain only through the
:class:`~chain.state.StateReader` each call is given, and judges validity only with the state
transition itself (:func:`chain.transition.apply_tx`), so it never disagrees with block validation.

Per sender the pool holds a *ready run* (the txs that apply one after another from the account's nonce)
and, behind at least one missing nonce, a few *held* txs that become ready when the gap is filled.
That shape holds after every call: a tx that would sit right after the ready run but does not apply
is dropped, together with every higher-nonce tx of its sender.

Not thread-safe: the node calls it from its event loop. Costs per call: a pool-wide change is a heap
operation; work proportional to one sender's pending txs (at most ``max_per_account``, each a
signature-free ``apply_tx``) is the most any insert does. ``select`` and ``txids`` walk the pool.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from chain.crypto import verify_signature
from chain.errors import InvalidTransaction, Reason
from chain.rules import ChainRules
from chain.state import Account, StateReader, get_account
from chain.transition import Overlay, apply_tx
from chain.types import ZERO_ADDRESS, ZERO_HASH, Header, SignedTx, Transfer

DEFAULT_MAX_NONCE_GAP = 16
"""How many missing nonces may precede a held transaction (see :class:`Mempool`)."""

_TEMPLATE_HEADER = Header(
    version=0, height=0, prev_hash=ZERO_HASH, timestamp=0, tx_root=ZERO_HASH, target=0,
    miner=ZERO_ADDRESS, job_id=ZERO_HASH, start_state_hash=ZERO_HASH,
)
"""Stands in for the including header when the pool applies txs. Whether a tx applies never depends
on the header (only what the tx writes does: a job's seed and heights), so any header will do."""


class MempoolReject(InvalidTransaction):
    """The pool refused a transaction; ``reason`` is a consensus rule or a pool policy reason."""


@dataclass(frozen=True, slots=True)
class AddResult:
    """What an accepted transaction changed in the pool."""

    txid: bytes
    ready: bool
    """False when the tx is held behind a nonce gap (not minable yet, not worth relaying yet)."""
    replaced: SignedTx | None
    """The pending tx with the same sender and nonce that this one replaced."""
    promoted: tuple[SignedTx, ...]
    """Held txs of the same sender that became ready behind this one, in nonce order."""
    removed: tuple[SignedTx, ...]
    """Txs that left as a side effect: other senders' txs evicted to make room, and txs of this
    sender found no longer valid (a held tx that the filled gap exposed but that does not apply)."""


@dataclass(slots=True, eq=False)
class _Entry:
    tx: SignedTx
    txid: bytes
    sender: bytes
    nonce: int
    fee: int
    size: int
    rate: Fraction
    """Fee per encoded byte, exact."""
    added_at: int
    seq: int
    """Arrival order, unique: breaks fee-rate ties and keeps every ordering deterministic."""


@dataclass(slots=True, eq=False)
class _SenderTxs:
    """One sender's pooled txs by nonce, and the account they were last checked against."""

    address: bytes
    entries: dict[int, _Entry]
    account: Account
    ready_end: int
    """First nonce after the ready run (the account's nonce when nothing is ready)."""
    tail: _Entry | None = None
    """The highest-nonce entry: the only one no other pooled tx depends on."""


# (fee rate, -seq, entry): the cheapest, then the newest, first.
_TailItem = tuple[Fraction, int, _Entry]


class Mempool:
    """Pending transactions for one chain, bounded in count, bytes, age and per-sender depth.

    ``max_nonce_gap`` bounds how far ahead of a sender's ready run a held tx may be (0 refuses every
    gap). A sender may have at most ``max_per_account`` txs pooled, ready and held together.
    """

    def __init__(
        self, rules: ChainRules, max_txs: int, max_bytes: int, expiry_seconds: int,
        max_per_account: int, *, max_nonce_gap: int = DEFAULT_MAX_NONCE_GAP,
    ) -> None:
        if min(max_txs, max_bytes, expiry_seconds, max_per_account) <= 0 or max_nonce_gap < 0:
            raise ValueError("mempool limits must be positive (max_nonce_gap non-negative)")
        self.rules = rules
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.expiry_seconds = expiry_seconds
        self.max_per_account = max_per_account
        self.max_nonce_gap = max_nonce_gap
        self._by_txid: dict[bytes, _Entry] = {}
        self._senders: dict[bytes, _SenderTxs] = {}
        self._bytes = 0
        self._seq = 0
        # Both heaps are lazy: an item whose entry has left (or stopped being a tail) is skipped.
        self._tails: list[_TailItem] = []
        self._arrivals: list[tuple[int, int, _Entry]] = []

    # -----------------------------------------------------------------------------------------
    # Queries

    def __len__(self) -> int:
        return len(self._by_txid)

    def __contains__(self, txid: object) -> bool:
        return txid in self._by_txid

    @property
    def size_bytes(self) -> int:
        """Sum of the encoded sizes of the pooled txs."""
        return self._bytes

    def get(self, txid: bytes) -> SignedTx | None:
        entry = self._by_txid.get(txid)
        return entry.tx if entry is not None else None

    def txids(self) -> list[bytes]:
        """Every pooled txid, each sender's in nonce order (so a peer can admit them as listed)."""
        return [
            record.entries[nonce].txid
            for record in self._senders.values()
            for nonce in sorted(record.entries)
        ]

    def pending_for(self, address: bytes) -> list[SignedTx]:
        """The sender's pooled txs, ready and held, in nonce order."""
        record = self._senders.get(address)
        if record is None:
            return []
        return [record.entries[nonce].tx for nonce in sorted(record.entries)]

    def next_nonce(self, address: bytes, state: StateReader) -> int:
        """The nonce a wallet should use next: the account's nonce plus its ready pooled txs."""
        account = get_account(state, address)
        record = self._senders.get(address)
        if record is None:
            return account.nonce
        if record.account == account:
            return record.ready_end
        nonce = account.nonce
        while nonce in record.entries:
            nonce += 1
        return nonce

    # -----------------------------------------------------------------------------------------
    # Admission

    def add(self, tx: SignedTx, state: StateReader, now: int) -> AddResult:
        """Admit ``tx`` or raise :class:`MempoolReject`; checks run cheapest first.

        A rejected tx leaves the pool as it was, except that the sender's pooled txs are first
        brought up to date with ``state`` if its account changed since they were last checked.
        """
        return self._admit(tx, state, now, verify=True)

    def readd(self, txs: Iterable[SignedTx], state: StateReader, now: int) -> list[SignedTx]:
        """Re-admit txs of blocks that left the best chain; returns those the pool took back.

        Their signatures were checked when their blocks were validated, so they are not checked
        again. Pass them in chain order. Every account the undone txs touched (their senders, and
        recipients, who have lost funds) has its pooled txs checked again.
        """
        txs = list(txs)
        accepted = []
        for tx in txs:
            try:
                self._admit(tx, state, now, verify=False)
            except MempoolReject:
                continue
            accepted.append(tx)
        touched = [tx.sender for tx in txs] + [tx.body.to for tx in txs if isinstance(tx.body, Transfer)]
        self.revalidate(touched, state)
        return accepted

    def _admit(self, tx: SignedTx, state: StateReader, now: int, *, verify: bool) -> AddResult:
        txid, size, body = tx.txid, len(tx.encode()), tx.body
        self._check_cheap(tx, txid, size)
        sender = tx.sender
        account = get_account(state, sender)
        if body.nonce < account.nonce:
            raise MempoolReject(Reason.NONCE_REPLAY, f"nonce {body.nonce} already used")
        record = self._senders.get(sender)
        removed = self._resync(record, state) if record is not None and record.account != account else []
        record = self._senders.get(sender)
        entries: Mapping[int, _Entry] = record.entries if record is not None else {}
        ready_end = record.ready_end if record is not None else account.nonce
        existing = entries.get(body.nonce)
        self._check_slot(body.nonce, body.fee, existing, entries, ready_end)

        self._seq += 1
        entry = _Entry(
            tx=tx, txid=txid, sender=sender, nonce=body.nonce, fee=body.fee, size=size,
            rate=Fraction(body.fee, size), added_at=now, seq=self._seq,
        )
        if existing is None:
            victims = self._plan_eviction(entry, 1, size)
        else:
            victims = self._plan_eviction(entry, 0, size - existing.size)
        if verify:
            try:
                verify_signature(tx.pubkey, tx.digest, tx.signature)
            except InvalidTransaction as exc:
                raise MempoolReject(exc.reason, exc.detail) from exc
        run, failed = self._check_applies(state, account, entry, entries, ready_end)

        # Commit: nothing below raises.
        if existing is not None:
            self._discard(existing)
        for victim in victims:
            self._discard(victim)
        removed += victims
        self._insert(entry, account)
        record = self._senders[sender]
        if failed is not None:
            removed += self._drop_from(record, failed.nonce)
        if entry.nonce <= ready_end:
            record.ready_end = account.nonce + len(run)
        return AddResult(
            txid=txid, ready=entry.nonce < record.ready_end,
            replaced=existing.tx if existing is not None else None,
            promoted=tuple(e.tx for e in run if e.nonce > ready_end),
            removed=tuple(e.tx for e in removed),
        )

    def _check_cheap(self, tx: SignedTx, txid: bytes, size: int) -> None:
        """The checks that need neither the state nor the signature."""
        if txid in self._by_txid:
            raise MempoolReject(Reason.ALREADY_KNOWN, txid.hex())
        body = tx.body
        if body.chain_id != self.rules.chain_id:
            raise MempoolReject(Reason.WRONG_CHAIN_ID, f"chain id {body.chain_id} != {self.rules.chain_id}")
        required = self.rules.required_fee(size)
        if body.fee < required:
            raise MempoolReject(Reason.FEE_TOO_LOW, f"fee {body.fee} < {required}")
        if size > self.max_bytes:
            raise MempoolReject(Reason.POOL_FULL, f"{size} bytes is more than the whole pool holds")

    def _check_slot(
        self, nonce: int, fee: int, existing: _Entry | None, entries: Mapping[int, _Entry], ready_end: int
    ) -> None:
        """May the sender's tx take this nonce: replacement fee, per-sender count, gap limit."""
        if existing is not None:
            needed = existing.fee + max(-(-existing.fee // 10), self.rules.min_fee)
            if fee < needed:
                raise MempoolReject(
                    Reason.REPLACEMENT_FEE_TOO_LOW,
                    f"fee {fee} < {needed} needed to replace {existing.txid.hex()}",
                )
            return
        if len(entries) >= self.max_per_account:
            raise MempoolReject(Reason.TOO_MANY_FROM_ACCOUNT, f"{len(entries)} txs pending from this sender")
        if nonce - ready_end > self.max_nonce_gap:
            raise MempoolReject(Reason.NONCE_TOO_FAR, f"nonce {nonce}, next ready nonce {ready_end}")

    def _check_applies(
        self, state: StateReader, account: Account, entry: _Entry, entries: Mapping[int, _Entry],
        ready_end: int,
    ) -> tuple[list[_Entry], _Entry | None]:
        """Apply the sender's run with ``entry`` in it. Returns the new ready run and the first held
        tx that it reaches but that does not apply (to be dropped). Raises if ``entry`` does not
        apply or would make a ready tx fail."""
        if entry.nonce > ready_end:
            # Held behind a gap: only what needs no predecessor can be checked now.
            if account.balance < entry.fee:
                raise MempoolReject(Reason.INSUFFICIENT_BALANCE, f"balance {account.balance} < fee")
            return [], None
        run, failed, error = self._walk(state, {**entries, entry.nonce: entry}, account.nonce)
        if failed is None or error is None:
            return run, None
        if failed is entry:
            raise MempoolReject(error.reason, error.detail)
        if failed.nonce < entry.nonce:
            raise MempoolReject(error.reason, f"pending tx with nonce {failed.nonce}: {error.detail}")
        if failed.nonce < ready_end:
            raise MempoolReject(
                error.reason, f"would invalidate pending tx with nonce {failed.nonce}: {error.detail}"
            )
        return run, failed

    def _walk(
        self, state: StateReader, entries: Mapping[int, _Entry], start: int
    ) -> tuple[list[_Entry], _Entry | None, InvalidTransaction | None]:
        """Apply ``entries`` in nonce order from ``start``: the run that applies, then the first
        entry that does not (and why), if the run stopped at one rather than at a gap."""
        overlay = Overlay(state)
        run: list[_Entry] = []
        nonce = start
        while (entry := entries.get(nonce)) is not None:
            try:
                apply_tx(overlay, entry.tx, _TEMPLATE_HEADER, self.rules, check_signature=False)
            except InvalidTransaction as exc:
                return run, entry, exc
            run.append(entry)
            nonce += 1
        return run, None, None

    # -----------------------------------------------------------------------------------------
    # Eviction

    def _plan_eviction(self, incoming: _Entry, extra_txs: int, extra_bytes: int) -> list[_Entry]:
        """The txs to evict so that ``incoming`` fits, cheapest tail first; POOL_FULL if that would
        take a tx paying at least ``incoming``'s fee rate. Plans only: the pool is not changed."""
        excess_txs = len(self._by_txid) + extra_txs - self.max_txs
        excess_bytes = self._bytes + extra_bytes - self.max_bytes
        victims: list[_Entry] = []
        planned: set[_Entry] = set()
        set_aside: list[_TailItem] = []
        exposed: list[_TailItem] = []  # predecessors that become tails once a planned victim goes
        try:
            while excess_txs > 0 or excess_bytes > 0:
                victim = self._next_victim(incoming.sender, planned, set_aside, exposed)
                if victim is None or victim.rate >= incoming.rate:
                    raise MempoolReject(
                        Reason.POOL_FULL, "no pooled tx without dependants pays less per byte"
                    )
                victims.append(victim)
                planned.add(victim)
                excess_txs -= 1
                excess_bytes -= victim.size
                siblings = self._senders[victim.sender].entries
                below = [n for n in siblings if n < victim.nonce]
                if below:
                    heapq.heappush(exposed, self._tail_item(siblings[max(below)]))
        finally:
            for item in set_aside:
                heapq.heappush(self._tails, item)
        return victims

    def _next_victim(
        self, protected: bytes, planned: set[_Entry], set_aside: list[_TailItem], exposed: list[_TailItem]
    ) -> _Entry | None:
        while self._tails:
            entry = self._tails[0][2]
            record = self._senders.get(entry.sender)
            if record is None or record.tail is not entry:
                heapq.heappop(self._tails)  # stale for good
            elif entry.sender == protected or entry in planned:
                set_aside.append(heapq.heappop(self._tails))
            else:
                break
        if exposed and (not self._tails or exposed[0] < self._tails[0]):
            return heapq.heappop(exposed)[2]
        if self._tails:
            item = heapq.heappop(self._tails)
            set_aside.append(item)
            return item[2]
        return None

    @staticmethod
    def _tail_item(entry: _Entry) -> _TailItem:
        return (entry.rate, -entry.seq, entry)

    # -----------------------------------------------------------------------------------------
    # Blocks, reorgs, expiry

    def remove_for_block(self, block_txs: Sequence[SignedTx], state: StateReader) -> list[SignedTx]:
        """Drop the txs a newly connected block included, then re-check its senders against
        ``state`` (the post-block state); returns the pooled txs dropped as no longer valid."""
        senders: set[bytes] = set()
        for tx in block_txs:
            entry = self._by_txid.get(tx.txid)
            if entry is not None:
                self._discard(entry)
            senders.add(tx.sender)
        return self.revalidate(senders, state)

    def revalidate(self, addresses: Iterable[bytes], state: StateReader) -> list[SignedTx]:
        """Re-check the pooled txs of ``addresses`` against ``state``; returns those dropped."""
        dropped: list[_Entry] = []
        for address in set(addresses):
            record = self._senders.get(address)
            if record is not None:
                dropped += self._resync(record, state)
        return [entry.tx for entry in dropped]

    def expire(self, now: int) -> list[SignedTx]:
        """Drop txs that have waited more than ``expiry_seconds`` (with their senders' later txs)."""
        dropped: list[_Entry] = []
        while self._arrivals and now - self._arrivals[0][0] > self.expiry_seconds:
            entry = heapq.heappop(self._arrivals)[2]
            if self._by_txid.get(entry.txid) is entry:
                dropped += self._drop_from(self._senders[entry.sender], entry.nonce)
        return [entry.tx for entry in dropped]

    # -----------------------------------------------------------------------------------------
    # Block templates

    def select(self, state: StateReader, max_txs: int, max_bytes: int) -> list[SignedTx]:
        """Txs for a block on top of ``state``: highest fee rate first, each sender's in nonce order.

        Each candidate is applied to an overlay of ``state`` before it is taken, so the list applies
        cleanly in order; a sender whose next tx does not apply (or does not fit) contributes
        nothing more. At most ``min(max_txs, rules.max_block_txs)`` txs, ``max_bytes`` encoded bytes.
        """
        limit = min(max_txs, self.rules.max_block_txs)
        candidates: list[tuple[Fraction, int, _Entry]] = []
        for address, record in self._senders.items():
            head = record.entries.get(get_account(state, address).nonce)
            if head is not None:
                candidates.append((-head.rate, head.seq, head))
        heapq.heapify(candidates)
        overlay = Overlay(state)
        chosen: list[SignedTx] = []
        used = 0
        while candidates and len(chosen) < limit:
            entry = heapq.heappop(candidates)[2]
            if used + entry.size > max_bytes:
                continue
            scratch = Overlay(overlay)  # a failing apply_tx may have written part of its effects
            try:
                apply_tx(scratch, entry.tx, _TEMPLATE_HEADER, self.rules, check_signature=False)
            except InvalidTransaction:
                continue
            overlay.writes.update(scratch.writes)
            chosen.append(entry.tx)
            used += entry.size
            following = self._senders[entry.sender].entries.get(entry.nonce + 1)
            if following is not None:
                heapq.heappush(candidates, (-following.rate, following.seq, following))
        return chosen

    # -----------------------------------------------------------------------------------------
    # Bookkeeping

    def _insert(self, entry: _Entry, account: Account) -> None:
        record = self._senders.get(entry.sender)
        if record is None:
            record = _SenderTxs(address=entry.sender, entries={}, account=account, ready_end=account.nonce)
            self._senders[entry.sender] = record
        record.entries[entry.nonce] = entry
        self._by_txid[entry.txid] = entry
        self._bytes += entry.size
        self._push_arrival(entry)
        self._refresh_tail(record)

    def _discard(self, entry: _Entry) -> None:
        """Remove one entry (not its dependants); its heap items go stale."""
        record = self._senders[entry.sender]
        del record.entries[entry.nonce]
        del self._by_txid[entry.txid]
        self._bytes -= entry.size
        record.ready_end = min(record.ready_end, entry.nonce)
        if record.entries:
            self._refresh_tail(record)
        else:
            del self._senders[entry.sender]

    def _drop_from(self, record: _SenderTxs, nonce: int) -> list[_Entry]:
        """Remove the sender's entries with nonce ``>= nonce``; returns them in nonce order."""
        doomed = [record.entries[n] for n in sorted(record.entries) if n >= nonce]
        for entry in doomed:
            self._discard(entry)
        return doomed

    def _resync(self, record: _SenderTxs, state: StateReader) -> list[_Entry]:
        """Bring one sender's entries in line with ``state``: drop used nonces, recompute the ready
        run, drop the first tx after it that does not apply and everything above it."""
        account = get_account(state, record.address)
        dropped = [record.entries[n] for n in sorted(record.entries) if n < account.nonce]
        for entry in dropped:
            self._discard(entry)
        if not record.entries:
            return dropped
        run, failed, _ = self._walk(state, record.entries, account.nonce)
        if failed is not None:
            dropped += self._drop_from(record, failed.nonce)
        record.account = account
        record.ready_end = account.nonce + len(run)
        return dropped

    def _refresh_tail(self, record: _SenderTxs) -> None:
        tail = record.entries[max(record.entries)]
        if tail is not record.tail:
            record.tail = tail
            heapq.heappush(self._tails, self._tail_item(tail))
            if len(self._tails) > 2 * len(self._senders) + 64:
                self._tails = [self._tail_item(r.tail) for r in self._senders.values() if r.tail]
                heapq.heapify(self._tails)

    def _push_arrival(self, entry: _Entry) -> None:
        heapq.heappush(self._arrivals, (entry.added_at, entry.seq, entry))
        if len(self._arrivals) > 2 * len(self._by_txid) + 64:
            self._arrivals = [(e.added_at, e.seq, e) for e in self._by_txid.values()]
            heapq.heapify(self._arrivals)
