"""Private keys and signing: the wallet side of the signature scheme in docs/protocol.md Part II.

A :class:`PrivateKey` is a secp256k1 scalar ``1 <= k < n`` held as 32 big-endian bytes. It signs
32-byte digests directly (no further hashing) with RFC 6979 deterministic nonces and always
produces the low-S ``r || s`` form that :func:`chain.crypto.verify_signature` accepts.
:func:`sign_digest_reference` computes the same signature with the pure-Python ``ecdsa`` library,
so tests can check the fast path byte for byte.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

import coincurve
import ecdsa
from ecdsa.util import sigencode_string_canonize

from chain.crypto import CURVE_ORDER, DIGEST_SIZE
from chain.errors import PouwError
from chain.hashing import address_hash

SECRET_SIZE = 32


class InvalidKey(PouwError):
    """Bytes or text that are not a valid secp256k1 private key."""


def _check_digest(digest: bytes) -> None:
    if len(digest) != DIGEST_SIZE:
        raise ValueError(f"digest must be {DIGEST_SIZE} bytes, got {len(digest)}")


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A secp256k1 private key; ``repr`` never shows the secret."""

    secret: bytes
    public_key: bytes = field(init=False, compare=False)
    _signer: coincurve.PrivateKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_SIZE:
            raise InvalidKey(f"private key must be {SECRET_SIZE} bytes, got {len(self.secret)}")
        if not 0 < int.from_bytes(self.secret, "big") < CURVE_ORDER:
            raise InvalidKey("private key out of range [1, n-1]")
        signer = coincurve.PrivateKey(self.secret)
        object.__setattr__(self, "_signer", signer)
        object.__setattr__(self, "public_key", signer.public_key.format(compressed=True))

    @classmethod
    def generate(cls) -> PrivateKey:
        """A fresh key from the operating system's CSPRNG."""
        while True:
            candidate = secrets.token_bytes(SECRET_SIZE)
            if 0 < int.from_bytes(candidate, "big") < CURVE_ORDER:
                return cls(candidate)

    @classmethod
    def from_hex(cls, text: str) -> PrivateKey:
        """Parse 64 hex digits (an optional ``0x`` prefix and surrounding spaces are allowed)."""
        digits = text.strip()
        if digits[:2].lower() == "0x":
            digits = digits[2:]
        if len(digits) != 2 * SECRET_SIZE:
            raise InvalidKey(f"private key must be {2 * SECRET_SIZE} hex digits, got {len(digits)}")
        try:
            return cls(bytes.fromhex(digits))
        except ValueError as exc:
            raise InvalidKey("private key is not valid hex") from exc

    def hex(self) -> str:
        return self.secret.hex()

    @property
    def address(self) -> bytes:
        """The 20-byte account id (``chain.hashing.address_hash`` of the public key)."""
        return address_hash(self.public_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """64-byte low-S ``r || s`` signature of a 32-byte digest (libsecp256k1, RFC 6979)."""
        _check_digest(digest)
        # The recoverable form is r || s || recid; libsecp256k1 always emits low-S.
        return self._signer.sign_recoverable(digest, hasher=None)[:64]

    def __repr__(self) -> str:
        return f"PrivateKey(public_key={self.public_key.hex()})"


def sign_digest_reference(key: PrivateKey, digest: bytes) -> bytes:
    """The signature :meth:`PrivateKey.sign_digest` must produce, computed with ``ecdsa``."""
    _check_digest(digest)
    signer = ecdsa.SigningKey.from_string(key.secret, curve=ecdsa.SECP256k1)
    signature: bytes = signer.sign_digest_deterministic(
        digest, hashfunc=hashlib.sha256, sigencode=sigencode_string_canonize
    )
    return signature
