"""Genesis: the first state (allocations, built-in datasets and jobs) and the block that commits to it.

The genesis block is the only block without work: height 0, zero parent, no transactions, an empty
seal whose ``state_root`` commits to the genesis state (and ``work_hash`` to the empty work).
Presets (consensus/presets.py) supply a :class:`GenesisSpec`; this module turns it into values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chain import schema
from chain.hashing import tagged_hash
from chain.state import Account, DatasetRecord, JobRecord, JobStatus, State
from chain.types import (
    BLOCK_VERSION,
    ZERO_ADDRESS,
    ZERO_HASH,
    Block,
    Header,
    JobSpec,
    Seal,
    tx_root,
    work_hash_of,
)

__all__ = ["BLOCK_VERSION", "BuiltinJob", "GenesisSpec", "builtin_job_id", "genesis_block", "genesis_state"]


@dataclass(frozen=True)
class BuiltinJob:
    """A job that exists from genesis (the network's default work), paid by subsidy only."""

    name: str
    spec: JobSpec
    initial_model_hash: bytes

    @property
    def job_id(self) -> bytes:
        return builtin_job_id(self.name)


def builtin_job_id(name: str) -> bytes:
    return tagged_hash("pouw/builtin-job", name.encode("utf-8"))


@dataclass(frozen=True)
class GenesisSpec:
    chain_id: int
    timestamp: int
    target: int
    allocations: tuple[tuple[bytes, int], ...] = ()
    datasets: tuple[tuple[bytes, str, int, int, int], ...] = ()
    """(dataset id, name, size in bytes, features, classes) of datasets every node has built in."""
    jobs: tuple[BuiltinJob, ...] = field(default=())


def genesis_state(spec: GenesisSpec) -> State:
    data: dict[bytes, bytes] = {}
    for address, amount in spec.allocations:
        data[schema.account_key(address)] = Account(balance=amount, nonce=0).encode()
    for dataset_id, name, size, n_features, n_classes in spec.datasets:
        data[schema.dataset_key(dataset_id)] = DatasetRecord(
            publisher=ZERO_ADDRESS, name=name, size=size, n_features=n_features, n_classes=n_classes,
            txid=ZERO_HASH, height=0,
        ).encode()
    for job in spec.jobs:
        data[schema.job_key(job.job_id)] = JobRecord(
            owner=ZERO_ADDRESS, spec=job.spec, name=job.name, escrow=0, steps_done=0,
            state_hash=job.initial_model_hash, init_seed=job.job_id, status=JobStatus.ACTIVE,
            created_height=0, updated_height=0,
        ).encode()
    return State(data)


def genesis_block(spec: GenesisSpec) -> Block:
    header = Header(
        version=BLOCK_VERSION, height=0, prev_hash=ZERO_HASH, timestamp=spec.timestamp,
        tx_root=tx_root(()), target=spec.target, miner=ZERO_ADDRESS, job_id=ZERO_HASH,
        start_state_hash=ZERO_HASH, dims=(), batch_size=0, lr_shift=0, shard_nonce=0,
    )
    seal = Seal(
        steps=0, final_state_hash=ZERO_HASH, trajectory_root=ZERO_HASH, prefix_root=ZERO_HASH,
        state_root=genesis_state(spec).root(), work_hash=work_hash_of(b""), proof=b"",
    )
    return Block(header=header, seal=seal, txs=(), work=b"")
