"""Canonical encoding: every container round-trips; any mutation decodes to another valid value or
raises InvalidEncoding — never another exception."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.encoding import Container, pack, unpack
from chain.errors import InvalidEncoding, Reason
from chain.state import Account, DatasetRecord, JobRecord
from chain.types import (
    Block,
    DatasetPublish,
    Header,
    JobCancel,
    JobSpec,
    JobSubmit,
    Seal,
    SignedTx,
    Transfer,
)
from tests.chain.strategies import for_container

ALL_TYPES: list[type[Container]] = [
    JobSpec, Transfer, JobSubmit, JobCancel, DatasetPublish, SignedTx, Header, Seal, Block,
    Account, JobRecord, DatasetRecord,
]


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_round_trip(cls: type[Container], data: st.DataObject) -> None:
    value = data.draw(for_container(cls))
    encoded = value.encode()
    assert cls.decode(encoded) == value
    assert cls.decode(encoded).encode() == encoded


@pytest.mark.parametrize("cls", ALL_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_mutations_are_valid_or_typed_errors(cls: type[Container], data: st.DataObject) -> None:
    encoded = bytearray(data.draw(for_container(cls)).encode())
    kind = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "append"]))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    if kind == "flip":
        encoded[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "insert":
        encoded.insert(pos, data.draw(st.integers(0, 255)))
    elif kind == "delete":
        del encoded[pos]
    elif kind == "truncate":
        del encoded[pos:]
    else:
        encoded += data.draw(st.binary(min_size=1, max_size=8))
    try:
        value = cls.decode(bytes(encoded))
    except InvalidEncoding:
        return
    # Whatever decodes must be canonical: it re-encodes to exactly the input.
    assert value.encode() == bytes(encoded)


def test_trailing_bytes_rejected() -> None:
    encoded = Account(balance=5, nonce=1).encode()
    with pytest.raises(InvalidEncoding) as err:
        Account.decode(encoded + b"\x00")
    assert err.value.reason is Reason.TRAILING_BYTES


def test_map_where_array_belongs_rejected() -> None:
    with pytest.raises(InvalidEncoding) as err:
        Account.decode(msgpack.packb({"balance": 5, "nonce": 1}))
    assert err.value.reason is Reason.WRONG_TYPE


def test_wrong_field_count_rejected() -> None:
    with pytest.raises(InvalidEncoding) as err:
        Account.decode(pack([5]))
    assert err.value.reason is Reason.WRONG_FIELD_COUNT
    with pytest.raises(InvalidEncoding):
        Account.decode(pack([5, 1, 2]))


def test_wrong_types_rejected() -> None:
    for bad in ([b"5", 1], [5, "1"], [True, 1], [-1, 0], [2**64, 0]):
        with pytest.raises(InvalidEncoding):
            Account.decode(pack(bad))


def test_non_shortest_integer_rejected() -> None:
    # 5 as uint64 (0xcf) instead of a positive fixint.
    raw = b"\x92\xcf" + (5).to_bytes(8, "big") + b"\x01"
    with pytest.raises(InvalidEncoding) as err:
        Account.decode(raw)
    assert err.value.reason is Reason.NON_CANONICAL


def test_str_where_bytes_belong_rejected() -> None:
    spec = JobSpec(dims=(64,), dataset_id=bytes(32), batch_size=64, lr_shift=1, total_steps=1, fee_per_step=1)
    wire = spec.to_wire()
    wire[1] = "x" * 32
    with pytest.raises(InvalidEncoding):
        JobSpec.decode(pack(wire))


def test_floats_and_ext_rejected() -> None:
    with pytest.raises(InvalidEncoding):
        unpack(msgpack.packb([1.5, 1]))
    with pytest.raises(InvalidEncoding):
        unpack(msgpack.packb([msgpack.ExtType(1, b"x")]))


def test_unknown_tx_variant_rejected() -> None:
    tx = SignedTx(
        body=Transfer(chain_id=1, nonce=0, fee=1, to=bytes(20), amount=1, memo=b""),
        pubkey=bytes(33), signature=bytes(64),
    )
    wire = tx.to_wire()
    wire[0][0] = 99
    with pytest.raises(InvalidEncoding) as err:
        SignedTx.decode(pack(wire))
    assert err.value.reason is Reason.OUT_OF_RANGE


def test_too_long_fields_rejected() -> None:
    wire = Transfer(chain_id=1, nonce=0, fee=1, to=bytes(20), amount=1, memo=b"").to_wire()
    wire[5] = b"x" * 257
    with pytest.raises(InvalidEncoding) as err:
        Transfer.decode(pack(wire))
    assert err.value.reason is Reason.TOO_LONG


@given(st.binary(max_size=64))
def test_random_bytes_never_crash(raw: bytes) -> None:
    for cls in ALL_TYPES:
        try:
            cls.decode(raw)
        except InvalidEncoding:
            pass
