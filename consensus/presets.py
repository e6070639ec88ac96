"""Network presets: devnet, testnet, mainnet — every number a network is defined by, and its genesis.

A :class:`Preset` gathers the chain's parameters (chain id, block time, ASERT half-life, future-time
limit, per-block target bound, initial target, subsidy schedule and its work share, job-fee burn,
size limits, fee floor, reorg limit), the PoUW parameters of
:mod:`pouw.params`, and the built-in job that gives miners work when no client pays for any
(sklearn's digits on a small integer MLP). ``chain_rules`` hands the state transition what it
needs; ``genesis()`` builds the genesis spec, block and state.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from chain.errors import InvalidTransaction, Reason, ValidationError
from chain.genesis import BuiltinJob, GenesisSpec, builtin_job_id, genesis_block, genesis_state
from chain.rules import ChainRules
from chain.state import State
from chain.types import COIN, Block, Header, JobSpec
from pouw.datasets import Dataset, digits
from pouw.model import ModelConfig, init_state
from pouw.params import DEVNET, MAINNET, TESTNET, PouwParams, expected_block_macs, target_for_work

BUILTIN_JOB_NAME = "digits"
GENESIS_TIME = 1_793_491_200
"""2026-11-01T00:00:00Z. ASERT anchors at block 1, so the genesis time only bounds the first timestamps."""
U32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class Preset:
    name: str
    chain_id: int
    block_time: int
    """Target seconds between blocks."""
    half_life: int
    """ASERT half-life in seconds: a block this late doubles its child's target."""
    expected_block_macs: int
    """Work a block should take at genesis, which fixes the initial target."""
    genesis_timestamp: int
    initial_subsidy: int
    halving_interval: int
    max_block_bytes: int
    max_block_txs: int
    min_fee: int
    fee_per_byte: int
    max_reorg_depth: int
    pouw: PouwParams
    builtin_dims: tuple[int, ...]
    builtin_batch: int
    builtin_lr_shift: int
    max_future_seconds: int
    """How far past the local clock a block may be stamped: well below the half-life, so one
    future-stamped block eases its child's target by at most 2^(max_future_seconds/half_life)."""
    max_target_shift: int
    """A block's target is within [parent.target / 2^s, parent.target * 2^s] (ASERT value clamped)."""
    verify_budget_ms: int
    """Worst-case seal verification, on one core of the reference machine (docs/protocol.md §11);
    the caps of ``pouw`` are derived from it."""
    min_subsidy_fee_per_mmac: int = 1
    """Client jobs below this fee (base units per 2^20 MACs) earn their miner no subsidy."""
    job_fee_burn: tuple[int, int] = (1, 8)
    """Share of released job pay burned (rounded up), so self-dealing on one's own job never pays."""

    @property
    def initial_target(self) -> int:
        return target_for_work(self.pouw, self.expected_block_macs)

    def subsidy(self, height: int) -> int:
        halvings = height // self.halving_interval
        return self.initial_subsidy >> halvings if halvings < 64 else 0

    def validate_job_spec(self, spec: JobSpec) -> None:
        """The consensus limits on what a job may ask for (model shape and size, batch, steps)."""
        try:
            config = model_config(spec)
            config.validate()
        except ValidationError as exc:
            raise InvalidTransaction(Reason.BAD_JOB_SPEC, exc.detail) from exc
        if max(config.dims) > self.pouw.max_width or spec.batch_size > self.pouw.max_width:
            raise InvalidTransaction(Reason.BAD_JOB_SPEC, f"widths above {self.pouw.max_width}")
        try:
            self.pouw.check_model(config)
        except ValidationError as exc:
            raise InvalidTransaction(Reason.BAD_JOB_SPEC, exc.detail) from exc

    def initial_model_hash(self, spec: JobSpec, seed: bytes) -> bytes:
        return initial_model_hash(model_config(spec), seed)

    @functools.cached_property
    def chain_rules(self) -> ChainRules:
        return ChainRules(
            chain_id=self.chain_id, min_fee=self.min_fee, fee_per_byte=self.fee_per_byte,
            max_block_txs=self.max_block_txs, subsidy=self.subsidy,
            initial_model_hash=self.initial_model_hash, validate_job_spec=self.validate_job_spec,
            dataset_shape=dataset_shape, macs_per_step=self.macs_per_step,
            expected_block_work=self.expected_block_work,
            min_subsidy_fee_per_mmac=self.min_subsidy_fee_per_mmac, job_fee_burn=self.job_fee_burn,
        )

    def macs_per_step(self, spec: JobSpec) -> int:
        return model_config(spec).macs_per_step()

    def expected_block_work(self, target: int) -> int:
        return expected_block_macs(self.pouw, target)

    def builtin_dataset(self) -> Dataset:
        return digits()

    def builtin_job(self) -> BuiltinJob:
        spec = JobSpec(
            dims=self.builtin_dims, dataset_id=self.builtin_dataset().id, batch_size=self.builtin_batch,
            lr_shift=self.builtin_lr_shift, total_steps=U32_MAX, fee_per_step=0,
        )
        seed = builtin_job_id(BUILTIN_JOB_NAME)
        return BuiltinJob(name=BUILTIN_JOB_NAME, spec=spec, initial_model_hash=self.initial_model_hash(spec, seed))

    def genesis_spec(self) -> GenesisSpec:
        dataset = self.builtin_dataset()
        return GenesisSpec(
            chain_id=self.chain_id, timestamp=self.genesis_timestamp, target=self.initial_target,
            datasets=((dataset.id, dataset.name, len(dataset.encode()), dataset.n_features, dataset.n_classes),),
            jobs=(self.builtin_job(),),
        )

    def genesis(self) -> tuple[Block, State]:
        return _genesis(self)


