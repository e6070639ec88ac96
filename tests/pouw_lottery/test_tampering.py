"""Any change to a mined seal, its proof or its work evidence makes verify_seal raise SealError."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.errors import InvalidBlock, InvalidEncoding, Reason
from pouw.engine import train
from pouw.errors import SealCheck, SealError
from pouw.model import ModelState, init_state
from pouw.proof import TileProof, WorkData, replay_plan, trajectory_root
from pouw.transcript import commit_rows
from pouw.verify import verify_seal, verify_winning_tile
from tests.pouw_lottery.conftest import CONFIG, HEADER_SEED, PARAMS, TRAJECTORY_SEED, Mined


def rejected(mined: Mined, **changes: Any) -> SealError:
    args = mined.verify_args() | changes
    with pytest.raises(SealError) as err:
        verify_seal(**args)  # type: ignore[arg-type]
    assert isinstance(err.value, InvalidBlock) and err.value.reason is Reason.BAD_SEAL
    return err.value


def flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def altered(value: Any, bit: int) -> list[Any]:
    """A few different values of a proof field's type."""
    if isinstance(value, int):
        return [value + 1, value - 1] if value else [value + 1, value + (1 << 16)]
    if isinstance(value, bytes):
        return [flip_bit(value, bit), value[:-1], value + b"\x00"]
    return [value[:-1], (*value, value[-1]), tuple(flip_bit(v, bit) for v in value)] if value else [(b"\x00" * 32,)]


# --- the seal's own values and the inputs it is checked against -----------------------------------


def test_every_seal_value_and_context_value_is_bound(mined: Mined) -> None:
    claim = mined.result.seal_claim
    assert rejected(mined, steps=claim.steps + 1).check in (SealCheck.STEPS, SealCheck.TRAJECTORY)
    assert rejected(mined, steps=claim.steps - 1).check is SealCheck.STEPS
    assert rejected(mined, steps=0).check is SealCheck.STEPS
    assert rejected(mined, final_state_hash=flip_bit(claim.final_state_hash, 77)).check is SealCheck.FINAL_STATE
    assert rejected(mined, trajectory_root=flip_bit(claim.trajectory_root, 3)).check is SealCheck.TRAJECTORY
    assert rejected(mined, prefix_root=flip_bit(claim.prefix_root, 5)).check is SealCheck.TARGET
    assert rejected(mined, header_seed=flip_bit(b"\x02" * 32, 9)).check is SealCheck.TARGET
    assert rejected(mined, trajectory_seed=flip_bit(bytes(range(32)), 200)).check is SealCheck.REPLAY
    other_start = init_state(CONFIG, b"another job")
    assert rejected(mined, start_state=other_start).check is SealCheck.TRAJECTORY


def test_the_target_is_checked_to_the_last_unit(mined: Mined) -> None:
    ticket = int.from_bytes(mined.result.ticket, "big")
    tile_work = PARAMS.tile_m * PARAMS.tile_n * mined.result.proof.k
    lowest_winning = ticket * PARAMS.reference_work // tile_work + 1
    verify_seal(**(mined.verify_args() | {"target": lowest_winning}))  # type: ignore[arg-type]
    assert rejected(mined, target=lowest_winning - 1).check is SealCheck.TARGET


def test_a_model_over_the_preset_caps_is_refused(mined: Mined) -> None:
    small = dataclasses.replace(PARAMS, max_model_params=CONFIG.param_count() - 1)
    assert rejected(mined, params=small).check is SealCheck.CONFIG


# --- the proof --------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(TileProof)])
@given(bit=st.integers(0, 1 << 20))
def test_changing_any_proof_field_is_rejected(mined: Mined, field: str, bit: int) -> None:
    proof = mined.result.proof
    for value in altered(getattr(proof, field), bit):
        try:
            forged = dataclasses.replace(proof, **{field: value}).encode()
        except InvalidEncoding:  # not encodable (e.g. a negative integer): cannot even be sent
            continue
        rejected(mined, proof=forged)


def test_flipping_any_single_byte_of_the_encoded_proof_is_rejected(mined: Mined) -> None:
    proof = mined.result.seal_claim.proof
    checks = set()
    for position in range(len(proof)):
        forged = bytearray(proof)
        forged[position] ^= 0x01
        checks.add(rejected(mined, proof=bytes(forged)).check)
    assert {SealCheck.DECODE, SealCheck.MERKLE_A, SealCheck.MERKLE_B} <= checks


@given(position=st.integers(0, 1 << 20), value=st.integers(0, 255))
def test_overwriting_a_proof_byte_with_any_value_is_rejected(mined: Mined, position: int, value: int) -> None:
    proof = bytearray(mined.result.seal_claim.proof)
    position %= len(proof)
    if proof[position] == value:
        value ^= 0x80
    proof[position] = value
    rejected(mined, proof=bytes(proof))


