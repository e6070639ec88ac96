"""The protocol PRNG: a SHAKE-256 stream keyed by a domain tag and seed parts.

Normative (docs/protocol.md, "PRNG"): the stream for ``Prng(domain, *parts)`` is
``SHAKE256(b"pouw/prng\\x00" || pack([domain, *parts]))`` where ``pack`` is the canonical msgpack
encoding (parts are ints or bytes). Draws consume the stream front to back:

* ``bytes(n)``: the next n bytes;
* ``u64s(count)``: the next 8*count bytes as little-endian unsigned 64-bit words;
* ``randbelow(n)`` / ``randbelow_array(n, count)``: 64-bit words taken in order, a word ``w`` is
  accepted iff ``w < (2**64 // n) * n`` and yields ``w % n`` (unbiased rejection sampling);
* ``sample_without_replacement(n, k)``: partial Fisher-Yates over ``range(n)``, swap partner of
  position i drawn with ``randbelow(n - i)``, returns the first k entries in order.

Only small things are drawn from it (batch indices, noise factors, salts, initial weights), so a GPU
never generates it: the CPU draws, and the tensors are copied over.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from chain.encoding import pack

_U64_LIMIT = 1 << 64


class Prng:
    """A deterministic stream. Not thread-safe; not for secrets."""

    def __init__(self, domain: str, *parts: bytes | int) -> None:
        self._xof = hashlib.shake_256(b"pouw/prng\x00" + pack([domain, *parts]))
        self._buf = b""
        self._pos = 0

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("negative length")
        end = self._pos + n
        if end > len(self._buf):
            # SHAKE output is a prefix-stable stream: asking for more bytes extends it.
            self._buf = self._xof.digest(max(end, 2 * len(self._buf), 64))
        out = self._buf[self._pos : end]
        self._pos = end
        return out

    def u64s(self, count: int) -> npt.NDArray[np.uint64]:
        return np.frombuffer(self.bytes(8 * count), dtype="<u8").astype(np.uint64)

    def u64(self) -> int:
        return int.from_bytes(self.bytes(8), "little")

    def randbelow(self, n: int) -> int:
        if not 0 < n <= _U64_LIMIT:
            raise ValueError(f"bound {n} out of range")
        limit = (_U64_LIMIT // n) * n
        while True:
            w = self.u64()
            if w < limit:
                return w % n

    def randbelow_array(self, n: int, count: int) -> npt.NDArray[np.int64]:
        """``count`` draws of ``randbelow(n)``: the same values, and the same stream position after."""
        if not 0 < n < (1 << 63):
            raise ValueError(f"bound {n} out of range")
        bound = (_U64_LIMIT // n) * n
        limit = None if bound == _U64_LIMIT else np.uint64(bound)
        parts: list[npt.NDArray[np.uint64]] = []
        have = 0
        while have < count:
            need = count - have
            batch = need + need // 16 + 4
            words = self.u64s(batch)
            accepted = np.arange(batch) if limit is None else np.flatnonzero(words < limit)
            if len(accepted) >= need:
                last = int(accepted[need - 1])
                self._pos -= 8 * (batch - last - 1)  # unread the words after the last one used
                accepted = accepted[:need]
            parts.append(words[accepted])
            have += len(accepted)
        joined = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
        return (joined % np.uint64(n)).astype(np.int64)

    def sample_without_replacement(self, n: int, k: int) -> list[int]:
        if not 0 <= k <= n:
            raise ValueError(f"cannot draw {k} of {n}")
        pool = list(range(n))
        for i in range(k):
            j = i + self.randbelow(n - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]
