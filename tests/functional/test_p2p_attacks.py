"""Eclipse and slowloris against real ``pouw-node`` processes on loopback (docs/protocol.md Part VII,
"Connection limits"): the attacked node keeps its honest peer and its tip, takes a fresh honest peer,
stays within a stated memory bound, and sheds the attacker.

Each attacker link comes from its own loopback address (Linux routes all of 127/8 to lo), so a test
can play one address, or one address in each of many /16 groups, without leaving the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import resource
import sys
import time
from pathlib import Path

from consensus.presets import REGTEST_PRESET
from p2p.messages import PROTOCOL_VERSION, Version
from tests.functional.conftest import Network
from tests.functional.framework import PYTHON, TestNode, wait_until
from tests.p2p.helpers import RawPeer, idle_peer
from wallet.address import encode_address
from wallet.keys import PrivateKey

MAX_INBOUND = 32  # the node's default
PER_HOST = 4  # P2PConfig.max_inbound_per_host
UPGRADE_TIMEOUT = 5.0  # P2PConfig.upgrade_timeout
MINER_ADDRESS = encode_address(PrivateKey(b"\x07" * 32).address)


def rss_mib(node: TestNode) -> float:
    assert node.process is not None
    for line in Path(f"/proc/{node.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def version_for(node: TestNode) -> Version:
    genesis = bytes.fromhex(node.status()["genesis"])
    return Version(protocol_version=PROTOCOL_VERSION, chain_id=REGTEST_PRESET.chain_id, genesis_hash=genesis,
                   best_height=0, best_work=0, user_agent="eclipse", nonce=0, listen_port=0)


def peer_hosts(node: TestNode) -> list[str]:
    return [p["address"].rsplit(":", 1)[0] for p in node.get("/api/peers")["peers"]]


def linked(a: TestNode, b: TestNode) -> bool:
    return any(p["address"].endswith(f":{b.p2p_port}") for p in a.get("/api/peers")["peers"])


def test_eclipse_by_idle_peers_leaves_room_for_honest_ones(network: Network) -> None:
    """31 idle handshaken peers from one address, then one from each of 40 other /16 groups: the
    address gets 4 slots, the groups fill the rest and are evicted in turn, the honest peer stays
    and a fresh honest node still gets in."""
    node = network.add_node()
    honest = network.add_node(connect=[node])
    wait_until(lambda: linked(honest, node), 60, "the honest link")
    rss_before = rss_mib(node)
    base = version_for(node)

    async def attack() -> dict[str, object]:
        attackers: list[RawPeer] = []
        try:
            for i in range(31):
                peer = await idle_peer("127.1.0.1", node.p2p_port, dataclasses.replace(base, nonce=i + 1))
                if peer is not None:
                    attackers.append(peer)
            from_one = len(attackers)
            for i in range(40):
                peer = await idle_peer(f"127.{10 + i}.0.1", node.p2p_port, dataclasses.replace(base, nonce=100 + i))
                if peer is not None:
                    attackers.append(peer)
            # A fresh honest node arrives while every attacker link is still open.
            fresh = await asyncio.to_thread(network.add_node, "regtest", [node])
            await asyncio.to_thread(wait_until, lambda: linked(fresh, node), 60, "the fresh honest link")
            hosts = await asyncio.to_thread(peer_hosts, node)
            still = await asyncio.to_thread(linked, honest, node)
            return {"from_one": from_one, "hosts": hosts, "honest_kept": still,
                    "open_attackers": sum(1 for a in attackers if a.ws is not None and not a.ws.closed)}
        finally:
            for peer in attackers:
                await peer.close()

    result = asyncio.run(attack())
    hosts = result["hosts"]
    assert isinstance(hosts, list)
    assert result["from_one"] == PER_HOST
    assert hosts.count("127.1.0.1") <= PER_HOST
    assert result["honest_kept"]
    assert hosts.count("127.0.0.1") >= 2  # the honest node and the fresh one
    assert len(hosts) <= MAX_INBOUND
    rss_after = rss_mib(node)
    print(f"eclipse: {result['from_one']} of 31 links from one address admitted; {len(hosts)} peers "
          f"after 71 attempts; attacker links still open {result['open_attackers']}; "
          f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB")
    assert rss_after - rss_before < 64  # stated bound: 71 links cost well under 64 MiB
    assert node.is_up() and honest.height() == node.height()


class LimitedNode(TestNode):
    """A node started with RLIMIT_NOFILE = 1024 (soft and hard), the limit the attack exhausted."""

    __test__ = False

    def args(self) -> list[str]:
        launcher = ("import os, resource, sys; "
                    "resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)); "
                    "os.execv(sys.argv[1], sys.argv[1:])")
        return [PYTHON, "-c", launcher, *super().args()]


async def _half_sent_upgrades(port: int, count: int, hosts: int) -> tuple[list[float], float]:
    """Open ``count`` connections from ``hosts`` addresses, each sending an upgrade request that never
    ends; return when each was closed by the node (seconds from the start) and how long opening took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    streams = []
    for i in range(count):
        host = f"127.3.{i % hosts // 10}.{1 + i % 10}"
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
        except OSError:
            continue
        writer.write(b"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        streams.append((reader, writer))
    opening = loop.time() - started

    async def closed(reader: asyncio.StreamReader) -> float:
        try:
            await asyncio.wait_for(reader.read(), 30)
        except (ConnectionError, TimeoutError):
            pass
        return loop.time() - started

    try:
        times = await asyncio.gather(*(closed(r) for r, _ in streams))
    finally:
        for _, writer in streams:
            writer.close()
    return list(times), opening


def test_half_sent_upgrades_are_shed_and_the_node_keeps_working(network: Network, tmp_path: Path) -> None:
    """1,500 half-sent WebSocket upgrades (the reported attack: all stayed open, and with a 1,024-fd
    limit LevelDB then failed) against a node limited to 1,024 descriptors: every one is closed within
    the upgrade timeout of its arrival, the API answers throughout, the honest peer keeps its link,
    a fresh honest node connects, and the node still imports blocks into its store."""
    if sys.platform != "linux":
        import pytest

        pytest.skip("needs Linux: 127/8 source addresses and /proc")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2_000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4_096, hard), hard))
    node = LimitedNode(len(network.nodes), network.root / f"node{len(network.nodes)}")
    network.nodes.append(node)
    node.start()
    honest = network.add_node(connect=[node])
    wait_until(lambda: linked(honest, node), 60, "the honest link")
    rss_before = rss_mib(node)

    async def attack() -> tuple[list[float], float, list[float]]:
        task = asyncio.create_task(_half_sent_upgrades(node.p2p_port, 1_500, 30))
        api_times = []
        while not task.done():  # the API answers throughout
            t0 = time.monotonic()
            await asyncio.to_thread(node.status)
            api_times.append(time.monotonic() - t0)
            await asyncio.sleep(0.2)
        times, opening = await task
        return times, opening, api_times

    times, opening, api_times = asyncio.run(attack())
    assert len(times) >= 1_400  # (a few may be refused by our own socket limits)
    assert max(times) < opening + UPGRADE_TIMEOUT + 5
    assert max(api_times) < 5
    assert linked(honest, node)
    rss_after = rss_mib(node)
    assert node.process is not None
    fds = len(os.listdir(f"/proc/{node.process.pid}/fd"))
    fresh = network.add_node(connect=[node])
    wait_until(lambda: linked(fresh, node), 60, "a fresh honest node connects after the attack")
    # The store still works under the 1,024-fd limit: a block mined by the honest node is imported.
    mine(network, honest, 1)
    wait_until(lambda: node.height() == honest.height() >= 1, 60, "the attacked node imports the block")
    print(f"slowloris: {len(times)} half-sent upgrades opened in {opening:.1f}s, last closed after "
          f"{max(times):.1f}s; API worst {max(api_times) * 1000:.0f} ms; RSS {rss_before:.0f} -> "
          f"{rss_after:.0f} MiB; open fds after the attack {fds}")
    assert rss_after - rss_before < 64


def mine(network: Network, node: TestNode, blocks: int) -> None:
    height = node.height() + blocks
    miner = network.add_miner(node, MINER_ADDRESS)
    try:
        wait_until(lambda: node.height() >= height, 180, f"node{node.index} to reach height {height}")
    finally:
        miner.stop()
