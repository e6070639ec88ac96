"""The attacks of issue 11 played against the v2 rules through the project's API (docs/protocol.md §10).

* post-hoc trajectories: a winner that rewrites any leaf but the last after its win (to fill the
  segments its plan skips with junk) changes the running root its ticket was drawn under: rejected;
* grinding: a new timestamp or transaction set leaves σ, hence every ticket, unchanged;
* pay for progress: a one-step block earns one step's share of the subsidy;
* fabrication: committing junk for any fraction of the segments before the draw lowers the expected
  reward per unit of real work (exactly, with the replay plan the code draws).
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from math import comb
from typing import Any

import pytest

from chain.builder import make_header
from chain.transition import transition_with_reward
from chain.types import Header, Seal
from consensus.presets import DEVNET_PRESET, model_config
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.errors import SealCheck, SealError
from pouw.mining import Miner
from pouw.model import ModelState
from pouw.params import expected_block_macs
from pouw.prng import Prng
from pouw.proof import WorkData, replay_plan, segment_count, trajectory_root
from pouw.verify import verify_seal
from tests.pouw_lottery.conftest import CONFIG, PARAMS, TARGET, TRAJECTORY_SEED, Mined, lottery_header


def _header(**changes: Any) -> Header:
    return lottery_header(**changes)


# --- post-hoc trajectories ---------------------------------------------------------------------


def test_rewriting_any_committed_leaf_after_the_win_is_rejected(mined: Mined) -> None:
    """The v1 attack: win, read the plan, then replace the leaves of skipped segments by junk (and
    recompute the roots). Every leaf but the final one is under the winning step's running root,
    so the ticket is no longer the one that won: the tile check fails before any replay. (At the
    tightest target the honest seal meets, as on a real network where a fresh ticket almost never
    wins; at an easy target the new ticket may win by luck, and is then a fresh draw whose plan
    the carried checkpoints no longer match.)"""
    result = mined.result
    leaves = result.work.checkpoint_hashes
    assert len(leaves) >= 4
    tile_work = PARAMS.tile_m * PARAMS.tile_n * result.proof.k
    tight = int.from_bytes(result.ticket, "big") * PARAMS.reference_work // tile_work + 1
    verify_seal(**(mined.verify_args() | {"target": tight}))  # type: ignore[arg-type]
    checks: list[SealCheck] = []
    for position in range(1, len(leaves) - 1):
        junk = (*leaves[:position], bytes([position]) * 32, *leaves[position + 1 :])
        work = WorkData(junk, result.work.checkpoints, result.work.final_state)
        args = mined.verify_args() | {
            "trajectory_root": trajectory_root(junk), "prefix_root": trajectory_root(junk[:-1]),
            "work": work.encode(), "target": tight,
        }
        with pytest.raises(SealError) as err:
            verify_seal(**args)  # type: ignore[arg-type]
        checks.append(err.value.check)
        # keeping the old prefix root instead is caught by the trajectory check
        with pytest.raises(SealError) as err:
            verify_seal(**(args | {"prefix_root": result.prefix_root, "target": TARGET}))  # type: ignore[arg-type]
        assert err.value.check is SealCheck.TRAJECTORY
    # each rewrite is a fresh draw: it loses the ticket (TARGET) unless the new ticket happens to win
    # too (odds ticket/2^256, 2.3 % here), and then its new replay plan no longer fits the evidence
    assert set(checks) <= {SealCheck.TARGET, SealCheck.CHECKPOINT, SealCheck.REPLAY}
    assert checks.count(SealCheck.TARGET) >= len(checks) - 1


# --- grinding ----------------------------------------------------------------------------------


def test_a_new_timestamp_or_transaction_set_draws_no_new_ticket(
    digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    base = _header()
    regrinds = [_header(timestamp=base.timestamp + s) for s in (1, 2, 60)] + [
        _header(tx_root=bytes([i]) * 32) for i in range(3)
    ]
    results = []
    for header in (base, *regrinds):
        assert header.lottery_seed == base.lottery_seed and (header is base or header.hash != base.hash)
        miner = Miner(PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
        results.append(miner.mine(header.lottery_seed, header.target, 60))
    first = results[0]
    assert first is not None
    assert all(r is not None and r.ticket == first.ticket and r.proof == first.proof for r in results)
    # the re-stamped block carries the same winning ticket: no new draw, the same seal verifies
    claim = first.seal_claim
    verify_seal(
        PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, regrinds[-1].lottery_seed, TARGET, claim.steps,
        claim.final_state_hash, claim.trajectory_root, claim.proof, first.work_bytes, backend,
        prefix_root=claim.prefix_root,
    )


def test_a_new_miner_address_is_a_new_draw_only_with_new_training(
    digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    """σ covers the miner, and so does the trajectory seed τ: a new address re-draws, but its tickets
    come from a different batch sequence, i.e. another real training step each."""
    from consensus.seal import trajectory_seed

    a, b = _header(), _header(miner=b"\x66" * 20)
    assert a.lottery_seed != b.lottery_seed
    assert trajectory_seed(a.job_id, a.start_state_hash, a.miner, 0) != trajectory_seed(
        b.job_id, b.start_state_hash, b.miner, 0
    )


# --- pay for progress --------------------------------------------------------------------------


def test_a_one_step_block_earns_one_steps_share_of_the_subsidy() -> None:
    preset = DEVNET_PRESET
    genesis, state = preset.genesis()
    job = preset.builtin_job()
    header = make_header(
        parent=genesis.header, parent_hash=genesis.hash, timestamp=genesis.header.timestamp + 5,
        target=genesis.header.target, miner=b"\x01" * 20, job_id=job.job_id,
        start_state_hash=job.initial_model_hash, txs=(), spec=job.spec,
    )
    macs = model_config(job.spec).macs_per_step()
    expected = expected_block_macs(preset.pouw, header.target)
    assert expected == preset.expected_block_macs
    for steps in (1, 2, expected // macs, 4 * expected // macs):
        seal = Seal(steps=steps, final_state_hash=bytes(32), trajectory_root=bytes(32), prefix_root=bytes(32),
                    state_root=bytes(32), work_hash=bytes(32), proof=b"")
        reward = transition_with_reward(state, header, seal, (), preset.chain_rules)[1]
        assert reward.subsidy_paid == preset.subsidy(1) * min(steps * macs, expected) // expected
        assert reward.total == reward.subsidy_paid
    one = transition_with_reward(state, header, dataclasses.replace(seal, steps=1), (), preset.chain_rules)[1]
    assert one.subsidy_paid == preset.subsidy(1) * macs // expected  # 0.122 of 50 coins on devnet
    assert one.subsidy_paid * (expected // macs) <= preset.subsidy(1)


# --- fabrication -------------------------------------------------------------------------------


def pass_probability(segments: int, fabricated: int, sampled: int) -> Fraction:
    """P(no fabricated segment is replayed): the plan replays the first and last segment (which hold
    the start and the winning step, so a faker leaves them real) and ``sampled`` of the rest."""
    middle = segments - 2
    if middle <= 0:
        return Fraction(1 if fabricated == 0 else 0)
    draw = min(sampled, middle)
    return Fraction(comb(middle - fabricated, draw), comb(middle, draw))


def test_the_replay_plan_catches_fabrication_at_the_stated_odds() -> None:
    """The code's plan (over many tickets) against the closed form used below."""
    params = DEVNET_PRESET.pouw
    steps = 20 * params.checkpoint_interval
    segments = segment_count(steps, params.checkpoint_interval)
    fabricated = {3, 8, 11, 15}
    draws = 4000
    passed = 0
    for i in range(draws):
        ticket = Prng("test/tickets", i).bytes(32)
        plan = replay_plan(steps, params.checkpoint_interval, steps - 1, params.sampled_segments, ticket)
        passed += not fabricated & set(plan)
    exact = pass_probability(segments, len(fabricated), params.sampled_segments)
    assert abs(Fraction(passed, draws) - exact) < Fraction(3, 100)


