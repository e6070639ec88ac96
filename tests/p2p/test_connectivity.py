"""Keeping connected: the ``connect`` list is redialled with backoff, and addresses learnt through
getaddr/addr are dialled up to the outbound target (one's own address is recognised and skipped)."""

from __future__ import annotations

from pathlib import Path

from tests.factories import build_chain
from tests.p2p.helpers import TestNode, run, sync_blocks, wait_until

BLOCKS, _ = build_chain(30)


def ports(node: TestNode) -> set[int]:
    return {int(info.address.rsplit(":", 1)[1]) for info in node.service.peers()}


def test_connect_list_is_redialled_after_the_peer_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        first = await TestNode(tmp_path / "a", BLOCKS[:10]).start()
        port = first.port
        node = await TestNode(tmp_path / "b", connect=[("127.0.0.1", port)]).start()
        try:
            await wait_until(lambda: ports(node) == {port}, "dialled from the connect list")
            await sync_blocks([first, node])
            await first.stop()
            await wait_until(lambda: not node.service.peers(), "saw it go")
            # Redials fail (and back off) until the peer is back on the same port with more blocks.
            again = await TestNode(tmp_path / "a2", BLOCKS, listen_port=port).start()
            try:
                await wait_until(lambda: ports(node) == {port}, "redialled", timeout=10)
                await sync_blocks([again, node])
                assert node.height == 30
            finally:
                await again.stop()
        finally:
            await node.stop()

    run(scenario())


def test_addresses_learnt_from_a_peer_are_dialled(tmp_path: Path) -> None:
    async def scenario() -> None:
        a = await TestNode(tmp_path / "a", BLOCKS).start()
        b = await TestNode(tmp_path / "b").start()
        c = await TestNode(tmp_path / "c").start()
        try:
            await b.connect_to(a)
            await c.connect_to(b)  # c asks b for addresses and hears of a (and of itself)
            await wait_until(lambda: a.port in ports(c), "c dialled a", timeout=10)
            await sync_blocks([a, b, c])
            assert ports(c) == {a.port, b.port}
            # c heard its own address too, but never dialled it.
            assert ("127.0.0.1", c.port) in c.service.addresses
            assert not c.service.offences
        finally:
            for node in (a, b, c):
                await node.stop()

    run(scenario())
