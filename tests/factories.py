"""Test helpers that build real chains: keys, rules, a genesis with a built-in job, signed txs, blocks.

Blocks here carry a no-proof seal (any final model hash, empty proof): the chain layer does not look
at the work, consensus does (swappable, like py-evm's NoProofConsensus).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from chain.builder import make_header, seal_block
from chain.genesis import BuiltinJob, GenesisSpec, genesis_block, genesis_state
from chain.hashing import tagged_hash
from chain.rules import ChainRules
from chain.state import State, StateReader
from chain.types import (
    COIN,
    Block,
    JobCancel,
    JobSpec,
    JobSubmit,
    SignedTx,
    Transfer,
)
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

CHAIN_ID = 4242
DATASET_ID = tagged_hash("pouw/dataset", b"test-dataset")
RULES = ChainRules(chain_id=CHAIN_ID, min_fee=1_000, fee_per_byte=1, subsidy=lambda h: 50 * COIN)
SPEC = JobSpec(
    dims=(64, 64, 64), dataset_id=DATASET_ID, batch_size=64, lr_shift=8,
    total_steps=10**6, fee_per_step=0,
)
BUILTIN = BuiltinJob(name="builtin", spec=SPEC, initial_model_hash=tagged_hash("pouw/test", b"init"))
FEE = 10_000


def key(i: int) -> PrivateKey:
    return PrivateKey(hashlib.sha256(b"test-key-%d" % i).digest())


KEYS = [key(i) for i in range(8)]
GENESIS = GenesisSpec(
    chain_id=CHAIN_ID, timestamp=1_700_000_000, target=(1 << 255),
    allocations=tuple((k.address, 1_000 * COIN) for k in KEYS[:4]),
    datasets=((DATASET_ID, "test-dataset", 1234, 64, 10),), jobs=(BUILTIN,),
)
GENESIS_BLOCK = genesis_block(GENESIS)


def genesis() -> tuple[Block, State]:
    return GENESIS_BLOCK, genesis_state(GENESIS)


def transfer(sender: PrivateKey, to: bytes, amount: int, nonce: int, fee: int = FEE,
             chain_id: int = CHAIN_ID, memo: bytes = b"") -> SignedTx:
    body = Transfer(chain_id=chain_id, nonce=nonce, fee=fee, to=to, amount=amount, memo=memo)
    return sign_tx(sender, body)


def job_submit(sender: PrivateKey, nonce: int, steps: int = 100, fee_per_step: int = 1_000,
               fee: int = FEE, name: str = "job") -> SignedTx:
    spec = JobSpec(dims=(64, 64, 64), dataset_id=DATASET_ID, batch_size=64, lr_shift=8,
                   total_steps=steps, fee_per_step=fee_per_step)
    return sign_tx(sender, JobSubmit(chain_id=CHAIN_ID, nonce=nonce, fee=fee, spec=spec, name=name))


def job_cancel(sender: PrivateKey, nonce: int, job_id: bytes, fee: int = FEE) -> SignedTx:
    return sign_tx(sender, JobCancel(chain_id=CHAIN_ID, nonce=nonce, fee=fee, job_id=job_id))


def next_block(
    pre: StateReader, parent: Block, txs: Sequence[SignedTx] = (), *, miner: PrivateKey | None = None,
    job_id: bytes | None = None, steps: int = 10, salt: bytes = b"", rules: ChainRules = RULES,
) -> Block:
    """A valid child of ``parent`` (no-proof seal). ``salt`` makes sibling blocks differ."""
    from chain.state import get_job

    job_id = BUILTIN.job_id if job_id is None else job_id
    job = get_job(pre, job_id)
    if job is None:
        raise ValueError("unknown job")
    header = make_header(
        parent=parent.header, parent_hash=parent.hash, timestamp=parent.header.timestamp + 5,
        target=parent.header.target, miner=(miner or KEYS[7]).address, job_id=job_id,
        start_state_hash=job.state_hash, txs=tuple(txs),
    )
    final = tagged_hash("pouw/test-model", job.state_hash + steps.to_bytes(4, "big") + salt)
    return seal_block(
        pre, header, tuple(txs), rules, steps=steps, final_state_hash=final,
        trajectory_root=tagged_hash("pouw/test-traj", final), proof=b"", work=salt,
    )


def build_chain(n: int, *, salt: bytes = b"", start: tuple[Block, State] | None = None,
                txs_at: dict[int, list[SignedTx]] | None = None) -> tuple[list[Block], State]:
    """``n`` blocks on top of ``start`` (default genesis); returns the blocks and the final state."""
    from chain.transition import apply_block

    parent, state = start or genesis()
    blocks = []
    for i in range(n):
        block = next_block(state, parent, (txs_at or {}).get(i, []), salt=salt + bytes([i % 256]))
        state = state.apply(apply_block(state, block, RULES))
        blocks.append(block)
        parent = block
    return blocks, state
