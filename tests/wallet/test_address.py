"""bech32m addresses: BIP-350 vectors, round trips, and that every single-character typo is caught."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.address import (
    CHARSET,
    InvalidAddress,
    bech32m_decode,
    bech32m_encode,
    decode_address,
    encode_address,
)
from wallet.keys import PrivateKey

BIP350_VALID = [
    "A1LQFN3A",
    "a1lqfn3a",
    "an83characterlonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11sg7hg6",
    "abcdef1l7aum6echk45nj3s0wdvt2fg8x9yrzpqzd3ryx",
    "11llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllludsr8",
    "split1checkupstagehandshakeupstreamerranterredcaperredlc445v",
    "?1v759aa",
]
BIP350_INVALID = [
    "\x201xj0phk",  # HRP character out of range
    "\x7f1g6xzxy",
    "\x801vctc34",
    "an84characterslonghumanreadablepartthatcontainsthetheexcludedcharactersbioandnumber11d6pts4",
    "qyrz8wqd2c9m",  # no separator
    "1qyrz8wqd2c9m",  # empty HRP
    "y1b0jsk6g",  # invalid data character
    "lt1igcx5c0",
    "in1muywd",  # too short checksum
    "mm1crxm3i",  # invalid character in checksum
    "au1s5cgom",
    "M1VUXWEZ",  # checksum computed with upper-case HRP
    "16plkw9",  # empty HRP
    "1p2gdwpf",
    # a valid *bech32* (BIP-173) string: the bech32m constant must tell them apart
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
]
SAMPLE_RAW = [bytes(20), b"\xff" * 20, bytes(range(20)), bytes.fromhex("751e76e8199196d454941c45d1b3a323f1433bd6")]

raw_addresses = st.binary(min_size=20, max_size=20)


@pytest.mark.parametrize("text", BIP350_VALID)
def test_bip350_valid_vectors(text: str) -> None:
    hrp, data = bech32m_decode(text)
    assert bech32m_encode(hrp, data) == text.lower()


@pytest.mark.parametrize("text", BIP350_INVALID)
def test_bip350_invalid_vectors(text: str) -> None:
    with pytest.raises(InvalidAddress):
        bech32m_decode(text)


@given(raw_addresses)
def test_round_trip(raw: bytes) -> None:
    text = encode_address(raw)
    assert text.startswith("pw1") and len(text) == 41 and text == text.lower()
    assert decode_address(text) == raw
    assert decode_address(text.upper()) == raw


@pytest.mark.parametrize("raw", SAMPLE_RAW)
def test_every_single_character_substitution_is_rejected(raw: bytes) -> None:
    text = encode_address(raw)
    tried = 0
    for position, original in enumerate(text):
        for replacement in CHARSET + "1":
            if replacement == original:
                continue
            typo = text[:position] + replacement + text[position + 1 :]
            with pytest.raises(InvalidAddress):
                decode_address(typo)
            tried += 1
    assert tried == len(text) * len(CHARSET)


@given(raw_addresses, st.data())
def test_mixed_case_is_rejected(raw: bytes, data: st.DataObject) -> None:
    text = encode_address(raw)
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    upper = set(data.draw(st.lists(st.sampled_from(letters), min_size=1, unique=True)))
    if len(upper) == len(letters):
        upper.pop()  # all upper case is allowed; keep at least one lower-case letter
    mixed = "".join(c.upper() if i in upper else c for i, c in enumerate(text))
    with pytest.raises(InvalidAddress, match="case"):
        decode_address(mixed)


@given(raw_addresses)
def test_deleting_or_swapping_characters_is_rejected(raw: bytes) -> None:
    text = encode_address(raw)
    for position in range(3, len(text)):
        with pytest.raises(InvalidAddress):
            decode_address(text[:position] + text[position + 1 :])
    for position in range(3, len(text) - 1):
        a, b = text[position], text[position + 1]
        if a != b:
            with pytest.raises(InvalidAddress):
                decode_address(text[:position] + b + a + text[position + 2 :])


def test_other_hrp_and_payload_sizes_are_rejected() -> None:
    raw = bytes(range(20))
    with pytest.raises(InvalidAddress, match="tp1"):
        decode_address(encode_address(raw, hrp="tp"))
    assert decode_address(encode_address(raw, hrp="tp"), hrp="tp") == raw
    for size in (19, 21, 32):
        data = [b % 32 for b in range(size * 8 // 5)]
        with pytest.raises(InvalidAddress, match="data characters"):
            decode_address(bech32m_encode("pw", data))
    with pytest.raises(InvalidAddress):
        encode_address(bytes(19))



# docs/protocol.md Part II, section 6: (private key, compressed public key, account id, address).
SPEC_VECTORS = [
    (
        1,
        "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "ba371b16346753ab24778a976645171e90cffc69",
        "pw1hgm3k935vaf6kfrh32tkv3ghr6gvllrfvu98av",
    ),
    (
        2,
        "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
        "2e0664a7e88e866abf62bc5c288b018a3b347d53",
        "pw19crxfflg36rx40mzh3wz3zcp3gangl2nzs8ww5",
    ),
]


@pytest.mark.parametrize(("secret", "pubkey", "account", "address"), SPEC_VECTORS)
def test_spec_vectors(secret: int, pubkey: str, account: str, address: str) -> None:
    key = PrivateKey(secret.to_bytes(32, "big"))
    assert key.public_key.hex() == pubkey
    assert key.address.hex() == account
    assert encode_address(key.address) == address


def test_spec_vectors_of_raw_ids() -> None:
    assert encode_address(bytes(20)) == "pw1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqq4qnvse"
    assert encode_address(bytes(range(20))) == "pw1qqqsyqcyq5rqwzqfpg9scrgwpugpzysn94zfxa"
