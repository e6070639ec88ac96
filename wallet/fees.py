"""The smallest fee a transaction can pay, found before it is signed.

The chain's floor is ``required_fee(len(encoded signed tx))`` (``ChainRules.required_fee``), and the
fee is itself a field of the encoding, so a larger fee can make the transaction longer and raise
its own floor. :func:`floor_fee` finds the least fee ``f`` with ``f >= required_fee(size(f))``.
Public keys (33 bytes) and signatures (64 bytes) have fixed sizes, so the size is known without
the key: the search runs on a placeholder signature.
"""

from __future__ import annotations

from collections.abc import Callable

from chain.types import SignedTx, TxBody

PUBKEY_SIZE = 33
SIGNATURE_SIZE = 64

FeeRule = Callable[[int], int]
"""Encoded size in bytes → the smallest fee the chain accepts for it (``ChainRules.required_fee``)."""


def signed_size(body: TxBody) -> int:
    """Bytes of the signed transaction that carries ``body`` (whatever the key and signature)."""
    return len(SignedTx(body=body, pubkey=bytes(PUBKEY_SIZE), signature=bytes(SIGNATURE_SIZE)).encode())


def floor_fee(make_body: Callable[[int], TxBody], required_fee: FeeRule) -> int:
    """The least fee ``f`` such that ``make_body(f)`` pays at least the floor for its own size.

    Iterates ``f ← required_fee(size(f))`` from 0. Sizes never shrink as the fee grows, so every
    iterate is at most any acceptable fee, the sequence rises, and it stops at the least one (after
    at most one step per msgpack integer width).
    """
    fee = 0
    while True:
        needed = required_fee(signed_size(make_body(fee)))
        if needed <= fee:
            return fee
        fee = needed
