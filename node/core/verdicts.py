"""Remembered verdicts: block hashes known to be invalid, with the reason, bounded in count."""

from __future__ import annotations

from collections import OrderedDict

MAX_INVALID_REMEMBERED = 10_000


class Verdicts:
    """Known-invalid block hashes (oldest forgotten first once ``limit`` is reached)."""

    def __init__(self, limit: int = MAX_INVALID_REMEMBERED) -> None:
        self.limit = limit
        self._invalid: OrderedDict[bytes, str] = OrderedDict()

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._invalid

    def __len__(self) -> int:
        return len(self._invalid)

    def reason(self, block_hash: bytes) -> str | None:
        return self._invalid.get(block_hash)

    def remember_invalid(self, block_hash: bytes, reason: str) -> None:
        self._invalid[block_hash] = reason
        while len(self._invalid) > self.limit:
            self._invalid.popitem(last=False)
