"""Mining: train a job shard through the noisy-transcript product until a tile wins.

A :class:`Miner` holds one shard's training progress: the job's start state, the trajectory seed
τ, the current weights (on the backend's device) and the checkpoints taken every k steps. Each
:meth:`Miner.mine` call runs steps under one lottery seed σ (``Header.lottery_seed``). A later call
with a new σ continues the same trajectory, with the same states and checkpoints as an
uninterrupted run; only the tickets change, and tickets of steps run under an older σ are spent.

Each step j draws under its own step seed σ_j = H(σ, j, R) (:func:`pouw.proof.step_seed`), R the
running root of the checkpoint leaves committed so far: the trajectory is fixed before each draw.

A win ends the shard at the winning step: the result claims the steps up to and including it, the
trajectory root over the checkpoints, and the evidence (:class:`~pouw.proof.WorkData`) for the
segments a validator will replay, which the winning ticket picks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from chain.errors import PouwError
from pouw.backends import Backend
from pouw.datasets import Dataset
from pouw.engine import Trainer
from pouw.model import ModelConfig, ModelState
from pouw.params import PouwParams
from pouw.proof import (
    SealClaim,
    TileProof,
    WorkData,
    prefix_root,
    replay_plan,
    step_seed,
    trajectory_root,
)
from pouw.transcript import NoisyTranscriptProduct


@dataclass(frozen=True, slots=True)
class MiningProgress:
    """What a progress callback sees after every step of a ``mine`` call."""

    steps: int  # steps since the shard's start state (the whole session)
    macs: int  # noisy-product multiply-accumulates of the session
    tiles: int  # tiles whose ticket was computed in the session
    best_ticket: bytes | None  # lowest ticket under the current σ


ProgressCallback = Callable[[MiningProgress], "bool | None"]
"""Called after each step; a truthy return stops the ``mine`` call (progress is kept)."""


@dataclass(frozen=True, slots=True)
class MineResult:
    """A winning shard: everything a block needs from the proof of useful work."""

    proof: TileProof
    ticket: bytes
    steps: int
    trajectory_root: bytes
    prefix_root: bytes
    final_state: ModelState
    work: WorkData

    @property
    def seal_claim(self) -> SealClaim:
        return SealClaim(
            steps=self.steps,
            final_state_hash=self.final_state.hash(),
            trajectory_root=self.trajectory_root,
            prefix_root=self.prefix_root,
            proof=self.proof.encode(),
        )

    @property
    def work_bytes(self) -> bytes:
        return self.work.encode()


class Miner:
    """One shard of one job, mined from ``start_state`` along the trajectory seed τ."""

    def __init__(
        self,
        params: PouwParams,
        config: ModelConfig,
        dataset: Dataset,
        start_state: ModelState,
        trajectory_seed: bytes,
        backend: Backend,
    ) -> None:
        params.validate()
        params.check_model(config)
        self.params = params
        self.config = config
        self.backend = backend
        self.start_state = start_state
        self._trainer = Trainer(config, start_state, dataset, trajectory_seed, backend, self._product)
        self._step_product: NoisyTranscriptProduct | None = None
        # encoded states and hashes at positions 0, k, 2k, ... (steps since the start)
        self._checkpoints = [start_state.encode()]
        self._checkpoint_hashes = [start_state.hash()]
        self._running_root = trajectory_root(self._checkpoint_hashes)
        self.steps = 0
        self.macs = 0
        self.tiles = 0

    def _product(self, a: torch.Tensor, b: torch.Tensor, index: int) -> torch.Tensor:
        if self._step_product is None:
            raise PouwError("a mining step ran outside Miner.mine")
        return self._step_product(a, b, index)

    @property
    def exhausted(self) -> bool:
        """True once the shard holds the most steps one block may claim."""
        return self.steps >= self.params.max_steps_per_block

    def state(self) -> ModelState:
        """The model after the steps run so far."""
        return self._trainer.state()

    def draw_root(self) -> bytes:
        """R: the running root of the leaves committed so far, which the next step draws under."""
        return self._running_root

    def mine(
        self,
        header_seed: bytes,
        target: int,
        max_steps: int,
        progress: ProgressCallback | None = None,
    ) -> MineResult | None:
        """Run up to ``max_steps`` steps under lottery seed σ = ``header_seed`` (each step j under
        its step seed σ_j, see the module doc).

        Returns the result of the first winning step, or None when the budget (this call's, or
        the block's ``max_steps_per_block``) runs out or ``progress`` asks to stop.
        """
        if target < 0:
            raise ValueError("target must be non-negative")
        best: bytes | None = None
        interval = self.params.checkpoint_interval
        budget = min(max_steps, self.params.max_steps_per_block - self.steps)
        for _ in range(budget):
            step = self._trainer.step_index
            seed = step_seed(header_seed, step, self.draw_root())
            product = NoisyTranscriptProduct(self.params, seed, step, target, self.backend)
            self._step_product = product
            try:
                self._trainer.step()
            finally:
                self._step_product = None
            self.steps += 1
            self.macs += product.macs
            self.tiles += product.tiles_evaluated
            if product.best_ticket is not None and (best is None or product.best_ticket < best):
                best = product.best_ticket
            if self.steps % interval == 0:
                state = self._trainer.state()
                self._checkpoints.append(state.encode())
                self._checkpoint_hashes.append(state.hash())
                self._running_root = trajectory_root(self._checkpoint_hashes)
            if product.winner is not None and product.winning_ticket is not None:
                return self._result(product.winner, product.winning_ticket)
            if progress is not None and progress(MiningProgress(self.steps, self.macs, self.tiles, best)):
                return None
        return None

    def _result(self, proof: TileProof, ticket: bytes) -> MineResult:
        steps, interval = self.steps, self.params.checkpoint_interval
        final = self._trainer.state()
        inner = -(-steps // interval)  # checkpoints strictly below position N: 0, k, ...
        leaves = [*self._checkpoint_hashes[:inner], final.hash()]
        plan = replay_plan(steps, interval, steps - 1, self.params.sampled_segments, ticket)
        work = WorkData(
            checkpoint_hashes=tuple(leaves),
            checkpoints=tuple(self._checkpoints[s] for s in plan if s != 0),
            final_state=final.encode(),
        )
        return MineResult(
            proof=proof,
            ticket=ticket,
            steps=steps,
            trajectory_root=trajectory_root(leaves),
            prefix_root=prefix_root(leaves),
            final_state=final,
            work=work,
        )
