"""The verification process pool: signature checks and trajectory replays of blocks, run in
worker processes while the writer thread runs the state transition.

:meth:`VerifyPool.offload` gives :func:`consensus.validation.connect_block` the ``offload`` it
takes, so the inline and pool paths are one stage-5 implementation. Errors come back from the
workers as the typed exceptions themselves (``ValidationError`` pickles by reason and detail).
Workers start with the pool and exit when the node's process goes, however it goes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time

from chain.crypto import verify_signature
from chain.errors import InvalidBlock, InvalidTransaction, ValidationError
from chain.schema import job_key
from chain.state import JobRecord, State, StateReader
from chain.types import Block, Header, Seal
from consensus.pouw_seal import PouwSealVerifier, WorkContext, verify_work
from consensus.presets import get_preset
from consensus.seal import SealVerifier
from consensus.validation import Offload, OffloadedChecks

CheckErrors = tuple[ValidationError | None, ValidationError | None]


def verify_in_worker(ctx: WorkContext | None, raw_block: bytes, backend: str) -> CheckErrors:
    """Process-pool task: (first signature error, replay error) of one block, None where fine."""
    block = Block.decode(raw_block)
    sig_error: ValidationError | None = None
    for index, tx in enumerate(block.txs):
        try:
            verify_signature(tx.pubkey, tx.digest, tx.signature)
        except InvalidTransaction as exc:
            sig_error = InvalidBlock(exc.reason, f"tx {index}: {exc.detail}")
            break
    work_error: ValidationError | None = None
    if ctx is not None:
        try:
            verify_work(ctx, block, backend)
        except ValidationError as exc:
            work_error = exc
    return sig_error, work_error


PARENT_POLL_SECONDS = 0.5


def _exit_with_parent(parent_pid: int) -> None:
    """Poll the parent's pid: once the node is gone (even SIGKILLed, when nothing runs its cleanup)
    this process is re-parented, and it exits instead of living on as an orphan."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(0)


TileItem = tuple[bytes, bytes, bytes]
"""(encoded header, encoded seal, encoded job record) of one header's winning-tile check."""


def check_tiles(preset_name: str, items: list[TileItem]) -> list[ValidationError | None]:
    """The winning-tile checks (stage 4) of headers, each against its job; runs in a worker or a
    thread. The same :meth:`PouwSealVerifier.check_tile` the writer thread would run."""
    verifier = PouwSealVerifier(get_preset(preset_name), _nothing, _nothing)
    errors: list[ValidationError | None] = []
    for raw_header, raw_seal, raw_job in items:
        header, seal, job = Header.decode(raw_header), Seal.decode(raw_seal), JobRecord.decode(raw_job)
        try:
            verifier.check_tile(header, seal, State({job_key(header.job_id): job.encode()}))
            errors.append(None)
        except ValidationError as exc:
            errors.append(exc)
    return errors


def _nothing(_: bytes) -> bytes | None:
    return None


def _worker_init(parent_pid: int) -> None:
    """Verification workers replay small matmuls, which run fastest single-threaded; and they die
    with the node."""
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(0)
    import torch

    torch.set_num_threads(1)


class _PoolChecks:
    """One block's checks running in the pool (an :class:`OffloadedChecks`)."""

    def __init__(self, future: concurrent.futures.Future[CheckErrors]) -> None:
        self._future = future

    def signature_error(self) -> ValidationError | None:
        return self._future.result()[0]

    def work_error(self) -> ValidationError | None:
        return self._future.result()[1]


class VerifyPool:
    """A spawn-context process pool of ``workers`` verification workers (none when 0)."""

    def __init__(self, workers: int, backend: str = "cpu") -> None:
        self.workers = workers
        self.backend = backend
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        if self.workers > 0 and self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                initargs=(os.getpid(),),
            )
            for _ in range(self.workers):  # start the workers now, not on the first block
                self._pool.submit(os.getpid)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)
            self._thread = None

    async def check_tiles(self, preset_name: str, items: list[TileItem]) -> list[ValidationError | None]:
        """Tile checks of many headers, split across the workers (or on one verification thread
        when the node has no pool): never on the writer thread nor the event loop."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._pool is None:
            if self._thread is None:
                self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tiles")
            return await loop.run_in_executor(self._thread, check_tiles, preset_name, items)
        size = -(-len(items) // self.workers)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        pool = self._pool
        results = await asyncio.gather(*(
            loop.run_in_executor(pool, check_tiles, preset_name, chunk) for chunk in chunks
        ))
        return [error for chunk_errors in results for error in chunk_errors]

    def offload(self, verifier: SealVerifier) -> Offload | None:
        """What ``connect_block`` runs the signature and replay checks with; None without a pool."""
        if self._pool is None:
            return None
        pool = self._pool

        def start(pre: StateReader, block: Block) -> OffloadedChecks:
            ctx = verifier.work_context(pre, block) if isinstance(verifier, PouwSealVerifier) else None
            return _PoolChecks(pool.submit(verify_in_worker, ctx, block.encode(), self.backend))

        return start
