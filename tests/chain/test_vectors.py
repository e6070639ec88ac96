"""Golden chain vectors (tests/vectors/chain.json): a signed transfer's bytes, txid and digest, and
every preset's genesis block. A change here is a protocol change: regenerate deliberately."""

from __future__ import annotations

import json

from chain.crypto import verify_signature_reference
from chain.types import Block, SignedTx
from tests.vectors.make_chain_vectors import PATH, vectors


def test_chain_vectors_match() -> None:
    golden = json.loads(PATH.read_text())
    assert vectors() == golden
    tx = SignedTx.decode(bytes.fromhex(golden["transfer"]["tx"]))
    verify_signature_reference(tx.pubkey, tx.digest, tx.signature)
    for preset in golden["genesis"].values():
        block = Block.decode(bytes.fromhex(preset["block"]))
        assert block.hash.hex() == preset["hash"] and block.seal.state_root.hex() == preset["state_root"]
