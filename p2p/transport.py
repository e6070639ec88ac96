"""WebSocket links between nodes (aiohttp): the listener on ``/p2p``, the dialler, and :class:`Link`.

A link carries binary frames only, each one message (see :mod:`p2p.messages`). The frame size cap
is enforced by aiohttp's reader (``max_msg_size``) before a frame is buffered whole; an oversized
frame surfaces as :class:`~p2p.messages.OversizedMessage`, a text frame as
:class:`~p2p.messages.MalformedMessage`. WebSocket-level pings are answered automatically; the
protocol's own Ping/Pong (in :mod:`p2p.peer`) measure latency and liveness. Compression is off
(a compressed frame could inflate past the cap before it is checked).

The listener guards every accepted TCP connection before aiohttp sees a byte of it
(:class:`_GuardedProtocol`): ``admit_tcp(host)`` may refuse it at once (ban, caps, fd budget), and
one that has not completed its WebSocket upgrade within ``upgrade_timeout`` is aborted — a
half-sent upgrade request (slowloris) holds a socket for at most that long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from chain.errors import PouwError, Reason
from p2p.messages import MalformedMessage, OversizedMessage
from p2p.misbehavior import normalize_host

log = logging.getLogger(__name__)

WS_PATH = "/p2p"


class LinkClosed(PouwError):
    """The link is gone (closed by either side, or the connection broke)."""


WebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse


class Link:
    """One WebSocket connection, either side; counts the bytes it carries."""

    def __init__(self, ws: WebSocket, host: str, port: int, *, outbound: bool) -> None:
        self._ws = ws
        self.host = normalize_host(host)
        self.port = port
        self.outbound = outbound
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send(self, frame: bytes) -> None:
        if self._ws.closed:
            raise LinkClosed("link closed")
        try:
            await self._ws.send_bytes(frame)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            raise LinkClosed(f"send failed: {exc}") from exc
        self.bytes_out += len(frame)

    async def recv(self, timeout: float) -> bytes:
        """The next binary frame. Raises TimeoutError, LinkClosed, OversizedMessage, MalformedMessage."""
        message = await self._ws.receive(timeout=timeout)
        if message.type is WSMsgType.BINARY:
            self.bytes_in += len(message.data)
            return bytes(message.data)
        if message.type is WSMsgType.TEXT:
            raise MalformedMessage(Reason.WRONG_TYPE, "text frame")
        if message.type is WSMsgType.ERROR:
            error = message.data
            if getattr(error, "code", None) == WSCloseCode.MESSAGE_TOO_BIG:
                raise OversizedMessage(Reason.TOO_LONG, str(error))
            raise LinkClosed(f"link error: {error}")
        raise LinkClosed(f"link closed ({message.type.name})")

    async def close(self) -> None:
        try:
            await self._ws.close()
        except (ConnectionError, RuntimeError, aiohttp.ClientError):  # already broken: nothing to do
            pass


class _GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol: refuses or times out a connection for the listener."""

    def __init__(self, listener: Listener, inner: asyncio.Protocol) -> None:
        self._listener = listener
        self._inner = inner
        self._started = False
        self.transport: asyncio.Transport | None = None
        self.host = ""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self._listener._opened(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self._started = True
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener._lost(self)
        if self._started:
            self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._started:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._started else None

    def pause_writing(self) -> None:
        if self._started:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._started:
            self._inner.resume_writing()


class _GuardedSite(web.BaseSite):
    """A TCP site whose connections go through :class:`_GuardedProtocol`."""

    def __init__(self, runner: web.AppRunner, listener: Listener, host: str, port: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._listener = listener

    @property
    def name(self) -> str:
        return f"http://{_bracket(self._host)}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise LinkClosed("runner not set up")
        listener = self._listener
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _GuardedProtocol(listener, server()), self._host, self._port, backlog=128,
        )


class Listener:
    """Accepts links on ``host:port`` at :data:`WS_PATH`.

    ``admit_tcp(host)`` may refuse a TCP connection as soon as it is accepted; ``admit(host)`` may
    refuse the upgrade (HTTP 403) once the request is read. A connection not upgraded within
    ``upgrade_timeout`` is aborted.
    """

    def __init__(
        self, host: str, port: int, *, max_message_bytes: int, close_timeout: float,
        admit: Callable[[str], bool], on_link: Callable[[Link], Awaitable[None]],
        admit_tcp: Callable[[str], bool] | None = None, upgrade_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._max_message_bytes = max_message_bytes
        self._close_timeout = close_timeout
        self._admit = admit
        self._admit_tcp = admit_tcp or (lambda _host: True)
        self._on_link = on_link
        self._upgrade_timeout = upgrade_timeout
        self._runner: web.AppRunner | None = None
        self._open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        """Every accepted TCP connection still open (upgraded or not)."""
        self._upgrading: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        """Those not upgraded yet."""
        self._upgrading_by_host: dict[str, int] = {}
        self.refused_tcp = 0
        """Connections closed at accept (counts, for tests and metrics)."""
        self.upgrade_timeouts = 0
        """Connections closed for not completing the upgrade in time."""
        self.displaced = 0
        """Connections closed while upgrading to make room for a newcomer."""

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def upgrading(self) -> int:
        return len(self._upgrading)

    def upgrading_from(self, host: str) -> int:
        return self._upgrading_by_host.get(host, 0)

    def upgrading_hosts(self) -> list[str]:
        """Hosts of the connections not upgraded yet, oldest first."""
        return [guard.host for guard in self._upgrading.values()]

    def drop_upgrading(self, host: str) -> bool:
        """Abort the oldest not-yet-upgraded connection from ``host`` (to make room)."""
        for transport, guard in self._upgrading.items():
            if guard.host == host:
                self.displaced += 1
                self._upgraded(transport)
                transport.abort()  # type: ignore[attr-defined]
                return True
        return False

    def _opened(self, guard: _GuardedProtocol) -> bool:
        transport = guard.transport
        if transport is None:
            return False
        peername = transport.get_extra_info("peername")
        if not peername:
            self.refused_tcp += 1
            return False
        guard.host = normalize_host(str(peername[0]))
        if not self._admit_tcp(guard.host):
            self.refused_tcp += 1
            return False
        self._open[transport] = guard
        self._upgrading[transport] = guard
        self._upgrading_by_host[guard.host] = self._upgrading_by_host.get(guard.host, 0) + 1
        guard.timer = asyncio.get_running_loop().call_later(
            self._upgrade_timeout, self._upgrade_expired, transport
        )
        return True

    def _upgraded(self, transport: asyncio.BaseTransport | None) -> None:
        guard = self._upgrading.pop(transport, None) if transport is not None else None
        if guard is None:
            return
        if guard.timer is not None:
            guard.timer.cancel()
        count = self._upgrading_by_host.get(guard.host, 0) - 1
        if count > 0:
            self._upgrading_by_host[guard.host] = count
        else:
            self._upgrading_by_host.pop(guard.host, None)

    def _upgrade_expired(self, transport: asyncio.BaseTransport) -> None:
        if transport in self._upgrading:
            self.upgrade_timeouts += 1
            self._upgraded(transport)
            transport.abort()  # type: ignore[attr-defined]

    def _lost(self, guard: _GuardedProtocol) -> None:
        if guard.transport is not None and self._open.pop(guard.transport, None) is not None:
            self._upgraded(guard.transport)

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._runner is None:
            raise LinkClosed("listener not started")
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, self._handle)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=1.0,
            max_line_size=4096, max_field_size=4096,
        )
        await runner.setup()
        await _GuardedSite(runner, self, self.host, self._requested_port).start()
        self._runner = runner

    async def stop(self) -> None:
        for transport in list(self._upgrading):
            self._upgraded(transport)
            transport.abort()  # type: ignore[attr-defined]
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peername = request.transport.get_extra_info("peername") if request.transport else None
        if not peername:
            raise web.HTTPBadRequest()
        host, port = normalize_host(str(peername[0])), int(peername[1])
        if not self._admit(host):
            raise web.HTTPForbidden()
        ws = web.WebSocketResponse(
            max_msg_size=self._max_message_bytes, autoping=True, compress=False,
            timeout=self._close_timeout,
        )
        await ws.prepare(request)
        self._upgraded(request.transport)
        await self._on_link(Link(ws, host, port, outbound=False))
        return ws


async def dial(
    session: aiohttp.ClientSession, host: str, port: int, *, max_message_bytes: int, timeout: float,
    close_timeout: float,
) -> Link:
    """Open a link to ``host:port``. Raises LinkClosed when it cannot."""
    url = f"http://{_bracket(host)}:{port}{WS_PATH}"
    try:
        async with asyncio.timeout(timeout):
            ws = await session.ws_connect(
                url, max_msg_size=max_message_bytes, autoping=True, compress=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=close_timeout),
            )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise LinkClosed(f"cannot reach {host}:{port}: {exc}") from exc
    return Link(ws, host, port, outbound=True)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host
