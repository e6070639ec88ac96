"""Reward per unit of work of grinding and fabrication against honest mining, under the v2 rules.

Part of ``pouw-bench attack``. Every number comes from the code a validator runs: σ is
``Header.lottery_seed``, each step draws under ``pouw.proof.step_seed``, tickets come from the real
:class:`pouw.mining.Miner` (its noisy-transcript products count their MACs), the replay plan is
``pouw.proof.replay_plan``, fabricated seals go through ``pouw.verify.verify_seal``, and a block's
reward is what ``chain.transition.transition_with_reward`` credits the miner for a block of that many
steps on the preset's built-in job at its initial target (subsidy · min(steps · P, W) / W; the
built-in job pays no fee). ``reward per MAC`` = expected reward / expected MACs
of noisy products; the ratio to honest is what matters (>= 1 would pay the attacker).

* **honest**: trains its shard and draws every step; a win at step s claims s steps; a shard that
  reaches ``max_steps_per_block`` without a win is spent, and the miner trains a new shard under the
  next shard nonce from the job's start state (§6.1): reward per MAC is expected reward per shard
  over expected MACs per shard.
* **grind (re-stamp)**: re-draws the last step under new timestamps and transaction sets. σ leaves
  both out, so every re-stamp draws the very tickets already drawn: no new ticket, reward 0. (Under
  v1, σ over the whole header, each re-stamp gave a new ticket.) Measured: distinct best tickets of
  the step over the re-stamps, v2 and v1.
* **grind (one step per nonce)**: a new σ for the same tip comes from a new shard nonce (or miner
  address, or job); the nonce is in the trajectory seed τ too, so it draws the first step of a new
  shard, trained from the start state, and a win there claims one step: one step's share of the
  subsidy. Measured: distinct tickets of the first step over ``NONCES`` nonces with the real Miner
  (one per nonce, each after a full training step). Bounded here even if its draws cost nothing but
  the first matmul's noisy product.
* **grind (L steps per nonce)**: restarts its shard under a new nonce every L < cap steps (the best
  draws are early, all tickets being alike; the reward is not): the honest computation with cap L.
* **fabricate φ**: trains a fraction 1 − φ of its segments and fakes the rest (skips them: no MACs,
  no draws), claiming every step. The first and the winning segment must be real (always replayed).
  It publishes only when the plan (which it sees first) samples no fake segment: a caught plan costs
  it the win. Monte Carlo over real replay plans; a few real fabricated seals are checked by
  ``verify_seal`` (``verifier_agrees``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
from dataclasses import dataclass
from typing import Any

import torch

from chain.builder import make_header
from chain.errors import PouwError
from chain.genesis import builtin_job_id
from chain.hashing import tagged_hash
from chain.state import JobRecord, State, get_job
from chain.transition import transition_with_reward
from chain.types import Header, Seal
from consensus.presets import PRESETS as CHAIN_PRESETS
from consensus.presets import Preset, model_config
from consensus.seal import header_trajectory_seed
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.mining import Miner, MiningProgress
from pouw.model import ModelConfig, ModelState, init_state
from pouw.params import target_for_work
from pouw.proof import replay_plan, segment_count, trajectory_root
from pouw.verify import SealError, verify_seal

FAKE_FRACTIONS = (0.1, 0.25, 0.5)
RESTAMPS = 4
NONCES = 4
SHORT_SHARDS = (16, 256)


@dataclass(frozen=True, eq=False)
class Setting:
    preset: Preset
    config: ModelConfig
    dataset: Dataset
    job_id: bytes
    job: JobRecord
    header: Header
    start: ModelState
    state: State


def setting(name: str, miner: bytes = b"\x07" * 20) -> Setting:
    preset = CHAIN_PRESETS[name]
    genesis, state = preset.genesis()
    builtin = preset.builtin_job()
    job_id = builtin_job_id(builtin.name)
    job = get_job(state, job_id)
    if job is None:
        raise PouwError("no built-in job in the genesis state")
    header = make_header(
        parent=genesis.header, parent_hash=genesis.hash, timestamp=genesis.header.timestamp + preset.block_time,
        target=preset.initial_target, miner=miner, job_id=job_id, start_state_hash=job.state_hash, txs=(),
        spec=job.spec,
    )
    config = model_config(job.spec)
    return Setting(preset, config, preset.builtin_dataset(), job_id, job, header, init_state(config, job.init_seed),
                   state)


@functools.lru_cache(maxsize=1 << 16)
def reward(s: Setting, steps: int) -> int:
    """What a block of ``steps`` steps on the built-in job credits its miner (the state transition)."""
    seal = Seal(steps=steps, final_state_hash=bytes(32), trajectory_root=bytes(32), prefix_root=bytes(32),
                state_root=bytes(32), work_hash=bytes(32), proof=b"")
    _, paid = transition_with_reward(s.state, s.header, seal, (), s.preset.chain_rules)
    return paid.total


def new_miner(s: Setting, backend: Backend, header: Header | None = None) -> Miner:
    return Miner(s.preset.pouw, s.config, s.dataset, s.start, header_trajectory_seed(header or s.header), backend)


def step_cost(s: Setting, backend: Backend, steps: int) -> tuple[int, int]:
    """(noisy-product MACs, tiles) of one honest mining step, measured on the real Miner."""
    miner = new_miner(s, backend)
    miner.mine(s.header.lottery_seed, 0, steps)
    return miner.macs // steps, miner.tiles // steps


def win_probability_per_step(s: Setting, macs: int) -> float:
    """A step's chance to win: every MAC has odds target / (reference_work · 2^256)."""
    per_mac = s.header.target / (s.preset.pouw.reference_work * 2.0**256)
    return -math.expm1(macs * math.log1p(-per_mac))


