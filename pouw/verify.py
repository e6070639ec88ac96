"""Seal verification: the winning tile (milliseconds) and the sampled trajectory replay.

:func:`verify_seal` runs the checks cheapest first and raises :class:`~pouw.errors.SealError`
naming the first that fails (order of :class:`~pouw.errors.SealCheck`):

1. sizes and canonical decoding of the proof; the job's model within the preset's caps (the replay
   bounded in MACs: ``replayed_segments · k · macs_per_step <= max_replay_macs``); steps in
   1..max_steps_per_block and the winning step being the shard's last;
2. the tile (:func:`verify_winning_tile`): indices and shape against the job's matmul list,
   payload bounds, Merkle openings of the rows and columns against HA and HB, the step seed
   σ_j = H(σ, j, prefix_root), the noise regenerated from σ_m, the tile transcript and ticket
   recomputed, and the win rule;
3. the trajectory: checkpoint hashes (count, root, start state, and ``prefix_root`` equal to the
   root over every leaf but the last: the leaves the winning draw was made under), the final state
   against the claimed hash, the sampled checkpoint states against their leaves;
4. replay, bit-exact, of the first segment, the last one (which holds the winning step, whose
   real operands must commit to HA and HB: this binds the ticket to the training), then the q
   sampled segments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from chain.errors import InvalidEncoding, ValidationError
from chain.hashing import HASH_SIZE, merkle_root_from_proof
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.engine import step_matmul_shapes, train, train_step
from pouw.errors import SealCheck, SealError
from pouw.model import ModelConfig, ModelState
from pouw.params import PAYLOAD_BOUND, PouwParams
from pouw.proof import (
    TileProof,
    WorkData,
    checkpoint_positions,
    replay_plan,
    segment_count,
    segment_of,
    step_seed,
)
from pouw.proof import (
    prefix_root as root_of_prefix,
)
from pouw.proof import (
    trajectory_root as root_of_trajectory,
)
from pouw.transcript import commit_rows, matmul_seed, ticket_wins, tile_digest, tile_ticket

Operands = tuple[npt.NDArray[np.int8], npt.NDArray[np.int8]]


@dataclass(frozen=True, slots=True)
class WinningTile:
    """A tile proof that passed the cheap checks, with its seed and ticket."""

    proof: TileProof
    sigma_m: bytes
    ticket: bytes


def _operand_block(data: bytes, rows: int, width: int) -> npt.NDArray[np.int8]:
    return np.frombuffer(data, dtype=np.int8).reshape(rows, width)


def _opens(root: bytes, rows: npt.NDArray[np.int8], block_index: int, blocks: int, path: tuple[bytes, ...]) -> bool:
    """Whether a block of rows and its path lead to ``root`` (see :func:`commit_rows`)."""
    try:
        return merkle_root_from_proof(commit_rows(rows, len(rows)), block_index, blocks, path) == root
    except InvalidEncoding:
        return False


def verify_winning_tile(
    params: PouwParams, config: ModelConfig, header_seed: bytes, target: int, proof: bytes,
    *, prefix_root: bytes,
) -> WinningTile:
    """The cheap part of seal verification: decode the proof, open it, recompute its ticket under
    the step seed σ_j = H(σ = ``header_seed``, j, ``prefix_root``) and check that it wins. Costs one
    tile of the noisy product, whatever the job's size; needs nothing but the header and seal."""
    return _verify_tile(params, config, lambda step: step_seed(header_seed, step, prefix_root), target, proof)


def verify_tile_under_seed(
    params: PouwParams, config: ModelConfig, seed: bytes, target: int, proof: bytes
) -> WinningTile:
    """:func:`verify_winning_tile` with the step seed σ_j given directly (transcript-level vectors)."""
    return _verify_tile(params, config, lambda step: seed, target, proof)


