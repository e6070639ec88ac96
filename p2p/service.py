"""The p2p service: listener, dialler, peer bookkeeping, message dispatch and misbehaviour handling.

:class:`P2PService` is what the node starts inside its event loop. It owns the links (inbound up
to ``max_inbound``, outbound up to ``max_outbound`` plus the ``connect`` list, which is always
kept connected with backoff), the ban list and the address book, and routes each peer's messages
to :class:`~p2p.sync.BlockSync` (headers and blocks) or :class:`~p2p.relay.Relay` (announcements,
transactions, getdata). The node talks to the chain only through its :class:`ChainBackend`, and
tells the service about objects from elsewhere through ``announce_block``/``announce_tx``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from chain.types import Block, SignedTx
from p2p.addrbook import Address, AddressBook, AddressEntry
from p2p.backend import ChainBackend
from p2p.bounded import LruSet
from p2p.config import P2PConfig
from p2p.messages import (
    MAX_ADDRS,
    PROTOCOL_VERSION,
    Addr,
    BlockMessage,
    GetAddr,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    InvKind,
    Message,
    NotFound,
    TxMessage,
    Version,
)
from p2p.misbehavior import Action, BanList, Offence, judge, normalize_host, write_json_atomic
from p2p.netgroup import EvictionCandidate, address_group, may_learn, select_eviction
from p2p.peer import Direction, Peer, PeerInfo
from p2p.relay import Relay
from p2p.sync import BlockSync, SyncInfo
from p2p.transport import Link, LinkClosed, Listener, dial

log = logging.getLogger(__name__)

_MAX_ADVERTISED_WORK = (1 << 320) - 1
_NO_LIMIT = 1 << 20


def plan_file_descriptors(config: P2PConfig, wanted_sockets: int) -> int:
    """How many sockets p2p may hold open: the fd limit (raised towards what we want when the hard
    limit allows, as bitcoind does) minus ``config.fd_reserve``."""
    limit = config.max_open_files
    if limit is None:
        try:
            import resource
        except ImportError:  # not Unix: no limit to read
            return wanted_sockets
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = wanted_sockets + config.fd_reserve
        if soft != resource.RLIM_INFINITY and soft < want:
            raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if raised > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
                    soft = raised
                except (ValueError, OSError) as exc:
                    log.warning("cannot raise the open-file limit to %d: %s", raised, exc)
        limit = _NO_LIMIT if soft == resource.RLIM_INFINITY else int(soft)
    return max(limit - config.fd_reserve, 0)


@dataclass(frozen=True)
class OffenceRecord:
    host: str
    address: str
    offence: Offence
    detail: str
    action: Action


class P2PService:
    """A node's presence on the network. ``start``/``stop`` it inside the node's event loop."""

    def __init__(
        self,
        backend: ChainBackend,
        datadir: Path | str,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect: Sequence[Address] = (),
        max_outbound: int = 8,
        max_inbound: int = 32,
        listen: bool = True,
        config: P2PConfig | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.config = config = config or P2PConfig()
        self.datadir = Path(datadir)
        self.listen_host = listen_host
        self.max_outbound = max_outbound
        self.max_inbound = max_inbound
        self._listen_port = listen_port
        self._listen = listen
        self._wall = wall_clock
        self.bans = BanList(self.datadir / config.ban_file, capacity=config.max_bans, clock=wall_clock)
        self.addresses = AddressBook(
            config.address_book_size, retry_min=config.reconnect_min, retry_max=config.reconnect_max
        )
        self._fixed = {
            (normalize_host(host), port): AddressEntry(normalize_host(host), port, 0)
            for host, port in connect
        }
        self._sync = BlockSync(
            backend, config, punish=self.misbehaving, on_accepted=self._on_block_accepted,
            clock=self._now,
        )
        self._relay = Relay(backend, config, punish=self.misbehaving, clock=self._now)
        self._handlers: dict[type, Callable[[Peer, Any], Awaitable[None]]] = {
            Inv: self._on_inv,
            GetData: self._relay.on_getdata,
            NotFound: self._on_notfound,
            GetHeaders: self._sync.on_getheaders,
            Headers: self._on_headers,
            BlockMessage: self._on_block,
            TxMessage: self._on_tx,
            GetAddr: self._on_getaddr,
            Addr: self._on_addr,
        }
        self._peers: dict[Peer, None] = {}
        """Every link, handshaking or ready, in connection order."""
        self._ready: dict[Peer, None] = {}
        self._nonces: dict[int, Peer] = {}
        self._dialing: set[Address] = set()
        self._self_addresses: LruSet[Address] = LruSet(256)
        """Addresses that turned out to be this node (never dialled again)."""
        self._addr_answered: set[Peer] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._listener: Listener | None = None
        self.offences: deque[OffenceRecord] = deque(maxlen=256)
        """The latest offences, for the HTTP API and the dashboard."""
        self._bans_dirty = False
        self._ban_writer: asyncio.Task[None] | None = None
        self._stopping = False
        self._eviction_secret = secrets.token_bytes(32)
        self.socket_budget = max_inbound + max_outbound + len(self._fixed) + config.max_pending_inbound
        """Sockets p2p may hold open at once (set from the fd limit at start)."""
        self._inbound_sockets = max_inbound + config.max_pending_inbound
        self.evictions = 0
        """Inbound peers evicted to make room (counts, for tests and metrics)."""

    # -- public API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port we listen on (0 when not listening)."""
        return self._listener.port if self._listener is not None else 0

    async def start(self) -> None:
        self.bans.load()
        self._plan_sockets()
        self._session = aiohttp.ClientSession()
        if self._listen:
            self._listener = Listener(
                self.listen_host, self._listen_port, max_message_bytes=self.config.max_message_bytes,
                close_timeout=self.config.close_timeout, admit=self._admit, on_link=self._on_inbound,
                admit_tcp=self._admit_tcp, upgrade_timeout=self.config.upgrade_timeout,
            )
            await self._listener.start()
        self._loops = [
            asyncio.create_task(self._sync.run(), name="p2p block sync"),
            asyncio.create_task(self._relay.run(), name="p2p relay"),
            asyncio.create_task(self._dial_loop(), name="p2p dialler"),
        ]
        log.info("p2p listening on %s:%d", self.listen_host, self.port)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        peers = list(self._peers)
        for peer in peers:
            peer.disconnect("shutting down")
        waiters = [asyncio.create_task(peer.finished.wait()) for peer in peers]
        if waiters:
            await asyncio.wait(waiters, timeout=2 * self.config.close_timeout + 1)
        for waiter in waiters:
            waiter.cancel()
        for task in list(self._tasks):
            if task is not self._ban_writer:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await asyncio.to_thread(write_json_atomic, self.bans.path, self.bans.to_json())

    def peers(self) -> list[PeerInfo]:
        """Every peer past the handshake, in connection order."""
        return [peer.info() for peer in self._ready]

    def sync_info(self) -> SyncInfo:
        return self._sync.info()

    async def connect(self, host: str, port: int) -> bool:
        """Dial ``host:port`` once; True when the handshake completed."""
        return await self._dial((normalize_host(host), port))

    def announce_block(self, block: Block) -> None:
        """The node accepted ``block`` from outside p2p (its miner, RPC, a held block it released)."""
        self._relay.on_block_accepted(block, None, announce=True)
        self._spawn(self._sync.on_block_accepted(block.hash))

    def announce_tx(self, tx: SignedTx) -> None:
        """The node accepted ``tx`` into its mempool from outside p2p."""
        self._relay.announce(InvKind.TX, tx.txid)

    def ban(self, host: str, seconds: int, reason: str = "manual") -> None:
        self.bans.ban(host, seconds, reason)
        self._bans_changed()
        for peer in list(self._peers):
            if peer.link.host == normalize_host(host):
                peer.disconnect(f"banned: {reason}")

    # -- PeerHost --------------------------------------------------------------------------------

    def local_version(self, nonce: int) -> Version:
        tip = self.backend.tip()
        return Version(
            protocol_version=PROTOCOL_VERSION, chain_id=self.backend.chain_id,
            genesis_hash=self.backend.genesis_hash, best_height=tip.height,
            best_work=min(tip.work, _MAX_ADVERTISED_WORK), user_agent=self.config.user_agent,
            nonce=nonce, listen_port=self.port,
        )

    def is_own_nonce(self, nonce: int) -> bool:
        return nonce in self._nonces

    def misbehaving(self, peer: Peer, offence: Offence, detail: str = "") -> None:
        """Score ``offence`` against ``peer`` and act on the table's verdict."""
        verdict = judge(peer.score, offence)
        peer.score = verdict.score
        self.offences.append(OffenceRecord(peer.link.host, peer.address, offence, detail, verdict.action))
        if offence is Offence.SELF_CONNECTION and peer.direction is Direction.OUTBOUND:
            self._self_addresses.add((peer.link.host, peer.link.port))
        if verdict.action is Action.IGNORE:
            log.info("peer %s: %s %s (score %d)", peer.address, offence.value, detail, peer.score)
            return
        log.warning("peer %s: %s %s (score %d) -> %s", peer.address, offence.value, detail,
                    peer.score, verdict.action.value)
        if verdict.action is Action.BAN:
            self.ban(peer.link.host, verdict.ban_seconds, offence.value)
        peer.disconnect(offence.value)

    async def on_handshake(self, peer: Peer) -> None:
        self._ready[peer] = None
        address = peer.listen_address
        if address is not None:
            if may_learn(address[0], address[0], self.config.allow_private_addresses):
                self.addresses.add(*address, int(self._wall()))
                self.addresses.succeeded(address, self._now(), int(self._wall()))
            fixed = self._fixed.get(address)
            if fixed is not None:
                fixed.succeeded(self._now(), int(self._wall()))
        log.info("peer %s connected (%s, height %d, %s)", peer.address, peer.direction.value,
                 peer.best_height, peer.version.user_agent if peer.version else "")
        self._relay.add_peer(peer)
        await self._sync.add_peer(peer)
        if peer.direction is Direction.OUTBOUND:
            await peer.send(GetAddr())
        await self._relay.send_mempool(peer)

    async def on_message(self, peer: Peer, message: Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is not None:
            await handler(peer, message)

    def on_arrival(self, peer: Peer, message: Message) -> None:
        """The reader took a block off ``peer``'s socket: it delivered, whenever we process it."""
        if isinstance(message, BlockMessage):
            self._sync.on_block_arrived(peer, message.block.hash)

    def on_closed(self, peer: Peer) -> None:
        was_ready = peer in self._ready
        self._peers.pop(peer, None)
        self._ready.pop(peer, None)
        self._nonces.pop(peer.nonce, None)
        self._addr_answered.discard(peer)
        self._sync.remove_peer(peer)
        self._relay.remove_peer(peer)
        if peer.direction is Direction.OUTBOUND:
            address = (peer.link.host, peer.link.port)
            if not was_ready:
                self.addresses.failed(address, self._now())
            fixed = self._fixed.get(address)
            if fixed is not None:  # reconnect after the backoff, longer each time in a row
                fixed.failed(self._now(), self.config.reconnect_min, self.config.reconnect_max)
        log.info("peer %s disconnected: %s", peer.address, peer.close_reason)

    # -- message handlers ------------------------------------------------------------------------

    async def _on_inv(self, peer: Peer, inv: Inv) -> None:
        if inv.kind == InvKind.TX:
            await self._relay.on_tx_inv(peer, inv.hashes)
        else:
            self._relay.mark_known(peer, inv.hashes)
            await self._sync.on_block_inv(peer, inv.hashes)

    async def _on_notfound(self, peer: Peer, message: NotFound) -> None:
        if message.kind == InvKind.TX:
            self._relay.on_tx_notfound(message.hashes)
        else:
            self._sync.on_notfound(peer, message.hashes)

    async def _on_headers(self, peer: Peer, message: Headers) -> None:
        self._relay.mark_known(peer, (sealed.hash for sealed in message.headers))
        await self._sync.on_headers(peer, message)

    async def _on_block(self, peer: Peer, message: BlockMessage) -> None:
        self._relay.mark_known(peer, (message.block.hash,))
        await self._sync.on_block(peer, message.block)

    async def _on_tx(self, peer: Peer, message: TxMessage) -> None:
        await self._relay.on_tx(peer, message.tx)

    async def _on_getaddr(self, peer: Peer, _: GetAddr) -> None:
        if peer in self._addr_answered:  # once per link: no scraping the book by asking again
            return
        self._addr_answered.add(peer)
        allow = self.config.allow_private_addresses
        sample = [  # never tell a peer of addresses it could not give us (our LAN to the internet)
            a for a in self.addresses.sample(MAX_ADDRS) if may_learn(a.host, peer.link.host, allow)
        ]
        await peer.send(Addr(addresses=tuple(sample)))

    async def _on_addr(self, peer: Peer, message: Addr) -> None:
        now = int(self._wall())
        allow = self.config.allow_private_addresses
        for entry in message.addresses:
            if may_learn(normalize_host(entry.host), peer.link.host, allow):
                self.addresses.add(entry.host, entry.port, min(entry.last_seen, now))

    def _on_block_accepted(self, block: Block, source: Peer | None) -> None:
        """A block from a peer was accepted. While catching up, intermediate blocks are not
        announced: peers hear of the tip once we reach it."""
        if source is not None:
            source.last_block_at = self._now()
        announce = self.backend.tip().hash == block.hash and not self.backend.blocks_to_fetch(1)
        self._relay.on_block_accepted(block, source, announce=announce)

    # -- links -----------------------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _plan_sockets(self) -> None:
        """Size the socket budget from the fd limit; outbound slots are reserved out of it first."""
        config = self.config
        outbound = self.max_outbound + len(self._fixed)
        wanted = self.max_inbound + config.max_pending_inbound + outbound
        self.socket_budget = plan_file_descriptors(config, wanted)
        self._inbound_sockets = max(min(self.socket_budget - outbound, wanted - outbound), 0)
        if self._inbound_sockets < self.max_inbound + config.max_pending_inbound:
            log.warning("only %d file descriptors for p2p (fd_reserve %d kept for the store and "
                        "API): inbound links capped at %d", self.socket_budget, config.fd_reserve,
                        min(self.max_inbound, self._inbound_sockets))
            self.max_inbound = min(self.max_inbound, self._inbound_sockets)

    def _inbound_links(self) -> list[Peer]:
        return [p for p in self._peers if p.direction is Direction.INBOUND and not p.gone]

    def _admit_tcp(self, host: str) -> bool:
        """A TCP connection was just accepted from ``host``: keep it (until the upgrade)?"""
        listener = self._listener
        if self._stopping or listener is None or self.bans.is_banned(host):
            return False
        if listener.open_connections >= self._inbound_sockets:
            return False
        handshaking = [p for p in self._inbound_links() if p not in self._ready]
        config = self.config
        from_host = sum(1 for p in handshaking if p.link.host == host)
        if listener.upgrading_from(host) + from_host >= config.max_pending_per_host:
            return False
        if listener.upgrading + len(handshaking) < config.max_pending_inbound:
            return True
        return self._drop_pending_for(host)

    def _drop_pending_for(self, host: str) -> bool:
        """Pending slots are full: a newcomer from a less represented group displaces the oldest
        upgrading connection of the most represented one (so a slowloris from a few groups cannot
        keep everyone else out); otherwise it is refused."""
        listener = self._listener
        if listener is None:
            return False
        hosts = listener.upgrading_hosts()
        groups: dict[str, list[str]] = {}
        for pending in hosts:
            groups.setdefault(address_group(pending), []).append(pending)
        if not groups:
            return False
        crowded = max(groups.values(), key=len)
        if len(crowded) <= len(groups.get(address_group(host), ())):
            return False
        return listener.drop_upgrading(crowded[0])

    def _admit(self, host: str) -> bool:
        """A WebSocket upgrade from ``host`` is complete: take it, evicting a peer if full?"""
        if self._stopping or self.bans.is_banned(host):
            return False
        inbound = self._inbound_links()
        if sum(1 for p in inbound if p.link.host == host) >= self.config.max_inbound_per_host:
            return False
        group = address_group(host)
        if sum(1 for p in inbound if address_group(p.link.host) == group) >= self.config.max_inbound_per_group:
            return False
        if len(inbound) < self.max_inbound:
            return True
        victim = self._eviction_victim()
        if victim is None:
            return False
        self.evictions += 1
        log.info("inbound slots full: evicting %s for a link from %s", victim.address, host)
        victim.disconnect("evicted")
        return True

    def _eviction_victim(self) -> Peer | None:
        candidates = [
            EvictionCandidate(
                peer=p, group=address_group(p.link.host), connected_at=p.connected_at,
                latency=p.latency, last_block_at=p.last_block_at, last_tx_at=p.last_tx_at,
            )
            for p in self._inbound_links() if p in self._ready
        ]
        return select_eviction(candidates, secret=self._eviction_secret)

    def _open_sockets(self) -> int:
        outbound = sum(1 for p in self._peers if p.direction is Direction.OUTBOUND)
        inbound = self._listener.open_connections if self._listener is not None else 0
        return inbound + outbound + len(self._dialing)

    async def _on_inbound(self, link: Link) -> None:
        await self._run_peer(Peer(link, self, self.config))

    async def _run_peer(self, peer: Peer) -> None:
        self._peers[peer] = None
        self._nonces[peer.nonce] = peer
        await peer.run()

    async def _dial(self, address: Address) -> bool:
        if self._session is None or self._stopping or address in self._dialing:
            return False
        if self._open_sockets() >= self.socket_budget:
            log.warning("not dialling %s:%d: p2p file-descriptor budget (%d) in use", *address,
                        self.socket_budget)
            return False
        host, port = address
        self._dialing.add(address)
        try:
            try:
                link = await dial(
                    self._session, host, port, max_message_bytes=self.config.max_message_bytes,
                    timeout=self.config.connect_timeout, close_timeout=self.config.close_timeout,
                )
            except LinkClosed as exc:
                log.info("dial %s:%d failed: %s", host, port, exc)
                self._dial_failed(address)
                return False
            peer = Peer(link, self, self.config)
            self._spawn(self._run_peer(peer))
            return await peer.ready  # a failed handshake is accounted for in on_closed
        finally:
            self._dialing.discard(address)

    def _dial_failed(self, address: Address) -> None:
        now = self._now()
        self.addresses.failed(address, now)
        fixed = self._fixed.get(address)
        if fixed is not None:
            fixed.failed(now, self.config.reconnect_min, self.config.reconnect_max)

    async def _dial_loop(self) -> None:
        while True:
            self._top_up()
            await asyncio.sleep(self.config.connect_interval)

    def _top_up(self) -> None:
        """Dial the ``connect`` list (each with its own backoff), then learnt addresses up to the
        outbound target."""
        now = self._now()
        busy = self._dialing | set(self._self_addresses) | {
            a for a in (p.listen_address for p in self._peers) if a is not None
        }
        if self._listener is not None:
            busy.add((normalize_host(self.listen_host), self.port))
        for address, entry in self._fixed.items():
            if address not in busy and entry.next_try <= now and not self.bans.is_banned(address[0]):
                self._spawn(self._dial(address))
        if not self.config.discover:
            return
        outbound = len(self._dialing) + sum(1 for p in self._peers if p.direction is Direction.OUTBOUND)
        wanted = self.max_outbound - outbound
        if wanted > 0:
            for address in self.addresses.candidates(now, busy, wanted):
                if not self.bans.is_banned(address[0]):
                    self._spawn(self._dial(address))

    # -- housekeeping ----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("p2p task failed", exc_info=task.exception())

    def _bans_changed(self) -> None:
        """Persist the ban list off the loop; bursts of bans coalesce into one write."""
        self._bans_dirty = True
        if self._ban_writer is None or self._ban_writer.done():
            self._ban_writer = asyncio.create_task(self._write_bans())
            self._tasks.add(self._ban_writer)
            self._ban_writer.add_done_callback(self._task_done)

    async def _write_bans(self) -> None:
        while self._bans_dirty:
            self._bans_dirty = False
            await asyncio.to_thread(write_json_atomic, self.bans.path, self.bans.to_json())
