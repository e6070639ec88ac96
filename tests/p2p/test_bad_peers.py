"""Misbehaving peers get the misbehaviour table's disconnect or ban, while an honest peer syncing
from the same node at the same time carries on; bans outlive a restart.

Each bad peer is a raw WebSocket client on its own loopback address (127.0.0.x), so a ban on it
cannot touch the honest node on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import msgpack
import pytest

from p2p.config import MessageClass
from p2p.messages import (
    MAX_INV_ITEMS,
    BlockMessage,
    GetData,
    Headers,
    InvKind,
    Ping,
    SealedHeader,
    encode_message,
)
from p2p.misbehavior import PENALTIES, Action, Offence
from p2p.testing import INVALID_PROOF
from tests.factories import KEYS, build_chain, transfer
from tests.p2p.helpers import (
    FAST,
    RawPeer,
    TestNode,
    local_version,
    refused,
    run,
    sync_blocks,
    wait_until,
)

CHAIN, STATE = build_chain(200)
NEXT, _ = build_chain(1, start=(CHAIN[-1], STATE), salt=b"next")
CONFIG = dataclasses.replace(FAST, max_message_bytes=1024 * 1024)

Act = Callable[[RawPeer, int], Awaitable[None]]


async def oversized_frame(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    await raw.send_frame(bytes(CONFIG.max_message_bytes + 1))


async def oversized_for_its_type(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    await raw.send_frame(encode_message(Ping(nonce=1))[:-1] + bytes(1000))


async def non_canonical(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    await raw.send_frame(b"\x92\x03\x91\xcf" + (5).to_bytes(8, "big"))  # 5 in the uint64 form


async def junk_after_handshake(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    await raw.send_frame(b"\xc1 definitely not msgpack")


async def text_frame(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    assert raw.ws is not None
    await raw.ws.send_str("hello")


async def wrong_genesis(raw: RawPeer, port: int) -> None:
    await raw.open(port)
    await raw.send(local_version(genesis_hash=b"\x02" * 32))


async def repeated_version(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    for _ in range(100 // PENALTIES[Offence.JUNK_AFTER_HANDSHAKE].score):
        await raw.send(local_version())


async def invalid_header_seal(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    block = NEXT[0]
    bad = SealedHeader(header=block.header, seal=dataclasses.replace(block.seal, proof=INVALID_PROOF))
    await raw.send(Headers(headers=(bad,)))


async def unrequested_block_flood(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    for block in CHAIN[:100 // PENALTIES[Offence.UNREQUESTED_BLOCK].score]:
        await raw.send(BlockMessage(block=block))


async def invalid_block_body(raw: RawPeer, port: int) -> None:
    """Announce a valid header, then answer the node's request with a body that does not match."""
    await raw.handshake(port, local_version(best_height=201, best_work=10**70))
    block = NEXT[0]
    await raw.send(Headers(headers=(SealedHeader(header=block.header, seal=block.seal),)))
    await raw.expect(GetData, lambda m: block.hash in m.hashes)
    stuffed = dataclasses.replace(block, txs=(transfer(KEYS[0], KEYS[1].address, 1, nonce=0),))
    await raw.send(BlockMessage(block=stuffed))


