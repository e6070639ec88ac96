"""WebSocket links between nodes (aiohttp): the listener on ``/p2p``, the dialler, and :class:`Link`.

A link carries binary frames only, each one message (see :mod:`p2p.messages`). The frame size cap
is enforced by aiohttp's reader (``max_msg_size``) before a frame is buffered whole; an oversized
frame surfaces as :class:`~p2p.messages.OversizedMessage`, a text frame as
:class:`~p2p.messages.MalformedMessage`. WebSocket-level pings are answered automatically; the
protocol's own Ping/Pong (in :mod:`p2p.peer`) measure latency and liveness. Compression is off
(a compressed frame could inflate past the cap before it is checked).
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


class Listener:
    """Accepts links on ``host:port`` at :data:`WS_PATH`; ``admit(host)`` may refuse before upgrade."""

    def __init__(
        self, host: str, port: int, *, max_message_bytes: int, close_timeout: float,
        admit: Callable[[str], bool], on_link: Callable[[Link], Awaitable[None]],
    ) -> None:
        self.host = host
        self._requested_port = port
        self._max_message_bytes = max_message_bytes
        self._close_timeout = close_timeout
        self._admit = admit
        self._on_link = on_link
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._runner is None:
            raise LinkClosed("listener not started")
        return int(self._runner.addresses[0][1])

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, self._handle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, self.host, self._requested_port).start()
        self._runner = runner

    async def stop(self) -> None:
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
