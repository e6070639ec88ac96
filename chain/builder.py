"""Assembling blocks: a header template for the next block, and the sealed block once work is done.

Pure functions over values; the miner and tests use them, validators never do.
"""

from __future__ import annotations

from dataclasses import replace

from chain.rules import ChainRules
from chain.state import StateReader, get_job
from chain.transition import post_state_root, transition
from chain.types import BLOCK_VERSION, Block, Header, JobSpec, Seal, SignedTx, tx_root, work_hash_of


def make_header(
    *, parent: Header, parent_hash: bytes, timestamp: int, target: int, miner: bytes,
    job_id: bytes, start_state_hash: bytes, txs: tuple[SignedTx, ...], spec: JobSpec | None = None,
    version: int = BLOCK_VERSION, shard_nonce: int = 0,
) -> Header:
    """The template of the child of ``parent``. ``spec`` is the job's spec, whose model config the
    header carries; without it the config is left empty and :func:`seal_block` fills it in from the
    job (tests that never mine use that; a miner needs the config before it draws)."""
    return Header(
        version=version, height=parent.height + 1, prev_hash=parent_hash, timestamp=timestamp,
        tx_root=tx_root(txs), target=target, miner=miner, job_id=job_id,
        start_state_hash=start_state_hash,
        dims=tuple(spec.dims) if spec is not None else (),
        batch_size=spec.batch_size if spec is not None else 0,
        lr_shift=spec.lr_shift if spec is not None else 0, shard_nonce=shard_nonce,
    )


def with_job_config(header: Header, spec: JobSpec) -> Header:
    """``header`` carrying ``spec``'s model config."""
    return replace(header, dims=tuple(spec.dims), batch_size=spec.batch_size, lr_shift=spec.lr_shift)


def seal_block(
    pre: StateReader, header: Header, txs: tuple[SignedTx, ...], rules: ChainRules, *,
    steps: int, final_state_hash: bytes, trajectory_root: bytes, proof: bytes, work: bytes,
    prefix_root: bytes = bytes(32),
) -> Block:
    """The block for ``header`` with its seal; computes the post-state root (raises if invalid)."""
    if not header.dims:
        job = get_job(pre, header.job_id)
        if job is not None:
            header = with_job_config(header, job.spec)
    draft = Seal(
        steps=steps, final_state_hash=final_state_hash, trajectory_root=trajectory_root,
        prefix_root=prefix_root, state_root=bytes(32), work_hash=work_hash_of(work), proof=proof,
    )
    diff = transition(pre, header, draft, txs, rules)
    seal = replace(draft, state_root=post_state_root(pre, diff))
    return Block(header=header, seal=seal, txs=txs, work=work)
