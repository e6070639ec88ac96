"""Protocol v2 rewards (docs/protocol.md §8): the subsidy follows the useful work a seal proves, client
jobs below the fee floor earn no subsidy, a share of job pay is burned, and the supply adds up."""

from __future__ import annotations

import dataclasses

import pytest

from chain import schema
from chain.builder import make_header
from chain.errors import InvalidBlock, Reason
from chain.rules import ChainRules
from chain.state import Account, State, get_job, iter_jobs
from chain.transition import Reward, apply_block, transition_with_reward
from chain.types import COIN, Block, Seal
from tests.factories import BUILTIN, GENESIS, KEYS, RULES, genesis, job_submit, next_block

MACS = 1_000
"""Every job's MACs per step under these rules."""
EXPECTED = 64_000
"""A block's expected work: 64 steps."""
V2 = dataclasses.replace(
    RULES, macs_per_step=lambda spec: MACS, expected_block_work=lambda target: EXPECTED,
    min_subsidy_fee_per_mmac=1 << 20, job_fee_burn=(1, 8),
)
"""Subsidy-earning client jobs pay at least 1 base unit per MAC: 1,000 per step."""
SUBSIDY = 50 * COIN


def reward_of(state: State, parent: Block, rules: ChainRules, steps: int, job_id: bytes | None = None) -> Reward:
    job_id = BUILTIN.job_id if job_id is None else job_id
    job = get_job(state, job_id)
    assert job is not None
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=parent.header.target, miner=KEYS[7].address, job_id=job_id, start_state_hash=job.state_hash,
        txs=(), spec=job.spec,
    )
    seal = Seal(steps=steps, final_state_hash=bytes(32), trajectory_root=bytes(32), prefix_root=bytes(32),
                state_root=bytes(32), work_hash=bytes(32), proof=b"")
    return transition_with_reward(state, header, seal, (), rules)[1]


@pytest.mark.parametrize("steps", [1, 2, 17, 63, 64, 65, 1000])
def test_the_subsidy_is_the_share_of_expected_work_the_seal_proves(steps: int) -> None:
    parent, state = genesis()
    reward = reward_of(state, parent, V2, steps)
    assert reward.subsidy == SUBSIDY
    assert reward.subsidy_paid == SUBSIDY * min(steps * MACS, EXPECTED) // EXPECTED
    assert reward.job_released == reward.job_burned == 0 and reward.fees == 0
    if steps == 1:
        assert reward.subsidy_paid == SUBSIDY // 64  # one step's share
    assert reward.supply_change == reward.subsidy_paid


def test_client_jobs_below_the_fee_floor_earn_no_subsidy_and_pay_is_burned_in_part() -> None:
    parent, state = genesis()
    cheap = job_submit(KEYS[1], 0, steps=100, fee_per_step=MACS - 1, name="cheap")
    fair = job_submit(KEYS[2], 0, steps=100, fee_per_step=MACS, name="fair")
    block = next_block(state, parent, [cheap, fair], rules=V2)
    state = state.apply(apply_block(state, block, V2))
    below = reward_of(state, block, V2, 10, _job(cheap))
    assert below.subsidy_paid == 0
    assert below.job_released == 10 * (MACS - 1) and below.job_burned == -(-below.job_released // 8)
    at = reward_of(state, block, V2, 10, _job(fair))
    assert at.subsidy_paid == SUBSIDY * 10 // 64
    assert at.job_released == 10 * MACS and at.job_burned == 10 * MACS // 8
    assert at.total == at.subsidy_paid + 10 * MACS * 7 // 8


def test_mining_ones_own_job_never_beats_the_builtin_job() -> None:
    """Self-dealing: the miner pays the job fees to itself. The subsidy per MAC is the same on every
    eligible job and the burn takes 1/8 of the fees, so its net gain is the subsidy less the burn."""
    parent, state = genesis()
    own = job_submit(KEYS[3], 0, steps=1000, fee_per_step=5 * MACS, name="junk")
    block = next_block(state, parent, [own], rules=V2)
    state = state.apply(apply_block(state, block, V2))
    for steps in (1, 10, 64, 200):
        builtin = reward_of(state, block, V2, steps)
        self_job = reward_of(state, block, V2, steps, _job(own))
        fees_paid_to_self = steps * 5 * MACS
        net_self = self_job.total - fees_paid_to_self
        assert net_self < builtin.total
        assert builtin.total - net_self == self_job.job_burned > 0


def test_the_header_must_carry_its_jobs_model_config() -> None:
    parent, state = genesis()
    block = next_block(state, parent, rules=V2)
    for change in ({"dims": (64, 128, 64)}, {"batch_size": 32}, {"lr_shift": 9}):
        bad = dataclasses.replace(block, header=dataclasses.replace(block.header, **change))
        with pytest.raises(InvalidBlock) as err:
            apply_block(state, bad, V2)
        assert err.value.reason is Reason.BAD_JOB_CONFIG


def test_supply_adds_up_to_minted_subsidy_less_burns() -> None:
    """Σ balances + Σ escrows == genesis allocations + Σ (subsidy paid − job pay burned)."""
    parent, state = genesis()
    expected_supply = sum(amount for _, amount in GENESIS.allocations)
    submit = job_submit(KEYS[1], 0, steps=500, fee_per_step=2 * MACS)
    plan = [([submit], None, 3), ([], None, 1), ([], _job(submit), 40), ([], _job(submit), 7), ([], None, 90)]
    for txs, job_id, steps in plan:
        block = next_block(state, parent, txs, job_id=job_id, steps=steps, rules=V2)
        diff, reward = transition_with_reward(state, block.header, block.seal, block.txs, V2)
        state = state.apply(diff)
        expected_supply += reward.supply_change
        parent = block
        supply = sum(Account.decode(raw).balance for _, raw in state.items(schema.STATE_ACCOUNT))
        supply += sum(job.escrow for _, job in iter_jobs(state))
        assert supply == expected_supply
    assert expected_supply < sum(amount for _, amount in GENESIS.allocations) + 5 * SUBSIDY


def _job(tx: object) -> bytes:
    from chain.types import SignedTx, job_id_of

    assert isinstance(tx, SignedTx)
    return job_id_of(tx.txid)
