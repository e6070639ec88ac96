"""The verification process pool: signature checks and trajectory replays of blocks, run in
worker processes while the writer thread runs the state transition.

:meth:`VerifyPool.offload` gives :func:`consensus.validation.connect_block` the ``offload`` it
takes, so the inline and pool paths are one stage-5 implementation. Errors come back from the
workers as the typed exceptions themselves (``ValidationError`` pickles by reason and detail).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing

from chain.crypto import verify_signature
from chain.errors import InvalidBlock, InvalidTransaction, ValidationError
from chain.state import StateReader
from chain.types import Block
from consensus.pouw_seal import PouwSealVerifier, WorkContext, verify_work
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


def _worker_init() -> None:
    """Verification workers replay small matmuls, which run fastest single-threaded."""
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

    @property
    def running(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        if self.workers > 0 and self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
            )

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def offload(self, verifier: SealVerifier) -> Offload | None:
        """What ``connect_block`` runs the signature and replay checks with; None without a pool."""
        if self._pool is None:
            return None
        pool = self._pool

        def start(pre: StateReader, block: Block) -> OffloadedChecks:
            ctx = verifier.work_context(pre, block) if isinstance(verifier, PouwSealVerifier) else None
            return _PoolChecks(pool.submit(verify_in_worker, ctx, block.encode(), self.backend))

        return start
