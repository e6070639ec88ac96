"""Every rejection rule of the validation pipeline, provoked with an otherwise valid, really mined block."""

from __future__ import annotations

import dataclasses
import time

from chain.state import get_account
from chain.transition import subsidy_paid
from chain.types import COIN, Block, Transfer, work_hash_of
from consensus.presets import model_config
from node.chain_service import BlockStatusText, ChainService
from tests.node.harness import forge, mine_block
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

MINER = PrivateKey(b"\x01" * 32)
OTHER = PrivateKey(b"\x02" * 32)


async def expect(service: ChainService, block: Block, reason: str, status: str = "invalid") -> None:
    outcome = await service.submit_block(block)
    assert outcome.status.value == status, outcome
    assert outcome.reason == reason, outcome


def transfer(key: PrivateKey, nonce: int, amount: int = COIN, fee: int = 10_000, chain_id: int | None = None,
             service: ChainService | None = None) -> object:
    body = Transfer(chain_id=chain_id if chain_id is not None else 0x5057_00FF, nonce=nonce, fee=fee,
                    to=OTHER.address, amount=amount, memo=b"")
    return sign_tx(key, body)


def earned(service: ChainService, block: Block) -> int:
    """The subsidy a block of the built-in job earns: its steps' share of the block's expected work."""
    macs = model_config(service.preset.builtin_job().spec).macs_per_step()
    return subsidy_paid(service.rules, block.height, block.header.target, block.seal.steps, macs)


async def test_valid_blocks_and_rewards(chain: ChainService) -> None:
    blocks = [await mine_block(chain, MINER) for _ in range(2)]
    assert chain.head.height == 2
    balance, _ = chain.balance(MINER.address)
    assert balance == sum(earned(chain, b) for b in blocks) > 0
    tx = transfer(MINER, 0)
    await chain.submit_tx(tx)  # type: ignore[arg-type]
    block = await mine_block(chain, MINER)
    assert len(block.txs) == 1
    assert get_account(chain.db.state, OTHER.address).balance == COIN
    # the fee comes back to the miner with the subsidy
    assert chain.balance(MINER.address)[0] == sum(earned(chain, b) for b in (*blocks, block)) - COIN


async def test_header_rules(chain: ChainService) -> None:
    await mine_block(chain, MINER)
    genesis_time = chain.genesis.header.timestamp
    await expect(chain, await chain.read(forge, chain, MINER, (), timestamp=genesis_time), "bad-timestamp")
    await expect(chain, await chain.read(forge, chain, MINER, (), version=1), "bad-version")
    head = chain.head_header()
    await expect(chain, await chain.read(forge, chain, MINER, (), target=head.target - 1), "bad-target")
    future = int(time.time()) + 3 * 3600
    await expect(chain, await chain.read(forge, chain, MINER, (), timestamp=future), "future-timestamp", "held")


async def test_seal_and_body_rules(chain: ChainService) -> None:
    await mine_block(chain, MINER)
    good = await chain.read(forge, chain, MINER, ())
    # winning tile: a byte of the proof flipped
    proof = bytearray(good.seal.proof)
    proof[-5] ^= 1
    await expect(chain, dataclasses.replace(good, seal=dataclasses.replace(good.seal, proof=bytes(proof))), "bad-seal")
    # post-state root
    await expect(chain, dataclasses.replace(good, seal=dataclasses.replace(good.seal, state_root=bytes(32))),
                 "bad-state-root")
    # trajectory: the final state hash does not match the work
    await expect(chain, dataclasses.replace(good, seal=dataclasses.replace(good.seal, final_state_hash=bytes(32))),
                 "bad-state-root")
    # the good block is still accepted after all that
    assert (await chain.submit_block(good)).status is BlockStatusText.ACCEPTED


async def test_transaction_rules_inside_blocks(chain: ChainService) -> None:
    await mine_block(chain, MINER)
    tx = transfer(MINER, 0)
    forged_sig = dataclasses.replace(tx, signature=tx.signature[:40] + bytes(24))  # type: ignore[attr-defined]
    await expect(chain, await chain.read(forge, chain, MINER, (forged_sig,)), "bad-signature")
    await expect(chain, await chain.read(forge, chain, MINER, (transfer(MINER, 5),)), "nonce-gap")
    await expect(chain, await chain.read(forge, chain, MINER, (transfer(OTHER, 0),)), "insufficient-balance")
    await expect(chain, await chain.read(forge, chain, MINER, (transfer(MINER, 0, chain_id=1),)), "wrong-chain-id")
    await expect(chain, await chain.read(forge, chain, MINER, (transfer(MINER, 0, fee=1),)), "fee-too-low")
    block = await chain.read(forge, chain, MINER, (tx,))
    await expect(chain, dataclasses.replace(block, txs=()), "mutated-block")  # the body its hash does not fix
    await expect(chain, await chain.read(forge, chain, MINER, (), start_state_hash=bytes(32)), "bad-job-progress")


async def test_structure_rules(chain: ChainService) -> None:
    await mine_block(chain, MINER)
    outcome = await chain.submit_raw_block(b"\x93junk")
    assert outcome.status is BlockStatusText.INVALID
    assert outcome.reason in ("malformed", "trailing-bytes", "non-canonical", "wrong-type")
    outcome = await chain.submit_raw_block(b"\x00" * (chain.preset.max_block_bytes + 1))
    assert outcome.reason == "block-too-large"
    orphan = await chain.read(forge, chain, MINER, (), prev_hash=b"\x07" * 32)
    await expect(chain, orphan, "unknown-parent", "orphan")
    bad = await chain.read(forge, chain, MINER, (), version=9)
    await expect(chain, bad, "bad-version")
    await expect(chain, bad, "known-invalid")
    wrong_height = await chain.read(forge, chain, MINER, (), height=7)
    await expect(chain, wrong_height, "bad-height")


async def test_replay_detects_a_tampered_checkpoint(chain: ChainService) -> None:
    await mine_block(chain, MINER)
    good = await chain.read(forge, chain, MINER, ())
    from pouw.proof import WorkData

    work = WorkData.decode(good.work)
    final = bytearray(work.final_state)
    final[-1] ^= 1  # the final model no longer matches what training produces
    tampered = dataclasses.replace(work, final_state=bytes(final)).encode()
    await expect(chain, dataclasses.replace(good, work=tampered), "mutated-block")  # work hash mismatch
    resealed = dataclasses.replace(good.seal, work_hash=work_hash_of(tampered))
    await expect(chain, dataclasses.replace(good, seal=resealed, work=tampered), "bad-seal")
    # the mutated copy poisoned nothing: the genuine block under the same hash is accepted
    assert (await chain.submit_block(good)).status is BlockStatusText.ACCEPTED