async def ping_flood(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    burst = int(CONFIG.rate_limits[MessageClass.CONTROL].message_burst)
    frame = encode_message(Ping(nonce=3))
    try:  # twice the burst: refills during the flood cannot save it; the node hangs up midway
        for _ in range(2 * burst):
            await raw.send_frame(frame)
    except (ConnectionError, aiohttp.ClientError):
        pass


async def too_many_inv_items(raw: RawPeer, port: int) -> None:
    await raw.handshake(port)
    await raw.send_frame(msgpack.packb([5, [InvKind.TX, [bytes(32)] * (MAX_INV_ITEMS + 1)]]))


CASES: list[tuple[str, Act, Offence]] = [
    ("oversized-frame", oversized_frame, Offence.OVERSIZED_MESSAGE),
    ("oversized-for-type", oversized_for_its_type, Offence.OVERSIZED_MESSAGE),
    ("non-canonical", non_canonical, Offence.MALFORMED_MESSAGE),
    ("junk-after-handshake", junk_after_handshake, Offence.MALFORMED_MESSAGE),
    ("text-frame", text_frame, Offence.MALFORMED_MESSAGE),
    ("wrong-genesis", wrong_genesis, Offence.WRONG_NETWORK),
    ("repeated-version", repeated_version, Offence.JUNK_AFTER_HANDSHAKE),
    ("invalid-header-seal", invalid_header_seal, Offence.INVALID_HEADER),
    ("unrequested-block-flood", unrequested_block_flood, Offence.UNREQUESTED_BLOCK),
    ("invalid-block", invalid_block_body, Offence.INVALID_BLOCK),
    ("ping-flood", ping_flood, Offence.RATE_LIMITED),
    ("too-many-inv-items", too_many_inv_items, Offence.TOO_MANY_INV_ITEMS),
]


@pytest.mark.parametrize(
    "index, act, offence", [(i, act, off) for i, (_, act, off) in enumerate(CASES)],
    ids=[name for name, _, _ in CASES],
)
def test_bad_peer_is_punished_while_an_honest_peer_keeps_syncing(
    tmp_path: Path, index: int, act: Act, offence: Offence
) -> None:
    bad_host = f"127.0.1.{index + 1}"
    banned = PENALTIES[offence].action is Action.BAN or PENALTIES[offence].action is Action.IGNORE

    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", CHAIN, config=CONFIG).start()
        honest = await TestNode(tmp_path / "honest", config=CONFIG).start()
        raw = RawPeer(bad_host)
        try:
            await honest.connect_to(node)  # starts syncing 200 blocks from genesis...
            await act(raw, node.port)  # ...while the bad peer misbehaves
            await raw.wait_closed()
            charged = {r.offence for r in node.service.offences if r.host == bad_host}
            assert charged == {offence}
            assert node.service.bans.is_banned(bad_host) is banned
            assert await refused(bad_host, node.port) is banned
            await sync_blocks([node, honest])
            # The honest link survived, and still carries new blocks.
            assert node.service.peers()[0].address.startswith("127.0.0.1:")
            assert len(node.service.peers()) == 1 and len(honest.service.peers()) == 1
            node.mine(3, salt=b"after")
            await sync_blocks([node, honest])
            assert honest.height == 203 and honest.backend.active_chain()[201] != NEXT[0].hash
        finally:
            await raw.close()
            await node.stop()
            await honest.stop()

    run(scenario())


def test_bans_persist_across_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path, config=CONFIG).start()
        raw = RawPeer("127.0.2.1")
        try:
            await non_canonical(raw, node.port)
            await raw.wait_closed()
        finally:
            await raw.close()
            await node.stop()
        assert (tmp_path / CONFIG.ban_file).exists()

        restarted = await TestNode(tmp_path, config=CONFIG).start()
        try:
            assert restarted.service.bans.is_banned("127.0.2.1")
            assert await refused("127.0.2.1", restarted.port)
            assert not await refused("127.0.2.2", restarted.port)
            restarted.service.ban("127.0.2.2", 60, "manual")
            await asyncio.sleep(0.05)  # the write happens off the loop
        finally:
            await restarted.stop()
        again = TestNode(tmp_path, config=CONFIG)
        again.service.bans.load()
        assert set(again.service.bans.entries()) == {"127.0.2.1", "127.0.2.2"}

    run(scenario())


def test_a_ban_drops_every_link_from_that_address(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path, config=CONFIG).start()
        quiet, noisy = RawPeer("127.0.3.1"), RawPeer("127.0.3.1")
        try:
            await quiet.handshake(node.port)
            await noisy.handshake(node.port)
            await wait_until(lambda: len(node.service.peers()) == 2, "both connected")
            await noisy.send_frame(b"\xc1")
            await noisy.wait_closed()
            await quiet.wait_closed()
            assert not node.service.peers()
        finally:
            await quiet.close()
            await noisy.close()
            await node.stop()

    run(scenario())
