"""Transaction gossip: relay along a line of nodes, no echo to the sender, mempool on connect,
invalid transactions scored and not relayed, and blocks that confirm them clearing mempools."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

from p2p.messages import GetData, Inv, InvKind, TxMessage
from tests.factories import KEYS, next_block, transfer
from tests.p2p.helpers import (
    FAST,
    RawPeer,
    TestNode,
    run,
    sync_blocks,
    sync_mempools,
    wait_until,
)

LINE = dataclasses.replace(FAST, discover=False)


def test_transactions_cross_a_line_of_four_nodes_both_ways(tmp_path: Path) -> None:
    async def scenario() -> None:
        nodes = [await TestNode(tmp_path / str(i), config=LINE).start() for i in range(4)]
        try:
            for left, right in itertools.pairwise(nodes):
                await right.connect_to(left)
            assert [len(n.service.peers()) for n in nodes] == [1, 2, 2, 1]
            first = [transfer(KEYS[0], KEYS[5].address, 10 + n, nonce=n) for n in range(3)]
            for tx in first:
                nodes[0].submit_tx(tx)
            nodes[3].submit_tx(transfer(KEYS[1], KEYS[6].address, 7, nonce=0))
            await sync_mempools(nodes)
            assert len(nodes[2].backend.mempool) == 4
            # Still a line: gossip did not make the ends meet.
            assert [len(n.service.peers()) for n in nodes] == [1, 2, 2, 1]
            # A block confirming them, mined mid-line, empties every mempool.
            middle = nodes[1]
            parent = middle.backend.get_block(middle.backend.tip().hash)
            assert parent is not None
            block = next_block(middle.backend.tip_state(), parent, list(middle.backend.mempool.values()))
            middle.backend.import_blocks([block])
            middle.service.announce_block(block)
            await sync_blocks(nodes)
            await wait_until(lambda: all(not n.backend.mempool for n in nodes), "mempools emptied")
        finally:
            for node in nodes:
                await node.stop()

    run(scenario())


def test_relay_never_echoes_to_the_sender(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", config=LINE).start()
        neighbour = await TestNode(tmp_path / "neighbour", config=LINE).start()
        raw = RawPeer("127.0.0.11")
        try:
            await neighbour.connect_to(node)
            await raw.handshake(node.port)
            tx = transfer(KEYS[2], KEYS[5].address, 99, nonce=0)
            await raw.send(Inv(kind=InvKind.TX, hashes=(tx.txid,)))
            request = await raw.expect(GetData)
            assert request.hashes == (tx.txid,)
            await raw.send(TxMessage(tx=tx))
            await wait_until(lambda: neighbour.backend.has_tx(tx.txid), "relayed onwards")
            # The neighbour's own transaction is announced to the raw peer; ours never comes back.
            other = transfer(KEYS[3], KEYS[5].address, 98, nonce=0)
            neighbour.submit_tx(other)
            heard = await raw.drain(quiet=10 * LINE.inv_interval)
            announced = {h for m in heard if isinstance(m, Inv) for h in m.hashes}
            assert other.txid in announced and tx.txid not in announced
        finally:
            await raw.close()
            await node.stop()
            await neighbour.stop()

    run(scenario())


def test_new_peer_hears_of_the_mempool_and_invalid_txs_are_scored(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = await TestNode(tmp_path / "node", config=LINE).start()
        late = await TestNode(tmp_path / "late", config=LINE).start()
        raw = RawPeer("127.0.0.12")
        try:
            tx = transfer(KEYS[3], KEYS[5].address, 1, nonce=0)
            node.submit_tx(tx)
            await late.connect_to(node)
            await wait_until(lambda: late.backend.has_tx(tx.txid), "mempool announced on connect")

            await raw.handshake(node.port)
            good = transfer(KEYS[2], KEYS[5].address, 5, nonce=0)
            forged = dataclasses.replace(good, signature=bytes(63) + b"\x01")
            await raw.send(TxMessage(tx=forged))  # unsolicited transactions are accepted, if valid
            await wait_until(lambda: any(p.score == 10 for p in node.service.peers()), "scored")
            assert not node.backend.has_tx(forged.txid) and not late.backend.has_tx(forged.txid)
            gap = transfer(KEYS[2], KEYS[5].address, 5, nonce=5)  # harmless: a nonce gap
            await raw.send(TxMessage(tx=gap))
            await raw.send(TxMessage(tx=good))
            await wait_until(lambda: late.backend.has_tx(good.txid), "valid tx relayed")
            assert not late.backend.has_tx(gap.txid)
            assert sorted(p.score for p in node.service.peers()) == [0, 10]
        finally:
            await raw.close()
            await node.stop()
            await late.stop()

    run(scenario())
