"""Real ``pouw-node`` processes as one network: gossip along a line, initial sync of a long chain, a
partition that heals onto the heavier branch, a node killed mid-sync, and bad peers against a real node."""

from __future__ import annotations

import asyncio
import hashlib
import time

from chain.types import COIN, Transfer
from consensus.presets import REGTEST_PRESET
from p2p.messages import Version
from tests.functional.conftest import Network
from tests.functional.framework import TestNode, connect_nodes, sync_blocks, sync_mempools, wait_until
from tests.p2p.helpers import RawPeer
from wallet.address import encode_address
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

KEYS = [PrivateKey(hashlib.sha256(b"p2p-functional-%d" % i).digest()) for i in range(4)]
ADDRESSES = [encode_address(k.address) for k in KEYS]
DIGITS = REGTEST_PRESET.builtin_job().job_id.hex()


def mine(network: Network, node: TestNode, address: str, blocks: int, timeout: float = 180) -> None:
    """Run a miner on ``node`` until it has ``blocks`` more blocks (a fast regtest miner may overshoot)."""
    height = node.height() + blocks
    miner = network.add_miner(node, address)
    try:
        wait_until(lambda: node.height() >= height, timeout, f"node{node.index} to reach height {height}")
    finally:
        miner.stop()


def state_of(node: TestNode) -> tuple[object, ...]:
    status = node.status()
    balances = tuple(node.balance(a) for a in ADDRESSES)
    job = node.get(f"/api/jobs/{DIGITS}")
    return status["tip"], balances, job["steps_done"], job["model_hash"]


def test_line_of_five_gossips_txs_and_blocks(network: Network) -> None:
    nodes = [network.add_node()]
    for _ in range(4):
        nodes.append(network.add_node(connect=[nodes[-1]]))
    wait_until(lambda: all(n.status()["peers"] >= 1 for n in nodes), 60, "every node to have a peer")
    # Blocks mined on one end reach the other end.
    mine(network, nodes[0], ADDRESSES[0], 3)
    sync_blocks(nodes)
    # A transaction sent to the last node reaches every mempool.
    tx = sign_tx(KEYS[0], Transfer(chain_id=REGTEST_PRESET.chain_id, nonce=0, fee=10_000, to=KEYS[1].address,
                                   amount=COIN, memo=b"gossip"))
    nodes[-1].post("/api/tx", {"tx": tx.encode().hex()})
    wait_until(lambda: all(n.get("/api/mempool")["count"] == 1 for n in nodes), 60, "the tx to reach all mempools")
    sync_mempools(nodes)
    # Mined at the far end, its confirmation reaches everyone.
    mine(network, nodes[4], ADDRESSES[2], 1)
    wait_until(lambda: nodes[4].get(f"/api/tx/{tx.txid.hex()}")["status"] == "confirmed", 60, "the tx to confirm")
    sync_blocks(nodes)
    assert all(n.balance(ADDRESSES[1]) == COIN for n in nodes)
    assert all(n.get("/api/mempool")["count"] == 0 for n in nodes)


def test_new_node_syncs_200_blocks_then_survives_kill_9(network: Network) -> None:
    source = network.add_node()
    mine(network, source, ADDRESSES[0], 200, timeout=300)
    height = source.height()
    fresh = network.add_node(connect=[source])
    started = time.monotonic()
    wait_until(lambda: fresh.height() >= 60, 120, "the new node to start syncing")
    fresh.kill()  # kill -9 mid-sync
    fresh.start()
    sync_blocks([source, fresh], 240)
    assert fresh.height() == height
    assert state_of(fresh) == state_of(source)
    print(f"synced {height} blocks (with a kill -9 halfway) in {time.monotonic() - started:.1f}s")


def test_partition_heals_onto_the_heavier_branch(network: Network) -> None:
    a = network.add_node()
    b = network.add_node(connect=[a])
    mine(network, a, ADDRESSES[0], 3)
    sync_blocks([a, b])
    # Partition: b restarts without peers; each side mines its own branch, b's is longer.
    b.stop()
    b.connect = []
    b.extra_args = ["--no-listen"]
    b.start()
    mine(network, a, ADDRESSES[1], 2)
    while b.height() <= a.height() + 2:  # b's branch ends clearly longer, hence heavier
        mine(network, b, ADDRESSES[2], a.height() + 3 - b.height())
    assert a.status()["tip"] != b.status()["tip"]
    heavier = b.status()["tip"]
    # Heal: b (which does not listen) dials a.
    connect_nodes(b, a)
    tip = sync_blocks([a, b], 120)
    assert tip == heavier
    assert state_of(a) == state_of(b)
    assert a.balance(ADDRESSES[1]) == 0  # a's own branch fell off
    assert a.balance(ADDRESSES[2]) > 0


async def _bad_peers(node: TestNode, honest: TestNode) -> list[str]:
    genesis = bytes.fromhex(node.status()["genesis"])

    def version(**changes: object) -> Version:
        import dataclasses

        base = Version(protocol_version=1, chain_id=REGTEST_PRESET.chain_id, genesis_hash=genesis, best_height=0,
                       best_work=0, user_agent="raw", nonce=99, listen_port=0)
        return dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    outcomes = []
    for host, act in (("127.0.0.21", "wrong-genesis"), ("127.0.0.22", "junk"), ("127.0.0.23", "oversized")):
        raw = RawPeer(host)
        try:
            await raw.open(node.p2p_port)
            if act == "wrong-genesis":
                await raw.send(version(genesis_hash=b"\x09" * 32))
            else:
                await raw.send(version())
                await raw.drain(0.5)
                from p2p.messages import Verack

                await raw.send(Verack())
                await raw.drain(0.5)
                await raw.send_frame(b"\xc1 junk" if act == "junk" else bytes(40 * 1024 * 1024))
            await raw.wait_closed(10)
            outcomes.append(act)
        except Exception as exc:  # the node may refuse the frame outright by closing the socket
            outcomes.append(f"{act}:{type(exc).__name__}")
        finally:
            await raw.close()
    return outcomes


def test_bad_peers_are_cut_off_and_honest_ones_keep_syncing(network: Network) -> None:
    node = network.add_node()
    honest = network.add_node(connect=[node])
    outcomes = asyncio.run(_bad_peers(node, honest))
    assert len(outcomes) == 3
    mine(network, node, ADDRESSES[0], 5)
    sync_blocks([node, honest], 60)  # the honest peer kept syncing through all of it
    assert node.is_up()
