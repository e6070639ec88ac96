"""The HTTP API against hostile clients: no input gives a 5xx (the 11 known cases by name, then a
bounded fuzz of every route), state-changing routes need the cookie, browsers' cross-origin and
DNS-rebinding requests are refused, and the connection guard bounds slow and numerous clients."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import stat
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from node import api
from node.api import make_app
from node.api_security import (
    API_SECURITY,
    ApiConfigError,
    ApiSecurity,
    ConnectionGuard,
    GuardedSite,
    check_bind,
    host_name,
)
from node.chain_service import ChainService
from tests.functional.framework import test_seed
from tests.node.harness import mine_block, start_service
from wallet.address import encode_address
from wallet.client import COOKIE_FILE, RpcCredentials, read_cookie
from wallet.keys import PrivateKey

MINER = PrivateKey(b"\x05" * 32)
ADDRESS = encode_address(MINER.address)
JSON = {"Content-Type": "application/json"}
UNICODE_DIGITS = ["²", "٣", "١٢", "１２", "𝟙", "³⁴", "߁", "৩"]
"""Characters that ``str.isdigit`` accepts; ``int`` takes some of them (Arabic-Indic, fullwidth)."""
ODD_VALUES = [*UNICODE_DIGITS, "-1", "+1", "1e3", "0x10", " 1", "1 ", "9" * 30, "", "\x00", "\ud7ff", "%", "%FF",
              "1_000", "NaN", "ab" * 40, "0" * 64, "f" * 63 + "²"]
NESTED = [b"[" * 100_000, b'{"a":' * 50_000, b"[" * 70 + b"]" * 70, b'{"tx":' + b"[" * 40 + b"]" * 40 + b"}",
          b'{"x": [' + b"0," * 20_000 + b"0]}"]

Client = TestClient  # type: ignore[type-arg]


class Connector:
    """A stand-in for the p2p layer's ``connect``: records what it was asked to dial."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> bool:
        assert host.isascii() and 0 < port < 65536
        self.calls.append((host, port))
        return False


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Client, ChainService, web.Application, Connector]]:
    service = await start_service(tmp_path / "node")
    connector = Connector()
    app = make_app(service, client_max_size=1 << 20, connect=connector,
                   security=ApiSecurity(tmp_path / "node"))
    async with TestClient(TestServer(app)) as http:
        yield http, service, app, connector
    await service.stop()


def auth(app: web.Application) -> dict[str, str]:
    return {**JSON, **app[API_SECURITY].client_headers()}


def get_paths(block_hash: str, job_id: str) -> list[str]:
    """Every GET route, with each id and query value replaced by odd values (percent-encoded)."""
    paths = ["/api/status", "/api/jobs", "/api/mempool", "/api/peers", "/metrics", "/"]
    for raw in ODD_VALUES:
        v = urllib.parse.quote(raw, safe="")
        paths += [
            f"/api/blocks?limit={v}", f"/api/blocks?before={v}", f"/api/blocks?limit=5&before={v}",
            f"/api/blocks/{v}", f"/api/blocks/{v}/raw", f"/api/tx/{v}", f"/api/accounts/{v}",
            f"/api/accounts/{ADDRESS}?history={v}", f"/api/jobs/{v}", f"/api/jobs/{v}/model",
            f"/api/jobs/{job_id}/model?format={v}", f"/api/jobs/{v}/start-model", f"/api/datasets/{v}",
            f"/api/network?window={v}", f"/api/mining/template?address={v}",
            f"/api/mining/template?address={ADDRESS}&job={v}", f"/api/blocks/{block_hash[:-1]}{v}",
        ]
    return paths


