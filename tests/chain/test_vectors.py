"""Golden chain vectors (tests/vectors/chain.json): a signed transfer's bytes, txid and digest, a v2
block under a shard nonce with its σ and τ, and every preset's genesis block. A change here is a protocol change: regenerate deliberately."""

from __future__ import annotations

import json

from chain.crypto import verify_signature_reference
from chain.types import Block, SignedTx
from consensus.seal import header_trajectory_seed
from tests.vectors.make_chain_vectors import PATH, vectors


def test_chain_vectors_match() -> None:
    golden = json.loads(PATH.read_text())
    assert vectors() == golden
    tx = SignedTx.decode(bytes.fromhex(golden["transfer"]["tx"]))
    verify_signature_reference(tx.pubkey, tx.digest, tx.signature)
    vector = golden["block_v2"]
    block = Block.decode(bytes.fromhex(vector["block"]))
    assert block.header.shard_nonce == 0x0102_0304_0506_0708
    assert block.header.lottery_seed.hex() == vector["lottery_seed"]
    assert header_trajectory_seed(block.header).hex() == vector["trajectory_seed"]
    for preset in golden["genesis"].values():
        block = Block.decode(bytes.fromhex(preset["block"]))
        assert block.hash.hex() == preset["hash"] and block.seal.state_root.hex() == preset["state_root"]
