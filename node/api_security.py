"""Who may use the node's HTTP API, and how much of the node a client can hold.

The security model (docs/operations.md, "API security"):

* **Reads** (GET/HEAD) are open to loopback clients; **everything else** (every POST, and any other
  method) needs a credential, and so does every request from a non-loopback address.
* **Credentials** are the *cookie* — a random 256-bit secret the node writes to ``DATADIR/.cookie``
  (mode 0600) at start and removes at stop, like bitcoind's — or an operator's ``--rpc-password``.
  Either is sent as ``Authorization: Bearer <secret>`` or HTTP Basic with any user name (the cookie
  file holds ``__cookie__:<secret>``, ready for Basic as it is).
* **Browsers**: a state-changing request must be ``Content-Type: application/json`` (a cross-origin
  page can only send ``text/plain``/form bodies without a CORS preflight, which the node never
  grants), and a request whose ``Origin``/``Sec-Fetch-Site`` says it comes from another site is
  refused. The ``Host`` header must name the node (an IP literal it listens on, ``localhost``, or a
  name given with ``--rpc-allow-host``), which defeats DNS rebinding.
* **Binding** to a non-loopback address without ``--rpc-password`` is refused
  (:func:`check_bind`): the cookie alone would leave every read open to the network.
* **Connections** (:class:`ConnectionGuard`): at most :data:`MAX_CONNECTIONS` open (and
  :data:`MAX_CONNECTIONS_PER_ADDRESS` per client address); a request's headers must arrive within
  :data:`HEADER_TIMEOUT` of connecting; one request per connection; no connection lives longer than
  :data:`CONNECTION_LIFETIME` (a slow reader of a large answer included).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from chain.errors import PouwError
from wallet.client import COOKIE_FILE, COOKIE_USER

log = logging.getLogger("pouw.node.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

READ_METHODS = frozenset({"GET", "HEAD"})
MIN_PASSWORD_LENGTH = 16
"""Shortest ``--rpc-password`` accepted: a password that a LAN host can guess online is no password."""
HEADER_TIMEOUT = 10.0
"""Seconds from connecting until a request's headers are complete (slowloris)."""
CONNECTION_LIFETIME = 300.0
"""Seconds a connection may live at most: its one request, body and answer included."""
MAX_CONNECTIONS = 256
MAX_CONNECTIONS_PER_ADDRESS = 64


class ApiConfigError(PouwError):
    """The API cannot be served as configured (e.g. a public bind without a password)."""


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def check_bind(host: str, password: str | None) -> str | None:
    """Refuse (``ApiConfigError``, one line) a non-loopback bind without a password, or a weak one;
    return a warning line for a non-loopback bind with one, else None."""
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ApiConfigError(f"--rpc-password must be at least {MIN_PASSWORD_LENGTH} characters")
    if is_loopback(host):
        return None
    if password is None:
        raise ApiConfigError(
            f"refusing to serve the HTTP API on {host or '*'} (not loopback) without authentication: "
            "set --rpc-password (or POUW_RPC_PASSWORD), or bind --rpc-host 127.0.0.1")
    return (f"the HTTP API listens on {host or '*'} (not loopback): every request from another host needs "
            "the RPC password, which travels in clear text over HTTP; put TLS or an SSH tunnel in front")


