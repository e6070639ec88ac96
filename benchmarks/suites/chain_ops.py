"""Suite ``chain``: the node's bookkeeping costs, and syncing a chain between two real nodes.

* signature verifications per second: libsecp256k1 (``coincurve``, the node's path) and the
  pure-Python ``ecdsa`` reference, through ``chain.crypto``;
* transactions validated per second: ``chain.transition.apply_tx`` of signed transfers on one
  ``Overlay`` over the genesis state, with and without the signature check;
* blocks imported per second into a LevelDB ``ChainDB`` (chains from tests/factories.py
  ``build_chain``: no-proof seals, signed transfers; each import is validated and one write batch);
* sync: node A mines N regtest blocks, node B starts with ``--connect`` A; the time from B's API
  answering until its tip equals A's. Without a working p2p layer this part records
  ``"status": "unavailable"`` and the reason.
"""

from __future__ import annotations

import functools
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.framework import RunContext, Samples, SuiteReport, figure, measure, rounded, unavailable
from benchmarks.localnet import LocalNet, connection_problem, repo_module, wait_for
from chain.crypto import verify_signature, verify_signature_reference
from chain.hashing import tagged_hash
from chain.transition import Overlay, apply_tx
from chain.types import SignedTx
from store.chaindb import ChainDB, connect_by_rules
from store.kv import LevelDBStore

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "chain"
DESCRIPTION = "signature checks/s, transactions validated/s, LevelDB block imports/s, two-node sync time"
SENDERS = 4  # the funded keys of tests/factories.py


def signatures(ctx: RunContext) -> dict[str, Any]:
    factories = repo_module("tests.factories")
    key = factories.KEYS[0]
    digests = [tagged_hash("pouw-bench/sig", i.to_bytes(8, "big")) for i in range(ctx.pick(256, 128, 32))]
    signed = [(digest, key.sign_digest(digest)) for digest in digests]
    repeats = ctx.pick(7, 5, 3)

    def cycling(verify: Callable[[bytes, bytes, bytes], None]) -> Callable[[], None]:
        pairs = itertools.cycle(signed)

        def one() -> None:
            digest, signature = next(pairs)
            verify(key.public_key, digest, signature)

        return one

    out: dict[str, Any] = {}
    for label, verify, min_s in (("coincurve", verify_signature, ctx.pick(0.2, 0.05, 0.01)),
                                 ("ecdsa", verify_signature_reference, ctx.pick(0.5, 0.1, 0.01))):
        timing = measure(cycling(verify), repeats, min_sample_s=min_s)
        out[label] = {**timing.to_json(), "verifications_per_s": rounded(timing.rate())}
    out["coincurve_speedup"] = rounded(out["ecdsa"]["median"] / out["coincurve"]["median"])
    return out


def transfers(count: int, first_nonce: list[int] | None = None) -> list[SignedTx]:
    """``count`` signed transfers, round-robin over the funded keys, nonces in order per sender."""
    factories = repo_module("tests.factories")
    nonces = list(first_nonce or [0] * SENDERS)
    txs = []
    for i in range(count):
        sender = i % SENDERS
        txs.append(factories.transfer(factories.KEYS[sender], factories.KEYS[5].address, 1_000 + i, nonces[sender]))
        nonces[sender] += 1
    return txs


def transactions(ctx: RunContext) -> dict[str, Any]:
    factories = repo_module("tests.factories")
    genesis, state = factories.genesis()
    header = factories.next_block(state, genesis).header
    txs = transfers(ctx.pick(2000, 500, 50))

    def apply_all(check_signature: bool) -> None:
        overlay = Overlay(state)
        for tx in txs:
            apply_tx(overlay, tx, header, factories.RULES, check_signature=check_signature)

    out: dict[str, Any] = {"transactions_per_sample": len(txs)}
    for label, check in (("with_signature", True), ("without_signature", False)):
        timing = measure(functools.partial(apply_all, check), ctx.pick(5, 5, 3))
        out[label] = {**timing.to_json(), "transactions_per_s": rounded(timing.rate(len(txs)))}
    return out


def block_import(ctx: RunContext) -> dict[str, Any]:
    factories = repo_module("tests.factories")
    count, per_block = ctx.pick(400, 100, 10), ctx.pick(20, 10, 4)
    txs = transfers(count * per_block)
    began = time.perf_counter()
    blocks, _ = factories.build_chain(count, txs_at={i: txs[i * per_block : (i + 1) * per_block] for i in range(count)})
    build_s = time.perf_counter() - began
    genesis, state = factories.genesis()
    seconds = []
    with tempfile.TemporaryDirectory(prefix="pouw-bench-db-") as tmp:
        db = ChainDB(LevelDBStore(Path(tmp) / "chain"), genesis, state, connect_by_rules(factories.RULES))
        try:
            for block in ctx.progress(blocks, "importing blocks"):
                start = time.perf_counter()
                db.import_block(block)
                seconds.append(time.perf_counter() - start)
            height = db.head.height
        finally:
            db.close()
    if height != count:
        raise RuntimeError(f"imported {count} blocks but the head is at {height}")
    timing = Samples(seconds)
    return {
        "blocks": count,
        "transactions_per_block": per_block,
        "build_s": rounded(build_s),
        "total_s": rounded(sum(seconds)),
        "import": timing.to_json(),
        "blocks_per_s": rounded(count / sum(seconds)),
        "transactions_per_s": rounded(count * per_block / sum(seconds)),
    }


