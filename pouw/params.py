"""Consensus parameters of the proof of useful work, and the devnet/testnet/mainnet presets.

This module owns every number the lottery, the proofs and the trajectory checks depend on: the
noise rank ``r``, the transcript chunk ``t`` (``t <= r`` is the security rule, see
docs/protocol.md Part IV), the output tile ``BM x BN``, the checkpoint interval ``k``, the number ``q``
of sampled replay segments, the reference work of the target rule, and the caps that keep a
validator's replay cheap (model size, matrix width, steps per block).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from chain.errors import Reason, ValidationError

if TYPE_CHECKING:
    from pouw.model import ModelConfig

# Payload entries of every matmul operand satisfy |v| <= PAYLOAD_BOUND; noise entries |e| <= NOISE_BOUND,
# so noisy operands stay within int8: 63 + 64 = 127.
PAYLOAD_BOUND = 63
NOISE_BOUND = 64
# Every model dimension and batch size is a multiple of this (the engine's contract).
DIM_QUANTUM = 64
HASH_SIZE = 32
MAX_LAYERS = 8  # chain.types.MAX_LAYERS: a spec has at most this many layers


def _power_of_two(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclass(frozen=True, slots=True)
class PouwParams:
    """One network's proof-of-useful-work constants. Immutable; compare by value."""

    name: str
    rank: int  # r: rank of the noise E = E_L·E_R and F = F_L·F_R
    chunk: int  # t: the k dimension is consumed in chunks of t; a transcript entry per chunk
    tile_m: int  # BM: rows of an output tile
    tile_n: int  # BN: columns of an output tile
    checkpoint_interval: int  # k: a state hash every k steps
    sampled_segments: int  # q: segments replayed beyond the first, the last and the winning one
    reference_work: int  # MACs: target T means an expected reference_work * 2**256 / T MACs a block
    max_model_params: int  # cap on ModelConfig.param_count()
    max_width: int  # cap on every layer width and on the batch size
    max_steps_per_block: int  # cap on the steps one seal may claim
    max_replay_macs: int = 1 << 62  # cap on a validator's replay: max_replay_steps · step_replay_cost
    matmul_overhead_macs: int = 1 << 19  # what each matmul of a step costs beyond its MACs (fixed work)

    def validate(self) -> None:
        """Raise ``ValidationError(BAD_JOB_SPEC)`` unless the parameters are self-consistent."""
        problems: list[str] = []
        if not 1 <= self.chunk <= self.rank:
            problems.append(f"chunk t={self.chunk} must satisfy 1 <= t <= rank r={self.rank}")
        for label, size in (("tile_m", self.tile_m), ("tile_n", self.tile_n)):
            if not _power_of_two(size) or DIM_QUANTUM % size:
                problems.append(f"{label}={size} must be a power of two dividing {DIM_QUANTUM}")
        if self.checkpoint_interval < 1:
            problems.append("checkpoint_interval must be >= 1")
        if self.sampled_segments < 0:
            problems.append("sampled_segments must be >= 0")
        if self.reference_work < 1:
            problems.append("reference_work must be >= 1")
        if self.max_width < DIM_QUANTUM or self.max_width % DIM_QUANTUM:
            problems.append(f"max_width must be a positive multiple of {DIM_QUANTUM}")
        if self.max_model_params < 1 or self.max_steps_per_block < 1:
            problems.append("caps must be positive")
        if problems:
            raise ValidationError(Reason.BAD_JOB_SPEC, "; ".join(problems))

    @property
    def noise_nonzeros(self) -> int:
        """Non-zeros per column of E_R (and per row of F_L): min(r, 64), hence |E|, |F| <= 64."""
        return min(self.rank, NOISE_BOUND)

    def check_model(self, config: ModelConfig) -> None:
        """Raise ``ValidationError(BAD_JOB_SPEC)`` unless a job's model fits this network's caps."""
        config.validate()
        if config.param_count() > self.max_model_params:
            raise ValidationError(Reason.BAD_JOB_SPEC, f"{config.param_count()} parameters > {self.max_model_params}")
        widest = max(*config.dims, config.batch_size)
        if widest > self.max_width:
            raise ValidationError(Reason.BAD_JOB_SPEC, f"width {widest} > {self.max_width}")
        replay = self.max_replay_steps() * self.step_replay_cost(config)
        if replay > self.max_replay_macs:
            raise ValidationError(
                Reason.BAD_JOB_SPEC, f"worst-case replay of {replay} MACs > {self.max_replay_macs}"
            )

    def step_replay_cost(self, config: ModelConfig) -> int:
        """A step's replay cost in MAC-equivalents: its MACs plus ``matmul_overhead_macs`` for each of
        its 3·layers − 1 matmuls (the per-matmul quantisation and bookkeeping a narrow deep model pays
        for: measured 0.25-0.5 ms a matmul on the reference core; 2^19 MACs at 2 GMAC/s is 0.26 ms)."""
        return config.macs_per_step() + self.matmul_overhead_macs * (3 * config.n_layers - 1)

    def max_replay_steps(self) -> int:
        """Most steps a validator replays for one seal: ``replayed_segments() · k``."""
        return self.replayed_segments() * self.checkpoint_interval

    def max_proof_bytes(self) -> int:
        """Upper bound on an encoded winning-tile proof: the tile's operand rows and columns at the
        widest inner dimension, two Merkle paths, and the small fields."""
        depth = max(self.max_width.bit_length(), 1)
        return (self.tile_m + self.tile_n) * self.max_width + 2 * depth * (HASH_SIZE + 2) + 256

    def max_state_bytes(self) -> int:
        """Upper bound on an encoded model state within the caps (4 bytes a parameter)."""
        return 64 + 16 * (MAX_LAYERS + 1) + 4 * self.max_model_params

    def max_work_bytes_bound(self) -> int:
        """Upper bound on a block's ``work`` bytes within the caps (see ``pouw.verify.max_work_bytes``)."""
        leaves = self.max_segments() + 1
        return (self.replayed_segments() + 1) * (self.max_state_bytes() + 8) + leaves * (HASH_SIZE + 2) + 64

    def max_segments(self) -> int:
        return -(-self.max_steps_per_block // self.checkpoint_interval)

    def replayed_segments(self) -> int:
        """Most segments a validator replays: first, last, the winning one, and q sampled."""
        return self.sampled_segments + 3


# Caps (v2, docs/protocol.md §11): the largest job they allow must (a) give a seal that fits half a
# block (``max_work_bytes_bound() + max_proof_bytes() <= max_block_bytes // 2``: the carried states
# are 4 bytes a parameter, q + 4 of them at most), and (b) replay within the preset's verification
# budget on one core of the reference machine (a 2-core AVX2 CPU, CPU backend): max_replay_macs is
# the budget times a conservative 2 GMAC/s (measured 1.9 GMAC/s for the smallest models, which are
# per-step-overhead bound, 7-21 GMAC/s for larger ones).
DEVNET = PouwParams(
    name="devnet",
    rank=64,
    chunk=64,
    tile_m=64,
    tile_n=64,
    checkpoint_interval=16,
    sampled_segments=2,
    reference_work=64 * 64 * 64,
    max_model_params=1 << 17,
    max_width=512,
    max_steps_per_block=4096,
    max_replay_macs=1 << 30,
)

TESTNET = PouwParams(
    name="testnet",
    rank=128,
    chunk=128,
    tile_m=64,
    tile_n=64,
    checkpoint_interval=64,
    sampled_segments=8,
    reference_work=1 << 24,
    max_model_params=1 << 17,
    max_width=1024,
    max_steps_per_block=1 << 16,
    max_replay_macs=1 << 34,
)

MAINNET = PouwParams(
    name="mainnet",
    rank=256,
    chunk=256,
    tile_m=64,
    tile_n=64,
    checkpoint_interval=32,
    sampled_segments=16,
    reference_work=1 << 30,
    max_model_params=1 << 17,
    max_width=1024,
    max_steps_per_block=1 << 18,
    max_replay_macs=1 << 36,
)

PRESETS: dict[str, PouwParams] = {p.name: p for p in (DEVNET, TESTNET, MAINNET)}


def target_for_work(params: PouwParams, expected_macs: int) -> int:
    """The target at which a block takes ``expected_macs`` multiply-accumulates on average."""
    if expected_macs < 1:
        raise ValueError("expected work must be positive")
    return max(1, (params.reference_work << 256) // expected_macs)


def expected_block_macs(params: PouwParams, target: int) -> int:
    """MACs a block takes on average at ``target`` (each MAC wins with odds
    ``target / (reference_work · 2^256)``): the inverse of :func:`target_for_work`."""
    return (params.reference_work << 256) // max(target, 1)