def host_name(header: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8645`` → ``::1``, ``a:80`` → ``a``), lowercased."""
    text = header.strip().lower()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


class ApiSecurity:
    """The API's credentials and request checks; :meth:`middleware` enforces them."""

    def __init__(self, datadir: Path | None = None, bind_host: str = "127.0.0.1", password: str | None = None,
                 allowed_hosts: Iterable[str] = ()) -> None:
        self.warning = check_bind(bind_host, password)
        self.datadir = datadir
        self.bind_host = bind_host.strip("[]").lower()
        self.password = password
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self.cookie_secret = secrets.token_hex(32)
        self._cookie_written = False

    # -- the cookie file --------------------------------------------------------------------------

    @property
    def cookie_path(self) -> Path | None:
        return self.datadir / COOKIE_FILE if self.datadir is not None else None

    def write_cookie(self) -> None:
        """Write ``__cookie__:<secret>`` to ``DATADIR/.cookie``, readable by this user only."""
        path = self.cookie_path
        if path is None:
            return
        tmp = path.with_name(COOKIE_FILE + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, f"{COOKIE_USER}:{self.cookie_secret}".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self._cookie_written = True
        log.info("API cookie written to %s", path)

    def remove_cookie(self) -> None:
        path = self.cookie_path
        if path is None or not self._cookie_written:
            return
        with contextlib.suppress(OSError):
            if path.read_text() == f"{COOKIE_USER}:{self.cookie_secret}":  # not a newer node's
                path.unlink()
        self._cookie_written = False

    async def on_startup(self, app: web.Application) -> None:
        self.write_cookie()
        if self.warning:
            log.warning("%s", self.warning)

    async def on_cleanup(self, app: web.Application) -> None:
        self.remove_cookie()

    def client_headers(self) -> dict[str, str]:
        """What an in-process client (a test) sends to be authenticated."""
        return {"Authorization": f"Bearer {self.cookie_secret}"}

    # -- checks -----------------------------------------------------------------------------------

    def authenticated(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeError, ValueError):
                return False
            _, sep, value = decoded.partition(":")
            if not sep:
                return False
        elif scheme.lower() != "bearer":
            return False
        given = value.encode("utf-8", "replace")
        ok = hmac.compare_digest(given, self.cookie_secret.encode())
        if self.password is not None:
            ok |= hmac.compare_digest(given, self.password.encode("utf-8", "replace"))
        return ok

    def host_allowed(self, header: str | None) -> bool:
        if header is None:
            return True  # HTTP/1.0 clients; every browser sends Host
        name = host_name(header)
        if name in self.allowed_hosts or name == "localhost":
            return True
        try:
            address = ipaddress.ip_address(name.split("%", 1)[0])
        except ValueError:
            return False  # a DNS name not configured: what a rebinding attack sends
        if is_wildcard(self.bind_host):
            return True
        return address.is_loopback or name == self.bind_host

    def refusal(self, request: web.Request) -> web.Response | None:
        """The answer to a request these rules refuse, or None to serve it."""
        if not self.host_allowed(request.headers.get("Host")):
            return reject(403, "Host header does not name this node (use --rpc-allow-host to add a name)",
                          "forbidden-host")
        reading = request.method in READ_METHODS
        if not reading:
            origin = request.headers.get("Origin")
            host = request.headers.get("Host", "")
            if origin is not None and origin.lower() not in (f"http://{host}".lower(), f"https://{host}".lower()):
                return reject(403, "cross-origin request refused", "forbidden-origin")
            if request.headers.get("Sec-Fetch-Site", "same-origin").lower() not in ("same-origin", "none"):
                return reject(403, "cross-site request refused", "forbidden-origin")
        if not reading or not is_loopback(request.remote):
            if not self.authenticated(request.headers.get("Authorization")):
                response = reject(401, "authentication required: send the node's cookie (DATADIR/.cookie) or "
                                  "RPC password as 'Authorization: Bearer <secret>'", "unauthorized")
                if reading:  # a browser on the LAN may then ask for the password
                    response.headers["WWW-Authenticate"] = 'Basic realm="pouw-node", charset="UTF-8"'
                return response
        if not reading and request.content_type != "application/json":
            return reject(415, "Content-Type must be application/json", "unsupported-media-type")
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = self.refusal(request)
        if refused is not None:
            return refused
        return await handler(request)


def reject(status: int, message: str, reason: str) -> web.Response:
    return web.json_response({"error": message, "reason": reason}, status=status)


# -- connections ------------------------------------------------------------------------------------


class ConnectionGuard:
    """Counts and times the API's connections (see the module docstring)."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS, per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
                 header_timeout: float = HEADER_TIMEOUT, lifetime: float = CONNECTION_LIFETIME) -> None:
        self.max_connections = max_connections
        self.per_address = per_address
        self.header_timeout = header_timeout
        self.lifetime = lifetime
        self.open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self.by_address: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, inner())

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        guarded = self.open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.headers_done()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.request_started(request.transport)
        response = await handler(request)
        response.force_close()  # one request per connection: the header timer covers every request
        return response


class _GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's request handler: refuses connections over the caps and closes slow ones."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.address = ""
        self._timers: list[asyncio.TimerHandle] = []
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if len(guard.open) >= guard.max_connections or guard.by_address.get(self.address, 0) >= guard.per_address:
            guard.refused += 1
            self.transport.abort()
            return
        guard.open[transport] = self
        guard.by_address[self.address] = guard.by_address.get(self.address, 0) + 1
        self._counted = True
        loop = asyncio.get_running_loop()
        self._timers = [loop.call_later(guard.header_timeout, self._expire),
                        loop.call_later(guard.lifetime, self._expire)]
        self.inner.connection_made(transport)

    def headers_done(self) -> None:
        if self._timers:
            self._timers[0].cancel()

    def _expire(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.guard.timed_out += 1
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._counted:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self._counted else None

    def pause_writing(self) -> None:
        if self._counted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self._counted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._counted = False
        for timer in self._timers:
            timer.cancel()
        guard = self.guard
        if self.transport is not None:
            guard.open.pop(self.transport, None)
        left = guard.by_address.get(self.address, 1) - 1
        if left > 0:
            guard.by_address[self.address] = left
        else:
            guard.by_address.pop(self.address, None)
        self.inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """A ``TCPSite`` whose connections go through a :class:`ConnectionGuard` (the app's, if it has one)."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            raise ApiConfigError("the API runner is not set up")
        guard = self._runner.app.get(API_GUARD) if isinstance(self._runner, web.AppRunner) else None
        factory: Any = guard.protocol_factory(server) if guard is not None else server
        self._server = await asyncio.get_running_loop().create_server(
            factory, self._host, self._port, ssl=self._ssl_context, backlog=self._backlog,
            reuse_address=self._reuse_address, reuse_port=self._reuse_port,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port


API_SECURITY = web.AppKey("api_security", ApiSecurity)
API_GUARD = web.AppKey("api_guard", ConnectionGuard)
