"""The message codec: round trips, per-type byte caps, item caps, and malformed frames."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.errors import Reason
from p2p.config import CLASS_OF
from p2p.messages import (
    BYTE_CAPS,
    MAX_ADDRS,
    MAX_HEADERS,
    MAX_INV_ITEMS,
    MAX_LOCATOR_HASHES,
    TAGS,
    Addr,
    BlockMessage,
    GetAddr,
    GetData,
    GetHeaders,
    Headers,
    Inv,
    InvKind,
    MalformedMessage,
    Message,
    NotFound,
    OversizedMessage,
    PeerAddress,
    Ping,
    Pong,
    Reject,
    SealedHeader,
    TxMessage,
    Verack,
    decode_message,
    encode_message,
    sealed_headers,
)
from p2p.misbehavior import Offence, offence_for
from tests.factories import KEYS, build_chain, transfer
from tests.p2p.helpers import local_version

BLOCKS, _ = build_chain(3, txs_at={1: [transfer(KEYS[0], KEYS[1].address, 5, 0)]})
H = bytes(range(32))


def samples() -> list[Message]:
    return [
        local_version(nonce=2**64 - 1, best_work=2**300, best_height=12, listen_port=8333),
        Verack(),
        Ping(nonce=0),
        Pong(nonce=2**63),
        Inv(kind=InvKind.TX, hashes=(H, bytes(32))),
        GetData(kind=InvKind.BLOCK, hashes=(H,)),
        NotFound(kind=InvKind.BLOCK, hashes=()),
        GetHeaders(locator=(H,) * MAX_LOCATOR_HASHES, stop=bytes(32)),
        Headers(headers=sealed_headers((b.header, b.seal) for b in BLOCKS)),
        BlockMessage(block=BLOCKS[1]),
        TxMessage(tx=BLOCKS[1].txs[0]),
        GetAddr(),
        Addr(addresses=(PeerAddress(host="10.0.0.1", port=1, last_seen=5),
                        PeerAddress(host="::1", port=65535, last_seen=0))),
        Reject(code="wrong-network", detail="é" * 10),
    ]


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_round_trip_within_cap(message: Message) -> None:
    frame = encode_message(message)
    assert decode_message(frame) == message
    assert len(frame) <= BYTE_CAPS[type(message)]


def test_every_type_has_a_cap_a_rate_class_and_a_sample() -> None:
    assert set(BYTE_CAPS) == set(TAGS.values()) == set(CLASS_OF)
    assert {type(m) for m in samples()} == set(TAGS.values())


def test_largest_lists_fit_their_caps() -> None:
    """The caps are not tighter than the item limits: a full message still decodes."""
    full_inv = Inv(kind=InvKind.TX, hashes=(H,) * MAX_INV_ITEMS)
    assert decode_message(encode_message(full_inv)) == full_inv
    widest = PeerAddress(host="f" * 64, port=65535, last_seen=2**64 - 1)
    full_addr = Addr(addresses=(widest,) * MAX_ADDRS)
    assert decode_message(encode_message(full_addr)) == full_addr
    header = SealedHeader(header=BLOCKS[0].header, seal=BLOCKS[0].seal)
    full_headers = Headers(headers=(header,) * MAX_HEADERS)
    assert decode_message(encode_message(full_headers)) == full_headers


def raw_frame(tag: int, fields: list[object]) -> bytes:
    return msgpack.packb([tag, fields], use_bin_type=True)


@pytest.mark.parametrize("kind", [Inv, GetData, NotFound])
def test_too_many_inventory_items(kind: type) -> None:
    tag = next(t for t, cls in TAGS.items() if cls is kind)
    frame = raw_frame(tag, [1, [H] * (MAX_INV_ITEMS + 1)])
    with pytest.raises(MalformedMessage) as info:
        decode_message(frame)
    assert info.value.reason is Reason.TOO_LONG
    assert offence_for(info.value) is Offence.TOO_MANY_INV_ITEMS


def test_too_many_addresses_is_malformed() -> None:
    entry = ["10.0.0.1", 1, 0]
    frame = raw_frame(13, [[entry] * (MAX_ADDRS + 1)])
    with pytest.raises(MalformedMessage) as info:
        decode_message(frame)
    assert offence_for(info.value) is Offence.MALFORMED_MESSAGE


def test_per_type_cap_is_checked_before_decoding() -> None:
    # A ping whose frame is far larger than any ping: refused on its length alone.
    frame = raw_frame(3, [1]) + bytes(100)
    with pytest.raises(OversizedMessage) as info:
        decode_message(frame)
    assert offence_for(info.value) is Offence.OVERSIZED_MESSAGE
    assert info.value.message_type == "Ping"


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"", Reason.MALFORMED),
        (b"\x92\x63\x90", Reason.MALFORMED),  # unknown tag 99
        (msgpack.packb([3, [1]]) + b"\x00", Reason.TRAILING_BYTES),
        (b"\x92\x03\x91\xcf" + (5).to_bytes(8, "big"), Reason.NON_CANONICAL),  # 5 as uint64
        (raw_frame(3, [-1]), Reason.OUT_OF_RANGE),
        (raw_frame(3, []), Reason.WRONG_FIELD_COUNT),
        (raw_frame(5, [3, [H]]), Reason.OUT_OF_RANGE),  # inventory kind 3
        (raw_frame(5, [1, [H[:31]]]), Reason.OUT_OF_RANGE),  # a 31-byte hash
        (raw_frame(2, [0]), Reason.WRONG_FIELD_COUNT),  # verack has no fields
        (b"\x93\x03\x91\x01\x01", Reason.MALFORMED),  # a 3-array envelope
    ],
)
def test_malformed_frames(frame: bytes, reason: Reason) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_message(frame)
    assert info.value.reason is reason


def test_user_agent_is_capped() -> None:
    too_long = dataclasses.replace(local_version(), user_agent="x" * 64)
    decode_message(encode_message(too_long))
    frame = encode_message(too_long).replace(b"x" * 64, b"x" * 65).replace(b"\xd9\x40", b"\xd9\x41")
    with pytest.raises(MalformedMessage):
        decode_message(frame)


@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_malformed(data: bytes) -> None:
    try:
        decode_message(data)
    except MalformedMessage:
        pass


@given(st.integers(min_value=1, max_value=14), st.binary(max_size=200))
def test_random_bodies_behind_a_valid_tag_only_ever_raise_malformed(tag: int, body: bytes) -> None:
    try:
        decode_message(bytes([0x92, tag]) + body)
    except MalformedMessage:
        pass
