"""A functional test framework in the manner of Bitcoin Core's ``test/functional/test_framework``.

:class:`TestNode` starts a real ``pouw-node`` process on free loopback ports in its own datadir and
talks to it over its HTTP API; :class:`TestMiner` runs a real ``pouw-mine`` process. Helpers wait
for conditions with a timeout scaled by ``POUW_TIMEOUT_FACTOR`` (slow CI machines), sync blocks
and mempools across nodes, and on a failure the nodes' logs are kept and their paths printed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from wallet.client import COOKIE_FILE

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TIMEOUT_FACTOR = float(os.environ.get("POUW_TIMEOUT_FACTOR", "1"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition",
               interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` × the timeout factor."""
    deadline = time.monotonic() + timeout * TIMEOUT_FACTOR
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the node may be starting or restarting
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout * TIMEOUT_FACTOR:.0f}s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


class HttpError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class TestNode:
    """A ``pouw-node`` process. ``start``/``stop``/``kill``; ``get``/``post`` talk JSON to its API."""

    __test__ = False  # not a pytest class

    def __init__(self, index: int, datadir: Path, preset: str = "regtest", extra_args: Sequence[str] = ()) -> None:
        self.index = index
        self.datadir = datadir
        self.preset = preset
        self.extra_args = list(extra_args)
        self.rpc_port = free_port()
        self.p2p_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = datadir.parent / f"node{index}.log"
        self.connect: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"

    @property
    def p2p_address(self) -> str:
        return f"127.0.0.1:{self.p2p_port}"

    def args(self) -> list[str]:
        args = [PYTHON, "-m", "node.cli", "--datadir", str(self.datadir), "--preset", self.preset,
                "--rpc-port", str(self.rpc_port), "--p2p-port", str(self.p2p_port), "--log-level", "info"]
        for port in self.connect:
            args += ["--connect", f"127.0.0.1:{port}"]
        return args + self.extra_args

    def start(self, wait: bool = True) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.args(), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            wait_until(self.is_up, 60, f"node{self.index} to answer")

    def is_up(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"node{self.index} exited with {self.process.returncode}; log {self.log_path}")
        try:
            self.get("/api/status")
            return True
        except (OSError, HttpError):
            return False

    def stop(self, timeout: float = 30) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout * TIMEOUT_FACTOR)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    @property
    def cookie_path(self) -> Path:
        """The API cookie the running node wrote (``__cookie__:<secret>``)."""
        return self.datadir / COOKIE_FILE

    def auth_header(self) -> str:
        """``Authorization`` for a state-changing call: HTTP Basic with the node's cookie, as bitcoind."""
        return "Basic " + base64.b64encode(self.cookie_path.read_bytes().strip()).decode("ascii")

    def _request(self, path: str, data: bytes | None = None, method: str | None = None) -> bytes:
        headers = {"Content-Type": "application/json"}
        if method not in (None, "GET", "HEAD"):
            headers["Authorization"] = self.auth_header()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            raise HttpError(exc.code, body) from None

    def get(self, path: str) -> Any:
        return json.loads(self._request(path))

    def get_bytes(self, path: str) -> bytes:
        return self._request(path)

    def post(self, path: str, body: Any) -> Any:
        return json.loads(self._request(path, json.dumps(body).encode(), "POST"))

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/api/status")
        return result

    def height(self) -> int:
        return int(self.status()["height"])

    def balance(self, address: str) -> int:
        return int(self.get(f"/api/accounts/{address}")["balance"])


class TestMiner:
    """A ``pouw-mine --cpu`` process mining for ``node``."""

    __test__ = False

    def __init__(self, node: TestNode, address: str, log_path: Path, extra_args: Sequence[str] = ()) -> None:
        self.node = node
        self.address = address
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "node.miner_cli", "--cpu", "--threads", "1", "--node", self.node.url,
             "--datadir", str(self.node.datadir),
             "--address", self.address, *self.extra_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20 * TIMEOUT_FACTOR)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def connect_nodes(a: TestNode, b: TestNode, timeout: float = 30) -> None:
    """Have ``a`` dial ``b`` now and wait until both see the link."""
    a.post("/api/peers/connect", {"address": b.p2p_address})
    wait_until(lambda: any(p["address"].endswith(f":{b.p2p_port}") for p in a.get("/api/peers")["peers"])
               and b.status()["peers"] >= 1, timeout, f"node{a.index} and node{b.index} to connect")


def sync_blocks(nodes: Iterable[TestNode], timeout: float = 120) -> str:
    """Wait until every node has the same tip; returns it."""
    nodes = list(nodes)

    def same_tip() -> str | None:
        tips = {n.status()["tip"] for n in nodes}
        return tips.pop() if len(tips) == 1 else None

    result: str = wait_until(same_tip, timeout, "nodes to agree on a tip")
    return result


def sync_mempools(nodes: Iterable[TestNode], timeout: float = 60) -> None:
    nodes = list(nodes)

    def same_pool() -> bool:
        pools = [sorted(t["txid"] for t in n.get("/api/mempool")["txs"]) for n in nodes]
        return all(p == pools[0] for p in pools)

    wait_until(same_pool, timeout, "mempools to agree")


def test_seed() -> int:
    """The random seed of a test run: POUW_TEST_SEED if set, else fresh; always printed (logged)."""
    seed = int(os.environ.get("POUW_TEST_SEED", random.randrange(1 << 32)))
    print(f"POUW_TEST_SEED={seed}")
    return seed


test_seed.__test__ = False  # type: ignore[attr-defined]
