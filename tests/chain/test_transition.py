"""The state transition: balances, nonces, jobs and escrow, rewards, and one test per rejection rule."""

from __future__ import annotations

import dataclasses

import pytest

from chain.builder import make_header
from chain.errors import InvalidBlock, Reason
from chain.state import JobStatus, State, get_account, get_dataset, get_job
from chain.transition import apply_block, transition
from chain.types import COIN, Block, DatasetPublish, JobSubmit, Seal, SignedTx, Transfer, job_id_of, tx_root
from tests.factories import (
    BUILTIN,
    CHAIN_ID,
    FEE,
    KEYS,
    RULES,
    genesis,
    job_cancel,
    job_submit,
    next_block,
    transfer,
)
from wallet.txbuild import sign_tx

MINER = KEYS[7]
SUBSIDY = 50 * COIN


def bare_seal(steps: int) -> Seal:
    return Seal(
        steps=steps, final_state_hash=bytes(32), trajectory_root=bytes(32), prefix_root=bytes(32),
        state_root=bytes(32), work_hash=bytes(32), proof=b"",
    )


def rejects(txs: list[SignedTx], reason: Reason) -> None:
    parent, state = genesis()
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=parent.header.target, miner=MINER.address, job_id=BUILTIN.job_id,
        start_state_hash=BUILTIN.initial_model_hash, txs=tuple(txs), spec=BUILTIN.spec,
    )
    seal = bare_seal(1)
    with pytest.raises(InvalidBlock) as err:
        transition(state, header, seal, tuple(txs), RULES)
    assert err.value.reason is reason, err.value


def test_transfer_moves_balance_and_pays_miner() -> None:
    parent, state = genesis()
    a, b = KEYS[0], KEYS[5]
    block = next_block(state, parent, [transfer(a, b.address, 3 * COIN, 0)])
    post = state.apply(apply_block(state, block, RULES))
    assert get_account(post, b.address).balance == 3 * COIN
    sender = get_account(post, a.address)
    assert sender.balance == 1000 * COIN - 3 * COIN - FEE
    assert sender.nonce == 1
    assert get_account(post, MINER.address).balance == SUBSIDY + FEE
    # The pre-state is untouched: the transition is pure.
    assert get_account(state, a.address).balance == 1000 * COIN


def test_rejections_per_rule() -> None:
    a, b = KEYS[0], KEYS[5]
    good = transfer(a, b.address, COIN, 0)
    rejects([good, good], Reason.DUPLICATE_TX)
    rejects([transfer(a, b.address, COIN, 1)], Reason.NONCE_GAP)
    rejects([good, transfer(a, b.address, COIN, 0, fee=FEE + 1)], Reason.NONCE_REPLAY)
    rejects([transfer(a, b.address, COIN, 0, chain_id=CHAIN_ID + 1)], Reason.WRONG_CHAIN_ID)
    rejects([transfer(a, b.address, COIN, 0, fee=10)], Reason.FEE_TOO_LOW)
    rejects([transfer(b, a.address, COIN, 0)], Reason.INSUFFICIENT_BALANCE)
    rejects([transfer(a, b.address, 2000 * COIN, 0)], Reason.INSUFFICIENT_BALANCE)
    rejects([transfer(a, b.address, 0, 0)], Reason.ZERO_AMOUNT)
    forged = dataclasses.replace(good, signature=good.signature[:-1] + bytes([good.signature[-1] ^ 1]))
    rejects([forged], Reason.BAD_SIGNATURE)
    other_key = dataclasses.replace(good, pubkey=KEYS[1].public_key)
    rejects([other_key], Reason.BAD_SIGNATURE)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(good.signature[32:], "big")
    high_s = dataclasses.replace(good, signature=good.signature[:32] + (n - s).to_bytes(32, "big"))
    rejects([high_s], Reason.HIGH_S)
    rejects([job_submit(a, 0, steps=10**9, fee_per_step=2**40)], Reason.OVERFLOW)
    rejects([job_submit(a, 0, steps=0)], Reason.BAD_JOB_SPEC)
    rejects([job_submit(a, 0, steps=10, fee_per_step=1000 * COIN)], Reason.INSUFFICIENT_BALANCE)
    rejects([job_cancel(a, 0, bytes(32))], Reason.UNKNOWN_JOB)
    rejects([job_cancel(a, 0, BUILTIN.job_id)], Reason.NOT_JOB_OWNER)


def test_recipient_overflow_rejected() -> None:
    from chain.genesis import genesis_block, genesis_state
    from tests import factories

    spec = dataclasses.replace(
        factories.GENESIS, allocations=((KEYS[0].address, 10 * COIN), (KEYS[5].address, 2**64 - 5))
    )
    parent, state = genesis_block(spec), genesis_state(spec)
    tx = transfer(KEYS[0], KEYS[5].address, COIN, 0)
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=parent.header.target, miner=MINER.address, job_id=BUILTIN.job_id,
        start_state_hash=BUILTIN.initial_model_hash, txs=(tx,), spec=BUILTIN.spec,
    )
    seal = bare_seal(1)
    with pytest.raises(InvalidBlock) as err:
        transition(state, header, seal, (tx,), RULES)
    assert err.value.reason is Reason.OVERFLOW


