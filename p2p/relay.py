"""Gossip: announcing what we validated, fetching transactions we lack, serving getdata.

Rules (docs/protocol.md Part VII, "Gossip"):

* An object is announced only after the backend accepted it, to every ready peer not known to have
  it — never back to the peer it came from. A peer "knows" a hash once it announced it, sent it, or
  was sent it; each peer's known set is a bounded LRU.
* Announcements are queued per peer and flushed every ``inv_interval`` as one Inv per kind, so a
  burst of transactions costs a few messages, not one each.
* Serving GetData (blocks and transactions) is capped per peer: a token bucket of
  ``upload_bytes_per_s`` with a burst of ``upload_burst_bytes``; a request beyond it is deferred (the
  peer's own processor waits, so only that peer slows down), and an object already served to that
  peer (the last ``served_memory``) is answered NotFound and scored, so a small GetData cannot buy
  the same large block or transaction twice.
* A transaction is fetched from the first peer that announces it; a second announcement is not
  acted on until ``tx_request_timeout`` has passed. Rejected and invalid txids are remembered (bounded)
  until the next accepted block, so a flood of the same bad transaction costs one validation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from chain.types import Block, SignedTx
from p2p.backend import ChainBackend, TxStatus
from p2p.bounded import LruDict, LruSet, TokenBucket
from p2p.config import P2PConfig
from p2p.messages import (
    MAX_INV_ITEMS,
    BlockMessage,
    GetData,
    Inv,
    InvKind,
    Message,
    NotFound,
    TxMessage,
    encode_message,
)
from p2p.misbehavior import Offence
from p2p.peer import Peer

log = logging.getLogger(__name__)

Punish = Callable[[Peer, Offence, str], None]


class _PeerRelay:
    __slots__ = ("known", "pending", "served", "upload")

    def __init__(self, config: P2PConfig, now: float) -> None:
        self.known: LruSet[bytes] = LruSet(config.known_inventory)
        self.pending: dict[InvKind, dict[bytes, None]] = {InvKind.TX: {}, InvKind.BLOCK: {}}
        self.served: LruSet[bytes] = LruSet(config.served_memory)
        self.upload = TokenBucket(config.upload_bytes_per_s, config.upload_burst_bytes, now)


class Relay:
    def __init__(
        self, backend: ChainBackend, config: P2PConfig, *, punish: Punish, clock: Callable[[], float]
    ) -> None:
        self._backend = backend
        self._config = config
        self._punish = punish
        self._clock = clock
        self._peers: dict[Peer, _PeerRelay] = {}
        self._recent_rejects: LruSet[bytes] = LruSet(config.recent_rejects)
        self._tx_requests: LruDict[bytes, float] = LruDict(config.tx_requests)
        self.upload_deferrals = 0
        """Times a block was held back by a peer's upload cap (for tests and metrics)."""

    def add_peer(self, peer: Peer) -> None:
        self._peers[peer] = _PeerRelay(self._config, self._clock())

    def remove_peer(self, peer: Peer) -> None:
        self._peers.pop(peer, None)

    def mark_known(self, peer: Peer, hashes: Iterable[bytes]) -> None:
        state = self._peers.get(peer)
        if state is not None:
            for item in hashes:
                state.known.add(item)

    # -- announcing ------------------------------------------------------------------------------

    def announce(self, kind: InvKind, item: bytes, source: Peer | None = None) -> None:
        """Queue ``item`` for every ready peer that does not know it (``source`` does)."""
        if source is not None:
            self.mark_known(source, (item,))
        for state in self._peers.values():
            pending = state.pending[kind]
            if item not in state.known and len(pending) < MAX_INV_ITEMS:
                pending[item] = None

    def on_block_accepted(self, block: Block, source: Peer | None, *, announce: bool) -> None:
        self._recent_rejects = LruSet(self._config.recent_rejects)  # a new tip can make them valid
        if announce:
            self.announce(InvKind.BLOCK, block.hash, source)
        elif source is not None:
            self.mark_known(source, (block.hash,))

    def flush(self) -> None:
        """Send every peer its queued announcements (kept for next time if its outbox is full)."""
        for peer, state in self._peers.items():
            for kind, pending in state.pending.items():
                if pending and peer.try_send(Inv(kind=kind, hashes=tuple(pending))):
                    for item in pending:
                        state.known.add(item)
                    pending.clear()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._config.inv_interval)
            self.flush()

    async def send_mempool(self, peer: Peer) -> None:
        """Tell a new peer what our mempool holds (it fetches what it lacks)."""
        txids = self._backend.mempool_txids(MAX_INV_ITEMS)
        if txids:
            self.mark_known(peer, txids)
            await peer.send(Inv(kind=InvKind.TX, hashes=tuple(txids)))

    # -- transactions ----------------------------------------------------------------------------

    async def on_tx_inv(self, peer: Peer, txids: tuple[bytes, ...]) -> None:
        self.mark_known(peer, txids)
        now = self._clock()
        wanted = []
        for txid in txids:
            if txid in self._recent_rejects or self._backend.has_tx(txid):
                continue
            deadline = self._tx_requests.get(txid)
            if deadline is not None and deadline > now:
                continue
            self._tx_requests.put(txid, now + self._config.tx_request_timeout)
            wanted.append(txid)
        if wanted:
            await peer.send(GetData(kind=InvKind.TX, hashes=tuple(wanted)))

    async def on_tx(self, peer: Peer, tx: SignedTx) -> None:
        txid = tx.txid
        self.mark_known(peer, (txid,))
        self._tx_requests.pop(txid)
        if txid in self._recent_rejects or self._backend.has_tx(txid):
            return
        outcome = await self._backend.submit_tx(tx, peer.address)
        if outcome.status is TxStatus.ACCEPTED:
            peer.last_tx_at = self._clock()
            self.announce(InvKind.TX, txid, peer)
        elif outcome.status in (TxStatus.INVALID, TxStatus.REJECTED):
            self._recent_rejects.add(txid)
            offence = Offence.INVALID_TX if outcome.status is TxStatus.INVALID else Offence.REJECTED_TX
            self._punish(peer, offence, outcome.reason.value if outcome.reason else "")

    def on_tx_notfound(self, txids: tuple[bytes, ...]) -> None:
        for txid in txids:  # let the next announcer be asked at once
            self._tx_requests.pop(txid)

    # -- serving ---------------------------------------------------------------------------------

    async def on_getdata(self, peer: Peer, request: GetData) -> None:
        kind = InvKind(request.kind)
        if kind is InvKind.BLOCK and len(request.hashes) > self._config.max_getdata_blocks:
            self._punish(peer, Offence.TOO_MANY_INV_ITEMS, f"getdata for {len(request.hashes)} blocks")
            return
        state = self._peers.get(peer)
        if state is None:
            return
        missing = []
        repeated = 0
        for item in request.hashes:
            if item in state.served:  # blocks and transactions alike: each once per link
                repeated += 1
                missing.append(item)
                continue
            reply = self._lookup(kind, item)
            if reply is None:
                missing.append(item)
                continue
            self.mark_known(peer, (item,))
            if isinstance(reply, BlockMessage):  # it will have this block: a floor on its height
                peer.best_height = max(peer.best_height, reply.block.height)
            frame = encode_message(reply)
            await self._pay_upload(state, len(frame))
            if peer.gone:
                return
            state.served.add(item)
            await peer.send_encoded(frame)
        if missing:
            await peer.send(NotFound(kind=kind, hashes=tuple(missing)))
        if repeated:
            self._punish(peer, Offence.REPEATED_GETDATA, f"{repeated} objects served before")

    async def _pay_upload(self, state: _PeerRelay, size: int) -> None:
        """Wait until the peer's upload bucket can pay for ``size`` bytes, then pay."""
        while (wait := state.upload.delay(size, self._clock())) > 0:
            self.upload_deferrals += 1
            await asyncio.sleep(wait)
        state.upload.debit(size, self._clock())

    def _lookup(self, kind: InvKind, item: bytes) -> Message | None:
        if kind is InvKind.TX:
            tx = self._backend.get_tx(item)
            return None if tx is None else TxMessage(tx=tx)
        block = self._backend.get_block(item)
        return None if block is None else BlockMessage(block=block)
