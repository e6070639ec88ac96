"""Regenerate tests/vectors/chain.json: canonical bytes and hashes of chain values, and each preset's
genesis. Run ``python -m tests.vectors.make_chain_vectors`` only for a deliberate protocol change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chain.types import Transfer
from consensus.presets import PRESETS
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
    return {
        "transfer": {"secret": KEY.hex(), "tx": tx.encode().hex(), "txid": tx.txid.hex(),
                     "signing_digest": tx.digest.hex(), "sender": tx.sender.hex()},
        "genesis": genesis,
    }


if __name__ == "__main__":
    PATH.write_text(json.dumps(vectors(), indent=2) + "\n")