def honest(s: Setting, p: float, step_macs: int, shard_steps: int | None = None) -> dict[str, Any]:
    """A miner that restarts its shard under a new nonce after ``shard_steps`` steps without a win
    (the block cap, for an honest miner): a renewal process, one shard per cycle."""
    cap = shard_steps or s.preset.pouw.max_steps_per_block
    expected_reward = expected_steps = 0.0
    survive = 1.0
    for steps in range(1, cap + 1):
        win = survive * p
        expected_reward += win * reward(s, steps)
        expected_steps += survive  # the step is run if no earlier step won
        survive *= 1 - p
    return {"expected_reward_per_shard": expected_reward, "expected_macs_per_shard": expected_steps * step_macs,
            "reward_per_mac": expected_reward / (expected_steps * step_macs),
            "expected_steps_per_win": 1 / p, "spent_shard_probability": survive}


def best_ticket_of_one_step(miner: Miner, seed: bytes) -> bytes | None:
    tickets: list[bytes | None] = []

    def record(progress: MiningProgress) -> bool:
        tickets.append(progress.best_ticket)
        return False

    miner.mine(seed, 0, 1, record)
    return tickets[-1]


def grind_restamp(s: Setting, backend: Backend) -> dict[str, Any]:
    """Distinct tickets of one step drawn under ``RESTAMPS`` re-stamped templates (v2 σ and v1 σ)."""
    v2: set[bytes | None] = set()
    v1: set[bytes | None] = set()
    for i in range(RESTAMPS):
        header = dataclasses.replace(s.header, timestamp=s.header.timestamp + i,
                                     tx_root=tagged_hash("bench/tx-set", bytes([i])))
        for seed, seen in ((header.lottery_seed, v2), (tagged_hash("pouw/header", header.encode()), v1)):
            miner = new_miner(s, backend, header)
            seen.add(best_ticket_of_one_step(miner, seed))
    return {"restamps": RESTAMPS, "distinct_tickets_v2": len(v2), "distinct_tickets_v1": len(v1),
            "new_tickets_per_restamp_v2": (len(v2) - 1) / (RESTAMPS - 1), "reward_per_mac": 0.0}


def grind_one_step(s: Setting, backend: Backend, p: float, step_macs: int) -> dict[str, Any]:
    """One step per shard nonce: every nonce is a fresh shard (new σ and τ), its first step trained
    from the start state by the real Miner; a win claims one step."""
    tickets: set[bytes | None] = set()
    trained = 0
    for nonce in range(1, NONCES + 1):
        header = dataclasses.replace(s.header, shard_nonce=nonce)
        miner = new_miner(s, backend, header)
        tickets.add(best_ticket_of_one_step(miner, header.lottery_seed))
        trained += miner.steps
    first_matmul_share = s.config.batch_size * s.config.dims[0] * s.config.dims[1] / step_macs
    per_mac = p * reward(s, 1) / step_macs
    return {"nonces": NONCES, "distinct_tickets": len(tickets), "steps_trained_per_nonce": trained / NONCES,
            "reward_per_win": reward(s, 1), "reward_per_mac": per_mac,
            "first_matmul_share_of_step_macs": first_matmul_share,
            "reward_per_mac_if_draws_cost_only_the_first_matmul": per_mac / first_matmul_share}


def fabricate(s: Setting, p: float, step_macs: int, phi: float, trials: int, rng: random.Random) -> dict[str, Any]:
    """Monte Carlo over real replay plans: the faker's shard runs real steps until a win; every
    segment but the first and the winning one is faked with probability ``phi`` (and skipped)."""
    params = s.preset.pouw
    k, cap = params.checkpoint_interval, params.max_steps_per_block
    total_reward = total_real = escapes = wins = 0
    for _ in range(trials):
        claimed = real = 0
        fakes: set[int] = set()
        segment = 0
        won = False
        while claimed < cap and not won:
            if segment > 0 and rng.random() < phi and claimed + k < cap:
                fakes.add(segment)
                claimed += k
            else:
                for _ in range(min(k, cap - claimed)):
                    claimed += 1
                    real += 1
                    if rng.random() < p:
                        won = True
                        break
            segment += 1
        total_real += real
        if not won:
            continue
        wins += 1
        fakes.discard(segment_count(claimed, k) - 1)  # the winning segment was trained for real
        ticket = rng.randbytes(32)
        plan = set(replay_plan(claimed, k, claimed - 1, params.sampled_segments, ticket))
        if not plan & fakes:
            escapes += 1
            total_reward += reward(s, claimed)
    return {"phi": phi, "trials": trials, "wins": wins, "escape_rate": escapes / max(wins, 1),
            "reward_per_mac": total_reward / max(total_real * step_macs, 1)}


