"""The human form of an account id: bech32m (BIP-350) with the human-readable part ``pw``.

An address is ``pw1`` followed by the 20-byte account id in 32 base-32 characters and a 6-character
bech32m checksum, 41 characters in all (docs/protocol.md Part II). The checksum is a BCH code that
detects every error in up to 4 characters, so any typo in a single character is caught.

The generic codec (:func:`bech32m_encode`, :func:`bech32m_decode`) follows BIP-173's string rules
with BIP-350's checksum constant; the address layer adds the HRP and the payload size.
"""

from __future__ import annotations

from collections.abc import Sequence

from chain.crypto import ADDRESS_SIZE
from chain.errors import PouwError

ADDRESS_HRP = "pw"
CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
BECH32M_CONST = 0x2BC830A3
MAX_LENGTH = 90
CHECKSUM_LENGTH = 6
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_ADDRESS_CHARS = 8 * ADDRESS_SIZE // 5  # 5-bit groups holding an account id


class InvalidAddress(PouwError):
    """Text that is not a well-formed address with a correct checksum."""


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _checksum(hrp: str, data: Sequence[int]) -> list[int]:
    polymod = _polymod([*_hrp_expand(hrp), *data, 0, 0, 0, 0, 0, 0]) ^ BECH32M_CONST
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(CHECKSUM_LENGTH)]


def bech32m_encode(hrp: str, data: Sequence[int]) -> str:
    """Lower-case bech32m string of ``hrp`` and 5-bit ``data`` values."""
    return hrp + "1" + "".join(CHARSET[d] for d in [*data, *_checksum(hrp, data)])


def bech32m_decode(text: str) -> tuple[str, list[int]]:
    """Split a bech32m string into its (lower-case) HRP and 5-bit data, checking everything."""
    if len(text) > MAX_LENGTH:
        raise InvalidAddress(f"too long: {len(text)} characters, at most {MAX_LENGTH}")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise InvalidAddress("contains a character outside printable ASCII")
    if text.lower() != text and text.upper() != text:
        raise InvalidAddress("mixes upper and lower case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1:
        raise InvalidAddress("missing human-readable part or '1' separator")
    if len(text) - sep - 1 < CHECKSUM_LENGTH:
        raise InvalidAddress("too short to hold a checksum")
    hrp, rest = text[:sep], text[sep + 1 :]
    bad = [c for c in rest if c not in _CHARSET_INDEX]
    if bad:
        raise InvalidAddress(f"invalid character {bad[0]!r} after the separator")
    data = [_CHARSET_INDEX[c] for c in rest]
    if _polymod([*_hrp_expand(hrp), *data]) != BECH32M_CONST:
        raise InvalidAddress("checksum mismatch (a typo?)")
    return hrp, data[:-CHECKSUM_LENGTH]


def _regroup(values: Sequence[int], from_bits: int, to_bits: int) -> list[int]:
    """Re-pack big-endian bit groups. An account id is 160 bits, a multiple of both 8 and 5, so
    there are never padding bits to add or check."""
    acc = bits = 0
    out: list[int] = []
    for value in values:
        acc = acc << from_bits | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append(acc >> bits & ((1 << to_bits) - 1))
    return out


def encode_address(raw: bytes, hrp: str = ADDRESS_HRP) -> str:
    """``pw1...`` form of a 20-byte account id."""
    if len(raw) != ADDRESS_SIZE:
        raise InvalidAddress(f"account id must be {ADDRESS_SIZE} bytes, got {len(raw)}")
    return bech32m_encode(hrp, _regroup(raw, 8, 5))


def decode_address(text: str, hrp: str = ADDRESS_HRP) -> bytes:
    """The 20-byte account id of an address; :class:`InvalidAddress` says what is wrong."""
    got_hrp, data = bech32m_decode(text.strip())
    if got_hrp != hrp:
        raise InvalidAddress(f"address must start with {hrp}1, got {got_hrp}1")
    if len(data) != _ADDRESS_CHARS:
        raise InvalidAddress(
            f"address has {len(data)} data characters, expected {_ADDRESS_CHARS}"
        )
    return bytes(_regroup(data, 5, 8))
