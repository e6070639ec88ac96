"""Protocol v2 consensus rules (docs/protocol.md §6, §7, §11): body commitments, the future-time limit
and the per-block target bound of each preset, and caps that add up."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chain.errors import InvalidBlock, InvalidTransaction, Reason
from chain.types import BLOCK_VERSION, MAX_PROOF_BYTES, Block, Header
from consensus.difficulty import clamp_target
from consensus.presets import DEVNET_PRESET, MAINNET_PRESET, PRESETS, TESTNET_PRESET, Preset, model_config
from consensus.validation import FutureBlock, HeaderContext, check_body_commitments, check_header, expected_target
from pouw.model import ModelConfig
from tests.factories import KEYS, genesis, next_block, transfer

NETWORKS = [DEVNET_PRESET, TESTNET_PRESET, MAINNET_PRESET]


def test_a_body_that_mismatches_its_commitments_is_mutated() -> None:
    parent, state = genesis()
    block = next_block(state, parent, [transfer(KEYS[0], KEYS[5].address, 10**8, 0)], salt=b"work")
    check_body_commitments(block)
    mutations: list[Block] = [
        dataclasses.replace(block, txs=()),
        dataclasses.replace(block, txs=block.txs * 2),
        dataclasses.replace(block, work=block.work + b"\x00"),
        dataclasses.replace(block, work=b""),
    ]
    for mutated in mutations:
        assert mutated.hash == block.hash  # the hash cannot tell them apart...
        with pytest.raises(InvalidBlock) as err:
            check_body_commitments(mutated)
        assert err.value.reason is Reason.MUTATED  # ...so the verdict must not be remembered by it


def test_the_block_hash_commits_to_every_header_and_seal_field() -> None:
    parent, state = genesis()
    block = next_block(state, parent, salt=b"x")
    header_changes: dict[str, Any] = {"timestamp": block.header.timestamp + 1, "tx_root": bytes(32), "dims": (64, 64, 64, 64),
                      "batch_size": 128, "lr_shift": 1, "target": block.header.target - 1}
    for name, value in header_changes.items():
        changed = dataclasses.replace(block, header=dataclasses.replace(block.header, **{name: value}))
        assert changed.hash != block.hash, name
    for name in ("work_hash", "prefix_root", "state_root", "trajectory_root", "final_state_hash"):
        fields: dict[str, Any] = {name: b"\x07" * 32}
        changed = dataclasses.replace(block, seal=dataclasses.replace(block.seal, **fields))
        assert changed.hash != block.hash, name


def test_sigma_leaves_out_the_timestamp_and_transactions_only() -> None:
    parent, state = genesis()
    header = next_block(state, parent).header
    same = [dataclasses.replace(header, timestamp=header.timestamp + 600), dataclasses.replace(header, tx_root=bytes(32))]
    assert all(h.lottery_seed == header.lottery_seed and h.hash != header.hash for h in same)
    changes: dict[str, Any] = {"height": 9, "prev_hash": bytes(32), "target": 5, "miner": bytes(20), "job_id": bytes(32),
                        "start_state_hash": bytes(32), "dims": (64, 64), "batch_size": 1, "lr_shift": 0,
                        "version": 4}
    for name, value in changes.items():
        assert dataclasses.replace(header, **{name: value}).lottery_seed != header.lottery_seed, name


def _context(preset: Preset, parent_time: int) -> tuple[Header, HeaderContext]:
    genesis_block, _ = preset.genesis()
    anchor = dataclasses.replace(genesis_block.header, height=1, timestamp=genesis_block.header.timestamp + 10)
    parent = dataclasses.replace(anchor, height=2, timestamp=parent_time)
    ctx = HeaderContext(parent=parent, parent_hash=b"\x01" * 32, median_time_past=anchor.timestamp, anchor=anchor)
    child = dataclasses.replace(parent, height=3, prev_hash=ctx.parent_hash, timestamp=parent_time + 1)
    return child, ctx


@pytest.mark.parametrize("preset", NETWORKS, ids=lambda p: p.name)
def test_future_limit_is_per_preset_and_well_below_the_half_life(preset: Preset) -> None:
    assert preset.max_future_seconds * 8 <= preset.half_life
    now = preset.genesis_timestamp + 1_000
    child, ctx = _context(preset, now - preset.block_time)
    genesis_target = preset.genesis()[0].header.target
    at_limit = dataclasses.replace(child, timestamp=now + preset.max_future_seconds,
                                   target=expected_target(preset, ctx, genesis_target))
    check_header(preset, at_limit, ctx, genesis_target, now)
    with pytest.raises(FutureBlock):
        check_header(preset, dataclasses.replace(at_limit, timestamp=now + preset.max_future_seconds + 1), ctx,
                     genesis_target, now)


@pytest.mark.parametrize("preset", NETWORKS, ids=lambda p: p.name)
def test_one_block_moves_the_target_at_most_by_the_preset_bound(preset: Preset) -> None:
    genesis_target = preset.genesis()[0].header.target
    factor = 1 << preset.max_target_shift
    for parent_time in (preset.genesis_timestamp + 10, preset.genesis_timestamp + 10 + 400 * preset.half_life):
        _, ctx = _context(preset, parent_time)
        target = expected_target(preset, ctx, genesis_target)
        assert ctx.parent.target // factor <= target <= ctx.parent.target * factor
    # a long stall: ASERT alone would ease the target 2^400-fold, the clamp lets one block move it 2^s
    _, ctx = _context(preset, preset.genesis_timestamp + 10 + 400 * preset.half_life)
    assert expected_target(preset, ctx, genesis_target) == clamp_target(1 << 300, ctx.parent.target,
                                                                        preset.max_target_shift)
    assert clamp_target(1, 1 << 100, 4) == 1 << 96 and clamp_target(1 << 200, 1 << 100, 4) == 1 << 104


@pytest.mark.parametrize("preset", NETWORKS, ids=lambda p: p.name)
def test_the_caps_add_up(preset: Preset) -> None:
    """The largest job the caps allow gives a seal that fits half a block, and its replay fits the
    preset's MAC budget; the built-in job is within every cap."""
    params = preset.pouw
    seal_bytes = params.max_work_bytes_bound() + params.max_proof_bytes() + 1024
    assert seal_bytes <= preset.max_block_bytes // 2
    assert params.max_proof_bytes() <= MAX_PROOF_BYTES
    builtin = model_config(preset.builtin_job().spec)
    params.check_model(builtin)
    preset.validate_job_spec(preset.builtin_job().spec)
    # the replay budget is 2 GMAC/s (a conservative single-core CPU rate) times the verify budget
    assert params.max_replay_macs <= 2 * 10**9 * preset.verify_budget_ms // 1000 * 11 // 10
    # a job replaying more than the MAC budget is refused, one within it is accepted
    refused = 0
    for hidden in (128, 512):
        for batch in range(64, params.max_width + 1, 64):
            spec = dataclasses.replace(preset.builtin_job().spec, dims=(64, hidden, 64), batch_size=batch)
            replay = params.max_replay_steps() * params.step_replay_cost(ModelConfig((64, hidden, 64), batch, 8))
            if replay <= params.max_replay_macs:
                preset.validate_job_spec(spec)
            else:
                with pytest.raises(InvalidTransaction) as err:
                    preset.validate_job_spec(spec)
                assert err.value.reason is Reason.BAD_JOB_SPEC and "replay" in err.value.detail
                refused += 1
    assert refused


def test_every_preset_has_a_v2_genesis() -> None:
    for preset in PRESETS.values():
        block, _ = preset.genesis()
        assert block.header.version == BLOCK_VERSION == 3 and block.header.dims == ()
        check_body_commitments(block)


def test_the_node_derives_the_prefix_root_from_the_work() -> None:
    from consensus.pouw_seal import prefix_root_of_work
    from pouw.proof import WorkData, trajectory_root

    leaves = tuple(bytes([i]) * 32 for i in range(5))
    assert prefix_root_of_work(WorkData(leaves, (), b"s").encode()) == trajectory_root(leaves[:-1])
    for bad in (b"", b"\x00junk", WorkData(leaves[:1], (), b"s").encode()):
        with pytest.raises(InvalidBlock) as err:
            prefix_root_of_work(bad)
        assert err.value.reason is Reason.BAD_SEAL
