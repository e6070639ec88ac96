"""The node core behind the ChainService facade: one stage-5 implementation for the inline and pool
paths, typed errors crossing the pool, and the immutable view that event-loop readers use."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

from chain.errors import InvalidBlock, InvalidTransaction, Reason
from chain.types import COIN, Transfer
from consensus.validation import FutureBlock
from node.chain_service import BlockStatusText, ChainService
from node.p2p_bridge import NodeBackend
from tests.node.harness import forge, mine_block, start_service
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x01" * 32)
OTHER = PrivateKey(b"\x02" * 32)


def _transfer(nonce: int) -> object:
    body = Transfer(chain_id=0x5057_00FF, nonce=nonce, fee=10_000, to=OTHER.address, amount=COIN, memo=b"")
    return sign_tx(MINER, body)


def test_validation_errors_pickle_with_their_type_and_reason() -> None:
    for error in (InvalidBlock(Reason.BAD_SEAL, "tile 3"), InvalidTransaction(Reason.NONCE_GAP, ""),
                  FutureBlock(Reason.FUTURE_TIMESTAMP, "ahead")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert back.reason is error.reason and back.detail == error.detail
        assert str(back) == str(error)


async def _reasons(service: ChainService) -> list[str | None]:
    """Submit one block per stage-5 failure, then a good one; return each outcome's reason."""
    await mine_block(service, MINER)
    good = await service.read(forge, service, MINER, ())
    proof = bytearray(good.seal.proof)
    proof[-5] ^= 1
    tx = _transfer(0)
    forged = dataclasses.replace(tx, signature=tx.signature[:40] + bytes(24))  # type: ignore[attr-defined]
    blocks = [
        dataclasses.replace(good, seal=dataclasses.replace(good.seal, state_root=bytes(32))),
        dataclasses.replace(good, seal=dataclasses.replace(good.seal, final_state_hash=bytes(32))),
        await service.read(forge, service, MINER, (forged,)),
        await service.read(forge, service, MINER, (_transfer(5),)),
        good,
    ]
    reasons = []
    for block in blocks:
        outcome = await service.submit_block(block)
        reasons.append(outcome.reason if outcome.status is BlockStatusText.INVALID else outcome.status.value)
    return reasons


async def test_inline_and_pool_paths_reject_alike(tmp_path: Path) -> None:
    """The same blocks get the same typed verdicts whether stage 5 runs inline or in the pool."""
    inline = await start_service(tmp_path / "inline", verify_workers=0)
    try:
        expected = await _reasons(inline)
    finally:
        await inline.stop()
    pooled = await start_service(tmp_path / "pooled", verify_workers=1)
    try:
        assert pooled.pool.running
        got = await _reasons(pooled)
    finally:
        await pooled.stop()
    assert expected == ["bad-state-root", "bad-state-root", "bad-signature", "nonce-gap", "accepted"]
    assert got == expected


async def test_p2p_backend_reads_the_published_view(tmp_path: Path) -> None:
    service = await start_service(tmp_path / "node")
    backend = NodeBackend(service)
    try:
        before = service.view
        block = await mine_block(service, MINER)
        # the old view is immutable: it still shows the chain as it was
        assert before.head.height == 0 and not NodeBackend._stored(before, block.hash)
        assert before.reader.get_block(block.hash) is None
        tip = backend.tip()
        assert (tip.height, tip.hash) == (1, block.hash)
        assert backend.has_block(block.hash) and backend.get_block(block.hash) == block
        assert backend.block_locator()[0] == block.hash
        assert [h.height for h, _ in backend.headers_after([service.genesis.hash], bytes(32), 10)] == [1]
        tx = _transfer(0)
        await service.submit_tx(tx)  # type: ignore[arg-type]
        txid = tx.txid  # type: ignore[attr-defined]
        assert backend.has_tx(txid) and backend.get_tx(txid) == tx
        assert backend.mempool_txids(10) == [txid]
        await mine_block(service, MINER)
        assert backend.mempool_txids(10) == [] and backend.has_tx(txid) and backend.get_tx(txid) is None
    finally:
        await service.stop()
    await service.stop()  # stopping twice is harmless
