"""Headers-first chain sync: locators, header download, parallel block download, orphans, stalls.

Algorithm (docs/protocol.md Part VII, "Sync"):

* **Headers.** After the handshake, and whenever a peer announces a block we lack, we send it
  ``getheaders`` with our locator; each non-empty answer that taught us something is followed by
  another ``getheaders`` from its last header, until an answer is empty or all known. Headers pass
  the backend's cheap checks (seal included) before anything else happens; a batch whose first
  header does not connect is answered with a full locator (several in a row are an offence).
* **Blocks.** A scheduler walks the backend's ``blocks_to_fetch`` (the missing blocks of the best
  header chain, lowest first, at most ``download_window``) and spreads them over peers that claim
  the height, at most ``blocks_in_flight_per_peer`` each. A request not answered within
  ``block_timeout`` is a stall: it goes to another peer, and ``max_stalls`` stalls drop the peer.
  The timeout measures the peer, not us: a block counts as delivered when it comes off the socket
  (not when we get round to processing it), and a request's clock is paused while that peer has
  delivered blocks we have not processed yet, while the backend says it is busy, and for any time
  the event loop itself was held up (a late scheduler tick). We are never the slow side of a stall.
* **Order.** Blocks arrive out of order; one whose parent is not validated yet waits in the
  :class:`OrphanPool` (bounded by count and bytes, oldest evicted) and is submitted as soon as its
  parent is accepted. Blocks nobody asked for are dropped and scored.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise

from chain.types import ZERO_HASH, Block
from p2p.backend import BlockStatus, ChainBackend, HeadersStatus, backend_busy
from p2p.bounded import LruSet
from p2p.config import P2PConfig
from p2p.messages import (
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    MAX_LOCATOR_HASHES,
    GetData,
    GetHeaders,
    Headers,
    InvKind,
    SealedHeader,
    sealed_headers,
)
from p2p.misbehavior import Offence
from p2p.peer import Peer

log = logging.getLogger(__name__)

Punish = Callable[[Peer, Offence, str], None]
OnAccepted = Callable[[Block, Peer | None], None]

_REQUEST_MEMORY = 4_096
MAX_UNSOLICITED_HEADERS = 8
"""A Headers message we did not ask for may announce at most this many (Core's
MAX_BLOCKS_TO_ANNOUNCE): header intake from a peer runs at the pace of our own requests."""


def locator_heights(height: int) -> list[int]:
    """Heights a block locator names: the tip and 9 below it one by one, then doubling steps, then 0."""
    heights: list[int] = []
    step = 1
    while height > 0 and len(heights) < MAX_LOCATOR_HASHES - 1:
        heights.append(height)
        if len(heights) >= 10:
            step *= 2
        height -= step
    heights.append(0)
    return heights


class OrphanPool:
    """Downloaded blocks whose parent is not validated yet, by hash and by parent; bounded, oldest out."""

    def __init__(self, max_blocks: int, max_bytes: int) -> None:
        self.max_blocks = max_blocks
        self.max_bytes = max_bytes
        self.bytes = 0
        self._blocks: OrderedDict[bytes, tuple[Block, Peer | None, int]] = OrderedDict()
        self._children: dict[bytes, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    @property
    def full(self) -> bool:
        return len(self._blocks) >= self.max_blocks or self.bytes >= self.max_bytes

    def add(self, block: Block, source: Peer | None) -> None:
        block_hash = block.hash
        if block_hash in self._blocks:
            return
        size = len(block.encode())
        self._blocks[block_hash] = (block, source, size)
        self._children.setdefault(block.header.prev_hash, set()).add(block_hash)
        self.bytes += size
        while len(self._blocks) > self.max_blocks or self.bytes > self.max_bytes:
            self._remove(next(iter(self._blocks)))

    def pop_children(self, parent_hash: bytes) -> list[tuple[Block, Peer | None]]:
        children = []
        for child_hash in sorted(self._children.get(parent_hash, ())):
            block, source, _ = self._blocks[child_hash]
            self._remove(child_hash)
            children.append((block, source))
        return children

    def discard_descendants(self, block_hash: bytes) -> int:
        """Drop every pooled descendant of ``block_hash``; returns how many."""
        dropped = 0
        stack = [block_hash]
        while stack:
            for child, _ in self.pop_children(stack.pop()):
                stack.append(child.hash)
                dropped += 1
        return dropped

    def _remove(self, block_hash: bytes) -> None:
        block, _, size = self._blocks.pop(block_hash)
        self.bytes -= size
        siblings = self._children.get(block.header.prev_hash)
        if siblings is not None:
            siblings.discard(block_hash)
            if not siblings:
                del self._children[block.header.prev_hash]


@dataclass(frozen=True)
class SyncInfo:
    """Download progress, for the HTTP API and the dashboard."""

    blocks_in_flight: int
    orphans: int
    orphan_bytes: int


@dataclass
class _PeerSync:
    in_flight: set[bytes] = field(default_factory=set)
    requested: LruSet[bytes] = field(default_factory=lambda: LruSet(_REQUEST_MEMORY))
    """Everything recently asked of it: a late answer to a re-sent request is not unrequested."""
    notfound: LruSet[bytes] = field(default_factory=lambda: LruSet(_REQUEST_MEMORY))
    slow: LruSet[bytes] = field(default_factory=lambda: LruSet(_REQUEST_MEMORY))
    stalls: int = 0
    headers_asked_at: float | None = None
    headers_unanswered: int = 0
    """GetHeaders sent and not answered yet (a late answer to a re-sent request is still ours)."""
    unconnecting: int = 0


@dataclass
class _Request:
    peer: Peer
    deadline: float
    arrived: bool = False
    """The block came off the socket; only our processing of it is pending (never a stall)."""


class BlockSync:
    """Owns header sync and block download for every ready peer."""

    def __init__(
        self, backend: ChainBackend, config: P2PConfig, *, punish: Punish, on_accepted: OnAccepted,
        clock: Callable[[], float],
    ) -> None:
        self._backend = backend
        self._config = config
        self._punish = punish
        self._on_accepted = on_accepted
        self._clock = clock
        self._peers: dict[Peer, _PeerSync] = {}
        self._in_flight: dict[bytes, _Request] = {}
        self.orphans = OrphanPool(config.download_window, config.max_orphan_bytes)
        self._wake = asyncio.Event()
        self._last_expiry_check: float | None = None
        self._submitting: set[bytes] = set()
        """Blocks handed to the backend and not answered yet (never requested again meanwhile)."""
        self.stall_pauses = 0
        """Expiry passes that found us the slow side (for tests and metrics)."""

    # -- peers -----------------------------------------------------------------------------------

    async def add_peer(self, peer: Peer) -> None:
        self._peers[peer] = _PeerSync()
        if peer.best_work > self._backend.tip().work:
            await self.request_headers(peer)

    def remove_peer(self, peer: Peer) -> None:
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for block_hash in state.in_flight:
            self._in_flight.pop(block_hash, None)
        self._catch_up()
        self.wake()

    def info(self) -> SyncInfo:
        return SyncInfo(
            blocks_in_flight=len(self._in_flight), orphans=len(self.orphans),
            orphan_bytes=self.orphans.bytes,
        )

    # -- headers ---------------------------------------------------------------------------------

    async def request_headers(self, peer: Peer, after: bytes | None = None) -> None:
        """Ask ``peer`` for headers past our locator (or past ``after``, continuing a download).

        A fresh request is not sent while one is outstanding; a continuation always is.
        """
        request = self._headers_request(peer, after)
        if request is not None:
            await peer.send(request)

    def _headers_request(self, peer: Peer, after: bytes | None) -> GetHeaders | None:
        state = self._peers.get(peer)
        if state is None:
            return None
        now = self._clock()
        if after is None and state.headers_asked_at is not None:
            if now - state.headers_asked_at < self._config.headers_timeout:
                return None
        locator = self._backend.block_locator()
        if after is not None:
            locator = [after, *locator]
        state.headers_asked_at = now
        state.headers_unanswered = min(state.headers_unanswered + 1, 8)
        return GetHeaders(locator=tuple(locator[:MAX_LOCATOR_HASHES]), stop=ZERO_HASH)

    async def on_getheaders(self, peer: Peer, request: GetHeaders) -> None:
        pairs = self._backend.headers_after(request.locator, request.stop, MAX_HEADERS)
        if pairs:  # the locator met our chain just below the first header: the peer has that much
            peer.best_height = max(peer.best_height, pairs[0][0].height - 1)
        budget = MAX_HEADERS_BYTES - 16
        reply: list[SealedHeader] = []
        for sealed in sealed_headers(pairs):
            budget -= len(sealed.encode())
            if budget < 0:
                break
            reply.append(sealed)
        await peer.send(Headers(headers=tuple(reply)))

    async def on_headers(self, peer: Peer, message: Headers) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        items = message.headers
        if state.headers_unanswered == 0 and len(items) > MAX_UNSOLICITED_HEADERS:
            self._punish(peer, Offence.UNREQUESTED_HEADERS, f"{len(items)} headers")
            return
        state.headers_unanswered = max(state.headers_unanswered - 1, 0)
        state.headers_asked_at = None
        if not items:
            return
        for prev, nxt in pairwise(items):
            if nxt.header.prev_hash != prev.hash:
                self._punish(peer, Offence.NON_CONTINUOUS_HEADERS, f"at height {nxt.header.height}")
                return
        outcome = await self._backend.accept_headers([(s.header, s.seal) for s in items])
        if outcome.status is HeadersStatus.UNCONNECTED:
            state.unconnecting += 1
            if state.unconnecting > self._config.max_unconnecting_headers:
                state.unconnecting = 0
                self._punish(peer, Offence.UNCONNECTING_HEADERS, f"{len(items)} headers")
            await self.request_headers(peer)
            return
        state.unconnecting = 0
        if outcome.status is HeadersStatus.INVALID:
            reason = outcome.reason.value if outcome.reason else "invalid"
            self._punish(peer, Offence.INVALID_HEADER, reason)
            return
        peer.best_height = max(peer.best_height, items[-1].header.height)
        if outcome.new:
            await self.request_headers(peer, after=items[-1].hash)
        self.wake()

    async def on_block_inv(self, peer: Peer, hashes: tuple[bytes, ...]) -> None:
        """An announced block we lack: its header comes first, via our locator."""
        if not all(self._have_or_coming(h) for h in hashes):
            await self.request_headers(peer)

    def _have_or_coming(self, block_hash: bytes) -> bool:
        return (
            block_hash in self._in_flight or block_hash in self.orphans
            or block_hash in self._submitting or self._backend.has_block(block_hash)
        )

    def _catch_up(self) -> None:
        """While nothing downloads, ask one peer that claimed more work than our tip for headers
        (the peer we were syncing from may have gone)."""
        if self._in_flight:
            return
        tip_work = self._backend.tip().work
        for peer, state in self._peers.items():
            if peer.best_work > tip_work and state.headers_asked_at is None and not peer.gone:
                request = self._headers_request(peer, None)
                if request is not None:
                    peer.try_send(request)
                return

    # -- blocks ----------------------------------------------------------------------------------

    async def on_block(self, peer: Peer, block: Block) -> None:
        block_hash = block.hash
        state = self._peers.get(peer)
        if state is None:
            return
        if block_hash not in state.requested:
            self._punish(peer, Offence.UNREQUESTED_BLOCK, block_hash.hex()[:16])
            return
        state.requested.discard(block_hash)
        state.stalls = 0
        self._release(block_hash)
        await self.process_block(block, peer)
        self.wake()

    def on_block_arrived(self, peer: Peer, block_hash: bytes) -> None:
        """``peer`` delivered ``block_hash``; it may wait a while for us to process it."""
        request = self._in_flight.get(block_hash)
        if request is not None and request.peer is peer:
            request.arrived = True
            state = self._peers.get(peer)
            if state is not None:
                state.stalls = 0

    def on_notfound(self, peer: Peer, hashes: tuple[bytes, ...]) -> None:
        state = self._peers.get(peer)
        if state is None:
            return
        for block_hash in hashes:
            state.notfound.add(block_hash)
            request = self._in_flight.get(block_hash)
            if request is not None and request.peer is peer:
                self._release(block_hash)
        self.wake()

    async def process_block(self, block: Block, source: Peer | None) -> None:
        """Submit ``block`` if its parent is validated, else hold it until the parent is."""
        if self._backend.has_block(block.hash):
            return
        if not self._backend.has_block(block.header.prev_hash):
            self.orphans.add(block, source)
            return
        await self._submit_chain(block, source)

    async def on_block_accepted(self, block_hash: bytes) -> None:
        """A block was accepted outside p2p (miner, RPC, a held block released): free its orphans."""
        for child, source in self.orphans.pop_children(block_hash):
            await self._submit_chain(child, source)

    async def _submit_chain(self, block: Block, source: Peer | None) -> None:
        """Submit ``block``, then every pooled descendant that it makes connectable, depth first."""
        pending = [(block, source)]
        while pending:
            block, source = pending.pop()
            label = source.address if source is not None else "local"
            block_hash = block.hash
            self._submitting.add(block_hash)
            try:
                outcome = await self._backend.submit_block(block, label)
            finally:
                self._submitting.discard(block_hash)
            if outcome.status in (BlockStatus.ACCEPTED, BlockStatus.ALREADY_KNOWN):
                if outcome.status is BlockStatus.ACCEPTED:
                    self._on_accepted(block, source)
                pending.extend(self.orphans.pop_children(block.hash))
            elif outcome.status is BlockStatus.ORPHAN:
                self.orphans.add(block, source)
            elif outcome.status is BlockStatus.INVALID:
                dropped = self.orphans.discard_descendants(block.hash)
                log.info("invalid block %s from %s (%s %s); %d descendants dropped",
                         block.hash.hex()[:16], label, outcome.reason, outcome.detail, dropped)
                if source is not None:
                    reason = outcome.reason.value if outcome.reason else "invalid"
                    self._punish(source, Offence.INVALID_BLOCK, reason)

    def _release(self, block_hash: bytes) -> None:
        request = self._in_flight.pop(block_hash, None)
        if request is not None:
            state = self._peers.get(request.peer)
            if state is not None:
                state.in_flight.discard(block_hash)

    # -- scheduling ------------------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """The scheduler: one pass per wake-up (coalesced) or per tick, forever."""
        tick = min(1.0, self._config.block_timeout / 4)
        while True:
            try:
                async with asyncio.timeout(tick):
                    await self._wake.wait()
            except TimeoutError:
                self._catch_up()
            self._wake.clear()
            self._expire_requests()
            self._schedule()

    def _expire_requests(self) -> None:
        now = self._clock()
        tick = min(1.0, self._config.block_timeout / 4)
        last, self._last_expiry_check = self._last_expiry_check, now
        elapsed = 0.0 if last is None else max(now - last, 0.0)
        # Time we were the slow side does not count against anyone: all of it while the backend is
        # saturated, or beyond a normal tick when the loop itself was held up; per peer, all of it
        # while blocks it delivered wait for us.
        slow_everywhere = elapsed if backend_busy(self._backend) else max(elapsed - 2 * tick, 0.0)
        paused = False
        for request in self._in_flight.values():
            pause = elapsed if request.peer.blocks_queued > 0 else slow_everywhere
            if pause > 0:
                request.deadline += pause
                paused = True
        if paused:
            self.stall_pauses += 1
        expired = [h for h, r in self._in_flight.items() if r.deadline <= now and not r.arrived]
        for block_hash in expired:
            peer = self._in_flight[block_hash].peer
            self._release(block_hash)
            state = self._peers.get(peer)
            if state is None:
                continue
            state.slow.add(block_hash)
            state.stalls += 1
            log.info("peer %s stalled on block %s", peer.address, block_hash.hex()[:16])
            if state.stalls >= self._config.max_stalls:
                self._punish(peer, Offence.STALLING, f"{state.stalls} stalls")

    def _schedule(self) -> None:
        per_peer = self._config.blocks_in_flight_per_peer
        # Refill a peer once half its slots are free: fewer, larger getdata messages.
        ready = [p for p, s in self._peers.items() if not p.gone and len(s.in_flight) <= per_peer // 2]
        if not ready:
            return
        window = per_peer if self.orphans.full else self._config.download_window
        batches: dict[Peer, list[bytes]] = {}
        for height, block_hash in self._backend.blocks_to_fetch(window):
            if block_hash in self._in_flight or block_hash in self.orphans or block_hash in self._submitting:
                continue
            peer = self._pick_peer(ready, block_hash, height)
            if peer is None:
                continue
            state = self._peers[peer]
            state.in_flight.add(block_hash)
            state.requested.add(block_hash)
            self._in_flight[block_hash] = _Request(peer, self._clock() + self._config.block_timeout)
            batches.setdefault(peer, []).append(block_hash)
            if len(state.in_flight) >= per_peer:
                ready.remove(peer)
                if not ready:
                    break
        for peer, hashes in batches.items():
            if not peer.try_send(GetData(kind=InvKind.BLOCK, hashes=tuple(hashes))):
                for block_hash in hashes:
                    self._release(block_hash)

    def _pick_peer(self, ready: list[Peer], block_hash: bytes, height: int) -> Peer | None:
        """The least busy peer that claims ``height`` and has not said it lacks the block;
        peers that stalled on it come last."""
        best: tuple[bool, int] | None = None
        chosen = None
        for peer in ready:
            state = self._peers[peer]
            if peer.best_height < height or block_hash in state.notfound:
                continue
            key = (block_hash in state.slow, len(state.in_flight))
            if best is None or key < best:
                best, chosen = key, peer
        return chosen