def post_bodies() -> list[bytes]:
    bodies = list(NESTED)
    for raw in ODD_VALUES:
        for value in (raw, f"127.0.0.1:{raw}", f"{raw}:8646", f"[{raw}]:1"):
            bodies.append(json.dumps({"address": value, "tx": value, "block": value}).encode())
        bodies.append(json.dumps({"template_id": raw, "steps": 1, "final_state_hash": raw, "trajectory_root": raw,
                                  "proof": raw, "work": raw}).encode())
    bodies += [b'{"address": "\\ud800:80"}', b'{"address": "' + b"a" * 70_000 + b':1"}',
               b'{"address": "a..b:1"}', b'{"steps": 1e400, "template_id": "00"}', b'{"steps": NaN}',
               b'{"steps": ' + b"9" * 5000 + b"}", b'{"steps": -Infinity}', b"\xff\xfe{}", b"{}" * 1000]
    return bodies


POST_PATHS = ["/api/blocks", "/api/tx", "/api/peers/connect", "/api/mining/submit"]


async def test_the_eleven_known_5xx_inputs_now_get_a_typed_400(node: Any) -> None:
    http, service, app, _ = node
    await mine_block(service, MINER)
    deep = b"[" * 50_000  # under every route's size cap, far over the parser's recursion limit
    for path in POST_PATHS:  # 4: deeply nested JSON used to raise RecursionError
        response = await http.post(path, data=deep, headers=auth(app))
        assert response.status == 400, (path, response.status)
        assert "Traceback" not in await response.text()
    known = ["/api/blocks/%C2%B2", "/api/blocks/%C2%B2/raw", "/api/blocks?limit=%C2%B2",  # 'int("²")'
             "/api/blocks?before=%C2%B2", f"/api/accounts/{ADDRESS}?history=%C2%B2", "/api/network?window=%C2%B2"]
    for path in known:  # 6: Unicode digits in ids and query values
        response = await http.get(URL(path, encoded=True))
        body = await response.json()
        assert response.status == 400 and body["reason"] == "bad-request", (path, response.status, body)
    response = await http.post("/api/peers/connect", json={"address": "127.0.0.1:²"}, headers=auth(app))
    assert response.status == 400  # 11: the peer's port
    # Arabic-Indic digits used to be *accepted* as numbers (int("١") == 1): now refused, not a block.
    assert (await http.get(URL("/api/blocks/%D9%A1", encoded=True))).status == 400
    assert (await http.get("/api/blocks/1")).status == 200


async def test_fuzz_every_route_never_5xx(node: Any) -> None:
    http, service, app, connector = node
    block = await mine_block(service, MINER)
    jobs = (await (await http.get("/api/jobs")).json())["jobs"]
    statuses: dict[int, int] = {}

    async def check(response: Any, what: object) -> None:
        raw = await response.read()
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status < 500, (what, response.status, raw[:200])
        assert b"Traceback" not in raw
        # The middleware's last-resort answers mean a route let an exception through: none may appear.
        assert b'"unexpected-input"' not in raw and b'"internal"' not in raw, (what, raw[:200])

    for path in get_paths(block.hash.hex(), jobs[0]["job_id"]):
        await check(await http.get(URL(path, encoded=True)), path)
    for path in POST_PATHS:
        for body in post_bodies():
            await check(await http.post(path, data=body, headers=auth(app)), (path, body[:60]))
    rng = random.Random(test_seed())
    types = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
             "application/json; charset=utf-16", "application/JSON", "application/json-patch+json"]
    for _ in range(120):  # random bodies, content types and methods on random routes
        path = rng.choice([*POST_PATHS, "/api/status", "/api/blocks/1", "/nope"])
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 200)))
        headers = {**app[API_SECURITY].client_headers(), "Content-Type": rng.choice(types)}
        method = rng.choice(["POST", "PUT", "DELETE", "PATCH", "GET"])
        await check(await http.request(method, path, data=body, headers=headers), (method, path))
    assert all(host.isascii() for host, _ in connector.calls)
    assert (await http.get("/api/status")).status == 200
    assert statuses.get(400, 0) > 100 and 415 in statuses


