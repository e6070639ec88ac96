"""Bounded containers and rate limiters: everything the p2p layer remembers has a size limit.

* :class:`LruSet` / :class:`LruDict` — seen-caches that forget the least recently used entry when
  full (O(1) per operation).
* :class:`TokenBucket` — ``rate`` tokens per second up to ``burst``; callers pass the time in, so
  tests drive it with a fake clock. ``delay``/``debit`` let a caller wait for tokens instead of
  being refused (the upload cap defers rather than drops).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruDict(Generic[K, V]):
    """A mapping of at most ``capacity`` entries; inserting into a full one drops the oldest."""

    __slots__ = ("_data", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        """Insert or refresh ``key`` as the most recent entry."""
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._data.items())


class LruSet(Generic[K]):
    """A set of at most ``capacity`` members; adding to a full one forgets the least recent."""

    __slots__ = ("_data",)

    def __init__(self, capacity: int) -> None:
        self._data: LruDict[K, None] = LruDict(capacity)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def add(self, key: K) -> None:
        self._data.put(key, None)

    def discard(self, key: K) -> None:
        self._data.pop(key)


class TokenBucket:
    """Holds up to ``burst`` tokens, refilled at ``rate`` per second; ``take`` spends them or refuses."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def available(self, now: float) -> float:
        """Tokens there are at ``now`` (time never runs backwards here, whatever ``now`` says)."""
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    def take(self, amount: float, now: float) -> bool:
        """Spend ``amount`` tokens if there are that many."""
        if amount > self.available(now):
            return False
        self._tokens -= amount
        return True

    def delay(self, amount: float, now: float) -> float:
        """Seconds until ``min(amount, burst)`` tokens are there (0 when they are now)."""
        missing = min(amount, self.burst) - self.available(now)
        return max(missing, 0.0) / self.rate

    def debit(self, amount: float, now: float) -> None:
        """Spend ``amount`` tokens even if that leaves the bucket in debt (refills pay it back)."""
        self.available(now)
        self._tokens -= amount