@pytest.mark.parametrize("fee_per_step", [0, 3_000_000])
def test_fabricating_any_fraction_of_segments_lowers_the_expected_reward(fee_per_step: int) -> None:
    """A faker trains T real steps (its tickets, like an honest miner's, come only from real steps) and
    claims F more segments of junk committed before the draw. It sees its plan and publishes only
    when no junk segment is replayed: expected reward P_pass(M, F) · R(T + F·k) against R(T)."""
    preset = DEVNET_PRESET
    params = preset.pouw
    k, q = params.checkpoint_interval, params.sampled_segments
    macs = model_config(preset.builtin_job().spec).macs_per_step()
    expected = preset.expected_block_macs
    subsidy = preset.subsidy(1)
    burn_num, burn_den = preset.job_fee_burn

    def reward(steps: int) -> Fraction:
        pay = steps * fee_per_step
        return Fraction(subsidy * min(steps * macs, expected) // expected + pay - (-(-pay * burn_num // burn_den)))

    checked = 0
    for real_segments in (3, 5, 10, 26, 60, 200):
        real = real_segments * k
        honest = reward(real)
        for fabricated in range(1, 4 * real_segments + 1):
            segments = real_segments + fabricated
            faker = pass_probability(segments, fabricated, q) * reward(real + fabricated * k)
            assert faker < honest, (real_segments, fabricated, float(faker / honest))
            checked += 1
    assert checked > 500