async def test_state_changing_routes_need_the_cookie(node: Any, tmp_path: Path) -> None:
    http, _, app, _ = node
    cookie = tmp_path / "node" / COOKIE_FILE
    assert stat.S_IMODE(cookie.stat().st_mode) == 0o600
    secret = read_cookie(cookie)
    assert secret == app[API_SECURITY].cookie_secret and len(secret) == 64
    body = {"address": "127.0.0.1:1"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic !!!"},
                    {"Authorization": "Basic " + base64.b64encode(b"__cookie__:" + b"0" * 64).decode()},
                    {"Authorization": f"Token {secret}"}):
        response = await http.post("/api/peers/connect", json=body, headers=headers)
        assert response.status == 401 and (await response.json())["reason"] == "unauthorized", headers
    for method in ("PUT", "DELETE", "PATCH"):
        assert (await http.request(method, "/api/tx")).status == 401
    basic = "Basic " + base64.b64encode(cookie.read_bytes()).decode()
    for good in (basic, f"Bearer {secret}"):
        response = await http.post("/api/peers/connect", json=body, headers={"Authorization": good})
        assert response.status == 200 and await response.json() == {"connected": False}
    credentials = RpcCredentials(datadir=tmp_path / "node", environ={})
    assert credentials.header() == basic
    assert (await http.get("/api/status")).status == 200  # reads stay open on loopback


async def test_browser_attacks_are_refused(node: Any) -> None:
    http, _, app, _ = node
    token = app[API_SECURITY].client_headers()
    # A web page's "simple" cross-origin POST (no preflight): text/plain, its own Origin, no credential.
    page = {"Content-Type": "text/plain", "Origin": "http://evil.example"}
    response = await http.post("/api/tx", data=b'{"tx": "00"}', headers=page)
    assert response.status == 403 and (await response.json())["reason"] == "forbidden-origin"
    response = await http.post("/api/tx", data=b'{"tx": "00"}', headers={"Content-Type": "text/plain", **token})
    assert response.status == 415  # even with a credential, only JSON
    response = await http.post("/api/tx", json={"tx": "00"}, headers={"Sec-Fetch-Site": "cross-site", **token})
    assert response.status == 403
    response = await http.post("/api/tx", json={"tx": "00"}, headers={"Origin": "null", **token})
    assert response.status == 403
    same = {"Origin": f"http://{http.host}:{http.port}", **token}
    assert (await http.post("/api/tx", json={"tx": "00"}, headers=same)).status == 400  # served: bad tx
    # DNS rebinding: the page's own name resolves to 127.0.0.1, so the browser sends Host: evil.example.
    for host in ("evil.example", "evil.example:8645", "localhost.evil.example", "127.0.0.1.nip.io"):
        response = await http.get("/api/status", headers={"Host": host})
        assert response.status == 403 and (await response.json())["reason"] == "forbidden-host", host
    for host in ("localhost:8645", "127.0.0.1", "[::1]:8645", "LOCALHOST"):
        assert (await http.get("/api/status", headers={"Host": host})).status == 200, host


async def test_allowed_host_names_and_parsing(tmp_path: Path) -> None:
    security = ApiSecurity(None, allowed_hosts=["node.lan"])
    assert security.host_allowed("node.lan:8645") and security.host_allowed("127.0.0.2")
    assert not security.host_allowed("10.0.0.5") and not security.host_allowed("other.lan")
    assert host_name("[::1]:80") == "::1" and host_name("A:1") == "a" and host_name("::1") == "::1"
    wildcard = ApiSecurity(None, "0.0.0.0", password="p" * 16)
    assert wildcard.host_allowed("192.168.1.7:8645") and not wildcard.host_allowed("evil.example")