def test_block_level_rejections() -> None:
    parent, state = genesis()
    block = next_block(state, parent, [transfer(KEYS[0], KEYS[5].address, COIN, 0)])
    bad_root = dataclasses.replace(block, seal=dataclasses.replace(block.seal, state_root=bytes(32)))
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, bad_root, RULES)
    assert err.value.reason is Reason.BAD_STATE_ROOT
    bad_txroot = dataclasses.replace(block, header=dataclasses.replace(block.header, tx_root=bytes(32)))
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, bad_txroot, RULES)
    assert err.value.reason is Reason.BAD_TX_ROOT
    wrong_start = dataclasses.replace(block, header=dataclasses.replace(block.header, start_state_hash=bytes(32)))
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, wrong_start, RULES)
    assert err.value.reason is Reason.BAD_JOB_PROGRESS
    unknown_job = dataclasses.replace(block, header=dataclasses.replace(block.header, job_id=bytes(32)))
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, unknown_job, RULES)
    assert err.value.reason is Reason.UNKNOWN_JOB
    zero_steps = dataclasses.replace(block, seal=dataclasses.replace(block.seal, steps=0))
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, zero_steps, RULES)
    assert err.value.reason is Reason.BAD_JOB_PROGRESS
    many = dataclasses.replace(RULES, max_block_txs=0)
    with pytest.raises(InvalidBlock) as err:
        apply_block(state, block, many)
    assert err.value.reason is Reason.TOO_MANY_TXS


def progress_reason(state: State, parent: Block, job_id: bytes, steps: int, txs: tuple[SignedTx, ...] = ()) -> Reason:
    """The reason a block advancing ``job_id`` by ``steps`` on ``state`` is rejected."""
    job = get_job(state, job_id)
    assert job is not None
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=parent.header.target, miner=MINER.address, job_id=job_id,
        start_state_hash=job.state_hash, txs=txs, spec=job.spec,
    )
    seal = bare_seal(steps)
    with pytest.raises(InvalidBlock) as err:
        transition(state, header, seal, txs, RULES)
    return err.value.reason


def test_job_lifecycle_escrow_pay_and_cancel() -> None:
    parent, state = genesis()
    client = KEYS[1]
    submit = job_submit(client, 0, steps=30, fee_per_step=1_000)
    job_id = job_id_of(submit.txid)
    b1 = next_block(state, parent, [submit])
    s1 = state.apply(apply_block(state, b1, RULES))
    job = get_job(s1, job_id)
    assert job is not None and job.status == JobStatus.ACTIVE and job.escrow == 30_000
    assert get_account(s1, client.address).balance == 1000 * COIN - 30_000 - FEE

    # A miner trains it for 20 steps and is paid 20 * fee_per_step from escrow.
    b2 = next_block(s1, b1, job_id=job_id, steps=20, miner=KEYS[6])
    s2 = s1.apply(apply_block(s1, b2, RULES))
    job = get_job(s2, job_id)
    assert job is not None and job.steps_done == 20 and job.escrow == 10_000
    assert job.state_hash == b2.seal.final_state_hash
    assert get_account(s2, KEYS[6].address).balance == SUBSIDY + 20_000

    # More steps than are left are rejected.
    assert progress_reason(s2, b2, job_id, 11) is Reason.BAD_JOB_PROGRESS

    # Cancel refunds the unspent escrow; the job then takes no more progress and no second cancel.
    b3 = next_block(s2, b2, [job_cancel(client, 1, job_id)])
    s3 = s2.apply(apply_block(s2, b3, RULES))
    job = get_job(s3, job_id)
    assert job is not None and job.status == JobStatus.CANCELLED and job.escrow == 0
    assert get_account(s3, client.address).balance == 1000 * COIN - 20_000 - 2 * FEE
    assert progress_reason(s3, b3, job_id, 1) is Reason.JOB_NOT_ACTIVE
    again = (job_cancel(client, 2, job_id),)
    assert progress_reason(s3, b3, BUILTIN.job_id, 1, again) is Reason.JOB_NOT_ACTIVE


def test_job_finishes_when_budget_spent() -> None:
    parent, state = genesis()
    submit = job_submit(KEYS[1], 0, steps=12, fee_per_step=500)
    job_id = job_id_of(submit.txid)
    b1 = next_block(state, parent, [submit])
    s1 = state.apply(apply_block(state, b1, RULES))
    b2 = next_block(s1, b1, job_id=job_id, steps=12)
    s2 = s1.apply(apply_block(s1, b2, RULES))
    job = get_job(s2, job_id)
    assert job is not None and job.status == JobStatus.FINISHED and job.escrow == 0
    assert job.steps_done == 12
    assert progress_reason(s2, b2, job_id, 1) is Reason.JOB_NOT_ACTIVE


