"""Headers-first sync between MemoryBackend nodes: from genesis, across three nodes, after a
partition (heavier branch wins), new blocks after catching up, and stalls re-requested elsewhere."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from chain.types import Block
from p2p.messages import (
    BlockMessage,
    GetData,
    GetHeaders,
    Headers,
    NotFound,
    Ping,
    Pong,
    sealed_headers,
)
from tests.factories import build_chain
from tests.p2p.helpers import RawPeer, TestNode, local_version, run, sync_blocks, wait_until

CHAIN, _ = build_chain(200)


def branches() -> tuple[list[Block], list[Block]]:
    prefix, state = build_chain(100)
    light, _ = build_chain(20, start=(prefix[-1], state), salt=b"light")
    heavy, _ = build_chain(30, start=(prefix[-1], state), salt=b"heavy")
    return prefix + light, prefix + heavy


def test_three_nodes_sync_200_blocks_from_genesis_then_follow_new_blocks(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = await TestNode(tmp_path / "a", CHAIN).start()
        b = await TestNode(tmp_path / "b").start()
        c = await TestNode(tmp_path / "c").start()
        nodes = [a, b, c]
        try:
            await b.connect_to(a)
            await c.connect_to(a)
            await c.connect_to(b)
            await sync_blocks(nodes)
            assert all(n.backend.active_chain() == a.backend.active_chain() for n in nodes)
            assert c.height == 200 and c.service.sync_info().orphans == 0
            # After catching up, blocks mined by one node reach the others (inv, headers, getdata).
            b.mine(3, salt=b"new")
            await sync_blocks(nodes)
            assert a.height == 203
        finally:
            for node in nodes:
                await node.stop()

    run(scenario())


def test_partitioned_nodes_converge_on_the_heavier_branch(tmp_path: Path) -> None:
    light, heavy = branches()

    async def scenario() -> None:
        a = await TestNode(tmp_path / "a", light).start()
        b = await TestNode(tmp_path / "b", heavy).start()
        c = await TestNode(tmp_path / "c").start()
        try:
            # Partition: c only hears of the light branch.
            await c.connect_to(a)
            await sync_blocks([a, c])
            assert c.backend.tip().hash == light[-1].hash
            # Heal: both light nodes meet the heavy branch and reorganise onto it.
            await a.connect_to(b)
            await c.connect_to(b)
            await sync_blocks([a, b, c])
            assert a.backend.tip().hash == heavy[-1].hash and a.height == 130
            assert c.backend.active_chain()[101] == heavy[100].hash
        finally:
            for node in (a, b, c):
                await node.stop()

    run(scenario())


@pytest.mark.parametrize("direction", ["light-dials-heavy", "heavy-dials-light"])
def test_two_node_reorg_either_direction(tmp_path: Path, direction: str) -> None:
    light, heavy = branches()

    async def scenario() -> None:
        a = await TestNode(tmp_path / "a", light).start()
        b = await TestNode(tmp_path / "b", heavy).start()
        try:
            if direction == "light-dials-heavy":
                await a.connect_to(b)
            else:
                await b.connect_to(a)
            await sync_blocks([a, b])
            assert a.backend.tip().hash == heavy[-1].hash
        finally:
            await a.stop()
            await b.stop()

    run(scenario())


def test_stalling_peer_is_bypassed_and_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A peer that serves headers but never blocks: its requests time out, go to the honest peer,
    and after ``max_stalls`` stalls it is disconnected (not banned)."""
    caplog.set_level(logging.INFO, logger="p2p")

    async def staller(raw: RawPeer) -> None:
        while (message := await raw.recv(timeout=10)) is not None:
            if isinstance(message, GetHeaders):
                await raw.send(Headers(headers=sealed_headers((b.header, b.seal) for b in CHAIN)))
            elif isinstance(message, Ping):
                await raw.send(Pong(nonce=message.nonce))
            # GetData: never answered.

    async def scenario() -> None:
        honest = await TestNode(tmp_path / "honest", CHAIN).start()
        node = await TestNode(tmp_path / "node").start()
        raw = RawPeer("127.0.0.9")
        try:
            await raw.handshake(node.port, local_version(best_height=200, best_work=10**80))
            serve = asyncio.create_task(staller(raw))
            await wait_until(lambda: node.height > 0 or node.service.sync_info().blocks_in_flight > 0,
                             "requests went out")
            await node.connect_to(honest)
            await sync_blocks([node, honest], timeout=20)
            await wait_until(lambda: len(node.service.peers()) == 1, "staller dropped", timeout=10)
            assert node.service.peers()[0].address == f"127.0.0.1:{honest.port}"
            assert not node.service.bans.is_banned("127.0.0.9")
            assert any("stalling" in r.getMessage() for r in caplog.records)
            serve.cancel()
        finally:
            await raw.close()
            await node.stop()
            await honest.stop()

    run(scenario(), timeout=40)


def test_getdata_is_answered_with_notfound_for_unknown_blocks(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path, CHAIN[:3]).start()
        raw = RawPeer("127.0.0.10")
        try:
            await raw.handshake(node.port)
            await raw.send(GetData(kind=2, hashes=(CHAIN[1].hash, b"\x05" * 32)))
            got = await raw.expect(BlockMessage)
            assert got.block == CHAIN[1]
            missing = await raw.expect(NotFound)
            assert missing.hashes == (b"\x05" * 32,)
            await raw.send(GetHeaders(locator=(CHAIN[0].hash,), stop=bytes(32)))
            headers = await raw.expect(Headers)
            assert [s.hash for s in headers.headers] == [CHAIN[1].hash, CHAIN[2].hash]
        finally:
            await raw.close()
            await node.stop()

    run(scenario())
