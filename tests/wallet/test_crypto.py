"""Signatures: libsecp256k1 (fast path) against python-ecdsa (reference), low-S, typed rejections."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.crypto import (
    CURVE_ORDER,
    HALF_ORDER,
    address_from_pubkey,
    check_public_key,
    verify_signature,
    verify_signature_reference,
)
from chain.errors import InvalidTransaction, Reason
from chain.hashing import address_hash
from wallet.keys import InvalidKey, PrivateKey, sign_digest_reference

Verifier = Callable[[bytes, bytes, bytes], None]
VERIFIERS: list[Verifier] = [verify_signature, verify_signature_reference]

secrets_ = st.integers(1, CURVE_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
digests = st.binary(min_size=32, max_size=32)
# A digest that is 0 mod n signs for both P and -P (ECDSA's z = 0 symmetry), so flipping the key's
# prefix byte would not be tampering; hash outputs never hit it.
nonzero_digests = digests.filter(lambda d: int.from_bytes(d, "big") % CURVE_ORDER != 0)
ONE = PrivateKey((1).to_bytes(32, "big"))


def outcome(verify: Verifier, pubkey: bytes, digest: bytes, signature: bytes) -> Reason | None:
    try:
        verify(pubkey, digest, signature)
    except InvalidTransaction as exc:
        return exc.reason
    return None


def with_s(signature: bytes, s: int) -> bytes:
    return signature[:32] + s.to_bytes(32, "big")


def test_public_key_of_one_is_the_generator() -> None:
    assert ONE.public_key.hex() == (
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
    )


# Published RFC 6979 vectors for secp256k1 (key 1, SHA-256 of the message as the digest); the
# second half of the first is the low-S form of s = 0xdbbd3162...675c.
RFC6979_VECTORS = [
    (
        b"Satoshi Nakamoto",
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8"
        "2442ce9d2b916064108014783e923ec36b49743e2ffa1c4496f01a512aafd9e5",
    ),
    (
        b"All those moments will be lost in time, like tears in rain. Time to die...",
        "8600dbd41e348fe5c9465ab92d23e3db8b98b873beecd930736488696438cb6b"
        "547fe64427496db33bf66019dacbf0039c04199abb0122918601db38a72cfc21",
    ),
]


@pytest.mark.parametrize(("message", "expected"), RFC6979_VECTORS)
def test_published_rfc6979_vectors(message: bytes, expected: str) -> None:
    digest = hashlib.sha256(message).digest()
    assert ONE.sign_digest(digest).hex() == expected
    assert sign_digest_reference(ONE, digest).hex() == expected
    for verify in VERIFIERS:
        verify(ONE.public_key, digest, bytes.fromhex(expected))


@given(secrets_, digests)
def test_fast_and_reference_signers_agree_and_cross_verify(secret: bytes, digest: bytes) -> None:
    key = PrivateKey(secret)
    fast = key.sign_digest(digest)
    reference = sign_digest_reference(key, digest)
    assert fast == reference  # same RFC 6979 nonce, same low-S normalisation
    assert int.from_bytes(fast[32:], "big") <= HALF_ORDER
    verify_signature_reference(key.public_key, digest, fast)
    verify_signature(key.public_key, digest, reference)


@given(secrets_, digests)
def test_high_s_twin_is_rejected_by_both(secret: bytes, digest: bytes) -> None:
    key = PrivateKey(secret)
    signature = key.sign_digest(digest)
    twin = with_s(signature, CURVE_ORDER - int.from_bytes(signature[32:], "big"))
    for verify in VERIFIERS:
        with pytest.raises(InvalidTransaction) as info:
            verify(key.public_key, digest, twin)
        assert info.value.reason is Reason.HIGH_S


def test_published_high_s_signature_is_rejected() -> None:
    digest = hashlib.sha256(b"Satoshi Nakamoto").digest()
    high = bytes.fromhex(
        "934b1ea10a4b3c1757e2b0c017d0b6143ce3c9a7e6a4a49860d7a6ab210ee3d8"
        "dbbd3162d46e9f9bef7feb87c16dc13b4f6568a87f4e83f728e2443ba586675c"
    )
    for verify in VERIFIERS:
        assert outcome(verify, ONE.public_key, digest, high) is Reason.HIGH_S


@given(secrets_, nonzero_digests, st.data())
def test_any_tampering_is_rejected_alike(secret: bytes, digest: bytes, data: st.DataObject) -> None:
    key = PrivateKey(secret)
    signature = key.sign_digest(digest)
    target = data.draw(st.sampled_from(["pubkey", "digest", "signature"]))
    parts = {"pubkey": key.public_key, "digest": digest, "signature": signature}
    original = parts[target]
    index = data.draw(st.integers(0, len(original) - 1))
    flip = data.draw(st.integers(1, 255))
    parts[target] = original[:index] + bytes([original[index] ^ flip]) + original[index + 1 :]
    reasons = {outcome(v, parts["pubkey"], parts["digest"], parts["signature"]) for v in VERIFIERS}
    assert len(reasons) == 1
    assert reasons <= {Reason.BAD_SIGNATURE, Reason.HIGH_S}


def test_signature_by_another_key_is_rejected() -> None:
    digest = bytes(range(32))
    other = PrivateKey((2).to_bytes(32, "big"))
    for verify in VERIFIERS:
        assert outcome(verify, ONE.public_key, digest, other.sign_digest(digest)) is (
            Reason.BAD_SIGNATURE
        )


@given(
    st.sampled_from([b"\x02", b"\x03"]).flatmap(
        lambda prefix: st.binary(min_size=32, max_size=32).map(lambda x: prefix + x)
    ),
    digests,
    st.binary(min_size=64, max_size=64),
)
def test_verifiers_agree_on_arbitrary_input(pubkey: bytes, digest: bytes, sig: bytes) -> None:
    assert outcome(verify_signature, pubkey, digest, sig) == outcome(
        verify_signature_reference, pubkey, digest, sig
    )


def test_scalar_boundaries() -> None:
    digest = bytes(32)
    good = ONE.sign_digest(digest)
    r = good[:32]
    cases = {
        with_s(good, 0): Reason.BAD_SIGNATURE,
        with_s(good, CURVE_ORDER): Reason.BAD_SIGNATURE,
        with_s(good, HALF_ORDER): Reason.BAD_SIGNATURE,  # low enough, but wrong
        with_s(good, HALF_ORDER + 1): Reason.HIGH_S,
        bytes(32) + good[32:]: Reason.BAD_SIGNATURE,  # r = 0
        CURVE_ORDER.to_bytes(32, "big") + good[32:]: Reason.BAD_SIGNATURE,  # r = n
        r + good[32:] + b"\x00": Reason.BAD_SIGNATURE,  # 65 bytes
        good[:63]: Reason.BAD_SIGNATURE,
    }
    for signature, reason in cases.items():
        for verify in VERIFIERS:
            assert outcome(verify, ONE.public_key, digest, signature) is reason


def test_malformed_public_keys() -> None:
    digest = bytes(32)
    signature = ONE.sign_digest(digest)
    p = 2**256 - 2**32 - 977
    uncompressed = b"\x04" + bytes.fromhex(
        "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
    )
    bad_keys = [
        uncompressed,  # a valid point, but not in compressed form
        b"\x04" + ONE.public_key[1:],
        ONE.public_key[:32],
        b"\x02" + (p + 1).to_bytes(32, "big"),  # x >= p
        b"\x02" + (5).to_bytes(32, "big"),  # x^3 + 7 is not a square mod p
    ]
    for pubkey in bad_keys:
        for verify in VERIFIERS:
            assert outcome(verify, pubkey, digest, signature) is Reason.BAD_SIGNATURE
        with pytest.raises(InvalidTransaction) as info:
            address_from_pubkey(pubkey)
        assert info.value.reason is Reason.BAD_PUBLIC_KEY


def test_wrong_digest_length_is_bad_signature() -> None:
    signature = ONE.sign_digest(bytes(32))
    for verify in VERIFIERS:
        assert outcome(verify, ONE.public_key, bytes(31), signature) is Reason.BAD_SIGNATURE
    with pytest.raises(ValueError):
        ONE.sign_digest(bytes(33))


@given(secrets_)
def test_address_is_the_hash_of_the_compressed_key(secret: bytes) -> None:
    key = PrivateKey(secret)
    check_public_key(key.public_key)
    assert address_from_pubkey(key.public_key) == key.address == address_hash(key.public_key)
    assert len(key.address) == 20


def test_private_key_parsing() -> None:
    assert PrivateKey.from_hex(" 0x" + ONE.hex() + "\n") == ONE
    assert ONE.hex() == "00" * 31 + "01"
    for bad in ["", "00" * 31, "zz" * 32, "00" * 32, f"{CURVE_ORDER:064x}", "00" * 33]:
        with pytest.raises(InvalidKey):
            PrivateKey.from_hex(bad)
    with pytest.raises(InvalidKey):
        PrivateKey(bytes(31) + b"\x01" + b"\x00")
    assert ONE.hex() not in repr(ONE)
    fresh = {PrivateKey.generate().secret for _ in range(8)}
    assert len(fresh) == 8
