"""The shard nonce (docs/protocol.md Part I §5, Part IV §6.1, §12): a miner-chosen header field inside
both the lottery seed σ and the trajectory seed τ.

* σ and τ both change with the nonce; the timestamp and the transactions still change neither, so
  re-stamping a shard's template draws the same tickets;
* a shard that reaches the block cap without a win is followed by a shard under the next nonce,
  trained from the job's start state, which can win: its seal verifies under its own σ and τ only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chain.types import Header
from consensus.seal import header_trajectory_seed, trajectory_seed
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.errors import SealCheck, SealError
from pouw.mining import Miner, MiningProgress
from pouw.model import ModelState
from pouw.verify import verify_seal
from tests.pouw_lottery.conftest import CONFIG, PARAMS, TARGET, lottery_header

CAP = 4
SMALL = dataclasses.replace(PARAMS, max_steps_per_block=CAP)
HARD = TARGET // 4  # about one win every 16 steps: a shard of 4 steps is spent with odds ~0.77


def _header(**changes: Any) -> Header:
    return lottery_header(**{"target": HARD, **changes})


def test_sigma_and_tau_both_change_with_the_nonce_and_nothing_else_the_miner_restamps() -> None:
    headers = [_header(shard_nonce=n) for n in (0, 1, 2, 2**64 - 1)]
    assert len({h.lottery_seed for h in headers}) == len(headers)
    assert len({header_trajectory_seed(h) for h in headers}) == len(headers)
    assert len({h.hash for h in headers}) == len(headers)
    base = headers[1]
    for restamped in (dataclasses.replace(base, timestamp=base.timestamp + 60),
                      dataclasses.replace(base, tx_root=b"\x99" * 32)):
        assert restamped.hash != base.hash
        assert restamped.lottery_seed == base.lottery_seed
        assert header_trajectory_seed(restamped) == header_trajectory_seed(base)
    # τ is the documented hash; nonces are u64 (the header's encoding refuses more)
    assert trajectory_seed(base.job_id, base.start_state_hash, base.miner, 1) == header_trajectory_seed(base)
    with pytest.raises(ValueError):
        trajectory_seed(base.job_id, base.start_state_hash, base.miner, 2**64)
    decoded = Header.decode(headers[-1].encode())
    assert decoded.shard_nonce == 2**64 - 1 and decoded == headers[-1]


def _step_tickets(header: Header, digits: Dataset, start_state: ModelState, backend: Backend, steps: int) -> list[bytes]:
    """The best ticket of each of the first ``steps`` steps of the header's shard (target 0: no win)."""
    tickets: list[bytes] = []
    best: list[bytes | None] = [None]

    def record(progress: MiningProgress) -> bool:
        best.append(progress.best_ticket)
        return False

    miner = Miner(SMALL, CONFIG, digits, start_state, header_trajectory_seed(header), backend)
    for _ in range(steps):
        miner.mine(header.lottery_seed, 0, 1, record)
        assert best[-1] is not None
        tickets.append(best[-1])
    return tickets


def test_restamping_a_shard_draws_the_same_tickets_a_new_nonce_draws_new_ones(
    digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    base = _header(shard_nonce=3)
    same = [_step_tickets(h, digits, start_state, backend, 2) for h in (
        base, dataclasses.replace(base, timestamp=base.timestamp + 7), dataclasses.replace(base, tx_root=b"\x77" * 32),
    )]
    assert same[0] == same[1] == same[2]
    other = _step_tickets(_header(shard_nonce=4), digits, start_state, backend, 2)
    assert not set(other) & set(same[0])


def test_a_shard_spent_at_the_cap_continues_under_the_next_nonce_and_wins(
    digits: Dataset, start_state: ModelState, backend: Backend
) -> None:
    outcomes: list[tuple[int, Miner, Any]] = []
    for nonce in range(40):
        header = _header(shard_nonce=nonce)
        miner = Miner(SMALL, CONFIG, digits, start_state, header_trajectory_seed(header), backend)
        result = miner.mine(header.lottery_seed, header.target, 10 * CAP)  # the cap stops it, not the budget
        outcomes.append((nonce, miner, result))
        if result is not None:
            break
    nonce, miner, result = outcomes[-1]
    assert result is not None, "no shard won in 40 nonces"
    assert nonce > 0, "shard 0 won: the test needs a spent first shard (pick another start state)"
    for _, spent, spent_result in outcomes[:-1]:
        assert spent_result is None and spent.exhausted and spent.steps == CAP
    # the winning shard was trained from the job's start state: it claims at most the cap
    claim = result.seal_claim
    assert 1 <= claim.steps <= CAP and result.final_state.step == start_state.step + claim.steps
    header = _header(shard_nonce=nonce)
    args: dict[str, Any] = {
        "params": SMALL, "config": CONFIG, "dataset": digits, "start_state": start_state,
        "trajectory_seed": header_trajectory_seed(header), "header_seed": header.lottery_seed,
        "target": header.target, "steps": claim.steps, "final_state_hash": claim.final_state_hash,
        "trajectory_root": claim.trajectory_root, "proof": claim.proof, "work": result.work_bytes,
        "backend": backend, "prefix_root": claim.prefix_root,
    }
    verify_seal(**args)
    # the seal is bound to its nonce twice: under shard 0's σ its ticket is another (and loses) ...
    first = _header(shard_nonce=0)
    with pytest.raises(SealError) as err:
        verify_seal(**(args | {"header_seed": first.lottery_seed}))
    assert err.value.check is SealCheck.TARGET
    # ... and under shard 0's τ the batches differ, so the replay does not reach its checkpoints
    with pytest.raises(SealError) as err:
        verify_seal(**(args | {"trajectory_seed": header_trajectory_seed(first)}))
    assert err.value.check in (SealCheck.REPLAY, SealCheck.OPERANDS)
