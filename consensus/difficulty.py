"""ASERT difficulty (aserti3-2d style) in integer fixed point, and the expected work of a target.

Normative (docs/protocol.md, "Difficulty"). With an anchor block A (the genesis block), block time T
and half-life H (seconds), the target of the child of ``parent`` is::

    exponent = ((parent.timestamp - A.timestamp) - T * (parent.height - A.height)) * 2**16 // H
    target   = A.target * 2**(exponent / 2**16)

computed exactly as below: the integer part of the exponent is a shift, the 16-bit fraction goes
through the cubic approximation of 2**x used by aserti3-2d (error < 0.013 %), every division floors.
The result is clamped to ``[1, max_target]``. A larger target is easier.

Because the target depends only on the parent's height and timestamp against a fixed schedule,
timestamp games cannot compound (no time warp): a block stamped ``d`` seconds early or late moves
its child's target by exactly ``2**(d/H)``, and timestamps are bounded by the median-time-past rule
below and by the local clock (plus the preset's ``max_future_seconds``, v2: 15 s on devnet) at
acceptance. v2 also clamps each block's target to within a factor 2^s of its parent's
(:func:`clamp_target`, s = ``max_target_shift``).
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_TARGET = (1 << 256) - 1
RADIX_BITS = 16
RADIX = 1 << RADIX_BITS
MEDIAN_TIME_SPAN = 11
MAX_FUTURE_SECONDS = 2 * 60 * 60
"""The largest future-time limit of any preset (mainnet's); presets state their own."""


def asert_target(
    *, anchor_target: int, anchor_height: int, anchor_timestamp: int, parent_height: int,
    parent_timestamp: int, block_time: int, half_life: int, max_target: int = MAX_TARGET,
) -> int:
    """Target for the block after ``parent`` (see the module docstring)."""
    if block_time <= 0 or half_life <= 0:
        raise ValueError("block time and half-life must be positive")
    if parent_height < anchor_height:
        raise ValueError("parent below the anchor")
    time_delta = parent_timestamp - anchor_timestamp
    height_delta = parent_height - anchor_height
    exponent = ((time_delta - block_time * height_delta) * RADIX) // half_life
    shifts = exponent >> RADIX_BITS
    frac = exponent - (shifts << RADIX_BITS)
    factor = RADIX + (
        (195_766_423_245_049 * frac + 971_821_376 * frac**2 + 5_127 * frac**3 + (1 << 47)) >> 48
    )
    target = anchor_target * factor
    target = target << shifts if shifts >= 0 else target >> -shifts
    target >>= RADIX_BITS
    return max(1, min(target, max_target))


def clamp_target(target: int, parent_target: int, shift: int, max_target: int = MAX_TARGET) -> int:
    """``target`` bounded to ``[parent_target >> shift, parent_target << shift]`` (and ``[1, max]``)."""
    low = max(1, parent_target >> shift)
    high = min(max_target, parent_target << shift)
    return max(low, min(target, high))


def block_work(target: int) -> int:
    """Expected lottery draws to find a block at ``target``: the unit of cumulative chain work."""
    return (1 << 256) // (target + 1)


def median_time_past(timestamps: Sequence[int]) -> int:
    """Median of the last (up to) 11 timestamps, the lower bound a new block's timestamp must exceed."""
    window = sorted(timestamps[-MEDIAN_TIME_SPAN:])
    if not window:
        raise ValueError("no timestamps")
    return window[len(window) // 2]