def test_dataset_publish_registers_once() -> None:
    parent, state = genesis()
    body = DatasetPublish(chain_id=CHAIN_ID, nonce=0, fee=FEE + 200, name="tiny", data=b"x" * 100)
    b1 = next_block(state, parent, [sign_tx(KEYS[2], body)])
    s1 = state.apply(apply_block(state, b1, RULES))
    record = get_dataset(s1, body.dataset_id)
    assert record is not None and record.size == 100 and record.publisher == KEYS[2].address
    again = (sign_tx(KEYS[2], dataclasses.replace(body, nonce=1)),)
    assert progress_reason(s1, b1, BUILTIN.job_id, 1, again) is Reason.DATASET_EXISTS


def test_job_needs_a_known_dataset() -> None:
    parent, state = genesis()
    spec = dataclasses.replace(job_submit(KEYS[1], 0).body.spec, dataset_id=bytes(32))  # type: ignore[union-attr]
    tx = sign_tx(KEYS[1], JobSubmit(chain_id=CHAIN_ID, nonce=0, fee=FEE, spec=spec, name="x"))
    assert progress_reason(state, parent, BUILTIN.job_id, 1, (tx,)) is Reason.UNKNOWN_DATASET


def test_transfer_type_is_frozen() -> None:
    t = Transfer(chain_id=1, nonce=0, fee=1, to=bytes(20), amount=1, memo=b"")
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.amount = 5  # type: ignore[misc]


def test_job_dims_must_fit_the_dataset() -> None:
    parent, state = genesis()
    spec = dataclasses.replace(job_submit(KEYS[1], 0).body.spec, dims=(128, 64))  # type: ignore[union-attr]
    tx = sign_tx(KEYS[1], JobSubmit(chain_id=CHAIN_ID, nonce=0, fee=FEE, spec=spec, name="x"))
    assert progress_reason(state, parent, BUILTIN.job_id, 1, (tx,)) is Reason.BAD_JOB_SPEC
    narrow = dataclasses.replace(spec, dims=(64, 8))
    tx = sign_tx(KEYS[1], JobSubmit(chain_id=CHAIN_ID, nonce=0, fee=FEE, spec=narrow, name="x"))
    assert progress_reason(state, parent, BUILTIN.job_id, 1, (tx,)) is Reason.BAD_JOB_SPEC


def test_published_data_must_be_a_dataset_under_preset_rules() -> None:
    from consensus.presets import REGTEST_PRESET
    from pouw.datasets import synthetic

    rules = dataclasses.replace(RULES, dataset_shape=REGTEST_PRESET.chain_rules.dataset_shape)
    parent, state = genesis()
    junk = sign_tx(KEYS[2], DatasetPublish(chain_id=CHAIN_ID, nonce=0, fee=FEE + 200, name="junk", data=b"x" * 100))
    empty = next_block(state, parent)
    with pytest.raises(InvalidBlock) as err:
        transition(state, dataclasses.replace(empty.header, tx_root=tx_root((junk,))), empty.seal, (junk,), rules)
    assert err.value.reason is Reason.BAD_DATASET
    data = synthetic(n=64, d=64, classes=3, seed=1, test=16, hidden=8).encode()
    good = sign_tx(KEYS[2], DatasetPublish(chain_id=CHAIN_ID, nonce=0, fee=FEE + len(data) + 500, name="ok", data=data))
    block = next_block(state, parent, [good], rules=rules)
    post = state.apply(apply_block(state, block, rules))
    record = get_dataset(post, good.body.dataset_id)  # type: ignore[union-attr]
    assert record is not None and (record.n_features, record.n_classes) == (64, 3)


def test_builtin_job_is_open_ended() -> None:
    """The built-in job never runs dry: past its nominal ``total_steps`` (2^32 − 1) it stays active,
    and its steps left stay unbounded; a client job with the same numbers would be finished."""
    import dataclasses as dc

    from chain import schema
    from chain.state import OPEN_ENDED_STEPS

    parent, state = genesis()
    job = get_job(state, BUILTIN.job_id)
    assert job is not None and job.open_ended and job.steps_left == OPEN_ENDED_STEPS
    near_end = dc.replace(job, steps_done=(1 << 32) - 3)  # beyond any u32 total_steps, a u32 counter's end
    state = State({**dict(state.items()), schema.job_key(BUILTIN.job_id): near_end.encode()})
    block = next_block(state, parent, steps=10)
    post = state.apply(apply_block(state, block, RULES))
    after = get_job(post, BUILTIN.job_id)
    assert after is not None and after.status == JobStatus.ACTIVE
    assert after.steps_done == (1 << 32) + 7
    assert after.steps_left == OPEN_ENDED_STEPS - after.steps_done
    assert type(after).decode(after.encode()) == after  # steps_done is a u64 now
    client = dc.replace(near_end, owner=KEYS[1].address, spec=dc.replace(job.spec, total_steps=(1 << 32) - 1))
    assert not client.open_ended and client.steps_left == 2