def sync(ctx: RunContext) -> dict[str, Any]:
    """Mine N blocks into node A, start node B connected to A, time until B has A's tip."""
    target = ctx.pick(1000, 100, 10)
    connect_timeout = ctx.pick(30.0, 15.0, 5.0)
    with LocalNet() as net:
        a = net.node()
        miner = net.miner(a)
        began = time.monotonic()
        if not wait_for(lambda: a.height() >= target, 60 + target / 2, 0.2):
            raise RuntimeError(f"node A reached only height {a.height()} of {target}")
        miner.stop()
        mining_s = time.monotonic() - began
        tip, height = a.status()["tip"], a.height()
        b = net.node(connect=[a], start=False)
        launched = time.monotonic()
        b.start()
        up = time.monotonic()
        base = {"blocks": height, "mining_s": rounded(mining_s), "node_b_startup_s": rounded(up - launched)}
        problem = connection_problem([a, b], connect_timeout)
        if problem is not None:
            return unavailable(problem, **base)
        sync_timeout = 30 + height / 5
        if not wait_for(lambda: b.status()["tip"] == tip, sync_timeout, 0.05):
            return unavailable(f"connected, but node B was at height {b.height()} of {height} after "
                               f"{sync_timeout:.0f} s", **base)
        synced = time.monotonic() - up
    return {"status": "ok", **base, "sync_s": rounded(synced), "blocks_per_s": rounded(height / synced)}


def run(ctx: RunContext) -> SuiteReport:
    parts: dict[str, Callable[[RunContext], dict[str, Any]]] = {
        "signatures": signatures, "transactions": transactions, "block_import": block_import, "sync": sync,
    }
    results = {name: part(ctx) for name, part in ctx.progress(parts.items(), "chain parts", len(parts))}
    sig, txs, imports, synced = (results[name] for name in parts)
    sync_line = (f"sync {synced['blocks']} blocks in {synced['sync_s']:.3g} s ({synced['blocks_per_s']:.4g} blocks/s)"
                 if synced.get("status") == "ok" else f"sync unavailable: {synced['reason']}")
    return SuiteReport(
        parameters={"signature_keys": "tests/factories.py KEYS[0]", "sync_preset": "regtest",
                    "block_import_store": "LevelDB (plyvel)"},
        results=results,
        headline=[
            f"signatures: coincurve {sig['coincurve']['verifications_per_s']:.4g}/s, "
            f"ecdsa {sig['ecdsa']['verifications_per_s']:.4g}/s (x{sig['coincurve_speedup']:.3g})",
            f"apply_tx: {txs['with_signature']['transactions_per_s']:.4g} tx/s with signatures, "
            f"{txs['without_signature']['transactions_per_s']:.4g} tx/s without",
            f"LevelDB import: {imports['blocks_per_s']:.4g} blocks/s of {imports['transactions_per_block']} txs "
            f"({imports['transactions_per_s']:.4g} tx/s)",
            sync_line,
        ],
        figures={NAME: plot(results)},
    )


def plot(results: dict[str, Any]) -> Figure:
    fig, (rates, imports) = figure(2)
    sig, txs, blocks = results["signatures"], results["transactions"], results["block_import"]
    bars = {
        "verify\ncoincurve": sig["coincurve"]["verifications_per_s"],
        "verify\necdsa": sig["ecdsa"]["verifications_per_s"],
        "apply_tx\n+signature": txs["with_signature"]["transactions_per_s"],
        "apply_tx\nno signature": txs["without_signature"]["transactions_per_s"],
        "LevelDB import\n(txs in blocks)": blocks["transactions_per_s"],
    }
    rates.bar(list(bars), list(bars.values()), color=["C0", "C0", "C1", "C1", "C2"])
    rates.set_yscale("log")
    rates.set_ylabel("per second")
    rates.set_title("signature checks and transactions")
    rates.tick_params(axis="x", labelsize=7)
    rates.grid(alpha=0.3, axis="y", which="both")
    ms = [1000 * s for s in blocks["import"]["samples"]]
    imports.plot(range(1, len(ms) + 1), ms, linewidth=0.8)
    imports.set_xlabel("height")
    imports.set_ylabel("ms per block import")
    title = f"LevelDB import, {blocks['transactions_per_block']} transfers a block"
    synced = results["sync"]
    if synced.get("status") == "ok":
        title += f"\nsync of {synced['blocks']} blocks between two nodes: {synced['sync_s']:.3g} s"
    imports.set_title(title, fontsize=9)
    imports.grid(alpha=0.3)
    return fig
