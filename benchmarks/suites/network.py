"""Suite ``network``: block and transaction propagation latency across real nodes on loopback.

N regtest nodes (10; ``--quick`` 4) form a random graph: each node connects to up to two earlier
ones. Blocks are mined on node 0 one at a time (this process runs ``node.miner.MiningLoop`` against
node 0's API, and waits until every node has a block before mining the next, so the nodes are not
swamped: regtest can mine faster than validators can check); pollers on every node record when
each tip first appears, and a block's latency at a node is the time since node 0 showed it. Then
node 0 receives signed transfers one by one; a transaction's latency at a node is the time since
node 0 accepted it. Reported: p50/p95 over (item, node) pairs, and over items of the time until
the last node had it. All processes share this machine's cores, and the pollers' interval
(20 ms) bounds the resolution. Without a working p2p layer the suite records
``"status": "unavailable"`` with the reason.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from benchmarks.framework import RunContext, SuiteReport, figure, latency_summary, unavailable
from benchmarks.localnet import MINER_ADDRESS, MINER_KEY, FirstSeen, LocalNet, connection_problem, wait_for
from chain.types import Transfer
from consensus.presets import REGTEST_PRESET
from node.miner import MiningLoop, NodeClient
from pouw.backends import get_backend
from wallet.client import RpcCredentials
from wallet.txbuild import sign_tx

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "network"
DESCRIPTION = "block and transaction propagation latency (p50/p95) across regtest nodes on loopback"
POLL_S = 0.02
FEE = 20_000
RECIPIENT = bytes(range(20))
TOPOLOGY_SEED = 7


def topology(count: int) -> list[list[int]]:
    """For each node, the earlier nodes it connects to (a connected random graph)."""
    rng = random.Random(TOPOLOGY_SEED)
    return [sorted(rng.sample(range(i), min(2, i))) for i in range(count)]


def blocks(ctx: RunContext, nodes: list[Any], count: int) -> dict[str, Any]:
    """Mine ``count`` blocks on node 0, one at a time, timing each one's arrival at the others."""
    client = NodeClient(nodes[0].url, credentials=RpcCredentials(datadir=nodes[0].datadir))
    loop = MiningLoop(client, MINER_ADDRESS, get_backend("cpu"))

    def mine_one() -> str:
        loop.run(max_blocks=loop.stats.blocks_found + 1)
        tip: str = nodes[0].status()["tip"]
        wait_for(lambda: all(node.status()["tip"] == tip for node in nodes), 60, POLL_S)
        return tip

    mine_one()  # untimed: the first block also starts every node's verification worker
    with FirstSeen(nodes, lambda node: [node.status()["tip"]], POLL_S) as watch:
        mined = []
        for _ in ctx.progress(range(count), "propagating blocks"):
            mined.append(mine_one())
            time.sleep(3 * POLL_S)
    each, last = watch.latencies(watch.seen[0], mined)
    return {"status": "ok", "blocks": count, "warmup_blocks": 1, "per_node": latency_summary(each),
            "until_all_nodes": latency_summary(last)}


def transactions(nodes: list[Any], count: int) -> dict[str, Any]:
    """Send ``count`` transfers to node 0 and time their arrival in the other nodes' mempools."""
    nonce = int(nodes[0].get(f"/api/accounts/{MINER_ADDRESS}")["next_nonce"])
    accepted: dict[str, float] = {}

    def mempool(node: Any) -> list[str]:
        return [tx["txid"] for tx in node.get("/api/mempool")["txs"]]

    with FirstSeen(nodes, mempool, POLL_S) as watch:
        for i in range(count):
            body = Transfer(chain_id=REGTEST_PRESET.chain_id, nonce=nonce + i, fee=FEE, to=RECIPIENT, amount=1_000,
                            memo=b"")
            txid = nodes[0].post("/api/tx", {"tx": sign_tx(MINER_KEY, body).encode().hex()})["txid"]
            accepted[txid] = time.monotonic()
            time.sleep(0.1)
        wait_for(lambda: all(len(seen) >= count for seen in watch.seen), 60, 0.2)
        time.sleep(3 * POLL_S)
    each, last = watch.latencies(accepted, accepted)
    return {"status": "ok", "sent": count, "per_node": latency_summary(each), "until_all_nodes": latency_summary(last)}


def run(ctx: RunContext) -> SuiteReport:
    count = ctx.pick(10, 4, 3)
    block_count = ctx.pick(50, 15, 5)
    tx_count = ctx.pick(50, 15, 5)
    links = topology(count)
    with LocalNet() as net:
        nodes: list[Any] = []
        for peers in links:
            nodes.append(net.node(connect=[nodes[i] for i in peers], start=False))
        net.start_all(nodes)
        problem = connection_problem(nodes, ctx.pick(30.0, 15.0, 5.0))
        if problem is not None:
            results = {"blocks": unavailable(problem), "transactions": unavailable(problem)}
        else:
            results = {"blocks": blocks(ctx, nodes, block_count)}
            results["transactions"] = transactions(nodes, tx_count)
    return SuiteReport(
        parameters={"nodes": count, "links": links, "preset": "regtest", "blocks": block_count,
                    "transactions": tx_count, "poll_interval_s": POLL_S},
        results=results,
        headline=[headline(kind, results[kind]) for kind in ("blocks", "transactions")],
        figures={NAME: plot(results, count)} if all(r["status"] == "ok" for r in results.values()) else {},
    )


def headline(kind: str, result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{kind}: unavailable ({result['reason']})"
    each, last = result["per_node"], result["until_all_nodes"]
    if not each["count"]:
        return f"{kind}: no arrivals recorded"
    line = f"{kind}: p50 {1000 * each['p50_s']:.0f} ms, p95 {1000 * each['p95_s']:.0f} ms per node"
    if last["count"]:
        line += f"; all nodes p50 {1000 * last['p50_s']:.0f} ms, p95 {1000 * last['p95_s']:.0f} ms"
    return line


def plot(results: dict[str, Any], count: int) -> Figure:
    fig, axes = figure(2)
    for ax, kind in zip(axes, ("blocks", "transactions"), strict=True):
        samples = [1000 * s for s in results[kind]["per_node"].get("samples_s", [])]
        if samples:
            ax.hist(samples, bins=30)
        for q, style in (("p50_s", "--"), ("p95_s", ":")):
            if q in results[kind]["per_node"]:
                ax.axvline(1000 * results[kind]["per_node"][q], color="black", linestyle=style, label=q[:3])
        ax.set_title(f"{kind}: arrival delay at {count - 1} nodes")
        ax.set_xlabel("ms after node 0")
        ax.set_ylabel("count (item, node)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    return fig
