"""Helpers for the mempool tests: a pool with small limits, funded states, tx builders."""

from __future__ import annotations

import dataclasses

from chain.genesis import genesis_state
from chain.state import State
from chain.types import COIN, DatasetPublish, SignedTx
from consensus.mempool import Mempool
from tests.factories import CHAIN_ID, FEE, GENESIS, RULES, key
from wallet.keys import PrivateKey
from wallet.txbuild import sign_tx

NOW = 1_700_000_000
EXPIRY = 3_600
SINK = key(99).address
"""A recipient outside every test's senders."""


def pool(
    *, max_txs: int = 1_000, max_bytes: int = 1_000_000, expiry: int = EXPIRY, per_account: int = 8,
    max_nonce_gap: int = 4,
) -> Mempool:
    return Mempool(RULES, max_txs, max_bytes, expiry, per_account, max_nonce_gap=max_nonce_gap)


def funded(keys: list[PrivateKey], balance: int = 1_000 * COIN) -> State:
    """The factories' genesis state (dataset, builtin job) with ``keys`` funded instead."""
    return genesis_state(
        dataclasses.replace(GENESIS, allocations=tuple((k.address, balance) for k in keys))
    )


def publish(sender: PrivateKey, nonce: int, data: bytes, fee: int = FEE) -> SignedTx:
    return sign_tx(sender, DatasetPublish(chain_id=CHAIN_ID, nonce=nonce, fee=fee, name="d", data=data))
