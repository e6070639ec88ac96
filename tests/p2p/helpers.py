"""In-process multi-node harness (Bitcoin Core functional-test style, on loopback) and a raw peer.

* :class:`TestNode` — a MemoryBackend plus a P2PService in a temp datadir, with fast timeouts.
* :func:`wait_until`, :func:`sync_blocks`, :func:`sync_mempools` — bounded waits.
* :class:`RawPeer` — a bare aiohttp WebSocket client from its own loopback address (127.0.0.x) that
  speaks the protocol by hand, so tests can misbehave precisely.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from chain.encoding import Container
from chain.types import Block, SignedTx
from p2p.config import P2PConfig
from p2p.messages import (
    PROTOCOL_VERSION,
    Message,
    Ping,
    Pong,
    Verack,
    Version,
    decode_message,
    encode_message,
)
from p2p.service import P2PService
from p2p.testing import MemoryBackend
from tests.factories import GENESIS_BLOCK, RULES, genesis, next_block

T = TypeVar("T")
M = TypeVar("M", bound=Container)

FAST = P2PConfig(
    handshake_timeout=2.0, ping_interval=0.5, ping_timeout=2.0, idle_timeout=5.0,
    headers_timeout=1.0, block_timeout=1.0, inv_interval=0.02, connect_interval=0.1,
    reconnect_min=0.1, reconnect_max=0.5, connect_timeout=2.0, close_timeout=0.5,
)


def run(coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
    """Run one test coroutine with a hard time limit."""
    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)
    assert predicate(), what


class TestNode:
    __test__ = False  # not a pytest class

    def __init__(
        self, datadir: Path, blocks: Sequence[Block] = (), *, config: P2PConfig = FAST,
        connect: Sequence[tuple[str, int]] = (), **service_args: Any,
    ) -> None:
        self.backend = MemoryBackend(*genesis(), RULES)
        self.backend.import_blocks(blocks)
        self.service = P2PService(
            self.backend, datadir, config=config, connect=connect, **service_args
        )

    @property
    def port(self) -> int:
        return self.service.port

    @property
    def height(self) -> int:
        return self.backend.tip().height

    async def start(self) -> TestNode:
        await self.service.start()
        return self

    async def stop(self) -> None:
        await self.service.stop()

    async def connect_to(self, other: TestNode) -> None:
        assert await self.service.connect("127.0.0.1", other.port), "handshake failed"

    def mine(self, count: int = 1, salt: bytes = b"") -> list[Block]:
        """Extend our own tip with ``count`` blocks and announce them, as the node's miner would."""
        made = []
        for i in range(count):
            parent = self.backend.get_block(self.backend.tip().hash)
            assert parent is not None
            block = next_block(self.backend.tip_state(), parent, salt=salt + bytes([i]))
            self.backend.import_blocks([block])
            self.service.announce_block(block)
            made.append(block)
        return made

    def submit_tx(self, tx: SignedTx) -> None:
        """Accept ``tx`` locally (as the RPC would) and announce it."""
        outcome = self.backend.add_tx(tx)
        assert outcome.status.value == "accepted", outcome
        self.service.announce_tx(tx)

    def peer_addresses(self) -> set[str]:
        return {info.address for info in self.service.peers()}


async def sync_blocks(nodes: Sequence[TestNode], timeout: float = 15.0) -> None:
    await wait_until(lambda: len({n.backend.tip().hash for n in nodes}) == 1, "tips differ", timeout)


async def sync_mempools(nodes: Sequence[TestNode], timeout: float = 10.0) -> None:
    await wait_until(
        lambda: len({frozenset(n.backend.mempool) for n in nodes}) == 1, "mempools differ", timeout
    )


def local_version(nonce: int = 7, **changes: Any) -> Version:
    """A Version that the test nodes accept (override fields to make it unacceptable)."""
    version = Version(
        protocol_version=PROTOCOL_VERSION, chain_id=RULES.chain_id, genesis_hash=GENESIS_BLOCK.hash,
        best_height=0, best_work=0, user_agent="raw-test-peer", nonce=nonce, listen_port=0,
    )
    return dataclasses.replace(version, **changes)


class RawPeer:
    """A hand-driven peer on its own loopback address."""

    def __init__(self, local_host: str) -> None:
        self.local_host = local_host
        self._session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pinger: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        connector = aiohttp.TCPConnector(local_addr=(self.local_host, 0))
        self._session = aiohttp.ClientSession(connector=connector)
        self.ws = await self._session.ws_connect(
            f"http://127.0.0.1:{port}/p2p", max_msg_size=64 * 1024 * 1024,
            timeout=aiohttp.ClientWSTimeout(ws_close=0.5),
        )

    async def handshake(self, port: int, version: Version | None = None) -> Version:
        await self.open(port)
        await self.send(version or local_version())
        theirs = await self.recv()
        assert isinstance(theirs, Version)
        await self.send(Verack())
        assert isinstance(await self.recv(), Verack)
        return theirs

    async def send(self, message: Message) -> None:
        await self.send_frame(encode_message(message))

    async def send_frame(self, frame: bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(frame)

    async def recv(self, timeout: float = 5.0) -> Message | None:
        """The next message, or None once the link is closed."""
        assert self.ws is not None
        reply = await self.ws.receive(timeout=timeout)
        if reply.type is aiohttp.WSMsgType.BINARY:
            return decode_message(reply.data)
        return None

    async def expect(
        self, kind: type[M], where: Callable[[M], bool] = lambda _: True, timeout: float = 5.0
    ) -> M:
        """The next message of type ``kind`` satisfying ``where`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                assert message is not None, "link closed while waiting"
                if isinstance(message, kind) and where(message):
                    return message

    async def drain(self, quiet: float) -> list[Message]:
        """Every message until none arrives for ``quiet`` seconds (or the link closes)."""
        heard: list[Message] = []
        try:
            while (message := await self.recv(timeout=quiet)) is not None:
                heard.append(message)
        except TimeoutError:
            pass
        return heard

    async def wait_closed(self, timeout: float = 5.0) -> None:
        """Drain messages until the node closes the link (fails the test on timeout)."""
        async with asyncio.timeout(timeout):
            while await self.recv(timeout) is not None:
                pass

    async def close(self) -> None:
        if self.pinger is not None:
            self.pinger.cancel()
            await asyncio.gather(self.pinger, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        if self._session is not None:
            await self._session.close()


async def refused(local_host: str, port: int) -> bool:
    """True when the node refuses a link from ``local_host`` (banned or full): HTTP 403 at the
    upgrade, or the TCP connection closed as soon as it was accepted."""
    peer = RawPeer(local_host)
    try:
        await peer.open(port)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status == 403
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return True
    finally:
        await peer.close()
    return False



async def idle_peer(local_host: str, port: int, version: Version | None = None) -> RawPeer | None:
    """A handshaken RawPeer that only answers pings (an eclipse attacker's cheapest link), or None
    when the node refuses it. Pings are answered by a background task until :meth:`RawPeer.close`."""
    peer = RawPeer(local_host)
    try:
        await peer.handshake(port, version)
    except (aiohttp.ClientError, AssertionError, TimeoutError, OSError):
        await peer.close()
        return None
    peer.pinger = asyncio.create_task(_answer_pings(peer))
    return peer


async def _answer_pings(peer: RawPeer) -> None:
    try:
        while (message := await peer.recv(timeout=3600)) is not None:
            if isinstance(message, Ping):
                await peer.send(Pong(nonce=message.nonce))
    except (aiohttp.ClientError, ConnectionError, RuntimeError, TimeoutError):
        pass
