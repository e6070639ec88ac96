"""A small synchronous client for a node's HTTP JSON API, as ``pouw-wallet`` uses it.

It owns the wire side of the wallet: URLs, JSON, timeouts, and turning every way a request can fail
into one of three errors with a message fit for a single ``error:`` line:

* :class:`NodeUnreachable` — nothing answered (refused, timed out, bad host);
* :class:`NodeRejected` — the node answered 4xx/5xx; ``status`` and the node's ``reason`` code
  (e.g. ``insufficient-balance``) are kept for callers that react to them;
* :class:`NodeError` — their base, also raised for a bad URL or an answer that is not JSON.

Every POST carries the node's credential (see :class:`RpcCredentials`): the cookie the node writes to
``DATADIR/.cookie`` at start, or the operator's RPC password. Without an explicit one the client asks
the node for its preset and reads ``~/.pouw/<preset>/.cookie``; ``$POUW_RPC_COOKIE`` (a cookie file),
``$POUW_DATADIR`` (the node's datadir) and ``$POUW_RPC_PASSWORD`` override that.

Only the standard library (urllib) is used; nothing here knows about keys or signing.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chain.errors import PouwError
from chain.types import SignedTx

DEFAULT_NODE_URL = "http://127.0.0.1:8645"
NODE_URL_ENV = "POUW_NODE"
DEFAULT_TIMEOUT = 30.0
WAIT_POLL_SECONDS = 0.5

COOKIE_FILE = ".cookie"
COOKIE_USER = "__cookie__"
COOKIE_ENV = "POUW_RPC_COOKIE"
DATADIR_ENV = "POUW_DATADIR"
PASSWORD_ENV = "POUW_RPC_PASSWORD"

Json = dict[str, Any]


class NodeError(PouwError):
    """The node could not do what was asked (see the module docstring for the subclasses)."""


class NodeUnreachable(NodeError):
    """No answer from the node's URL."""


class NodeRejected(NodeError):
    """The node answered with an HTTP error; ``reason`` is its machine-readable code, if any."""

    def __init__(self, detail: str, status: int, reason: str | None, context: str = "") -> None:
        super().__init__(f"{context or f'node answered HTTP {status}'}: {detail}")
        self.detail = detail
        self.status = status
        self.reason = reason


class TxNotConfirmed(NodeError):
    """A transaction waited for did not confirm in time, or left the node's mempool unconfirmed."""


def default_datadir(preset: str) -> Path:
    """Where ``pouw-node --preset PRESET`` keeps its data unless told otherwise."""
    return Path.home() / ".pouw" / preset


def read_cookie(path: Path) -> str | None:
    """The secret in a node's cookie file (``__cookie__:<secret>``), or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError):
        return None
    user, sep, secret = text.partition(":")
    return secret if sep and user == COOKIE_USER and secret else None


class RpcCredentials:
    """How a client proves to the node that it may change things.

    Tried in order: an explicit ``password``, an explicit ``cookie`` file, ``DATADIR/.cookie`` for an
    explicit ``datadir``, then the environment (``$POUW_RPC_PASSWORD``, ``$POUW_RPC_COOKIE``,
    ``$POUW_DATADIR``), then ``~/.pouw/<preset>/.cookie`` with the preset the node reports. The cookie
    is read again after a 401 (a restarted node writes a new one)."""

    def __init__(self, *, password: str | None = None, cookie: Path | None = None, datadir: Path | None = None,
                 environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.password = password if password is not None else env.get(PASSWORD_ENV) or None
        if cookie is None and datadir is not None:
            cookie = datadir / COOKIE_FILE
        if cookie is None and env.get(COOKIE_ENV):
            cookie = Path(env[COOKIE_ENV])
        if cookie is None and env.get(DATADIR_ENV):
            cookie = Path(env[DATADIR_ENV]) / COOKIE_FILE
        self.cookie = cookie.expanduser() if cookie is not None else None
        self._secret: str | None = None

    def header(self, preset: Callable[[], str | None] | None = None, *, reload: bool = False) -> str | None:
        """The ``Authorization`` header value, or None when no credential can be found.
        ``preset`` is asked (once) for the node's preset when no cookie path is known."""
        if self.password is not None:
            return f"Bearer {self.password}"
        if self._secret is None or reload:
            if self.cookie is None and preset is not None:
                name = preset()
                if name:
                    self.cookie = default_datadir(name) / COOKIE_FILE
            self._secret = read_cookie(self.cookie) if self.cookie is not None else None
        if self._secret is None:
            return None
        return "Basic " + base64.b64encode(f"{COOKIE_USER}:{self._secret}".encode()).decode("ascii")

    def where(self) -> str:
        if self.password is not None:
            return "the RPC password"
        return f"the cookie file {self.cookie}" if self.cookie is not None else "no cookie file"


