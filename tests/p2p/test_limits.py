"""Connection limits, eviction, socket guards, address scopes, upload caps and stall fairness
(docs/protocol.md Part VII, "Connection limits" and "Upload"): each attack against the p2p layer on
loopback, bounded, with the honest peer kept.

Loopback has a whole /8, so each attacker gets its own address (127.x.y.z) and network group (/16).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from chain.types import Block
from p2p.backend import BlockOutcome
from p2p.config import P2PConfig
from p2p.messages import Addr, GetData, Headers, InvKind, PeerAddress, TxMessage, sealed_headers
from p2p.misbehavior import Offence
from p2p.netgroup import (
    EvictionCandidate,
    Scope,
    address_group,
    may_learn,
    scope_of,
    select_eviction,
)
from p2p.peer import Direction
from p2p.service import plan_file_descriptors
from p2p.sync import BlockSync, _PeerSync, _Request
from p2p.testing import MemoryBackend
from tests.factories import GENESIS_BLOCK, KEYS, RULES, build_chain, genesis, transfer
from tests.p2p.helpers import FAST, RawPeer, TestNode, idle_peer, run, sync_blocks, wait_until

BLOCKS, _ = build_chain(40)

# -- pure rules -----------------------------------------------------------------------------------


def test_address_groups() -> None:
    assert address_group("10.1.2.3") == address_group("10.1.200.9") == "v4:10.1"
    assert address_group("10.2.0.1") != address_group("10.1.0.1")
    assert address_group("::ffff:10.1.2.3") == "v4:10.1"
    assert address_group("2001:db8:1:2::1") == address_group("2001:db8:ffff::2")
    assert address_group("2001:db8:1::1") != address_group("2001:db9:1::1")


def test_address_scopes_and_what_a_peer_may_teach_us() -> None:
    assert scope_of("127.0.0.1") is Scope.LOOPBACK and scope_of("::1") is Scope.LOOPBACK
    assert scope_of("169.254.1.1") is Scope.LINK_LOCAL and scope_of("fe80::1") is Scope.LINK_LOCAL
    for host in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1"):
        assert scope_of(host) is Scope.PRIVATE, host
    assert scope_of("8.8.8.8") is Scope.PUBLIC
    assert scope_of("0.0.0.0") is None and scope_of("224.0.0.1") is None and scope_of("host") is None
    # A public peer can teach only public addresses, whatever they point at.
    for host in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.1.1", "::1", "fe80::1"):
        assert not may_learn(host, "8.8.8.8", None), host
        assert not may_learn(host, "127.0.0.1", False), host
        assert may_learn(host, "8.8.8.8", True), host
    assert may_learn("8.8.4.4", "8.8.8.8", False)
    # A peer in a scope may name that scope or a wider one (loopback peers are local processes).
    assert may_learn("127.0.0.5", "127.0.0.1", None) and may_learn("10.0.0.1", "127.0.0.1", None)
    assert may_learn("10.0.0.9", "192.168.1.2", None)
    assert not may_learn("127.0.0.1", "192.168.1.2", None)


def _candidate(i: int, group: str, connected: float, **kw: float | None) -> EvictionCandidate[int]:
    fields: dict[str, float | None] = {"latency": 0.05, "last_block_at": None, "last_tx_at": None}
    fields.update(kw)
    return EvictionCandidate(peer=i, group=group, connected_at=connected, latency=fields["latency"],
                             last_block_at=fields["last_block_at"], last_tx_at=fields["last_tx_at"])


def test_eviction_takes_the_youngest_of_the_most_represented_group() -> None:
    honest = [_candidate(i, f"v4:{i}.0", connected=float(i), latency=0.2) for i in range(6)]
    attackers = [_candidate(100 + i, "v4:66.6", connected=100.0 + i, latency=0.001) for i in range(26)]
    for secret in (b"a" * 32, b"b" * 32, b"c" * 32):
        victim = select_eviction(honest + attackers, secret=secret)
        assert victim is not None and victim >= 100  # never an honest peer
    # With equal latencies the youngest unprotected link of the crowded group goes.
    same = [dataclasses.replace(c, latency=0.05) for c in attackers]
    assert select_eviction(same + honest, secret=b"k" * 32) == 125
    # A peer that recently gave us blocks survives even as the youngest of a crowded group.
    useful = _candidate(999, "v4:66.6", connected=500.0, latency=1.0, last_block_at=400.0)
    assert select_eviction([*attackers, useful], secret=b"k" * 32) != 999
    # Too few candidates: all protected, nobody is evicted.
    assert select_eviction(attackers[:8], secret=b"k" * 32) is None


def test_the_fd_budget_keeps_a_reserve() -> None:
    config = P2PConfig(max_open_files=1024, fd_reserve=512)
    assert plan_file_descriptors(config, 100) == 512
    assert plan_file_descriptors(P2PConfig(max_open_files=300, fd_reserve=512), 100) == 0
    assert plan_file_descriptors(P2PConfig(), 80) > 0  # reads (and may raise) RLIMIT_NOFILE


# -- against a running service --------------------------------------------------------------------


def inbound(node: TestNode) -> list[str]:
    return [i.address for i in node.service.peers() if i.direction == Direction.INBOUND.value]


def test_idle_peers_from_one_address_take_a_few_slots_and_eviction_keeps_the_honest_peer(
    tmp_path: Path,
) -> None:
    """31 idle handshaken peers from one address get ``max_inbound_per_host`` (4) slots; then
    attackers from 40 distinct groups fill the rest and evict each other, while the honest peer
    that gave us a block stays, and a fresh honest peer still gets in."""

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", BLOCKS[:10]).start()
        honest = await TestNode(tmp_path / "honest", BLOCKS[:10]).start()
        attackers: list[RawPeer] = []
        try:
            await honest.connect_to(node)
            honest.mine(1, salt=b"honest")  # the honest peer is useful: it relays us a block
            await sync_blocks([node, honest])
            from_one = [await idle_peer("127.1.0.1", node.port) for _ in range(31)]
            attackers += [p for p in from_one if p is not None]
            assert len(attackers) == node.service.config.max_inbound_per_host == 4
            for i in range(40):  # one address per /16: the group caps do not apply, eviction does
                peer = await idle_peer(f"127.{10 + i}.0.1", node.port)
                if peer is not None:
                    attackers.append(peer)
            await wait_until(lambda: len(inbound(node)) <= node.service.max_inbound, "settled")
            assert node.service.evictions > 0
            assert f"127.0.0.1:{node.port}" in honest.peer_addresses()  # the honest link held
            assert any(a.startswith("127.0.0.1:") for a in inbound(node))
            fresh = await TestNode(tmp_path / "fresh").start()
            try:
                await fresh.connect_to(node)
                await sync_blocks([node, honest, fresh])
                assert any(a.startswith("127.0.0.1:") for a in inbound(node))
                assert len(inbound(node)) <= node.service.max_inbound
            finally:
                await fresh.stop()
        finally:
            for peer in attackers:
                await peer.close()
            await node.stop()
            await honest.stop()

    run(scenario(), timeout=60)


async def _half_sent_upgrade(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(host, 0))
    writer.write(b"GET /p2p HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # never ends
    await writer.drain()
    return reader, writer


def test_half_sent_upgrades_are_closed_and_the_node_keeps_accepting(tmp_path: Path) -> None:
    """200 half-sent upgrade requests from 20 addresses in 5 groups: each is closed within
    ``upgrade_timeout`` (most at once, over the pending caps), and an honest node connects while
    the attack goes on."""
    config = dataclasses.replace(FAST, upgrade_timeout=0.5, max_pending_inbound=16)

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", BLOCKS[:5], config=config).start()
        honest = await TestNode(tmp_path / "honest").start()
        sockets = []
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(200):
                sockets.append(await _half_sent_upgrade(f"127.{50 + i % 5}.0.{1 + i % 20}", node.port))
            opening = loop.time() - started
            await honest.connect_to(node)  # displaces a pending slowloris socket if it must
            await sync_blocks([node, honest])

            async def closed(reader: asyncio.StreamReader) -> float:
                try:
                    await asyncio.wait_for(reader.read(), 3.0)
                except ConnectionError:
                    pass
                return loop.time() - started

            times = await asyncio.gather(*(closed(r) for r, _ in sockets))
            listener = node.service._listener
            assert listener is not None
            assert max(times) < opening + 0.5 + 1.0
            assert listener.upgrading == 0
            assert listener.refused_tcp + listener.upgrade_timeouts + listener.displaced >= 200
            assert listener.refused_tcp + listener.displaced > 100  # most never got near the upgrade
            print(f"slowloris: {len(sockets)} sockets opened in {opening:.2f}s, last closed after "
                  f"{max(times):.2f}s; refused at accept {listener.refused_tcp}, displaced "
                  f"{listener.displaced}, upgrade timeouts {listener.upgrade_timeouts}")
            assert len(node.service.peers()) == 1
        finally:
            for _, writer in sockets:
                writer.close()
            await node.stop()
            await honest.stop()

    run(scenario(), timeout=60)


def test_sockets_beyond_the_fd_budget_are_refused(tmp_path: Path) -> None:
    """With room for 3 inbound sockets after the reserve and the 8 outbound slots, the fourth
    inbound peer is refused (the store's descriptors are never taken)."""
    config = dataclasses.replace(FAST, max_open_files=512 + 8 + 3, fd_reserve=512)

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", config=config).start()
        peers = []
        try:
            assert node.service.socket_budget == 11 and node.service.max_inbound == 3
            for i in range(6):
                peers.append(await idle_peer(f"127.{70 + i}.0.1", node.port))
            assert sum(p is not None for p in peers) == 3
        finally:
            for peer in peers:
                if peer is not None:
                    await peer.close()
            await node.stop()

    run(scenario())


def test_private_addresses_from_peers_are_not_stored_or_dialled(tmp_path: Path) -> None:
    config = dataclasses.replace(FAST, allow_private_addresses=False)

    async def scenario() -> None:
        hits = 0

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal hits
            hits += 1
            writer.close()

        trap = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        trap_port = trap.sockets[0].getsockname()[1]
        strict = await TestNode(tmp_path / "strict", config=config).start()
        default = await TestNode(tmp_path / "default").start()
        raws = [RawPeer("127.0.0.31"), RawPeer("127.0.0.32")]
        try:
            hosts = ["127.0.0.1", "10.0.0.1", "192.168.1.1", "169.254.1.1", "::1", "fe80::1", "172.16.0.9"]
            everything = tuple(PeerAddress(host=h, port=trap_port, last_seen=1) for h in hosts)
            await raws[0].handshake(strict.port)
            await raws[0].send(Addr(addresses=everything))
            # (only loopback for the default node: a test never dials beyond this machine)
            await raws[1].handshake(default.port)
            await raws[1].send(Addr(addresses=everything[:1]))
            await wait_until(lambda: ("127.0.0.1", trap_port) in default.service.addresses, "learnt")
            await wait_until(lambda: hits >= 1, "the default node dialled the loopback trap")
            await default.stop()
            hits_before = hits
            await asyncio.sleep(10 * FAST.connect_interval)
            assert len(strict.service.addresses) == 0  # nothing stored, so nothing dialled
            assert hits == hits_before
            assert not strict.service.offences
        finally:
            for raw in raws:
                await raw.close()
            await strict.stop()
            await default.stop()
            trap.close()

    run(scenario())


def test_getdata_amplification_is_bounded(tmp_path: Path) -> None:
    """128 GetData for 128 blocks each (the reported attack: 1.3 MiB in, 834 MiB out) buys each
    block once per link; the rest is NotFound and scored, and fresh blocks are paced by the
    per-peer upload bucket."""
    upload = 2048
    config = dataclasses.replace(FAST, upload_bytes_per_s=upload, upload_burst_bytes=upload)

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", BLOCKS, config=config).start()
        raw = await idle_peer("127.0.0.41", node.port)
        assert raw is not None
        await wait_until(lambda: len(node.service.peers()) == 1, "handshake done on the node's side")

        async def quiet() -> int:
            """Wait until the node has sent nothing but pings for 0.5 s; the bytes it sent."""
            last = -1000
            while (now := node.service.peers()[0].bytes_out) - last > 100:
                last = now
                await asyncio.sleep(0.5)
            return now

        try:
            hashes = tuple(b.hash for b in BLOCKS[:4])
            chain_bytes = sum(len(b.encode()) for b in BLOCKS[:4])
            request = GetData(kind=InvKind.BLOCK, hashes=hashes * 32)  # 128 hashes
            sent = 0
            for _ in range(19):  # 19 × 5 = 95 points: just under a ban
                await raw.send(request)
                sent += len(request.encode())
            await quiet()
            link = node.service.peers()[0]
            assert link.bytes_in < sent + 4096
            assert link.bytes_out < chain_bytes + sent + 4096  # versus 128 × 128 blocks before
            repeated = [r for r in node.service.offences if r.offence is Offence.REPEATED_GETDATA]
            assert len(repeated) == 19
            # Distinct blocks: the upload bucket paces them (16 KiB/s here).
            before = link.bytes_out
            loop = asyncio.get_running_loop()
            start = loop.time()
            await raw.send(GetData(kind=InvKind.BLOCK, hashes=tuple(b.hash for b in BLOCKS[4:24])))
            served = await quiet() - before
            elapsed = loop.time() - start - 0.5
            print(f"getdata: {sent} B in, {link.bytes_out} B out for 19 x 128 repeated blocks; "
                  f"then {served} B of fresh blocks in {elapsed:.1f}s at a {upload} B/s cap")
            assert 20 * 311 <= served <= upload * elapsed + upload + 1024
            assert node.service._relay.upload_deferrals > 0
        finally:
            await raw.close()
            await node.stop()

    run(scenario())


def test_a_peer_is_not_dropped_for_stalling_while_we_are_the_slow_side(tmp_path: Path) -> None:
    """Our block processing takes 0.25 s a block while the stall timeout is 1 s: 16 blocks delivered
    at once wait up to 4 s in our queue. Before, that dropped the honest peer for stalling."""

    async def scenario() -> None:
        source = await TestNode(tmp_path / "source", BLOCKS[:30]).start()
        node = await TestNode(tmp_path / "node").start()
        real_submit = node.backend.submit_block

        async def slow_submit(block: Block, peer: str) -> BlockOutcome:
            await asyncio.sleep(0.25)
            return await real_submit(block, peer)

        node.backend.submit_block = slow_submit  # type: ignore[method-assign]
        try:
            await node.connect_to(source)
            await sync_blocks([node, source], timeout=30)
            assert not [r for r in node.service.offences if r.offence is Offence.STALLING]
            assert node.service.peers()
        finally:
            await node.stop()
            await source.stop()

    run(scenario(), timeout=60)


class _StubPeer:
    address = "stub:1"
    gone = False
    best_height = 100

    def __init__(self) -> None:
        self.blocks_queued = 0


def test_stall_clock_pauses_while_the_backend_is_busy_or_the_loop_was_held() -> None:
    now = [0.0]
    busy = [False]
    backend = MemoryBackend(*genesis(), RULES)
    backend.is_busy = lambda: busy[0]  # type: ignore[attr-defined]
    punished: list[Offence] = []
    sync = BlockSync(backend, FAST, punish=lambda _p, o, _d: punished.append(o),
                     on_accepted=lambda _b, _s: None, clock=lambda: now[0])
    peer = _StubPeer()
    fake: Any = peer
    state = _PeerSync()
    sync._peers[fake] = state
    block_hash = b"\x01" * 32
    sync._in_flight[block_hash] = _Request(fake, deadline=FAST.block_timeout)
    state.in_flight.add(block_hash)

    def tick(seconds: float, step: float = 0.25) -> None:
        end = now[0] + seconds
        while now[0] < end:
            now[0] += step
            sync._expire_requests()

    sync._expire_requests()
    busy[0] = True
    tick(5.0)  # backend saturated: the request's clock stands still
    busy[0] = False
    peer.blocks_queued = 1
    tick(5.0)  # it delivered blocks we have not processed yet: still ours to answer for
    peer.blocks_queued = 0
    tick(0.0)
    now[0] += 30.0  # the loop was held up 30 s (one late tick): not the peer's fault either
    sync._expire_requests()
    assert block_hash in sync._in_flight and state.stalls == 0
    tick(1.5)  # now it really is the peer
    assert block_hash not in sync._in_flight and state.stalls == 1


def test_unsolicited_header_floods_are_not_stored(tmp_path: Path) -> None:
    """Headers enter the store only at the pace of our requests: 30 headers nobody asked for are
    dropped and scored; an announcement of up to 8 is still taken."""

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node").start()
        raw = await idle_peer("127.0.0.51", node.port)
        assert raw is not None
        try:
            await wait_until(lambda: len(node.service.peers()) == 1, "handshake done on the node's side")
            flood = Headers(headers=tuple(sealed_headers([(b.header, b.seal) for b in BLOCKS[:30]])))
            await raw.send(flood)
            await wait_until(lambda: bool(node.service.offences), "scored")
            assert [r.offence for r in node.service.offences] == [Offence.UNREQUESTED_HEADERS]
            assert node.backend.block_locator() == [GENESIS_BLOCK.hash]  # nothing stored
            announce = Headers(headers=flood.headers[:8])
            await raw.send(announce)
            await wait_until(lambda: node.backend.block_locator()[0] == BLOCKS[7].hash, "announced")
        finally:
            await raw.close()
            await node.stop()

    run(scenario())


def test_a_transaction_is_served_once_per_link(tmp_path: Path) -> None:
    """GetData naming one mempool transaction 5,000 times gets it once (the rest NotFound, scored)."""

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node").start()
        tx = transfer(KEYS[0], KEYS[5].address, 10, nonce=0)
        node.submit_tx(tx)
        raw = RawPeer("127.0.0.52")
        try:
            await raw.handshake(node.port)
            await raw.send(GetData(kind=InvKind.TX, hashes=(tx.txid,) * 5_000))
            heard = await raw.drain(0.5)
            assert sum(isinstance(m, TxMessage) for m in heard) == 1
            assert [r.offence for r in node.service.offences] == [Offence.REPEATED_GETDATA]
        finally:
            await raw.close()
            await node.stop()

    run(scenario())
