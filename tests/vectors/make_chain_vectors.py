"""Regenerate tests/vectors/chain.json: canonical bytes and hashes of chain values (a signed transfer;
a v3 block with a shard nonce, its lottery seed σ, trajectory seed τ, header hash, block hash and a step
seed σ_j), and each preset's
genesis. Run ``python -m tests.vectors.make_chain_vectors`` only for a deliberate protocol change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chain.types import BLOCK_VERSION, Block, Header, Seal, Transfer, tx_root, work_hash_of
from consensus.presets import PRESETS
from consensus.seal import header_trajectory_seed
from pouw.proof import step_seed
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

PATH = Path(__file__).with_name("chain.json")
KEY = PrivateKey(bytes(range(1, 33)))


def vectors() -> dict[str, Any]:
    body = Transfer(chain_id=0x50570001, nonce=7, fee=12_345, to=bytes(range(20)), amount=10**8, memo=b"vector")
    tx = sign_tx(KEY, body)
    genesis = {}
    for name, preset in sorted(PRESETS.items()):
        block, state = preset.genesis()
        genesis[name] = {"block": block.encode().hex(), "hash": block.hash.hex(), "state_root": state.root().hex(),
                         "target": f"{preset.initial_target:064x}"}
    work = b"work bytes of the vector block"
    header = Header(
        version=BLOCK_VERSION, height=42, prev_hash=bytes(range(32)), timestamp=1_793_491_300,
        tx_root=tx_root((tx,)), target=1 << 240, miner=bytes(range(20, 40)), job_id=bytes(range(40, 72)),
        start_state_hash=bytes(range(72, 104)), dims=(64, 128, 64), batch_size=64, lr_shift=8,
        shard_nonce=0x0102_0304_0506_0708,
    )
    seal = Seal(
        steps=17, final_state_hash=bytes(range(104, 136)), trajectory_root=bytes(range(136, 168)),
        prefix_root=bytes(range(168, 200)), state_root=bytes(range(200, 232)), work_hash=work_hash_of(work),
        proof=b"proof",
    )
    block = Block(header=header, seal=seal, txs=(tx,), work=work)
    return {
        "block_v2": {"block": block.encode().hex(), "header": header.encode().hex(),
                     "lottery_seed": header.lottery_seed.hex(), "header_hash": header.hash.hex(),
                     "trajectory_seed": header_trajectory_seed(header).hex(),
                     "work_hash": seal.work_hash.hex(), "hash": block.hash.hex(),
                     "step_seed_58": step_seed(header.lottery_seed, 58, seal.prefix_root).hex()},
        "transfer": {"secret": KEY.hex(), "tx": tx.encode().hex(), "txid": tx.txid.hex(),
                     "signing_digest": tx.digest.hex(), "sender": tx.sender.hex()},
        "genesis": genesis,
    }


if __name__ == "__main__":
    PATH.write_text(json.dumps(vectors(), indent=2) + "\n")
