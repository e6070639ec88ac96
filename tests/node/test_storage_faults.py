"""Store failures seen through the ChainService: a write that fails (a full disk) pauses block import
with a clear message — the block is held, not judged — and import resumes once the store takes
writes again; corrupt bytes are a StoreError, never served."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pytest

from chain.errors import StoreError
from consensus.presets import REGTEST_PRESET
from node.chain_service import BlockStatusText, ChainService
from store.kv import LevelDBStore, StoreWriteError
from tests.node.harness import forge, mine_block
from wallet.keys import PrivateKey

MINER = PrivateKey(b"\x01" * 32)


class FillableStore(LevelDBStore):
    """A LevelDB whose writes fail like a full disk's while ``full`` is set."""

    full = False

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        if self.full:
            raise StoreWriteError(f"write to LevelDB at {self.path} failed: IO error: No space left on device", True)
        super().write_batch(puts, deletes)


async def test_a_failed_write_pauses_import_until_the_store_takes_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FillableStore(tmp_path / "chain")
    service = ChainService(REGTEST_PRESET, tmp_path, verify_workers=0, store=store)
    await service.start()
    try:
        await mine_block(service, MINER)
        block = await service.read(forge, service, MINER, ())
        store.full = True
        with caplog.at_level(logging.ERROR, logger="pouw.node.chain"):
            outcome = await service.submit_block(block)
        assert outcome.status is BlockStatusText.HELD and outcome.reason == "store-paused", outcome
        assert service.head.height == 1 and service.import_paused is not None
        assert any("block import paused: the disk is full" in r.getMessage() for r in caplog.records)
        # while paused, blocks are held without trying the store; nothing is remembered as invalid
        assert (await service.submit_block(block)).status is BlockStatusText.HELD
        assert block.hash not in service.verdicts
        assert await service.retry_held() == []  # still full: stays paused
        assert service.import_paused is not None and service.head.height == 1
        store.full = False
        outcomes = await service.retry_held()
        assert [o.status for o in outcomes] == [BlockStatusText.ACCEPTED]
        assert service.import_paused is None and service.head.height == 2 and service.head.hash == block.hash
        await mine_block(service, MINER)
        assert service.head.height == 3
    finally:
        await service.stop()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real disk-full test needs root to mount a small tmpfs; the injected failure test covers "
                    "the logic")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", f"pouw-test-{uuid.uuid4().hex[:8]}",
                           str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a file in ``directory`` until the disk is full; returns it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 8, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, bytes(chunk)) > 0:
                    pass
    finally:
        os.close(fd)
    return filler


async def test_a_really_full_disk_pauses_and_resumes(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "32m") as disk:
        service = ChainService(REGTEST_PRESET, disk / "node", verify_workers=0)
        await service.start()
        try:
            await mine_block(service, MINER)
            block = await service.read(forge, service, MINER, ())
            filler = fill(disk)
            outcome = await service.submit_block(block)
            assert outcome.status is BlockStatusText.HELD and outcome.reason == "store-paused", outcome
            assert "No space left" in (service.import_paused or ""), service.import_paused
            assert await service.retry_held() == [] and service.import_paused is not None
            filler.unlink()
            outcomes = await service.retry_held()
            assert [o.status for o in outcomes] == [BlockStatusText.ACCEPTED]
            assert service.head.hash == block.hash and service.import_paused is None
            await mine_block(service, MINER)
            assert service.head.height == 3
        finally:
            await service.stop()
        # the store reopens cleanly, checksums and all
        reopened = ChainService(REGTEST_PRESET, disk / "node", verify_workers=0)
        await reopened.start()
        try:
            assert reopened.head.height == 3
        finally:
            await reopened.stop()


def test_a_block_whose_bytes_changed_is_not_served(tmp_path: Path) -> None:
    """Defence behind the checksums: a stored block that no longer hashes to its key is a StoreError."""
    import asyncio

    from store import schema

    async def run() -> None:
        service = ChainService(REGTEST_PRESET, tmp_path, verify_workers=0)
        await service.start()
        try:
            block = await mine_block(service, MINER)
            other = await mine_block(service, MINER)
            store = service._store
            assert store is not None
            await service.read(store.put, schema.block_key(block.hash), other.encode())
            with pytest.raises(StoreError, match="corrupt"):
                await service.read(service.db.get_block, block.hash)
            assert service.view.reader.get_block(block.hash) == block  # the view predates the damage
            await service.expire_mempool(0)  # any change publishes a new view
            with pytest.raises(StoreError, match="corrupt"):
                service.view.reader.get_block(block.hash)
        finally:
            await service.stop()

    asyncio.run(run())
