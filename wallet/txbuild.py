"""Building and signing transactions for the chain (the wallet side of chain.types)."""

from __future__ import annotations

from chain.types import SignedTx, TxBody, signing_digest
from wallet.keys import PrivateKey


def sign_tx(key: PrivateKey, body: TxBody) -> SignedTx:
    """Sign ``body`` (whose chain id is part of the signed digest) with ``key``."""
    return SignedTx(body=body, pubkey=key.public_key, signature=key.sign_digest(signing_digest(body)))