def _verify_tile(
    params: PouwParams, config: ModelConfig, seed_of: Callable[[int], bytes], target: int, proof: bytes
) -> WinningTile:
    if len(proof) > params.max_proof_bytes():
        raise SealError(SealCheck.SIZE, f"proof of {len(proof)} bytes > {params.max_proof_bytes()}")
    try:
        tile = TileProof.decode(proof)
    except InvalidEncoding as exc:
        raise SealError(SealCheck.DECODE, f"tile proof: {exc}") from exc
    shapes = step_matmul_shapes(config)
    if tile.matmul_index >= len(shapes) or (tile.m, tile.k, tile.n) != shapes[tile.matmul_index]:
        raise SealError(SealCheck.INDICES, f"matmul {tile.matmul_index} with shape {tile.m, tile.k, tile.n}")
    bm, bn, k = params.tile_m, params.tile_n, tile.k
    col_tiles = tile.n // bn
    if tile.tile_index >= (tile.m // bm) * col_tiles:
        raise SealError(SealCheck.INDICES, f"tile {tile.tile_index} out of range")
    if len(tile.a_rows) != bm * k or len(tile.b_cols) != bn * k:
        raise SealError(SealCheck.INDICES, "operand rows/columns of the wrong size")
    a_rows, b_cols = _operand_block(tile.a_rows, bm, k), _operand_block(tile.b_cols, bn, k)
    if (
        int(np.abs(a_rows.astype(np.int16)).max()) > PAYLOAD_BOUND
        or int(np.abs(b_cols.astype(np.int16)).max()) > PAYLOAD_BOUND
    ):
        raise SealError(SealCheck.OPERAND_RANGE, f"an operand entry beyond ±{PAYLOAD_BOUND}")
    tile_row, tile_col = divmod(tile.tile_index, col_tiles)
    if not _opens(tile.ha, a_rows, tile_row, tile.m // bm, tile.a_path):
        raise SealError(SealCheck.MERKLE_A, "rows do not open HA")
    if not _opens(tile.hb, b_cols, tile_col, tile.n // bn, tile.b_path):
        raise SealError(SealCheck.MERKLE_B, "columns do not open HB")
    shape = (tile.m, tile.k, tile.n)
    seed = seed_of(tile.step)
    sigma_m = matmul_seed(seed, tile.step, tile.matmul_index, shape, tile.ha, tile.hb)
    ticket = tile_ticket(sigma_m, tile.tile_index, tile_digest(params, sigma_m, shape, tile.tile_index, a_rows, b_cols))
    if not ticket_wins(ticket, target, bm * bn * k, params.reference_work):
        raise SealError(SealCheck.TARGET, "the tile's ticket does not meet the target")
    return WinningTile(proof=tile, sigma_m=sigma_m, ticket=ticket)


class _OperandRecorder:
    """A plain matmul hook that keeps the operands of one matmul index."""

    def __init__(self, backend: Backend, index: int) -> None:
        self.backend = backend
        self.index = index
        self.operands: Operands | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        if index == self.index:
            self.operands = (a.cpu().numpy(), b.cpu().numpy())
        return self.backend.int_mm(a, b)


def replay_segment(
    config: ModelConfig,
    dataset: Dataset,
    state: ModelState,
    trajectory_seed: bytes,
    backend: Backend,
    steps: int,
    watch: tuple[int, int] | None = None,
) -> tuple[ModelState, Operands | None]:
    """Train ``steps`` steps from ``state`` with plain products. With ``watch = (step, index)``
    inside the segment, also return the operands of that matmul."""
    if watch is None or not state.step <= watch[0] < state.step + steps:
        return train(config, state, dataset, trajectory_seed, backend, steps), None
    step, index = watch
    before = step - state.step
    if before:
        state = train(config, state, dataset, trajectory_seed, backend, before)
    recorder = _OperandRecorder(backend, index)
    state = train_step(config, state, dataset, trajectory_seed, backend, recorder)
    if steps - before - 1:
        state = train(config, state, dataset, trajectory_seed, backend, steps - before - 1)
    return state, recorder.operands


def max_work_bytes(params: PouwParams, config: ModelConfig, steps: int) -> int:
    """Upper bound on the encoded WorkData of an honest seal of ``steps`` steps."""
    state_bytes = 64 + 16 * len(config.dims) + 4 * config.param_count()
    leaves = len(checkpoint_positions(steps, params.checkpoint_interval))
    return (params.replayed_segments() + 1) * (state_bytes + 8) + leaves * (HASH_SIZE + 2) + 64


def _decode_state(data: bytes, config: ModelConfig, check: SealCheck, what: str) -> ModelState:
    try:
        return ModelState.decode(data, config)
    except InvalidEncoding as exc:
        raise SealError(check, f"{what}: {exc}") from exc


def verify_seal(
    params: PouwParams,
    config: ModelConfig,
    dataset: Dataset,
    start_state: ModelState,
    trajectory_seed: bytes,
    header_seed: bytes,
    target: int,
    steps: int,
    final_state_hash: bytes,
    trajectory_root: bytes,
    proof: bytes,
    work: bytes,
    backend: Backend,
    *,
    prefix_root: bytes,
) -> None:
    """Accept the seal or raise :class:`SealError` naming the first failed check."""
    try:
        params.check_model(config)
    except ValidationError as exc:
        raise SealError(SealCheck.CONFIG, exc.detail) from exc
    if not 1 <= steps <= params.max_steps_per_block:
        raise SealError(SealCheck.STEPS, f"{steps} steps not in 1..{params.max_steps_per_block}")
    if len(work) > max_work_bytes(params, config, steps):
        raise SealError(SealCheck.SIZE, f"work of {len(work)} bytes")
    tile = verify_winning_tile(params, config, header_seed, target, proof, prefix_root=prefix_root)
    last_step = start_state.step + steps - 1
    if tile.proof.step != last_step:
        raise SealError(SealCheck.STEPS, f"winning step {tile.proof.step} is not the last step {last_step}")
    try:
        evidence = WorkData.decode(work)
    except InvalidEncoding as exc:
        raise SealError(SealCheck.DECODE, f"work: {exc}") from exc
    leaves = _check_trajectory(params, start_state, steps, trajectory_root, evidence)
    if root_of_prefix(leaves) != prefix_root:
        raise SealError(SealCheck.TRAJECTORY, "the winning step was not drawn under the committed leaves")
    final = _decode_state(evidence.final_state, config, SealCheck.DECODE, "final state")
    if final.step != start_state.step + steps or final.hash() != final_state_hash or final_state_hash != leaves[-1]:
        raise SealError(SealCheck.FINAL_STATE, "final state does not match its hash and step")
    interval = params.checkpoint_interval
    plan = replay_plan(steps, interval, steps - 1, params.sampled_segments, tile.ticket)
    starts = _checkpoint_states(config, start_state, plan, interval, leaves, evidence)
    winning_segment = segment_of(steps - 1, interval)
    last = segment_count(steps, interval) - 1
    for segment in sorted(plan, key=lambda s: (s != 0, s != last, s != winning_segment, s)):
        begin = starts[segment]
        length = min(interval, steps - segment * interval)
        watch = (tile.proof.step, tile.proof.matmul_index) if segment == winning_segment else None
        end, operands = replay_segment(config, dataset, begin, trajectory_seed, backend, length, watch)
        if end.hash() != leaves[segment + 1]:
            raise SealError(SealCheck.REPLAY, f"segment {segment} does not end on its checkpoint")
        if operands is not None:
            _check_operands(params, tile.proof, operands)


def _check_trajectory(
    params: PouwParams, start_state: ModelState, steps: int, root: bytes, evidence: WorkData
) -> tuple[bytes, ...]:
    leaves = evidence.checkpoint_hashes
    expected = len(checkpoint_positions(steps, params.checkpoint_interval))
    if len(leaves) != expected:
        raise SealError(SealCheck.TRAJECTORY, f"{len(leaves)} checkpoint hashes, expected {expected}")
    if leaves[0] != start_state.hash():
        raise SealError(SealCheck.TRAJECTORY, "the first checkpoint is not the start state")
    if root_of_trajectory(leaves) != root:
        raise SealError(SealCheck.TRAJECTORY, "checkpoint hashes do not match the trajectory root")
    return leaves


def _checkpoint_states(
    config: ModelConfig,
    start_state: ModelState,
    plan: list[int],
    interval: int,
    leaves: tuple[bytes, ...],
    evidence: WorkData,
) -> dict[int, ModelState]:
    """The start state of each replayed segment, checked against its leaf."""
    carried = [s for s in plan if s != 0]
    if len(evidence.checkpoints) != len(carried):
        raise SealError(SealCheck.CHECKPOINT, f"{len(evidence.checkpoints)} checkpoints, expected {len(carried)}")
    starts = {0: start_state}
    for segment, data in zip(carried, evidence.checkpoints, strict=True):
        state = _decode_state(data, config, SealCheck.CHECKPOINT, f"checkpoint of segment {segment}")
        if state.step != start_state.step + segment * interval or state.hash() != leaves[segment]:
            raise SealError(SealCheck.CHECKPOINT, f"checkpoint of segment {segment} does not match its leaf")
        starts[segment] = state
    return starts


def _check_operands(params: PouwParams, proof: TileProof, operands: Operands) -> None:
    a, b = operands
    if commit_rows(a, params.tile_m) != proof.ha or commit_rows(np.ascontiguousarray(b.T), params.tile_n) != proof.hb:
        raise SealError(SealCheck.OPERANDS, "the winning step's operands do not commit to HA/HB")
