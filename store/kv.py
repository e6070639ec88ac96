"""Byte-keyed storage: the key-value interface, an in-memory store for tests, and LevelDB for nodes.

A store maps bytes to bytes, iterates a prefix in ascending key order, and applies a batch of
puts and deletes atomically: after a crash, either the whole batch is visible or none of it.
:mod:`store.chaindb` builds the chain database on these operations alone; key layouts live in
:mod:`store.schema`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Protocol

import plyvel

from chain.errors import StoreError


class KeyValueReader(Protocol):
    """Read access: point lookups and ordered prefix scans."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]: ...


class KeyValueStore(ABC):
    """A bytes-to-bytes store with atomic batches. One process owns a store at a time."""

    @abstractmethod
    def get(self, key: bytes) -> bytes | None:
        """The value at ``key``, or None."""

    @abstractmethod
    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Entries whose key starts with ``prefix``, in ascending key order, from a snapshot."""

    @abstractmethod
    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        """Apply ``deletes`` then ``puts`` as one atomic, durable write."""

    @abstractmethod
    def close(self) -> None:
        """Release the store; later calls raise :class:`StoreError`. Closing twice is harmless."""

    def snapshot(self) -> KeyValueReader:
        """A read-only view frozen at this moment: later writes do not show in it. Reading a
        snapshot is safe from any thread while the owner keeps writing."""
        raise StoreError(f"{type(self).__name__} cannot take snapshots")

    def put(self, key: bytes, value: bytes) -> None:
        self.write_batch({key: value})

    def delete(self, key: bytes) -> None:
        self.write_batch({}, (key,))

    def __enter__(self) -> KeyValueStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryStore(KeyValueStore):
    """A dict with a lazily sorted key list; for tests and throwaway chains."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] | None = None
        self._closed = False

    def _open(self) -> dict[bytes, bytes]:
        if self._closed:
            raise StoreError("the memory store is closed")
        return self._data

    def get(self, key: bytes) -> bytes | None:
        return self._open().get(key)

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        data = self._open()
        if self._sorted is None:
            self._sorted = sorted(data)
        keys = self._sorted
        entries = []
        for i in range(bisect_left(keys, prefix), len(keys)):
            if not keys[i].startswith(prefix):
                break
            entries.append((keys[i], data[keys[i]]))
        return iter(entries)

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        data = self._open()
        for key in deletes:
            data.pop(key, None)
        data.update(puts)
        self._sorted = None

    def snapshot(self) -> KeyValueReader:
        frozen = MemoryStore()
        frozen._data = dict(self._open())
        return frozen

    def close(self) -> None:
        self._closed = True


class LevelDBStore(KeyValueStore):
    """LevelDB through plyvel. Every batch is written with ``sync=True`` (fsync before returning)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._db = plyvel.DB(self.path, create_if_missing=True, bloom_filter_bits=10)
        except plyvel.CorruptionError as exc:
            raise StoreError(f"LevelDB at {self.path} is corrupt: {_message(exc)}") from exc
        except plyvel.IOError as exc:
            raise StoreError(
                f"cannot open LevelDB at {self.path} (is another process using it?): {_message(exc)}"
            ) from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open LevelDB at {self.path}: {_message(exc)}") from exc

    def _open(self) -> plyvel.DB:
        if self._db.closed:
            raise StoreError(f"LevelDB at {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._open().get(key)
        return value

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        # plyvel's iterator reads from an implicit snapshot taken here, not at the first next().
        return self._open().iterator(prefix=prefix)

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        batch = self._open().write_batch(sync=True)
        for key in deletes:
            batch.delete(key)
        for key, value in puts.items():
            batch.put(key, value)
        try:
            batch.write()
        except plyvel.Error as exc:
            raise StoreError(f"write to LevelDB at {self.path} failed: {_message(exc)}") from exc

    def snapshot(self) -> KeyValueReader:
        return _LevelDBSnapshot(self, self._open().snapshot())

    def close(self) -> None:
        self._db.close()


class _LevelDBSnapshot:
    """A plyvel snapshot as a :class:`KeyValueReader`; reads after the store closed raise StoreError."""

    def __init__(self, store: LevelDBStore, snapshot: plyvel.Snapshot) -> None:
        self._store = store
        self._snapshot = snapshot

    def get(self, key: bytes) -> bytes | None:
        self._store._open()
        value: bytes | None = self._snapshot.get(key)
        return value

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        self._store._open()
        return self._snapshot.iterator(prefix=prefix)


def _message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
