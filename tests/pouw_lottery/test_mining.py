"""Mining then verifying: honest seals pass, progress survives template changes, budgets hold."""

from __future__ import annotations

import dataclasses

import pytest

from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.engine import step_matmul_count, train
from pouw.errors import SealCheck, SealError
from pouw.mining import Miner, MiningProgress
from pouw.model import ModelState, make_state
from pouw.params import target_for_work
from pouw.proof import WorkData, checkpoint_positions, replay_plan, trajectory_root
from pouw.verify import verify_seal, verify_winning_tile
from tests.pouw_lottery.conftest import (
    CONFIG,
    HEADER_SEED,
    OLD_SEED,
    PARAMS,
    TARGET,
    TRAJECTORY_SEED,
    Mined,
)


def test_an_honest_seal_verifies(mined: Mined) -> None:
    verify_seal(**mined.verify_args())  # type: ignore[arg-type]
    claim = mined.result.seal_claim
    tile = verify_winning_tile(PARAMS, CONFIG, HEADER_SEED, TARGET, claim.proof, prefix_root=claim.prefix_root)
    assert tile.ticket == mined.result.ticket


def test_the_result_claims_exactly_the_plain_training_trajectory(mined: Mined) -> None:
    result, start = mined.result, mined.start
    assert result.proof.step == start.step + result.steps - 1  # the winning step is the last one
    final = train(CONFIG, start, mined.dataset, TRAJECTORY_SEED, mined.backend, result.steps)
    assert result.final_state == final
    assert result.seal_claim.final_state_hash == final.hash()
    positions = checkpoint_positions(result.steps, PARAMS.checkpoint_interval)
    states = [train(CONFIG, start, mined.dataset, TRAJECTORY_SEED, mined.backend, p) if p else start for p in positions]
    assert result.work.checkpoint_hashes == tuple(s.hash() for s in states)
    assert result.trajectory_root == trajectory_root([s.hash() for s in states])
    plan = replay_plan(result.steps, PARAMS.checkpoint_interval, result.steps - 1, 2, result.ticket)
    assert len(plan) == 4 and plan[0] == 0  # the fixture leaves a segment unreplayed
    assert result.work.checkpoints == tuple(states[s].encode() for s in plan if s)
    assert result.work.final_state == final.encode()


