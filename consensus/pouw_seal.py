"""The proof-of-useful-work seal check: the glue between chain values and :mod:`pouw.verify`.

The winning tile (stage 4) is checked from the header and seal alone: the header carries the
job's model config and the seal the running root its winning step was drawn under. For the
replay (stage 5) this module finds the job the header names, its dataset (built in, or published
on chain) and its start model, derives the trajectory seed τ, and asks
:func:`pouw.verify.verify_seal` to check the tile again and replay the sampled segments. The heavy
part is a plain function over picklable values (:func:`verify_work`) so the node can run it in a
process pool, off its event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from chain.errors import InvalidBlock, Reason, ValidationError
from chain.state import JobRecord, StateReader, get_job
from chain.types import Block, Header, Seal
from consensus.presets import Preset, get_preset, header_config, model_config
from consensus.seal import header_trajectory_seed
from pouw.backends import get_backend
from pouw.datasets import Dataset, digits
from pouw.errors import SealError
from pouw.model import ModelConfig, ModelState, init_state
from pouw.proof import WorkData, prefix_root
from pouw.verify import verify_seal, verify_winning_tile

ModelSource = Callable[[bytes], bytes | None]
"""Encoded model state by its hash, or None when unknown."""
DatasetSource = Callable[[bytes], bytes | None]
"""Encoded dataset (``Dataset.encode``) by its id, or None when unknown."""


@dataclass(frozen=True)
class WorkContext:
    """Everything :func:`verify_work` needs besides the block, as plain picklable values."""

    preset: str
    dims: tuple[int, ...]
    batch_size: int
    lr_shift: int
    dataset_id: bytes
    dataset: bytes | None
    """Encoded dataset, or None for a built-in one (the worker loads it itself)."""
    start_state: bytes
    trajectory_seed: bytes


def _seal_error(exc: SealError) -> InvalidBlock:
    return InvalidBlock(Reason.BAD_SEAL, f"{exc.check.value}: {exc.detail}")


@functools.lru_cache(maxsize=2)  # an assembled multi-part dataset may be 256 MiB (docs/protocol.md Part I §4)
def _decode_dataset(data: bytes) -> Dataset:
    return Dataset.decode(data)


def builtin_datasets() -> dict[bytes, Dataset]:
    dataset = digits()
    return {dataset.id: dataset}


class PouwSealVerifier:
    """Checks seals by the preset's PoUW parameters. ``models`` and ``datasets`` read the node's store."""

    def __init__(self, preset: Preset, models: ModelSource, datasets: DatasetSource, backend: str = "cpu") -> None:
        self.preset = preset
        self.models = models
        self.datasets = datasets
        self.backend = backend

    def check_tile(self, header: Header, seal: Seal, pre: StateReader | None = None) -> None:
        """Stage 4: needs nothing but the header and seal (``pre`` is accepted and ignored)."""
        check_tile(self.preset, header, seal)

    def start_state(self, job_id: bytes, job: JobRecord) -> bytes:
        """The encoded model a job's next shard starts from."""
        if job.steps_done == 0:
            return init_state(model_config(job.spec), job.init_seed).encode()
        data = self.models(job.state_hash)
        if data is None:
            raise InvalidBlock(Reason.BAD_SEAL, f"model {job.state_hash.hex()[:16]} of job {job_id.hex()[:16]} unknown")
        return data

    def work_context(self, pre: StateReader, block: Block) -> WorkContext:
        header = block.header
        job = get_job(pre, header.job_id)
        if job is None:
            raise InvalidBlock(Reason.UNKNOWN_JOB, header.job_id.hex())
        builtin = job.spec.dataset_id in builtin_datasets()
        data = None if builtin else self.datasets(job.spec.dataset_id)
        if not builtin and data is None:
            raise InvalidBlock(Reason.UNKNOWN_DATASET, job.spec.dataset_id.hex())
        return WorkContext(
            preset=self.preset.name, dims=tuple(job.spec.dims), batch_size=job.spec.batch_size,
            lr_shift=job.spec.lr_shift, dataset_id=job.spec.dataset_id, dataset=data,
            start_state=self.start_state(header.job_id, job),
            trajectory_seed=header_trajectory_seed(header),
        )

    def check_work(self, pre: StateReader, block: Block) -> None:
        verify_work(self.work_context(pre, block), block, self.backend)


def prefix_root_of_work(work: bytes) -> bytes:
    """The ``prefix_root`` a seal over these work bytes must carry (root over every leaf but the last),
    for a node sealing a miner's submission. Raises InvalidBlock (``BAD_SEAL``) for undecodable work."""
    try:
        leaves = WorkData.decode(work).checkpoint_hashes
    except ValidationError as exc:
        raise InvalidBlock(Reason.BAD_SEAL, f"decode: work: {exc.detail}") from exc
    if len(leaves) < 2:
        raise InvalidBlock(Reason.BAD_SEAL, "trajectory: fewer than two leaves")
    return prefix_root(leaves)


def check_tile(preset: Preset, header: Header, seal: Seal) -> None:
    """Stage 4, a pure function of the header and seal: the header's model config within the
    preset's caps, and the seal's winning tile beating the header's target under σ and the seal's
    ``prefix_root``. Raises InvalidBlock (``BAD_SEAL``)."""
    try:
        config = header_config(header)
        preset.pouw.check_model(config)
    except ValidationError as exc:
        raise InvalidBlock(Reason.BAD_SEAL, f"config: {exc.detail}") from exc
    try:
        verify_winning_tile(
            preset.pouw, config, header.lottery_seed, header.target, seal.proof, prefix_root=seal.prefix_root
        )
    except SealError as exc:
        raise _seal_error(exc) from exc


def verify_work(ctx: WorkContext, block: Block, backend: str = "cpu") -> None:
    """Stage 5's replay: the full seal check of ``block`` in context ``ctx``. Raises InvalidBlock."""
    preset = get_preset(ctx.preset)
    config = ModelConfig(dims=ctx.dims, batch_size=ctx.batch_size, lr_shift=ctx.lr_shift)
    if ctx.dataset is None:
        dataset = builtin_datasets().get(ctx.dataset_id)
        if dataset is None:
            raise InvalidBlock(Reason.UNKNOWN_DATASET, ctx.dataset_id.hex())
    else:
        dataset = _decode_dataset(ctx.dataset)
    header, seal = block.header, block.seal
    try:
        start = ModelState.decode(ctx.start_state, config)
        verify_seal(
            preset.pouw, config, dataset, start, ctx.trajectory_seed, header.lottery_seed, header.target,
            seal.steps, seal.final_state_hash, seal.trajectory_root, seal.proof, block.work,
            get_backend(backend), prefix_root=seal.prefix_root,
        )
    except SealError as exc:
        raise _seal_error(exc) from exc