def test_a_tile_forged_from_other_operands_is_caught_by_the_operand_commitment(mined: Mined) -> None:
    """Swap in other rows with their own valid commitment, a target every tile meets, and the work
    evidence for the forged ticket's replay plan: every check passes but the winning step's replay."""
    proof, result = mined.result.proof, mined.result
    if proof.m != PARAMS.tile_m:
        pytest.skip("the winning matmul has more than one row block")
    rows = bytes((b + 1) % 64 for b in proof.a_rows)
    block = np.frombuffer(rows, dtype=np.int8).reshape(PARAMS.tile_m, proof.k)
    forged = dataclasses.replace(proof, a_rows=rows, ha=commit_rows(block, PARAMS.tile_m), a_path=())
    target = 1 << 300
    prefix = result.seal_claim.prefix_root
    ticket = verify_winning_tile(PARAMS, CONFIG, HEADER_SEED, target, forged.encode(), prefix_root=prefix).ticket
    interval = PARAMS.checkpoint_interval
    plan = replay_plan(result.steps, interval, result.steps - 1, PARAMS.sampled_segments, ticket)
    states = [
        train(CONFIG, mined.start, mined.dataset, TRAJECTORY_SEED, mined.backend, s * interval).encode()
        for s in plan
        if s
    ]
    work = dataclasses.replace(result.work, checkpoints=tuple(states)).encode()
    assert rejected(mined, proof=forged.encode(), target=target, work=work).check is SealCheck.OPERANDS


# --- the work evidence -----------------------------------------------------------------------------


def _work(mined: Mined) -> WorkData:
    return mined.result.work


@given(which=st.integers(0, 100), bit=st.integers(0, 1 << 40))
def test_flipping_any_bit_of_a_carried_checkpoint_is_rejected(mined: Mined, which: int, bit: int) -> None:
    work = _work(mined)
    index = which % len(work.checkpoints)
    state = work.checkpoints[index]
    changed = list(work.checkpoints)
    changed[index] = flip_bit(state, bit % (8 * len(state)))
    err = rejected(mined, work=dataclasses.replace(work, checkpoints=tuple(changed)).encode())
    assert err.check is SealCheck.CHECKPOINT


@given(bit=st.integers(0, 1 << 40))
def test_flipping_any_bit_of_the_final_state_or_a_leaf_is_rejected(mined: Mined, bit: int) -> None:
    work = _work(mined)
    final = flip_bit(work.final_state, bit % (8 * len(work.final_state)))
    assert rejected(mined, work=dataclasses.replace(work, final_state=final).encode()).check in (
        SealCheck.DECODE,
        SealCheck.FINAL_STATE,
    )
    leaves = list(work.checkpoint_hashes)
    leaves[bit % len(leaves)] = flip_bit(leaves[bit % len(leaves)], bit)
    assert rejected(mined, work=dataclasses.replace(work, checkpoint_hashes=tuple(leaves)).encode()).check in (
        SealCheck.TRAJECTORY,
    )


@given(position=st.integers(0, 1 << 30))
def test_flipping_any_byte_of_the_encoded_work_is_rejected(mined: Mined, position: int) -> None:
    work = bytearray(mined.result.work_bytes)
    work[position % len(work)] ^= 0x10
    rejected(mined, work=bytes(work))


def test_dropping_or_adding_checkpoints_is_rejected(mined: Mined) -> None:
    work = _work(mined)
    fewer = dataclasses.replace(work, checkpoints=work.checkpoints[:-1])
    more = dataclasses.replace(work, checkpoints=(*work.checkpoints, work.checkpoints[-1]))
    assert rejected(mined, work=fewer.encode()).check is SealCheck.CHECKPOINT
    assert rejected(mined, work=more.encode()).check is SealCheck.CHECKPOINT
    extra_leaf = dataclasses.replace(work, checkpoint_hashes=(*work.checkpoint_hashes, b"\x00" * 32))
    assert rejected(mined, work=extra_leaf.encode()).check is SealCheck.TRAJECTORY


def test_a_self_consistent_but_wrong_final_state_fails_the_replay(mined: Mined) -> None:
    """Forge the last state, its hash, its leaf and the root together: only the replay can tell."""
    work = _work(mined)
    final = ModelState.decode(work.final_state, CONFIG)
    weights = [w.copy() for w in final.weights]
    weights[0][0, 0] += 1
    forged = ModelState(final.step, tuple(weights))
    leaves = (*work.checkpoint_hashes[:-1], forged.hash())
    err = rejected(
        mined,
        final_state_hash=forged.hash(),
        trajectory_root=trajectory_root(leaves),
        work=dataclasses.replace(work, checkpoint_hashes=leaves, final_state=forged.encode()).encode(),
    )
    assert err.check is SealCheck.REPLAY
