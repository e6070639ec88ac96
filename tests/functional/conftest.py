"""Fixtures for multi-process tests: a factory of TestNodes that stops them all, and keeps their logs
(printing the tail of each) when the test fails."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.functional.framework import TestMiner, TestNode, test_seed


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


class Network:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[TestNode] = []
        self.miners: list[TestMiner] = []
        self.seed = test_seed()

    def add_node(self, preset: str = "regtest", connect: list[TestNode] | None = None, start: bool = True,
                 extra_args: list[str] | None = None) -> TestNode:
        node = TestNode(len(self.nodes), self.root / f"node{len(self.nodes)}", preset, extra_args or [])
        node.connect = [peer.p2p_port for peer in connect or []]
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def add_miner(self, node: TestNode, address: str, extra_args: list[str] | None = None) -> TestMiner:
        miner = TestMiner(node, address, self.root / f"miner{len(self.miners)}.log", extra_args or [])
        self.miners.append(miner)
        miner.start()
        return miner

    def stop(self) -> None:
        for miner in self.miners:
            miner.stop()
        for node in self.nodes:
            node.stop()


@pytest.fixture
def network(request: pytest.FixtureRequest) -> Iterator[Network]:
    root = Path(tempfile.mkdtemp(prefix="pouw-functional-"))
    net = Network(root)
    try:
        yield net
    finally:
        net.stop()
        report: Any = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\nlogs kept in {root} (seed {net.seed})")
            for log in sorted(root.glob("*.log")):
                lines = log.read_text(errors="replace").splitlines()[-40:]
                print(f"--- {log.name} (last {len(lines)} lines) ---")
                print("\n".join(lines))
        else:
            shutil.rmtree(root, ignore_errors=True)


NetworkFactory = Callable[..., Network]
