"""Blocks mined under a shard nonce through the node core (docs/protocol.md Part IV §6.1): a block of
shard 5 is accepted, the same seal under another nonce is a bad seal, and the node's template carries
the nonce the miner asked for."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from consensus.seal import header_trajectory_seed
from node.chain_service import BlockStatusText
from tests.node.harness import forge, start_service
from wallet.keys import PrivateKey

MINER = PrivateKey(b"\x05" * 32)


async def test_a_block_of_shard_five_is_accepted_and_its_seal_belongs_to_that_shard(tmp_path: Path) -> None:
    service = await start_service(tmp_path)
    try:
        template = await service.template(MINER.address, shard_nonce=5)
        assert template.header.shard_nonce == 5
        zero = await service.template(MINER.address)
        assert zero.header.lottery_seed != template.header.lottery_seed
        assert header_trajectory_seed(zero.header) != header_trajectory_seed(template.header)

        block = await service.read(forge, service, MINER, (), None, shard_nonce=5)
        assert block.header.shard_nonce == 5
        moved = dataclasses.replace(block, header=dataclasses.replace(block.header, shard_nonce=6))
        outcome = await service.submit_block(moved)
        assert outcome.status is BlockStatusText.INVALID and outcome.reason == "bad-seal"
        outcome = await service.submit_block(block)
        assert outcome.status.value == "accepted", outcome
        assert service.db.head.hash == block.hash
    finally:
        await service.stop()
