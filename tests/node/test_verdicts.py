"""What the node remembers, through its p2p backend: a mutated block never poisons its hash, the
best header falls back when its chain fails, a header that shows no work is not credited, and the
header tree stays within its bounds."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chain.errors import InvalidBlock
from chain.types import COIN, Header, Seal, SealedHeader, Transfer
from consensus.pouw_seal import check_tile
from node.chain_service import ChainService
from node.core import header_tree
from node.p2p_bridge import NodeBackend
from p2p.backend import BlockStatus, HeadersStatus
from tests.node.harness import forge, mine_block, start_service
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x01" * 32)
OTHER = PrivateKey(b"\x02" * 32)


async def test_a_relayed_block_with_a_changed_body_does_not_poison_its_hash(chain: ChainService) -> None:
    backend = NodeBackend(chain)
    await mine_block(chain, MINER)
    tx = sign_tx(MINER, Transfer(chain_id=0x5057_00FF, nonce=0, fee=10_000, to=OTHER.address, amount=COIN, memo=b""))
    genuine = await chain.read(forge, chain, MINER, (tx,))
    mutations = [dataclasses.replace(genuine, txs=body) for body in ((), (tx, tx))]
    mutations += [dataclasses.replace(genuine, work=genuine.work + b"\x00"), dataclasses.replace(genuine, work=b"")]
    for mutated in mutations:
        assert mutated.hash == genuine.hash  # the hash commits to the body; this body is not it
        outcome = await backend.submit_block(mutated, "relay")
        assert outcome.status is BlockStatus.INVALID and outcome.reason is not None
        assert outcome.reason.value == "mutated-block"
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


def _tile_wins(chain: ChainService, header: Header, seal: Seal) -> bool:
    try:
        check_tile(chain.preset, header, seal)
    except InvalidBlock:
        return False
    return True


async def test_every_header_tile_is_checked_whatever_its_job(chain: ChainService) -> None:
    """v2: the header carries its job's model config and σ covers the job, so a header's tile is
    checked from the header and seal alone: a header naming a job nobody created cannot borrow a
    real seal (its ticket is drawn under another σ), and is not credited."""
    backend = NodeBackend(chain)
    await mine_block(chain, MINER)
    good = await chain.read(forge, chain, MINER, ())
    # a job nobody created (one whose σ does not make the borrowed tile win by luck: at regtest's
    # easy target a fresh draw wins 1 time in 16, and would then be real lottery work)
    fakes = (dataclasses.replace(good.header, job_id=bytes([i]) * 32) for i in range(1, 200))
    fake = next(h for h in fakes if not _tile_wins(chain, h, good.seal))
    outcome = await backend.accept_headers([(fake, good.seal)])
    assert outcome.status is HeadersStatus.INVALID and outcome.reason is not None
    assert outcome.reason.value == "bad-seal"
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
