"""In-process helpers for node tests: a ChainService on regtest, and real PoUW mining of blocks.

Blocks are mined for real with the PoUW core (regtest's target is easy, so a block takes a few
training steps); ``forge`` mines a block under any header the test wants, so a test can provoke
each validation rule with an otherwise valid block.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from chain.state import get_job
from chain.transition import post_state_root, transition
from chain.types import Block, Header, Seal, SignedTx, tx_root, work_hash_of
from consensus.presets import REGTEST_PRESET, Preset, model_config
from consensus.seal import header_trajectory_seed
from node.chain_service import ChainService
from pouw.backends import get_backend
from pouw.datasets import digits
from pouw.mining import Miner, MineResult
from pouw.model import ModelState
from wallet.keys import PrivateKey

CPU = get_backend("cpu")


async def start_service(datadir: Path, preset: Preset = REGTEST_PRESET, clock: float | None = None,
                        verify_workers: int = 0) -> ChainService:
    service = ChainService(preset, datadir, verify_workers=verify_workers,
                           clock=(lambda: clock) if clock is not None else time.time)
    await service.start()
    return service


def mine_header(service: ChainService, header: Header) -> MineResult:
    """Train the header's job from its start state until a tile of ``header`` wins, never past the
    steps the job has left (a seal claiming more is invalid: ``bad-job-progress``)."""
    job = get_job(service.db.state, header.job_id)
    if job is None:
        raise ValueError("unknown job")
    config = model_config(job.spec)
    start = ModelState.decode(service.job_start_model(header.job_id), config)
    miner = Miner(service.preset.pouw, config, digits(), start,
                  header_trajectory_seed(header), CPU)
    max_steps = min(job.steps_left, service.preset.pouw.max_steps_per_block)
    while miner.steps < max_steps:
        result = miner.mine(header.lottery_seed, header.target, min(64, max_steps - miner.steps))
        if result is not None:
            return result
    raise RuntimeError("no winning tile found")


def forge(service: ChainService, key: PrivateKey, txs: tuple[SignedTx, ...] = (), job_id: bytes | None = None,
          **header_changes: object) -> Block:
    """A block on the head (training ``job_id``, or the best job) mined for real under a header with
    ``header_changes`` applied; its state root is computed without signature checks, so a test can
    put a badly signed tx inside."""
    template = service._template(key.address, job_id)
    header = dataclasses.replace(template.header, tx_root=tx_root(txs))
    header = dataclasses.replace(header, **header_changes)  # type: ignore[arg-type]
    result = mine_header(service, header)
    claim = result.seal_claim
    seal = Seal(steps=claim.steps, final_state_hash=claim.final_state_hash,
                trajectory_root=claim.trajectory_root, prefix_root=claim.prefix_root, state_root=bytes(32),
                work_hash=work_hash_of(result.work_bytes), proof=claim.proof)
    try:
        diff = transition(service.db.state, header, seal, txs, service.rules, check_signatures=False)
        seal = dataclasses.replace(seal, state_root=post_state_root(service.db.state, diff))
    except Exception:
        pass  # the test wants a block the transition rejects: any root will do
    return Block(header=header, seal=seal, txs=txs, work=result.work_bytes)


async def mine_block(service: ChainService, key: PrivateKey, txs: tuple[SignedTx, ...] | None = None,
                     job_id: bytes | None = None) -> Block:
    """Mine one valid block on the head with the mempool's transactions (or ``txs``) and import it."""
    if txs is None:
        template = await service.template(key.address, job_id)
        txs = template.txs
    block = await service.read(forge, service, key, txs, job_id)
    outcome = await service.submit_block(block)
    if outcome.status.value != "accepted":
        raise AssertionError(f"mined block not accepted: {outcome}")
    return block
