"""Coin amounts parse and print exactly, with no floats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.amounts import InvalidAmount, format_amount, parse_amount


def test_examples() -> None:
    assert parse_amount("1.5") == 150_000_000
    assert parse_amount("0.00000001") == 1
    assert parse_amount(".25") == 25_000_000
    assert parse_amount("12") == 1_200_000_000
    assert format_amount(150_000_000) == "1.50000000"
    assert format_amount(1) == "0.00000001"


@pytest.mark.parametrize("bad", ["", "-1", "1e5", "0.000000001", "1.", "abc", "1,5", "nan", "200000000000.0"])
def test_rejects(bad: str) -> None:
    with pytest.raises(InvalidAmount):
        parse_amount(bad)


@given(st.integers(0, (1 << 64) - 1))
def test_round_trip(units: int) -> None:
    text = format_amount(units)
    if len(text.split(".")[0]) <= 12:
        assert parse_amount(text) == units
