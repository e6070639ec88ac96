"""What the node remembers, through its p2p backend: a mutated block never poisons its hash, the
best header falls back when its chain fails, a header that shows no work is not credited, and the
header tree stays within its bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chain.types import COIN, SealedHeader, Transfer
from node.chain_service import ChainService
from node.core import header_tree
from node.p2p_bridge import NodeBackend
from p2p.backend import BlockStatus, HeadersStatus
from tests.node.harness import forge, mine_block, start_service
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x01" * 32)
OTHER = PrivateKey(b"\x02" * 32)


@pytest.fixture
async def chain(tmp_path: Path):  # type: ignore[no-untyped-def]
    service = await start_service(tmp_path / "node")
    yield service
    await service.stop()


async def test_a_relayed_block_with_a_changed_body_does_not_poison_its_hash(chain: ChainService) -> None:
    backend = NodeBackend(chain)
    await mine_block(chain, MINER)
    tx = sign_tx(MINER, Transfer(chain_id=0x5057_00FF, nonce=0, fee=10_000, to=OTHER.address, amount=COIN, memo=b""))
    genuine = await chain.read(forge, chain, MINER, (tx,))
    for body in ((), (tx, tx)):
        mutated = dataclasses.replace(genuine, txs=body)
        assert mutated.hash == genuine.hash  # the hash does not cover the body
        outcome = await backend.submit_block(mutated, "relay")
        assert outcome.status is BlockStatus.INVALID and outcome.reason is not None
        assert outcome.reason.value == "bad-tx-root"
        assert genuine.hash not in chain.verdicts and not backend.has_block(genuine.hash)
    outcome = await backend.submit_block(genuine, "honest")
    assert outcome.status is BlockStatus.ACCEPTED, outcome
    assert chain.head.hash == genuine.hash


async def test_best_header_falls_back_when_its_block_fails(chain: ChainService) -> None:
    backend = NodeBackend(chain)
    await mine_block(chain, MINER)
    good = await chain.read(forge, chain, MINER, ())
    # a different state root: a different hash, the same winning tile; the header checks pass
    bad = dataclasses.replace(good, seal=dataclasses.replace(good.seal, state_root=bytes(32)))
    outcome = await backend.accept_headers([(bad.header, bad.seal)])
    assert outcome.status is HeadersStatus.OK and outcome.new == 1
    assert chain.view.best_header.hash == bad.hash and backend.blocks_to_fetch(10) == [(2, bad.hash)]
    assert (await backend.submit_block(bad, "peer")).status is BlockStatus.INVALID
    assert chain.view.best_header.hash == chain.head.hash != bad.hash
    assert backend.blocks_to_fetch(10) == [] and bad.hash not in chain.header_tree
    # the good block still goes through
    assert (await backend.submit_block(good, "peer")).status is BlockStatus.ACCEPTED


async def test_a_header_whose_tile_cannot_be_checked_is_not_credited(chain: ChainService) -> None:
    backend = NodeBackend(chain)
    await mine_block(chain, MINER)
    good = await chain.read(forge, chain, MINER, ())
    fake = dataclasses.replace(good.header, job_id=b"\x42" * 32)  # a job nobody created
    outcome = await backend.accept_headers([(fake, good.seal)])
    assert outcome.status is HeadersStatus.OK and outcome.new == 0  # not punished, not kept
    assert len(chain.header_tree) == 0 and chain.view.best_header.hash == chain.head.hash
    # a bad tile is caught off the writer thread and remembered against that header
    proof = bytearray(good.seal.proof)
    proof[-5] ^= 1
    broken = dataclasses.replace(good.seal, proof=bytes(proof))
    outcome = await backend.accept_headers([(good.header, broken)])
    assert outcome.status is HeadersStatus.INVALID and outcome.reason is not None
    assert outcome.reason.value == "bad-seal" and len(chain.header_tree) == 0
    outcome = await backend.accept_headers([(good.header, good.seal)])
    assert outcome.status is HeadersStatus.OK and outcome.new == 1


async def test_the_header_tree_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = await start_service(tmp_path / "source")
    try:
        blocks = [await mine_block(source, MINER) for _ in range(5)]
    finally:
        await source.stop()
    sealed = [SealedHeader(b.header, b.seal) for b in blocks]
    sizes = [len(s.header.encode()) + len(s.seal.encode()) for s in sealed]
    monkeypatch.setattr(header_tree, "MAX_HEADER_TREE", 3)
    node = await start_service(tmp_path / "node")
    try:
        new, error, _ = await node.accept_headers(sealed)
        assert error is None and new == 3 and len(node.header_tree) == 3
        assert node.best_header.hash == blocks[2].hash  # the best chain kept, its newest refused
        monkeypatch.setattr(header_tree, "MAX_HEADER_TREE", 100)
        monkeypatch.setattr(header_tree, "MAX_HEADER_TREE_BYTES", sum(sizes[:4]) + 1)
        new, error, _ = await node.accept_headers(sealed)
        assert error is None and new == 1 and len(node.header_tree) == 4
        assert node.headers.bytes == sum(sizes[:4])
        # blocks arriving free the room again
        for block in blocks[:2]:
            await node.submit_block(block, local=False)
        assert len(node.header_tree) == 2 and node.headers.bytes == sum(sizes[2:4])
    finally:
        await node.stop()