def test_non_loopback_bind_needs_a_password() -> None:
    for host in ("0.0.0.0", "::", "192.168.1.7", ""):
        with pytest.raises(ApiConfigError, match="without authentication"):
            check_bind(host, None)
    with pytest.raises(ApiConfigError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    assert check_bind("127.0.0.1", None) is None and check_bind("::1", None) is None
    warning = check_bind("0.0.0.0", "a-long-enough-password")
    assert warning is not None and "clear text" in warning


async def test_remote_clients_need_the_password_even_to_read(tmp_path: Path) -> None:
    security = ApiSecurity(None, "0.0.0.0", password="correct horse battery")
    request: Any = type("R", (), {"method": "GET", "remote": "192.168.1.9", "content_type": "",
                                  "headers": {"Host": "192.168.1.2:8645"}})()
    refused = security.refusal(request)
    assert refused is not None and refused.status == 401 and "WWW-Authenticate" in refused.headers
    request.headers = {"Host": "192.168.1.2:8645", "Authorization": "Bearer correct horse battery"}
    assert security.refusal(request) is None
    basic = base64.b64encode(b"anyone:correct horse battery").decode()
    request.headers = {"Host": "192.168.1.2", "Authorization": f"Basic {basic}"}
    assert security.refusal(request) is None


async def test_cookie_is_removed_at_stop(tmp_path: Path) -> None:
    service = await start_service(tmp_path / "node")
    try:
        app = make_app(service, security=ApiSecurity(tmp_path / "node"))
        runner = web.AppRunner(app)
        await runner.setup()
        cookie = tmp_path / "node" / COOKIE_FILE
        assert read_cookie(cookie) == app[API_SECURITY].cookie_secret
        await runner.cleanup()
        assert not cookie.exists()
    finally:
        await service.stop()


async def _guarded_server(service: ChainService, guard: ConnectionGuard) -> tuple[web.AppRunner, int]:
    app = make_app(service, guard=guard)
    runner = web.AppRunner(app)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site.port


async def _closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server closed the connection within ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
        return True
    except ConnectionError:
        return True
    except TimeoutError:
        return False


async def test_connection_guard_slowloris_and_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = await start_service(tmp_path / "node")
    guard = ConnectionGuard(max_connections=6, per_address=4, header_timeout=0.5, lifetime=5)
    runner, port = await _guarded_server(service, guard)
    writers: list[asyncio.StreamWriter] = []
    try:
        # Slowloris: headers that never end are cut off after the header timeout.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
        await writer.drain()
        assert await _closed(reader, 3) and guard.timed_out == 1
        # Per-address cap: the fifth idle connection from one address is dropped at once.
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
        writers += [w for _, w in held]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        assert await _closed(reader, 1) and guard.refused >= 1
        # The held ones time out too, and then the node answers again (one request per connection).
        await asyncio.sleep(1.0)
        assert not guard.open
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
        # Large bodies: with both slots held by slow senders, a third gets a 429 (not a 5xx).
        monkeypatch.setattr(api, "LARGE_BODY_WAIT", 0.2)
        token = runner.app[API_SECURITY].cookie_secret
        head = (f"POST /api/tx HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: 200000\r\n\r\n").encode()
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, w in slow:
            writers.append(w)
            w.write(head + b'{"tx": "')
            await w.drain()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
        writer.write(head + b'{"tx": "' + b"0" * (200000 - 10) + b'"}')
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:100]
    finally:
        for w in writers:
            w.close()
        await runner.cleanup()
        await service.stop()


def test_client_credentials_order_and_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    home_cookie = tmp_path / ".pouw" / "devnet" / COOKIE_FILE
    home_cookie.parent.mkdir(parents=True)
    home_cookie.write_text("__cookie__:" + "a" * 64)
    asked: list[str] = []

    def preset() -> str:
        asked.append("status")
        return "devnet"

    default = RpcCredentials(environ={})
    assert default.header(preset) == "Basic " + base64.b64encode(home_cookie.read_bytes()).decode()
    assert asked == ["status"] and default.cookie == home_cookie
    home_cookie.write_text("__cookie__:" + "b" * 64)  # the node restarted
    assert default.header(preset) != default.header(preset, reload=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / COOKIE_FILE).write_text("__cookie__:" + "c" * 64)
    by_env = RpcCredentials(environ={"POUW_DATADIR": str(other)})
    assert by_env.cookie == other / COOKIE_FILE and "Basic" in (by_env.header() or "")
    assert RpcCredentials(environ={"POUW_RPC_PASSWORD": "pw" * 8}).header() == "Bearer " + "pw" * 8
    assert RpcCredentials(cookie=tmp_path / "none", environ={}).header(preset) is None
    assert read_cookie(other) is None  # a directory, not a cookie
