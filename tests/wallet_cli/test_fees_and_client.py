"""The pieces under the commands, without processes: the floor fee, ``--dims``, and the node client's
error handling and waiting."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.types import Transfer, TxBody
from tests.functional.framework import free_port
from wallet.client import Json, NodeClient, NodeError, NodeUnreachable, TxNotConfirmed
from wallet.fees import floor_fee, signed_size
from wallet.jobs import BadJob, parse_dims


def transfer(memo: bytes) -> Callable[[int], TxBody]:
    return lambda fee: Transfer(chain_id=7, nonce=3, fee=fee, to=bytes(20), amount=10**8, memo=memo)


def pays_floor(make: Callable[[int], TxBody], rule: Callable[[int], int], fee: int) -> bool:
    return fee >= rule(signed_size(make(fee)))


@given(min_fee=st.integers(0, 100_000), per_byte=st.integers(0, 300), memo=st.binary(max_size=256))
def test_floor_fee_is_the_least_fee_that_pays_for_its_own_size(min_fee: int, per_byte: int, memo: bytes) -> None:
    make = transfer(memo)

    def rule(size: int) -> int:
        return min_fee + per_byte * size

    fee = floor_fee(make, rule)
    assert pays_floor(make, rule, fee)
    # No fee below the floor of the smallest encoding can pay; check every one from there up.
    lowest = rule(signed_size(make(0)))
    assert all(not pays_floor(make, rule, g) for g in range(lowest, fee))


def test_floor_fee_when_the_fee_outgrows_its_integer_width() -> None:
    make = transfer(b"")
    size16 = signed_size(make(0xFFFF))  # msgpack uint16
    assert signed_size(make(0x10000)) == size16 + 2  # uint32 takes two more bytes

    def rule(size: int) -> int:
        return 0x10000 - size16 + size  # 65536 at the uint16 size: unpayable with a uint16 fee

    assert floor_fee(make, rule) == 0x10000 + 2
    assert not pays_floor(make, rule, 0x10000) and not pays_floor(make, rule, 0x10001)


def test_parse_dims() -> None:
    assert parse_dims("64,128,64") == (64, 128, 64)
    assert parse_dims(" 64, 64 ") == (64, 64)
    for bad in ("64", "64,,64", "64;64", "-64,64", "64,128,", "a,b", "123456,64"):
        with pytest.raises(BadJob):
            parse_dims(bad)


def test_client_errors() -> None:
    with pytest.raises(NodeError, match="bad node URL"):
        NodeClient("127.0.0.1:8645")
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NodeUnreachable, match=f"cannot reach node at {url}: .*refused"):
        NodeClient(url + "/").status()


class ScriptedNode(NodeClient):
    """Answers ``tx`` from a script; the clock advances one second per poll."""

    def __init__(self, answers: list[Json | None]) -> None:
        super().__init__("http://127.0.0.1:1")
        self.answers = answers
        self.now = 0.0

    def tx(self, txid: str) -> Json | None:
        return self.answers.pop(0)

    def wait(self, timeout: float) -> Json:
        return self.wait_for_tx("ab" * 32, timeout, clock=lambda: self.now, sleep=self.advance)

    def advance(self, seconds: float) -> None:
        self.now += 1


def test_wait_for_tx() -> None:
    pending, confirmed = {"status": "pending"}, {"status": "confirmed", "height": 9}
    node = ScriptedNode([pending, pending, confirmed])
    assert node.wait(10) == confirmed and node.now == 2
    with pytest.raises(TxNotConfirmed, match="still pending after 3s"):
        ScriptedNode([pending] * 10).wait(3)
    with pytest.raises(TxNotConfirmed, match="no longer known"):
        ScriptedNode([pending, None]).wait(10)
