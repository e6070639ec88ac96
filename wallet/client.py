"""A small synchronous client for a node's HTTP JSON API, as ``pouw-wallet`` uses it.

It owns the wire side of the wallet: URLs, JSON, timeouts, and turning every way a request can fail
into one of three errors with a message fit for a single ``error:`` line:

* :class:`NodeUnreachable` — nothing answered (refused, timed out, bad host);
* :class:`NodeRejected` — the node answered 4xx/5xx; ``status`` and the node's ``reason`` code
  (e.g. ``insufficient-balance``) are kept for callers that react to them;
* :class:`NodeError` — their base, also raised for a bad URL or an answer that is not JSON.

Only the standard library (urllib) is used; nothing here knows about keys or signing.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from chain.errors import PouwError
from chain.types import SignedTx

DEFAULT_NODE_URL = "http://127.0.0.1:8645"
NODE_URL_ENV = "POUW_NODE"
DEFAULT_TIMEOUT = 30.0
WAIT_POLL_SECONDS = 0.5

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


class NodeClient:
    """Typed calls to one node. Every method raises a :class:`NodeError` on failure."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise NodeError(f"bad node URL {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.timeout = timeout

    # -- transport --------------------------------------------------------------------------------

    def request(self, path: str, body: Json | None = None) -> bytes:
        """GET ``path`` (or POST ``body`` as JSON) and return the raw answer."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
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
            self.request(f"/api/datasets/{dataset_id.hex()}")
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
