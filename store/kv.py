"""Byte-keyed storage: the key-value interface, an in-memory store for tests, and LevelDB for nodes.

A store maps bytes to bytes, iterates a prefix in ascending key order, and applies a batch of
puts and deletes atomically: after a crash, either the whole batch is visible or none of it.
:mod:`store.chaindb` builds the chain database on these operations alone; key layouts live in
:mod:`store.schema`.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
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

    def verify(self) -> int:
        """Read every entry, checking integrity where the store can; returns the entry count."""
        return sum(1 for _ in self.iterate())

    def reopen(self) -> None:
        """Make the store writable again after a failed write, where that needs more than retrying."""
        return None

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


REOPEN_MIN_FREE_BYTES = 8 << 20
"""Free space a LevelDB store needs before it is reopened after a failed write (its 4 MiB write
buffer becomes a table when it opens, plus room for the block that failed)."""


class StoreWriteError(StoreError):
    """A write failed and changed nothing. ``no_space``: the disk is full (the write may succeed
    once space returns, after :meth:`KeyValueStore.reopen`)."""

    def __init__(self, message: str, no_space: bool = False) -> None:
        super().__init__(message)
        self.no_space = no_space


class LevelDBStore(KeyValueStore):
    """LevelDB through plyvel. Every batch is written with ``sync=True`` (fsync before returning).

    Opened with ``paranoid_checks`` and every read verifies LevelDB's block checksums, so flipped or
    truncated table bytes are a :class:`StoreError` saying the store is corrupt, never a value.
    Every plyvel failure leaves here as a :class:`StoreError` (a failed write as
    :class:`StoreWriteError`)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        """Held by snapshot reads from other threads and by close/reopen, which must not overlap."""
        self._db = self._open_db()

    def _open_db(self) -> plyvel.DB:
        try:
            return plyvel.DB(self.path, create_if_missing=True, bloom_filter_bits=10, paranoid_checks=True)
        except plyvel.CorruptionError as exc:
            raise StoreError(f"LevelDB at {self.path} is corrupt: {_message(exc)}") from exc
        except plyvel.IOError as exc:
            text = _message(exc)
            if "lock" in text.lower():
                raise StoreError(f"cannot open LevelDB at {self.path} (is another process using it?): {text}") from exc
            raise StoreError(f"cannot open LevelDB at {self.path}: {text}") from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open LevelDB at {self.path}: {_message(exc)}") from exc

    def _open(self) -> plyvel.DB:
        if self._db.closed:
            raise StoreError(f"LevelDB at {self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._open().get(key, verify_checksums=True)
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(self.path, exc) from exc
        return value

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        # plyvel's iterator reads from an implicit snapshot taken here, not at the first next().
        try:
            entries = self._open().iterator(prefix=prefix, verify_checksums=True)
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(self.path, exc) from exc
        return _guarded(entries, self.path)

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        batch = self._open().write_batch(sync=True)
        for key in deletes:
            batch.delete(key)
        for key, value in puts.items():
            batch.put(key, value)
        try:
            batch.write()
        except (plyvel.Error, RuntimeError) as exc:
            text = _message(exc)
            no_space = "no space left" in text.lower() or os.strerror(errno.ENOSPC).lower() in text.lower()
            raise StoreWriteError(f"write to LevelDB at {self.path} failed: {text}", no_space) from exc

    def verify(self) -> int:
        """Read every entry with checksums verified (a corrupt table raises StoreError); returns the count."""
        count = 0
        try:
            with self._open().iterator(verify_checksums=True, fill_cache=False) as entries:
                for _ in entries:
                    count += 1
        except (plyvel.Error, RuntimeError) as exc:
            raise _read_error(self.path, exc) from exc
        return count

    def snapshot(self) -> KeyValueReader:
        db = self._open()
        return _LevelDBSnapshot(self, db, db.snapshot())

    def reopen(self) -> None:
        """Close and open the database again: clears LevelDB's sticky background error (a compaction
        that failed for lack of space), so writes can resume once space returns. Refused (the
        store stays as it is) while less than :data:`REOPEN_MIN_FREE_BYTES` are free: opening
        writes the log's contents into a table first."""
        free = shutil.disk_usage(self.path).free
        if free < REOPEN_MIN_FREE_BYTES:
            raise StoreWriteError(f"LevelDB at {self.path}: only {free} bytes free, waiting for "
                                  f"{REOPEN_MIN_FREE_BYTES}", no_space=True)
        with self._lock:
            self._db.close()
            self._db = self._open_db()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _LevelDBSnapshot:
    """A plyvel snapshot as a :class:`KeyValueReader`; reads after the store closed (or reopened)
    raise StoreError. Safe to read from a thread other than the store's owner."""

    def __init__(self, store: LevelDBStore, db: plyvel.DB, snapshot: plyvel.Snapshot) -> None:
        self._store = store
        self._db = db
        self._snapshot = snapshot

    def _check(self) -> None:
        if self._db.closed:
            raise StoreError(f"LevelDB at {self._store.path}: this snapshot's database was closed")

    def get(self, key: bytes) -> bytes | None:
        with self._store._lock:
            self._check()
            try:
                value: bytes | None = self._snapshot.get(key, verify_checksums=True)
            except (plyvel.Error, RuntimeError) as exc:
                raise _read_error(self._store.path, exc) from exc
        return value

    def iterate(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        with self._store._lock:
            self._check()
            try:
                entries = list(self._snapshot.iterator(prefix=prefix, verify_checksums=True))
            except (plyvel.Error, RuntimeError) as exc:
                raise _read_error(self._store.path, exc) from exc
        return iter(entries)


def _read_error(path: str, exc: Exception) -> StoreError:
    if isinstance(exc, plyvel.CorruptionError):
        return StoreError(f"LevelDB at {path} is corrupt: {_message(exc)} (restore the data directory or resync)")
    if isinstance(exc, RuntimeError):
        return StoreError(f"LevelDB at {path} is closed: {_message(exc)}")
    return StoreError(f"read from LevelDB at {path} failed: {_message(exc)}")


def _guarded(entries: Iterator[tuple[bytes, bytes]], path: str) -> Iterator[tuple[bytes, bytes]]:
    """``entries`` with plyvel's errors (a corrupt table met mid-scan) turned into StoreError."""
    try:
        yield from entries
    except (plyvel.Error, RuntimeError) as exc:
        raise _read_error(path, exc) from exc


def _message(exc: Exception) -> str:
    text = exc.args[0] if exc.args else exc
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
