"""The HTTP API's defences on a real ``pouw-node`` process: the cookie's life cycle, 401/403/415 for
what a web page or a credential-less client sends, a bounded fuzz with 0 answers ≥ 500, a slowloris
connection cut off, a wallet client that finds the cookie itself, and a non-loopback bind refused."""

from __future__ import annotations

import json
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.functional.framework import PYTHON, REPO, TIMEOUT_FACTOR, TestNode
from wallet.client import COOKIE_FILE, NodeClient, NodeRejected, RpcCredentials, read_cookie

UNICODE_DIGITS = ["²", "٣", "１２", "𝟙"]


def raw_request(node: TestNode, path: str, data: bytes | None = None, method: str = "GET",
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(node.url + path, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, bytes(exc.read())


def test_api_security_against_a_real_node(network: Any) -> None:
    node: TestNode = network.add_node()
    cookie = node.cookie_path
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
    secret = read_cookie(cookie)
    assert secret is not None and len(secret) == 64

    # No credential: 401 on every POST; reads stay open on loopback.
    for path in ("/api/tx", "/api/blocks", "/api/peers/connect", "/api/mining/submit"):
        status, body = raw_request(node, path, b"{}", "POST", {"Content-Type": "application/json"})
        assert status == 401 and json.loads(body)["reason"] == "unauthorized", (path, status)
    assert raw_request(node, "/api/status")[0] == 200
    # A web page: cross-origin text/plain POST, and DNS rebinding (its own name in Host).
    status, _ = raw_request(node, "/api/peers/connect", b'{"address": "127.0.0.1:1"}', "POST",
                            {"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert status == 403
    assert raw_request(node, "/api/status", headers={"Host": f"evil.example:{node.rpc_port}"})[0] == 403
    # With the cookie (as the framework, the wallet and the miner send it).
    assert node.post("/api/peers/connect", {"address": "127.0.0.1:1"}) == {"connected": False}
    auth = {"Authorization": node.auth_header()}
    status, _ = raw_request(node, "/api/tx", b'{"tx": "00"}', "POST", {**auth, "Content-Type": "text/plain"})
    assert status == 415

    # Bounded fuzz through the real process: nested JSON, Unicode digits, odd values: 0 answers >= 500.
    statuses: list[int] = []
    json_auth = {**auth, "Content-Type": "application/json"}
    for body in (b"[" * 50_000, b'{"a":' * 10_000, b'{"address": "\\ud800:1"}', b'{"steps": 1e999}'):
        for path in ("/api/tx", "/api/blocks", "/api/peers/connect", "/api/mining/submit"):
            statuses.append(raw_request(node, path, body, "POST", json_auth)[0])
    for digit in UNICODE_DIGITS:
        q = urllib.parse.quote(digit)
        for path in (f"/api/blocks/{q}", f"/api/blocks/{q}/raw", f"/api/blocks?limit={q}", f"/api/blocks?before={q}",
                     f"/api/network?window={q}", f"/api/accounts/{q}", f"/api/jobs/{q}", f"/api/tx/{q}"):
            statuses.append(raw_request(node, path)[0])
        statuses.append(raw_request(node, "/api/peers/connect", json.dumps({"address": f"127.0.0.1:{digit}"}).encode(),
                                    "POST", json_auth)[0])
    assert statuses and max(statuses) < 500, statuses
    assert statuses.count(400) >= len(statuses) - 4  # 413s for the biggest bodies on small routes

    # Slowloris: headers that never end are cut off (10 s), and the node still answers.
    with socket.create_connection(("127.0.0.1", node.rpc_port), timeout=30) as sock:
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-slow: ")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the node
        assert time.monotonic() - started < 20 * TIMEOUT_FACTOR
    assert raw_request(node, "/api/status")[0] == 200

    # The wallet's client reads the cookie from the node's datadir by itself.
    client = NodeClient(node.url, credentials=RpcCredentials(datadir=node.datadir, environ={}))
    assert client.post_json("/api/peers/connect", {"address": "127.0.0.1:1"}) == {"connected": False}
    stranger = NodeClient(node.url, credentials=RpcCredentials(cookie=node.datadir / "missing", environ={}))
    try:
        stranger.post_json("/api/peers/connect", {"address": "127.0.0.1:1"})
        raise AssertionError("a POST without the cookie was accepted")
    except NodeRejected as exc:
        assert exc.status == 401 and "POUW_RPC_COOKIE" in str(exc)

    assert node.stop() == 0
    assert not cookie.exists()  # removed at stop


def test_non_loopback_bind_without_auth_is_refused(tmp_path: Path) -> None:
    import subprocess

    for host in ("0.0.0.0", "::"):
        result = subprocess.run(
            [PYTHON, "-m", "node.cli", "--datadir", str(tmp_path / "node"), "--preset", "regtest",
             "--rpc-host", host, "--rpc-port", "0", "--p2p-port", "0"],
            cwd=REPO, capture_output=True, text=True, timeout=60 * TIMEOUT_FACTOR, stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "refusing to serve the HTTP API" in lines[0] and "--rpc-password" in lines[0], \
            result.stderr
        assert not (tmp_path / "node" / COOKIE_FILE).exists()