@functools.cache
def _genesis(preset: Preset) -> tuple[Block, State]:
    spec = preset.genesis_spec()
    return genesis_block(spec), genesis_state(spec)


def dataset_shape(data: bytes) -> tuple[int, int]:
    """(features, classes) of a published dataset; anything that is not a dataset is refused."""
    try:
        dataset = Dataset.decode(data)
    except ValidationError as exc:
        raise InvalidTransaction(Reason.BAD_DATASET, f"published data is not a dataset: {exc.detail}") from exc
    return dataset.n_features, dataset.n_classes


def model_config(spec: JobSpec) -> ModelConfig:
    return ModelConfig(dims=tuple(spec.dims), batch_size=spec.batch_size, lr_shift=spec.lr_shift)


def header_config(header: Header) -> ModelConfig:
    """The model config a header carries (its job's, which the transition checks)."""
    return ModelConfig(dims=tuple(header.dims), batch_size=header.batch_size, lr_shift=header.lr_shift)


@functools.lru_cache(maxsize=256)
def initial_model_hash(config: ModelConfig, seed: bytes) -> bytes:
    return init_state(config, seed).hash()


DEVNET_PRESET = Preset(
    name="devnet", chain_id=0x5057_0001, block_time=5, half_life=120,
    expected_block_macs=1 << 30, genesis_timestamp=GENESIS_TIME,
    initial_subsidy=50 * COIN, halving_interval=210_000, max_block_bytes=8 * 1024 * 1024,
    max_block_txs=2_000, min_fee=1_000, fee_per_byte=1, max_reorg_depth=1_000, pouw=DEVNET,
    builtin_dims=(64, 128, 64), builtin_batch=64, builtin_lr_shift=8,
    max_future_seconds=15, max_target_shift=4, verify_budget_ms=1_000,
)
TESTNET_PRESET = Preset(
    name="testnet", chain_id=0x5057_0002, block_time=60, half_life=3_600,
    expected_block_macs=1 << 44, genesis_timestamp=GENESIS_TIME,
    initial_subsidy=50 * COIN, halving_interval=210_000, max_block_bytes=16 * 1024 * 1024,
    max_block_txs=10_000, min_fee=10_000, fee_per_byte=10, max_reorg_depth=288, pouw=TESTNET,
    builtin_dims=(64, 256, 64), builtin_batch=256, builtin_lr_shift=11,
    max_future_seconds=300, max_target_shift=4, verify_budget_ms=10_000,
)
MAINNET_PRESET = Preset(
    name="mainnet", chain_id=0x5057_0003, block_time=600, half_life=2 * 86_400,
    expected_block_macs=1 << 56, genesis_timestamp=GENESIS_TIME,
    initial_subsidy=50 * COIN, halving_interval=210_000, max_block_bytes=32 * 1024 * 1024,
    max_block_txs=10_000, min_fee=100_000, fee_per_byte=100, max_reorg_depth=100, pouw=MAINNET,
    builtin_dims=(64, 512, 64), builtin_batch=512, builtin_lr_shift=12,
    max_future_seconds=2 * 60 * 60, max_target_shift=4, verify_budget_ms=60_000,
)
REGTEST_PRESET = replace(
    DEVNET_PRESET, name="regtest", chain_id=0x5057_00FF, block_time=1, half_life=1 << 40,
    expected_block_macs=1 << 22,
)
"""For tests (like Bitcoin Core's regtest): devnet's rules with an easy target that never moves."""
PRESETS: dict[str, Preset] = {
    p.name: p for p in (DEVNET_PRESET, TESTNET_PRESET, MAINNET_PRESET, REGTEST_PRESET)
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(PRESETS)})") from None