class NodeClient:
    """Typed calls to one node. Every method raises a :class:`NodeError` on failure."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT,
                 credentials: RpcCredentials | None = None) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise NodeError(f"bad node URL {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.credentials = credentials or RpcCredentials()

    # -- transport --------------------------------------------------------------------------------

    def request(self, path: str, body: Json | None = None) -> bytes:
        """GET ``path`` (or POST ``body`` as JSON, authenticated) and return the raw answer."""
        if body is None:
            return self._send(path, None, None)
        auth = self.credentials.header(self._preset)
        try:
            return self._send(path, body, auth)
        except NodeRejected as exc:
            if exc.status != 401:
                raise
            fresh = self.credentials.header(self._preset, reload=True)
            if fresh is not None and fresh != auth:
                return self._send(path, body, fresh)  # the node restarted with a new cookie
            raise NodeRejected(f"{exc.detail} (tried {self.credentials.where()}; set {COOKIE_ENV}, "
                               f"{DATADIR_ENV} or {PASSWORD_ENV})", exc.status, exc.reason) from None

    def _preset(self) -> str | None:
        try:
            preset = self.get_json("/api/status").get("preset")
        except NodeError:
            return None
        return preset if isinstance(preset, str) and preset.isidentifier() else None

    def _send(self, path: str, body: Json | None, auth: str | None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth is not None:
            headers["Authorization"] = auth
        elif body is None and self.credentials.password is not None:
            headers["Authorization"] = f"Bearer {self.credentials.password}"  # a node on another host
        request = urllib.request.Request(
            self.url + path, data=data, method="GET" if body is None else "POST", headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raise _rejection(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise NodeUnreachable(f"cannot reach node at {self.url}: {reason}") from None

    def get_json(self, path: str) -> Json:
        return self._json(path, self.request(path))

    def post_json(self, path: str, body: Json) -> Json:
        return self._json(path, self.request(path, body))

    def _json(self, path: str, raw: bytes) -> Json:
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise NodeError(f"node at {self.url} sent an answer to {path} that is not a JSON object")
        return value

    # -- the API ----------------------------------------------------------------------------------

    def status(self) -> Json:
        return self.get_json("/api/status")

    def account(self, address: str, history: int | None = None) -> Json:
        query = f"?history={history}" if history is not None else ""
        return self.get_json(f"/api/accounts/{urllib.parse.quote(address)}{query}")

    def submit_tx(self, tx: SignedTx) -> str:
        """Hand ``tx`` to the node's mempool; returns its txid (hex)."""
        try:
            answer = self.post_json("/api/tx", {"tx": tx.encode().hex()})
        except NodeRejected as exc:
            raise NodeRejected(exc.detail, exc.status, exc.reason, "node rejected the transaction") from None
        txid = tx.txid.hex()
        if answer.get("txid") != txid:
            raise NodeError(f"node acknowledged transaction {txid} as {answer.get('txid')!r}")
        return txid

    def tx(self, txid: str) -> Json | None:
        """The node's view of a transaction, or None when it knows none by that id."""
        return self._found(f"/api/tx/{txid}")

    def job(self, job_id: str) -> Json | None:
        """A job with its training history, or None when there is no such job."""
        return self._found(f"/api/jobs/{job_id}")

    def job_model_npz(self, job_id: str) -> bytes:
        return self.request(f"/api/jobs/{job_id}/model?format=npz")

    def dataset_published(self, dataset_id: bytes) -> bool:
        """Whether the chain holds a published dataset with this content id."""
        try:
            self.request(f"/api/datasets/{dataset_id.hex()}?raw=1")  # the manifest, not the assembled data
        except NodeRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def wait_for_tx(
        self, txid: str, timeout: float, *, poll: float = WAIT_POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> Json:
        """Poll until ``txid`` is in a block; returns the node's view of it (with ``height``)."""
        deadline = clock() + timeout
        while True:
            view = self.tx(txid)
            if view is None:
                raise TxNotConfirmed(f"transaction {txid} is no longer known to the node (dropped from its mempool)")
            if view.get("status") == "confirmed":
                return view
            if clock() >= deadline:
                raise TxNotConfirmed(f"transaction {txid} still pending after {timeout:g}s")
            sleep(poll)

    def _found(self, path: str) -> Json | None:
        try:
            return self.get_json(path)
        except NodeRejected as exc:
            if exc.status == 404:
                return None
            raise


def _rejection(exc: urllib.error.HTTPError) -> NodeRejected:
    """The node's ``{"error": ..., "reason": ...}`` answer as an exception (any body will do)."""
    raw = exc.read()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        reason = body.get("reason")
        return NodeRejected(body["error"], exc.code, reason if isinstance(reason, str) else None)
    return NodeRejected(str(exc.reason), exc.code, None)
