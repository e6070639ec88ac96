"""Assembling blocks: a header template for the next block, and the sealed block once work is done.

Pure functions over values; the miner and tests use them, validators never do.
"""

from __future__ import annotations

from chain.rules import ChainRules
from chain.state import StateReader
from chain.transition import post_state_root, transition
from chain.types import Block, Header, Seal, SignedTx, tx_root


def make_header(
    *, parent: Header, parent_hash: bytes, timestamp: int, target: int, miner: bytes,
    job_id: bytes, start_state_hash: bytes, txs: tuple[SignedTx, ...], version: int = 1,
) -> Header:
    return Header(
        version=version, height=parent.height + 1, prev_hash=parent_hash, timestamp=timestamp,
        tx_root=tx_root(txs), target=target, miner=miner, job_id=job_id,
        start_state_hash=start_state_hash,
    )


def seal_block(
    pre: StateReader, header: Header, txs: tuple[SignedTx, ...], rules: ChainRules, *,
    steps: int, final_state_hash: bytes, trajectory_root: bytes, proof: bytes, work: bytes,
) -> Block:
    """The block for ``header`` with its seal; computes the post-state root (raises if invalid)."""
    draft = Seal(
        steps=steps, final_state_hash=final_state_hash, trajectory_root=trajectory_root,
        state_root=bytes(32), proof=proof,
    )
    diff = transition(pre, header, draft, txs, rules)
    seal = Seal(
        steps=steps, final_state_hash=final_state_hash, trajectory_root=trajectory_root,
        state_root=post_state_root(pre, diff), proof=proof,
    )
    return Block(header=header, seal=seal, txs=txs, work=work)