def verifier_check(s: Setting, backend: Backend, seals: int, rng: random.Random) -> dict[str, Any]:
    """Real fabricated seals: one middle segment of a 6-segment shard jumps to junk weights. The
    verifier must reject exactly those whose plan samples it."""
    params = s.preset.pouw
    k = params.checkpoint_interval
    target = target_for_work(params, 4 * s.config.macs_per_step())  # a win every ~4 steps
    agree = caught = 0
    for attempt in range(seals):
        miner = new_miner(s, backend)
        sigma = tagged_hash("bench/fabricate", bytes([attempt]))
        miner.mine(sigma, 0, 2 * k)  # segments 0 and 1, real
        trainer = miner._trainer  # the attacker's own loop: jump over segment 2
        generator = torch.Generator().manual_seed(rng.randrange(1 << 31))
        trainer.weights = [w + torch.randint(-3, 4, w.shape, generator=generator, dtype=w.dtype)
                           for w in trainer.weights]
        trainer.step_index += k
        miner.steps += k
        state = trainer.state()
        miner._checkpoints.append(state.encode())
        miner._checkpoint_hashes.append(state.hash())
        miner._running_root = trajectory_root(miner._checkpoint_hashes)
        miner.mine(sigma, 0, 2 * k)  # segments 3 and 4, real (from the junk state)
        result = None
        while result is None and miner.steps < params.max_steps_per_block:
            result = miner.mine(sigma, target, k)
        if result is None:
            continue
        claim = result.seal_claim
        plan = replay_plan(claim.steps, k, claim.steps - 1, params.sampled_segments, result.ticket)
        try:
            verify_seal(params, s.config, s.dataset, s.start, header_trajectory_seed(s.header), sigma, target,
                        claim.steps, claim.final_state_hash,
                        claim.trajectory_root, claim.proof, result.work_bytes, backend,
                        prefix_root=claim.prefix_root)
            rejected = False
        except SealError:
            rejected = True
        caught += rejected
        agree += rejected == (2 in plan)
    return {"seals": seals, "caught": caught, "verifier_agrees_with_plan": agree}


def study(name: str, backend: Backend, trials: int, verifier_seals: int, seed: int = 11) -> dict[str, Any]:
    s = setting(name)
    rng = random.Random(seed)
    step_macs, tiles = step_cost(s, backend, 2)
    p = win_probability_per_step(s, step_macs)
    base = honest(s, p, step_macs)
    rows: list[dict[str, Any]] = [{"strategy": "honest", **base}]
    rows.append({"strategy": "grind (re-stamp)", **grind_restamp(s, backend)})
    rows.append({"strategy": "grind (one step per nonce)", **grind_one_step(s, backend, p, step_macs)})
    for length in SHORT_SHARDS:
        rows.append({"strategy": f"grind ({length} steps per nonce)", **honest(s, p, step_macs, length)})
    for phi in FAKE_FRACTIONS:
        rows.append({"strategy": f"fabricate {phi:.0%}", **fabricate(s, p, step_macs, phi, trials, rng)})
    for row in rows:
        row["ratio_to_honest"] = row["reward_per_mac"] / base["reward_per_mac"]
    cheap = rows[2]["reward_per_mac_if_draws_cost_only_the_first_matmul"]
    rows[2]["ratio_to_honest_if_draws_cost_only_the_first_matmul"] = cheap / base["reward_per_mac"]
    check = verifier_check(s, backend, verifier_seals, rng) if verifier_seals else None
    return {
        "preset": name, "model": {"dims": list(s.config.dims), "batch_size": s.config.batch_size},
        "step_macs": step_macs, "tiles_per_step": tiles, "win_probability_per_step": p,
        "expected_block_work": s.preset.chain_rules.expected_block_work(s.header.target),
        "subsidy": s.preset.subsidy(1), "strategies": rows, "fabricated_seals": check,
        "honest_on_top": all(row["ratio_to_honest"] <= 1.0 for row in rows)
        and rows[2]["ratio_to_honest_if_draws_cost_only_the_first_matmul"] <= 1.0,
    }


def shard_odds(name: str) -> dict[str, Any]:
    """How often an honest shard of the built-in job ends spent (``max_steps_per_block`` steps, no
    win) at the preset's initial target: then the miner trains a new shard under the next nonce.
    ``shards_per_win`` is the expected number of shards (nonces) one miner trains per win."""
    s = setting(name)
    macs = s.config.macs_per_step()
    p = win_probability_per_step(s, macs)
    cap = s.preset.pouw.max_steps_per_block
    spent = math.exp(cap * math.log1p(-p))
    return {"preset": name, "builtin_macs_per_step": macs, "expected_steps_per_win": 1 / p,
            "max_steps_per_block": cap, "spent_shard_probability": spent, "shards_per_win": 1 / (1 - spent)}