def test_new_templates_keep_the_trajectory_and_only_restart_tickets(
    mined: Mined, digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    """Ten steps across three templates then the winning template: the same seal as the fixture's
    ten steps under one old template."""
    miner = Miner(PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
    for seed, steps in ((b"a" * 32, 4), (b"b" * 32, 3), (b"c" * 32, 3)):
        assert miner.mine(seed, 0, steps) is None
    assert miner.steps == 10
    assert miner.state() == train(CONFIG, start_state, digits, TRAJECTORY_SEED, backend, 10)
    result = miner.mine(HEADER_SEED, TARGET, 200)
    assert result is not None
    assert result.seal_claim == mined.result.seal_claim
    assert result.work_bytes == mined.result.work_bytes


def test_tickets_of_an_older_template_are_spent(digits: Dataset, start_state: ModelState, backend: Backend) -> None:
    miner = Miner(PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
    first = miner.mine(OLD_SEED, TARGET, 200)
    assert first is not None
    second = miner.mine(HEADER_SEED, TARGET, 200)
    assert second is not None and second.steps > first.steps
    claim = second.seal_claim
    common = {
        "params": PARAMS,
        "config": CONFIG,
        "dataset": digits,
        "start_state": start_state,
        "trajectory_seed": TRAJECTORY_SEED,
        "target": TARGET,
        "backend": backend,
    }
    verify_seal(
        header_seed=HEADER_SEED,
        steps=claim.steps,
        final_state_hash=claim.final_state_hash,
        trajectory_root=claim.trajectory_root,
        prefix_root=claim.prefix_root,
        proof=claim.proof,
        work=second.work_bytes,
        **common,  # type: ignore[arg-type]
    )
    c0 = first.seal_claim
    verify_seal(
        header_seed=OLD_SEED,
        steps=c0.steps,
        final_state_hash=c0.final_state_hash,
        trajectory_root=c0.trajectory_root,
        prefix_root=c0.prefix_root,
        proof=c0.proof,
        work=first.work_bytes,
        **common,  # type: ignore[arg-type]
    )
    for header_seed in (OLD_SEED, HEADER_SEED):  # the old ticket cannot seal the longer shard
        with pytest.raises(SealError) as err:
            verify_seal(
                header_seed=header_seed,
                steps=claim.steps,
                final_state_hash=claim.final_state_hash,
                trajectory_root=claim.trajectory_root,
                prefix_root=claim.prefix_root,
                proof=c0.proof,
                work=second.work_bytes,
                **common,  # type: ignore[arg-type]
            )
        assert err.value.check in (SealCheck.STEPS, SealCheck.TARGET)


def test_progress_reports_and_stops(digits: Dataset, start_state: ModelState, backend: Backend) -> None:
    seen: list[MiningProgress] = []

    def progress(p: MiningProgress) -> bool:
        seen.append(p)
        return p.steps >= 3

    miner = Miner(PARAMS, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
    assert miner.mine(HEADER_SEED, 0, 100, progress) is None
    assert [p.steps for p in seen] == [1, 2, 3]
    assert seen[-1].macs == 3 * CONFIG.macs_per_step()
    assert seen[-1].tiles == 3 * 9 and step_matmul_count(CONFIG) == 5
    assert seen[0].best_ticket is not None and seen[-1].best_ticket is not None
    assert seen[-1].best_ticket <= seen[0].best_ticket
    assert miner.steps == 3


def test_the_block_step_cap_ends_mining(digits: Dataset, start_state: ModelState, backend: Backend) -> None:
    params = dataclasses.replace(PARAMS, max_steps_per_block=5)
    miner = Miner(params, CONFIG, digits, start_state, TRAJECTORY_SEED, backend)
    assert miner.mine(HEADER_SEED, 0, 3) is None and not miner.exhausted
    assert miner.mine(HEADER_SEED, 1 << 300, 100) is not None  # wins on its first step
    assert miner.mine(HEADER_SEED, 1 << 300, 100) is not None and miner.exhausted
    assert miner.mine(HEADER_SEED, 1 << 300, 100) is None
    assert miner.steps == 5


LONG_TARGET = target_for_work(PARAMS, 16 * CONFIG.macs_per_step())
"""About one win in 16 steps: shards long enough that some segment escapes the replay plan."""


class CommittedPrefixMiner(Miner):
    """An attacker's miner that continues a trajectory whose first leaves it made up: every draw is
    made under the running root of ``prefix`` followed by its own leaves (v2 commits them first)."""

    def __init__(self, prefix: tuple[bytes, ...], *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.prefix = prefix

    def draw_root(self) -> bytes:
        return trajectory_root([*self.prefix, *self._checkpoint_hashes])


def test_a_skipped_segment_is_caught_exactly_when_it_is_sampled(
    digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    """A cheat that skips segment 1 (jumps from S_3 to a made-up S_6, committed before it draws) and
    trains honestly from there: the seal passes iff the winning ticket's replay plan leaves segment
    1 out (detection odds)."""
    interval = PARAMS.checkpoint_interval
    s3 = train(CONFIG, start_state, digits, TRAJECTORY_SEED, backend, interval)
    fake = make_state(start_state.step + 2 * interval, list(s3.weights))
    outcomes: set[bool] = set()
    for attempt in range(40):
        seed = bytes([attempt]) * 32
        cheat = CommittedPrefixMiner(
            (start_state.hash(), s3.hash()), PARAMS, CONFIG, digits, fake, TRAJECTORY_SEED, backend
        )
        result = cheat.mine(seed, LONG_TARGET, 400)
        assert result is not None
        steps = 2 * interval + result.steps
        leaves = (start_state.hash(), s3.hash(), *result.work.checkpoint_hashes)
        plan = replay_plan(steps, interval, steps - 1, PARAMS.sampled_segments, result.ticket)
        starts = {1: s3} | {
            s: train(CONFIG, fake, digits, TRAJECTORY_SEED, backend, (s - 2) * interval) for s in plan if s >= 2
        }
        work = WorkData(leaves, tuple(starts[s].encode() for s in plan if s), result.final_state.encode())
        args = {
            "params": PARAMS,
            "config": CONFIG,
            "dataset": digits,
            "start_state": start_state,
            "trajectory_seed": TRAJECTORY_SEED,
            "header_seed": seed,
            "target": LONG_TARGET,
            "steps": steps,
            "final_state_hash": result.final_state.hash(),
            "trajectory_root": trajectory_root(leaves),
            "prefix_root": trajectory_root(leaves[:-1]),
            "proof": result.proof.encode(),
            "work": work.encode(),
            "backend": backend,
        }
        if 1 in plan:
            with pytest.raises(SealError) as err:
                verify_seal(**args)  # type: ignore[arg-type]
            assert err.value.check is SealCheck.REPLAY
        else:
            verify_seal(**args)  # type: ignore[arg-type]
        outcomes.add(1 in plan)
        if len(outcomes) == 2:
            break
    assert outcomes == {True, False}
