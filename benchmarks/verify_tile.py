"""What a validator pays to check a seal: the winning tile alone, and the full verify_seal.

Mines one devnet seal (the devnet job: digits, a 64-128-64 MLP at batch 64), then times
``verify_winning_tile`` (median of many runs; the target is 10 ms on a CPU core) and the whole
``verify_seal`` with its sampled replay, and, for scale, one mining step through the noisy
transcript against one plain training step.

Run: ``.venv/bin/python -m benchmarks.verify_tile [--backend cpu] [--runs 200] [--threads 1]``
(prints JSON and writes benchmarks/results/verify_tile.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pouw.backends import get_backend
from pouw.datasets import load_dataset
from pouw.engine import train
from pouw.mining import Miner
from pouw.model import ModelConfig, init_state
from pouw.params import PRESETS, target_for_work
from pouw.proof import replay_plan
from pouw.verify import verify_seal, verify_winning_tile

RESULTS = Path(__file__).parent / "results"
CONFIG = ModelConfig(dims=(64, 128, 64), batch_size=64, lr_shift=8)
TRAJECTORY_SEED = b"bench/verify-tile/trajectory".ljust(32, b"\0")
HEADER_SEED = b"bench/verify-tile/header".ljust(32, b"\0")


def samples_ms(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm caches (mix weights, kernels)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return times


def median_ms(fn: Callable[[], object], runs: int) -> float:
    return statistics.median(samples_ms(fn, runs))


def run(preset: str, backend_name: str, runs: int, shard_steps: int, config: ModelConfig = CONFIG) -> dict[str, Any]:
    params = PRESETS[preset]
    backend = get_backend(backend_name)
    dataset = load_dataset("digits")
    start = init_state(config, b"bench/verify-tile/job")
    target = target_for_work(params, 4 * config.macs_per_step())  # a win every ~4 steps
    miner = Miner(params, config, dataset, start, TRAJECTORY_SEED, backend)
    began = time.perf_counter()
    miner.mine(b"\xff" * 32, 0, shard_steps - 1)  # a shard long enough to sample segments from
    result = None
    while result is None:
        result = miner.mine(HEADER_SEED, target, 1000)
    mining_s = time.perf_counter() - began
    claim = result.seal_claim

    def tile() -> object:
        return verify_winning_tile(params, config, HEADER_SEED, target, claim.proof, prefix_root=claim.prefix_root)

    def seal() -> None:
        verify_seal(
            params, config, dataset, start, TRAJECTORY_SEED, HEADER_SEED, target, claim.steps,
            claim.final_state_hash, claim.trajectory_root, claim.proof, result.work_bytes, backend,
            prefix_root=claim.prefix_root,
        )  # fmt: skip

    def plain_step() -> object:
        return train(config, start, dataset, TRAJECTORY_SEED, backend, 1)

    interval = params.checkpoint_interval
    plan = replay_plan(claim.steps, interval, claim.steps - 1, params.sampled_segments, result.ticket)
    tile_ms, seal_ms = samples_ms(tile, runs), samples_ms(seal, max(runs // 20, 3))
    return {
        "preset": preset,
        "backend": backend.name,
        "threads": torch.get_num_threads(),
        "model": {"dims": list(config.dims), "batch_size": config.batch_size},
        "shard_steps": claim.steps,
        "mining_ms_per_step": 1000 * mining_s / miner.steps,
        "plain_training_ms_per_step": median_ms(plain_step, max(runs // 10, 5)),
        "proof_bytes": len(claim.proof),
        "work_bytes": len(result.work_bytes),
        "verify_winning_tile_ms_median": statistics.median(tile_ms),
        "verify_seal_ms_median": statistics.median(seal_ms),
        "verify_winning_tile_ms_samples": tile_ms,
        "verify_seal_ms_samples": seal_ms,
        "winning_tile_macs": params.tile_m * params.tile_n * result.proof.k,
        "replayed_steps": sum(min(interval, claim.steps - s * interval) for s in plan),
        "replayed_steps_max": params.replayed_segments() * params.checkpoint_interval,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="devnet", choices=sorted(PRESETS))
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shard-steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args.preset, args.backend, args.runs, args.shard_steps)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "verify_tile.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
