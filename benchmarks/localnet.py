"""Real nodes and miners on loopback for the chain, network and useful suites.

Built on the functional-test framework (tests/functional/framework.py: ``TestNode`` starts a real
``pouw-node`` process, ``TestMiner`` a real ``pouw-mine --cpu``). This module adds what the
benchmarks need around it: a temporary network that cleans up after itself, parallel start-up,
a bounded wait for p2p connections (the p2p layer may be absent from a build: suites then report
"unavailable"), and :class:`FirstSeen`, which polls every node and records when each block or
transaction first appeared there.
"""

from __future__ import annotations

import hashlib
import importlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from benchmarks.framework import REPO
from wallet.address import encode_address
from wallet.keys import PrivateKey

MINER_KEY = PrivateKey(hashlib.sha256(b"pouw-bench/miner").digest())
MINER_ADDRESS = encode_address(MINER_KEY.address)


def repo_module(name: str) -> ModuleType:
    """Import a helper module of the repository's tests (not installed with the package)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(name)


def framework() -> ModuleType:
    return repo_module("tests.functional.framework")


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it is truthy and return its value; None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # a node still starting, or busy
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


class LocalNet:
    """Nodes and miners in a temporary directory; ``close`` stops them all and removes it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="pouw-bench-"))
        self.nodes: list[Any] = []
        self.miners: list[Any] = []
        self._framework = framework()

    def __enter__(self) -> LocalNet:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def node(self, connect: Sequence[Any] = (), preset: str = "regtest", start: bool = True) -> Any:
        """A ``TestNode`` connecting to ``connect``; started (and answering) unless ``start`` is False."""
        index = len(self.nodes)
        node = self._framework.TestNode(index, self.root / f"node{index}", preset)
        node.connect = [peer.p2p_port for peer in connect]
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def start_all(self, nodes: Iterable[Any], timeout: float = 120) -> None:
        """Start nodes in parallel and wait until each answers its API."""
        started = list(nodes)
        for node in started:
            node.start(wait=False)
        for node in started:
            self._framework.wait_until(node.is_up, timeout, f"node{node.index} to answer")

    def miner(self, node: Any, address: str = MINER_ADDRESS) -> Any:
        miner = self._framework.TestMiner(node, address, self.root / f"miner{len(self.miners)}.log")
        self.miners.append(miner)
        miner.start()
        return miner

    def log_tail(self, node: Any, lines: int = 5) -> str:
        try:
            return "\n".join(Path(node.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        for miner in self.miners:
            miner.stop()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def connection_problem(nodes: Sequence[Any], timeout: float) -> str | None:
    """None once every node reports a p2p peer; otherwise why not, after ``timeout`` seconds."""
    if wait_for(lambda: all(node.status()["peers"] > 0 for node in nodes), timeout, 0.25):
        return None
    counts = []
    for node in nodes:
        try:
            counts.append(int(node.status()["peers"]))
        except Exception:
            counts.append(-1)
    return (f"no p2p connection after {timeout:.0f} s (peer counts {counts} from /api/status): "
            "the node's p2p layer is not running in this build")


class FirstSeen:
    """Polls ``probe(node)`` on every node from its own thread and records, per node, the monotonic
    time at which each key it returns was first seen (the clock is read when the answer arrives)."""

    def __init__(self, nodes: Sequence[Any], probe: Callable[[Any], Iterable[str]], interval: float) -> None:
        self.nodes = list(nodes)
        self.probe = probe
        self.interval = interval
        self.seen: list[dict[str, float]] = [{} for _ in self.nodes]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(i,), daemon=True) for i in range(len(self.nodes))]

    def _poll(self, index: int) -> None:
        seen = self.seen[index]
        while not self._stop.is_set():
            try:
                keys = list(self.probe(self.nodes[index]))
            except Exception:  # a slow or restarting node: try again
                keys = []
            now = time.monotonic()
            for key in keys:
                seen.setdefault(key, now)
            self._stop.wait(self.interval)

    def __enter__(self) -> FirstSeen:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def latencies(self, origin: dict[str, float], keys: Iterable[str]) -> tuple[list[float], list[float]]:
        """(every node's delay after ``origin[key]``, each key's delay until the last node had it);
        nodes that never saw a key are left out of the first and exclude the key from the second."""
        each, last = [], []
        for key in keys:
            if key not in origin:
                continue
            delays = [seen[key] - origin[key] for seen in self.seen[1:] if key in seen]
            each.extend(delays)
            if len(delays) == len(self.nodes) - 1 and delays:
                last.append(max(delays))
        return each, last
