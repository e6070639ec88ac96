"""Handshake and link lifecycle: accept, wrong network, self-connection, junk, timeouts, limits."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from p2p.messages import Message, Ping, Reject, Verack, Version
from p2p.misbehavior import Offence
from tests.factories import build_chain
from tests.p2p.helpers import FAST, RawPeer, TestNode, local_version, refused, run, wait_until

BLOCKS, _ = build_chain(5)


def test_two_nodes_handshake_and_report_each_other(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = await TestNode(tmp_path / "a", BLOCKS).start()
        b = await TestNode(tmp_path / "b").start()
        try:
            await b.connect_to(a)
            await wait_until(lambda: len(a.service.peers()) == 1, "a sees b")
            (seen_by_b,) = b.service.peers()
            (seen_by_a,) = a.service.peers()
            assert seen_by_b.direction == "outbound" and seen_by_a.direction == "inbound"
            assert seen_by_b.height == 5 and seen_by_b.address == f"127.0.0.1:{a.port}"
            assert seen_by_b.user_agent == FAST.user_agent
            # Keepalive pings measure latency; both sides count what they carried.
            await wait_until(lambda: b.service.peers()[0].latency_ms is not None, "latency", 5)
            await wait_until(lambda: b.height == 5, "b synced")
            info = b.service.peers()[0]
            assert info.bytes_in > 0 and info.bytes_out > 0 and info.messages_in > 2
        finally:
            await a.stop()
            await b.stop()

    run(scenario())


@pytest.mark.parametrize(
    "change",
    [{"genesis_hash": b"\x01" * 32}, {"chain_id": 1}],
    ids=["wrong-genesis", "wrong-chain-id"],
)
def test_wrong_network_is_told_dropped_and_banned(tmp_path: Path, change: dict[str, Any]) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path).start()
        raw = RawPeer("127.0.0.3")
        try:
            await raw.open(node.port)
            await raw.send(local_version(**change))
            assert isinstance(await raw.recv(), Version)
            reject = await raw.recv()
            assert isinstance(reject, Reject) and reject.code == "wrong-network"
            await raw.wait_closed()
            assert node.service.bans.is_banned("127.0.0.3")
            assert await refused("127.0.0.3", node.port)
            assert not node.service.peers()
        finally:
            await raw.close()
            await node.stop()

    run(scenario())


def test_self_connection_is_detected_on_both_ends(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path).start()
        try:
            assert not await node.service.connect("127.0.0.1", node.port)
            await wait_until(lambda: not node.service._peers, "both ends closed")
            assert not node.service.peers() and len(node.service.bans) == 0
        finally:
            await node.stop()

    run(scenario())


@pytest.mark.parametrize(
    "first, offence",
    [
        (local_version(protocol_version=0), Offence.OBSOLETE_VERSION),
        (Ping(nonce=1), Offence.JUNK_BEFORE_HANDSHAKE),
        (Verack(), Offence.JUNK_BEFORE_HANDSHAKE),
    ],
    ids=["obsolete-version", "ping-first", "verack-first"],
)
def test_bad_openings_are_dropped_not_banned(tmp_path: Path, first: Message, offence: Offence) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path).start()
        raw = RawPeer("127.0.0.4")
        try:
            await raw.open(node.port)
            await raw.send(first)
            await raw.wait_closed()
            assert [r.offence for r in node.service.offences] == [offence]
            assert not node.service.bans.is_banned("127.0.0.4")
            assert not node.service.peers()
        finally:
            await raw.close()
            await node.stop()

    run(scenario())


def test_silent_peers_time_out(tmp_path: Path) -> None:
    """No Version within the handshake timeout, or no Pong within the ping timeout: dropped."""
    config = dataclasses.replace(FAST, handshake_timeout=0.3, ping_interval=0.2, ping_timeout=0.3)

    async def scenario() -> None:
        node = await TestNode(tmp_path, config=config).start()
        mute, deaf = RawPeer("127.0.0.5"), RawPeer("127.0.0.6")
        try:
            await mute.open(node.port)
            await mute.wait_closed(timeout=2)
            await deaf.handshake(node.port)
            await wait_until(lambda: len(node.service.peers()) == 1, "deaf peer connected")
            # The raw peer reads nothing and answers no Ping.
            await wait_until(lambda: not node.service.peers(), "ping timeout", timeout=3)
            assert len(node.service.bans) == 0
        finally:
            await mute.close()
            await deaf.close()
            await node.stop()

    run(scenario())


def test_inbound_limit_refuses_at_accept(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path, max_inbound=1).start()
        first = RawPeer("127.0.0.7")
        try:
            await first.handshake(node.port)
            assert await refused("127.0.0.8", node.port)
        finally:
            await first.close()
            await node.stop()

    run(scenario())


def test_stop_is_prompt_with_a_peer_mid_handshake(tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, handshake_timeout=30.0)

    async def scenario() -> None:
        node = await TestNode(tmp_path, config=config).start()
        mute = RawPeer("127.0.0.13")
        try:
            await mute.open(node.port)
            await wait_until(lambda: bool(node.service._peers), "link accepted")
            started = asyncio.get_running_loop().time()
            await node.stop()
            assert asyncio.get_running_loop().time() - started < 2.0
            await mute.wait_closed(timeout=2)
        finally:
            await mute.close()

    run(scenario())
