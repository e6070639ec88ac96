"""Amounts in whole coins with fixed decimals: parsing and display without floats.

One coin is ``chain.types.COIN`` = 10**8 base units. ``parse_amount("1.5")`` is 150000000;
``format_amount(150000000)`` is ``"1.50000000"``. Anything else (signs, exponents, more than 8
decimals, empty parts) is an :class:`InvalidAmount`.
"""

from __future__ import annotations

import re

from chain.errors import PouwError
from chain.types import COIN

DECIMALS = 8
_AMOUNT = re.compile(r"(\d{1,12})(?:\.(\d{1,8}))?|\.(\d{1,8})")
U64_MAX = (1 << 64) - 1


class InvalidAmount(PouwError):
    """Text that is not an amount of coins."""


def parse_amount(text: str) -> int:
    """Base units of a decimal amount of coins, e.g. ``"0.25"`` → 25_000_000."""
    match = _AMOUNT.fullmatch(text.strip())
    if match is None:
        raise InvalidAmount(f"not an amount of coins: {text!r} (use digits and at most {DECIMALS} decimals)")
    whole = match.group(1) or "0"
    frac = match.group(2) or match.group(3) or ""
    units = int(whole) * COIN + int(frac.ljust(DECIMALS, "0") or "0")
    if units > U64_MAX:
        raise InvalidAmount(f"amount too large: {text!r}")
    return units


def format_amount(units: int) -> str:
    """``units`` base units as coins with exactly 8 decimals."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), COIN)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"
