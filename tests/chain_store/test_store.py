"""The key-value stores: point reads, ordered prefix scans, atomic batches, LevelDB failure modes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chain.errors import StoreError
from store.kv import KeyValueStore, LevelDBStore, MemoryStore


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KeyValueStore]:
    kv: KeyValueStore = MemoryStore() if request.param == "memory" else LevelDBStore(tmp_path / "db")
    yield kv
    kv.close()


def test_round_trip_and_batch(store: KeyValueStore) -> None:
    assert store.get(b"k") is None
    store.write_batch({b"k": b"v", b"k2": b""})
    assert store.get(b"k") == b"v"
    assert store.get(b"k2") == b""
    store.write_batch({b"k": b"w", b"x": b"1"}, [b"k2", b"absent"])
    assert store.get(b"k") == b"w"
    assert store.get(b"k2") is None
    assert list(store.iterate()) == [(b"k", b"w"), (b"x", b"1")]
    store.delete(b"x")
    store.put(b"y", b"2")
    assert list(store.iterate()) == [(b"k", b"w"), (b"y", b"2")]


def test_deletes_apply_before_puts(store: KeyValueStore) -> None:
    store.write_batch({b"k": b"new"}, [b"k"])
    assert store.get(b"k") == b"new"


def test_prefix_iteration_is_ordered_and_exact(store: KeyValueStore) -> None:
    keys = [b"a", b"a\x00", b"a\xff", b"a\xff\xff", b"ab", b"b", b"\xff", b"", b"`\xff"]
    store.write_batch({k: k[::-1] + b"!" for k in keys})
    for prefix in [b"", b"a", b"a\xff", b"b", b"\xff", b"c", b"`"]:
        expected = sorted((k, k[::-1] + b"!") for k in keys if k.startswith(prefix))
        assert list(store.iterate(prefix)) == expected


def test_iteration_reads_a_snapshot(store: KeyValueStore) -> None:
    store.write_batch({b"p1": b"1", b"p2": b"2"})
    scan = store.iterate(b"p")
    store.write_batch({b"p3": b"3"}, [b"p1"])
    assert list(scan) == [(b"p1", b"1"), (b"p2", b"2")]


def test_closed_store_raises(store: KeyValueStore) -> None:
    store.close()
    with pytest.raises(StoreError):
        store.get(b"k")
    with pytest.raises(StoreError):
        store.write_batch({b"k": b"v"})
    store.close()


@given(
    batches=st.lists(
        st.tuples(
            st.dictionaries(st.binary(max_size=3), st.binary(max_size=3), max_size=6),
            st.lists(st.binary(max_size=3), max_size=4),
        ),
        max_size=6,
    ),
    prefix=st.binary(max_size=2),
)
def test_memory_store_matches_a_dict(
    batches: list[tuple[dict[bytes, bytes], list[bytes]]], prefix: bytes
) -> None:
    store, model = MemoryStore(), dict[bytes, bytes]()
    for puts, deletes in batches:
        store.write_batch(puts, deletes)
        for key in deletes:
            model.pop(key, None)
        model.update(puts)
    assert list(store.iterate(prefix)) == sorted(i for i in model.items() if i[0].startswith(prefix))


def test_leveldb_persists_across_reopen(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        store.write_batch({b"a": b"1", b"b": b"2"}, [])
    with LevelDBStore(tmp_path / "db") as store:
        assert list(store.iterate()) == [(b"a", b"1"), (b"b", b"2")]


def test_leveldb_corrupt_directory_is_a_store_error(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        store.put(b"a", b"1")
    (tmp_path / "db" / "CURRENT").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt"):
        LevelDBStore(tmp_path / "db")


def test_leveldb_missing_manifest_is_a_store_error(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        store.put(b"a", b"1")
    for manifest in (tmp_path / "db").glob("MANIFEST-*"):
        manifest.unlink()
    with pytest.raises(StoreError):
        LevelDBStore(tmp_path / "db")


def test_leveldb_locked_directory_is_a_store_error(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db"), pytest.raises(StoreError, match="another process"):
        LevelDBStore(tmp_path / "db")


def test_leveldb_unusable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(StoreError):
        LevelDBStore(tmp_path / "file" / "db")


def _table_store(path: Path) -> Path:
    """A LevelDB whose entries sit in a table (.ldb) file, not only in the log; returns that file."""
    with LevelDBStore(path) as store:
        store.write_batch({b"k%04d" % i: bytes([i % 251]) * 512 for i in range(400)})
    with LevelDBStore(path):
        pass  # reopening turns the log into a level-0 table
    tables = sorted(path.glob("*.ldb"), key=lambda p: p.stat().st_size)
    assert tables, "no table file written"
    return tables[-1]


def test_leveldb_flipped_table_bytes_are_refused(tmp_path: Path) -> None:
    """Flipped bytes inside a table are caught by the block checksums: a StoreError, never a value."""
    table = _table_store(tmp_path / "db")
    data = bytearray(table.read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 16):
        data[offset] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt"):
        with LevelDBStore(tmp_path / "db") as store:
            store.verify()
    with LevelDBStore(tmp_path / "db") as store:
        with pytest.raises(StoreError, match="corrupt"):
            for i in range(400):
                store.get(b"k%04d" % i)
        with pytest.raises(StoreError, match="corrupt"):
            list(store.iterate(b"k"))


def test_leveldb_truncated_table_is_a_store_error(tmp_path: Path) -> None:
    table = _table_store(tmp_path / "db")
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError):
        with LevelDBStore(tmp_path / "db") as store:
            store.verify()
            for i in range(400):
                store.get(b"k%04d" % i)


def test_leveldb_snapshot_is_frozen_and_fails_cleanly_after_close(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    store.put(b"a", b"1")
    frozen = store.snapshot()
    store.write_batch({b"a": b"2", b"b": b"3"})
    assert frozen.get(b"a") == b"1" and frozen.get(b"b") is None
    assert list(frozen.iterate()) == [(b"a", b"1")]
    store.reopen()
    assert store.get(b"a") == b"2"
    with pytest.raises(StoreError, match="closed"):
        frozen.get(b"a")
    store.close()
    with pytest.raises(StoreError):
        store.snapshot()
