"""One connected peer: handshake, reader/processor/writer tasks, rate limits, keepalive, statistics.

Lifecycle (docs/protocol.md Part VII, "Handshake" and "Links"):

1. Both sides send Version at once; each checks the other's (protocol version, chain id, genesis,
   self-connection nonce), answers Verack, and waits for the other's Verack — all within
   ``handshake_timeout``. Anything else first is junk.
2. Then four tasks run until the link goes: the *reader* takes frames off the socket, charges them to
   the per-class token buckets, decodes them, answers Ping itself and feeds the rest into a bounded
   inbox (a full inbox stops reading: backpressure); the *processor* hands them to the service in
   order; the *writer* drains the bounded outbox; the *keepalive* pings and watches for the pong.

Offences go to the host (the service), which scores them and may call :meth:`Peer.disconnect`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from p2p.bounded import TokenBucket
from p2p.config import CLASS_OF, MessageClass, P2PConfig, RateLimit
from p2p.messages import (
    MIN_PROTOCOL_VERSION,
    BlockMessage,
    MalformedMessage,
    Message,
    Ping,
    Pong,
    Reject,
    Verack,
    Version,
    decode_message,
    encode_message,
    message_type_of,
)
from p2p.misbehavior import Offence, offence_for
from p2p.transport import Link, LinkClosed

log = logging.getLogger(__name__)


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


@dataclass(frozen=True)
class PeerInfo:
    """What the HTTP API and the dashboard show about a peer."""

    address: str
    direction: str
    user_agent: str
    height: int
    latency_ms: int | None
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    score: int
    connected_s: int


class PeerHost(Protocol):
    """What a peer needs from the service that owns it."""

    def local_version(self, nonce: int) -> Version: ...

    def is_own_nonce(self, nonce: int) -> bool: ...

    def misbehaving(self, peer: Peer, offence: Offence, detail: str = "") -> None: ...

    async def on_handshake(self, peer: Peer) -> None: ...

    async def on_message(self, peer: Peer, message: Message) -> None: ...

    def on_closed(self, peer: Peer) -> None: ...

    # Optional: ``on_arrival(peer, message)`` is called by the reader when a BlockMessage comes off
    # the socket, before it waits in the inbox (the service stops that block's stall timer).


class RateLimiter:
    """A message bucket and a byte bucket for each message class."""

    def __init__(self, limits: dict[MessageClass, RateLimit] | None, now: float) -> None:
        self._buckets = {
            cls: (
                TokenBucket(limit.messages_per_s, limit.message_burst, now),
                TokenBucket(limit.bytes_per_s, limit.byte_burst, now),
            )
            for cls, limit in (limits or {}).items()
        }

    def admit(self, cls: MessageClass, size: int, now: float) -> bool:
        buckets = self._buckets.get(cls)
        if buckets is None:
            return True
        messages, data = buckets
        # Check both before spending either, so a refused frame costs nothing.
        if messages.available(now) < 1 or data.available(now) < size:
            return False
        return messages.take(1, now) and data.take(size, now)


class _Dropped(Exception):
    """Unwinds the handshake once the link is being dropped."""


class Peer:
    """A link to one node after (and during) the handshake."""

    def __init__(
        self, link: Link, host: PeerHost, config: P2PConfig, *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.link = link
        self.config = config
        self._host = host
        self._clock = clock or asyncio.get_running_loop().time
        self.direction = Direction.OUTBOUND if link.outbound else Direction.INBOUND
        self.nonce = secrets.randbits(64)
        self.version: Version | None = None
        self.best_height = 0
        self.score = 0
        self.latency: float | None = None
        self.messages_in = 0
        self.messages_out = 0
        self.connected_at = self._clock()
        self.last_block_at: float | None = None
        """When it last sent us a block we accepted (protects it from eviction)."""
        self.last_tx_at: float | None = None
        """When it last sent us a transaction we accepted (likewise)."""
        self.close_reason = ""
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        """Resolves True when the handshake completes, False if the link goes before that."""
        self._gone = asyncio.Event()
        self.finished = asyncio.Event()
        """Set once the link is closed and the host told."""
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(config.inbox_messages)
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(config.outbox_messages)
        self._limiter = RateLimiter(dict(config.rate_limits), self._clock())
        self._ping: tuple[int, float] | None = None
        self._last_ping_at = self._clock()
        self._tasks: list[asyncio.Task[None]] = []
        self.blocks_queued = 0
        """Blocks this peer delivered that we have not finished processing (queued in the inbox or
        being submitted). While it is above 0 we are the slow side: its stall timers pause."""

    def __repr__(self) -> str:
        return f"<Peer {self.address} {self.direction.value}>"

    @property
    def address(self) -> str:
        host = self.link.host
        return f"[{host}]:{self.link.port}" if ":" in host else f"{host}:{self.link.port}"

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """Where this node accepts links: the dialled address, or the inbound host + its port."""
        if self.link.outbound:
            return self.link.host, self.link.port
        if self.version is None or self.version.listen_port == 0:
            return None
        return self.link.host, self.version.listen_port

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    @property
    def best_work(self) -> int:
        return self.version.best_work if self.version is not None else 0

    def info(self) -> PeerInfo:
        return PeerInfo(
            address=self.address, direction=self.direction.value,
            user_agent=self.version.user_agent if self.version else "",
            height=self.best_height,
            latency_ms=None if self.latency is None else round(self.latency * 1000),
            bytes_in=self.link.bytes_in, bytes_out=self.link.bytes_out,
            messages_in=self.messages_in, messages_out=self.messages_out, score=self.score,
            connected_s=int(self._clock() - self.connected_at),
        )

    # -- sending -------------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Queue ``message``, waiting while the outbox is full (backpressure on the caller).

        Only this peer's own tasks await it, so a slow peer only ever slows itself; everything
        else (the scheduler, announcements, keepalive) uses :meth:`try_send`.
        """
        if not self.gone:
            await self._outbox.put(encode_message(message))

    async def send_encoded(self, frame: bytes) -> None:
        """:meth:`send` for a message the caller already encoded (it needed the size)."""
        if not self.gone:
            await self._outbox.put(frame)

    def try_send(self, message: Message) -> bool:
        """Queue ``message`` if the outbox has room; False (and nothing queued) otherwise."""
        if self.gone:
            return False
        try:
            self._outbox.put_nowait(encode_message(message))
        except asyncio.QueueFull:
            return False
        return True

    def disconnect(self, reason: str) -> None:
        if not self.gone:
            self.close_reason = reason
            self._gone.set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Handshake, then serve the link until either side drops it. Never raises."""
        try:
            await self._until_one_ends([self._handshake()])
            if self.gone:
                return
            self.ready.set_result(True)
            await self._host.on_handshake(self)
            await self._until_one_ends(
                [self._read_loop(), self._process_loop(), self._write_loop(), self._keepalive()]
            )
            self.disconnect(self.close_reason or "link closed")
        except Exception as exc:  # a bug must cost one link, never the service
            self._log_failure(exc)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self.disconnect(self.close_reason or "closed")
            if not self.ready.done():
                self.ready.set_result(False)
            self._host.on_closed(self)
            await self.link.close()
            self.finished.set()

    async def _until_one_ends(self, coros: list[Coroutine[Any, Any, None]]) -> None:
        """Run ``coros`` as tasks until one of them ends or the link is dropped; cancel the rest."""
        self._tasks = [asyncio.create_task(coro) for coro in coros]
        watcher = asyncio.create_task(self._gone.wait())
        try:
            done, _ = await asyncio.wait([*self._tasks, watcher], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
        for task in done:
            if task is not watcher and not task.cancelled() and task.exception() is not None:
                self._log_failure(task.exception())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _log_failure(self, exc: BaseException | None) -> None:
        if isinstance(exc, _Dropped | LinkClosed):
            self.disconnect(self.close_reason or str(exc))
            return
        log.error("peer %s failed", self.address, exc_info=exc)
        self.disconnect(f"internal error: {exc!r}")

    def _offend(self, offence: Offence, detail: str = "") -> None:
        self._host.misbehaving(self, offence, detail)
        if self.gone:
            raise _Dropped(self.close_reason)

    async def _send_now(self, message: Message) -> None:
        await self.link.send(encode_message(message))
        self.messages_out += 1

    async def _receive_now(self) -> Message:
        try:
            message = decode_message(await self.link.recv(self.config.handshake_timeout))
        except MalformedMessage as exc:
            self._offend(offence_for(exc), str(exc))
            raise _Dropped(str(exc)) from exc
        self.messages_in += 1
        return message

    async def _handshake(self) -> None:
        try:
            async with asyncio.timeout(self.config.handshake_timeout):
                await self._send_now(self._host.local_version(self.nonce))
                theirs = await self._receive_now()
                if not isinstance(theirs, Version):
                    self._offend(Offence.JUNK_BEFORE_HANDSHAKE, f"{type(theirs).__name__} before Version")
                    return
                await self._check_version(theirs)
                self.version = theirs
                self.best_height = theirs.best_height
                await self._send_now(Verack())
                ack = await self._receive_now()
                if not isinstance(ack, Verack):
                    self._offend(Offence.JUNK_BEFORE_HANDSHAKE, f"{type(ack).__name__} before Verack")
        except TimeoutError:
            self._offend(Offence.HANDSHAKE_TIMEOUT)

    async def _check_version(self, theirs: Version) -> None:
        ours = self._host.local_version(self.nonce)
        if self._host.is_own_nonce(theirs.nonce):
            self._offend(Offence.SELF_CONNECTION)
        if theirs.chain_id != ours.chain_id or theirs.genesis_hash != ours.genesis_hash:
            await self._say_goodbye("wrong-network", f"chain {ours.chain_id} {ours.genesis_hash.hex()}")
            self._offend(Offence.WRONG_NETWORK, f"chain {theirs.chain_id} {theirs.genesis_hash.hex()[:16]}")
        if theirs.protocol_version < MIN_PROTOCOL_VERSION:
            await self._say_goodbye("obsolete", f"protocol {MIN_PROTOCOL_VERSION} or later")
            self._offend(Offence.OBSOLETE_VERSION, str(theirs.protocol_version))

    async def _say_goodbye(self, code: str, detail: str) -> None:
        """Tell the peer why it is being dropped (best effort, handshake only)."""
        try:
            await self._send_now(Reject(code=code, detail=detail))
        except LinkClosed:
            pass

    # -- the four tasks ------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while not self.gone:
                await self._read_one()
        except _Dropped:
            pass

    async def _read_one(self) -> None:
        try:
            frame = await self.link.recv(self.config.idle_timeout)
            kind = message_type_of(frame)
            if not self._limiter.admit(CLASS_OF[kind], len(frame), self._clock()):
                self._offend(Offence.RATE_LIMITED, kind.__name__)
                return
            message = decode_message(frame)
        except TimeoutError:
            self._offend(Offence.IDLE_TIMEOUT)
            return
        except MalformedMessage as exc:
            self._offend(offence_for(exc), str(exc))
            return
        self.messages_in += 1
        if isinstance(message, Ping):
            await self.send(Pong(nonce=message.nonce))
        elif isinstance(message, Pong):
            self._on_pong(message)
        elif isinstance(message, Version | Verack):
            self._offend(Offence.JUNK_AFTER_HANDSHAKE, f"second {type(message).__name__}")
        elif isinstance(message, Reject):
            log.info("peer %s rejected us: %s %s", self.address, message.code, message.detail)
        else:
            if isinstance(message, BlockMessage):
                self.blocks_queued += 1
                on_arrival = getattr(self._host, "on_arrival", None)
                if on_arrival is not None:
                    on_arrival(self, message)
            await self._inbox.put(message)

    async def _process_loop(self) -> None:
        while not self.gone:
            message = await self._inbox.get()
            try:
                await self._host.on_message(self, message)
            finally:
                if isinstance(message, BlockMessage):
                    self.blocks_queued -= 1

    async def _write_loop(self) -> None:
        while True:
            frame = await self._outbox.get()
            await self.link.send(frame)
            self.messages_out += 1

    async def _keepalive(self) -> None:
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        while not self.gone:
            await asyncio.sleep(min(interval, timeout) / 2)
            now = self._clock()
            if self._ping is not None:
                if now - self._ping[1] > timeout:
                    self._host.misbehaving(self, Offence.PING_TIMEOUT)
            elif now - self._last_ping_at >= interval:
                nonce = secrets.randbits(64)
                if not self.try_send(Ping(nonce=nonce)):
                    self._host.misbehaving(self, Offence.SLOW_READER, "outbox full")
                self._ping = (nonce, now)
                self._last_ping_at = now

    def _on_pong(self, pong: Pong) -> None:
        if self._ping is not None and pong.nonce == self._ping[0]:
            self.latency = self._clock() - self._ping[1]
            self._ping = None

