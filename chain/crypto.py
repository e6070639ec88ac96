"""Signature checks and account ids: the consensus side of secp256k1 (spec: docs/protocol.md Part II).

The chain never signs; it checks. A signature is ECDSA over secp256k1 on a 32-byte digest that the
transaction layer has already computed (it commits to the chain id); the digest is used as the
ECDSA message hash directly, with no further hashing. Signatures are 64 bytes ``r || s``
(big-endian), public keys 33-byte SEC1 compressed points, and only low-S signatures
(``s <= n/2``) are valid, so a signature cannot be malleated into a second valid one.

Two verifiers share one contract and must agree on every input, including *which* rule rejects:

* :func:`verify_signature`, the fast path, on libsecp256k1 through ``coincurve``;
* :func:`verify_signature_reference`, on the pure-Python ``ecdsa`` library.

Checks run in a fixed order so that both give the same :class:`~chain.errors.Reason`: sizes, then
the range of ``r`` and ``s`` (``BAD_SIGNATURE``), then low-S (``HIGH_S``), then the public key
(``BAD_SIGNATURE``), then the curve equation (``BAD_SIGNATURE``).
"""

from __future__ import annotations

import coincurve
import ecdsa
from ecdsa.errors import MalformedPointError

from chain.errors import InvalidTransaction, Reason
from chain.hashing import address_hash

PUBKEY_SIZE = 33
DIGEST_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 20

#: Order n of the secp256k1 group.
CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Largest ``s`` a valid signature may carry.
HALF_ORDER = CURVE_ORDER // 2

_COMPRESSED_PREFIXES = (0x02, 0x03)


def _bad(detail: str) -> InvalidTransaction:
    return InvalidTransaction(Reason.BAD_SIGNATURE, detail)


def _checked_scalars(pubkey: bytes, digest: bytes, signature: bytes) -> tuple[int, int]:
    """The library-independent rules, in consensus order; returns ``(r, s)``."""
    if len(pubkey) != PUBKEY_SIZE or pubkey[0] not in _COMPRESSED_PREFIXES:
        raise _bad(f"public key must be {PUBKEY_SIZE} bytes, compressed (0x02/0x03)")
    if len(digest) != DIGEST_SIZE:
        raise _bad(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")
    if len(signature) != SIGNATURE_SIZE:
        raise _bad(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < CURVE_ORDER and 0 < s < CURVE_ORDER):
        raise _bad("r or s out of range [1, n-1]")
    if s > HALF_ORDER:
        raise InvalidTransaction(Reason.HIGH_S, "s > n/2; use the low-S form n - s")
    return r, s


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # room for a 0x00 sign byte
    return b"\x02" + bytes([len(body)]) + body


def _der_signature(r: int, s: int) -> bytes:
    body = _der_integer(r) + _der_integer(s)
    return b"\x30" + bytes([len(body)]) + body


def _parse_pubkey(pubkey: bytes) -> coincurve.PublicKey:
    """A compressed point accepted by libsecp256k1; ValueError otherwise."""
    if len(pubkey) != PUBKEY_SIZE or pubkey[0] not in _COMPRESSED_PREFIXES:
        raise ValueError(f"public key must be {PUBKEY_SIZE} bytes, compressed (0x02/0x03)")
    return coincurve.PublicKey(pubkey)


def verify_signature(pubkey: bytes, digest: bytes, signature: bytes) -> None:
    """Accept a low-S ``r || s`` signature of ``digest`` by ``pubkey``, or raise (libsecp256k1).

    Raises :class:`InvalidTransaction` with ``Reason.HIGH_S`` when ``s > n/2`` and
    ``Reason.BAD_SIGNATURE`` for every other failure.
    """
    r, s = _checked_scalars(pubkey, digest, signature)
    try:
        key = _parse_pubkey(pubkey)
    except ValueError as exc:
        raise _bad("public key is not a point on secp256k1") from exc
    if not key.verify(_der_signature(r, s), digest, hasher=None):
        raise _bad("signature does not match public key and digest")


def verify_signature_reference(pubkey: bytes, digest: bytes, signature: bytes) -> None:
    """Same contract as :func:`verify_signature`, computed by the pure-Python ``ecdsa`` library."""
    _checked_scalars(pubkey, digest, signature)
    try:
        key = ecdsa.VerifyingKey.from_string(
            pubkey, curve=ecdsa.SECP256k1, valid_encodings=("compressed",)
        )
    except MalformedPointError as exc:
        raise _bad("public key is not a point on secp256k1") from exc
    try:
        key.verify_digest(signature, digest)
    except ecdsa.BadSignatureError as exc:
        raise _bad("signature does not match public key and digest") from exc


def check_public_key(pubkey: bytes) -> None:
    """Raise ``InvalidTransaction(BAD_PUBLIC_KEY)`` unless ``pubkey`` is a compressed point."""
    try:
        _parse_pubkey(pubkey)
    except ValueError as exc:
        raise InvalidTransaction(
            Reason.BAD_PUBLIC_KEY, f"not a compressed secp256k1 point ({len(pubkey)} bytes)"
        ) from exc


def address_from_pubkey(pubkey: bytes) -> bytes:
    """The 20-byte account id of a valid compressed public key."""
    check_public_key(pubkey)
    return address_hash(pubkey)
