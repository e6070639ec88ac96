"""Suite ``verify``: what a validator pays to check a block's work, against what mining it costs.

Per preset (devnet, testnet, mainnet parameters) :func:`benchmarks.verify_tile.run` mines one
winning seal and times the winning-tile check and the full ``verify_seal`` (tile + trajectory +
sampled replay). Both are then put against the preset's expected mining work per block
(``Preset.expected_block_macs``): in MACs, and in time at the mining rate measured here.

The full replay of a preset needs a shard of ``(q + 3) * k`` steps (first, last and q sampled
segments): 2432 steps for mainnet, whose built-in 64-512-64 model at batch 512 mines at about
80 ms a step on one CPU core. So on a CPU the mainnet row uses the smallest built-in model (the
devnet one, which mainnet's caps allow), and ``--quick`` shortens shards; every row says which
model and shard it measured (``model_note``, ``shard_steps``, ``replayed_steps``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import verify_tile
from benchmarks.framework import RunContext, SuiteReport, figure, rounded
from consensus.presets import PRESETS as CHAIN_PRESETS
from pouw.model import ModelConfig
from pouw.params import PRESETS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "verify"
DESCRIPTION = "winning-tile and full seal verification vs the expected mining work per block, per preset"
SMALLEST = "devnet"


def builtin_config(preset: str) -> ModelConfig:
    p = CHAIN_PRESETS[preset]
    return ModelConfig(p.builtin_dims, p.builtin_batch, p.builtin_lr_shift)


def choose(preset: str, ctx: RunContext) -> tuple[ModelConfig, int, str]:
    """(model, shard steps, note) measured for ``preset`` in this mode."""
    params = PRESETS[preset]
    full_shard = params.replayed_segments() * params.checkpoint_interval
    own_model = ctx.is_cuda or preset != "mainnet"
    config = builtin_config(preset if own_model else SMALLEST)
    note = f"the {preset} built-in model" if own_model else (
        f"the {SMALLEST} built-in model: the {preset} one is too slow to mine a full shard on a CPU here")
    shard = ctx.pick(full_shard, min(full_shard, max(80, 2 * params.checkpoint_interval)),
                     2 * params.checkpoint_interval)
    if shard < full_shard:
        note += f"; --{ctx.mode} shard of {shard} steps (a full replay needs {full_shard})"
    return config, shard, note


def run(ctx: RunContext) -> SuiteReport:
    presets = ctx.pick(["devnet", "testnet", "mainnet"], ["devnet", "testnet", "mainnet"], ["devnet"])
    runs = ctx.pick(200, 60, 20)
    rows = []
    for preset in ctx.progress(presets, "verify presets"):
        config, shard, note = choose(preset, ctx)
        measured = verify_tile.run(preset, ctx.device, runs, shard, config)
        rows.append(with_fractions(preset, config, measured, note))
    devnet_tile_s = next((r["verify_winning_tile_ms_median"] / 1000 for r in rows if r["preset"] == "devnet"), 0.0)
    worst = devnet_worst_case(ctx, devnet_tile_s) if not ctx.tiny else None
    return SuiteReport(
        parameters={"presets": presets, "runs": runs,
                    "shards": {p: choose(p, ctx)[1] for p in presets}},
        results={"presets": rows, "devnet_worst_case": worst},
        headline=([f"devnet worst case ({worst['dims']}, batch {worst['batch_size']}): seal ≈ "
                   f"{worst['estimated_seal_s']:.3g} s ({worst['replayed_steps']} plain steps on "
                   f"{worst['backend']} + the tile); by backend: {worst['estimated_seal_s_by_backend']}"]
                  if worst else []) + [
            f"{r['preset']}: tile {r['verify_winning_tile_ms_median']:.3g} ms, "
            f"seal {r['verify_seal_ms_median']:.3g} ms ({r['replayed_steps']} steps replayed); "
            f"seal check = {r['seal_fraction_of_block_time']:.2e} "
            f"of a block's mining time, {r['seal_fraction_of_block_macs']:.2e} of its MACs"
            for r in rows
        ],
        figures={NAME: plot(rows)},
    )


WORST_DEVNET = ModelConfig((512, 256, 512), 512, 12)
"""The widest devnet job: width and batch at max_width (512), 2**18 parameters (the cap)."""


def devnet_worst_case(ctx: RunContext, tile_s: float) -> dict[str, Any]:
    """The replay bound of a devnet seal at the caps: (q + 2)·k plain steps of the largest model,
    timed on every exact backend (a validator replays with the calibrated one) plus one tile."""
    from benchmarks.framework import measure
    from pouw.backends import CPU_KINDS, get_backend
    from pouw.datasets import load_dataset
    from pouw.engine import Trainer
    from pouw.model import init_state
    from pouw.params import DEVNET

    DEVNET.check_model(WORST_DEVNET)
    dataset = load_dataset("synthetic:n=1024,d=512,classes=10,hidden=64")
    state = init_state(WORST_DEVNET, b"pouw-bench/verify/worst")
    replayed = DEVNET.replayed_segments() * DEVNET.checkpoint_interval
    candidates = {"calibrated": ctx.backend()}
    if not ctx.is_cuda:
        candidates |= {kind: get_backend(f"cpu:{kind}") for kind in CPU_KINDS}
    step_s = {}
    for label, backend in candidates.items():
        trainer = Trainer(WORST_DEVNET, state, dataset, b"\x01" * 32, backend)
        trainer.step()  # warm-up
        step_s[label] = measure(trainer.step, 3, ctx.sync, 0.0).median
    return {
        "dims": list(WORST_DEVNET.dims),
        "batch_size": WORST_DEVNET.batch_size,
        "param_count": WORST_DEVNET.param_count(),
        "replayed_steps": replayed,
        "backend": ctx.backend().label,
        "plain_step_s_by_backend": {k: rounded(v) for k, v in step_s.items()},
        "estimated_seal_s_by_backend": {k: rounded(v * replayed + tile_s) for k, v in step_s.items()},
        "estimated_seal_s": rounded(step_s["calibrated"] * replayed + tile_s),
        "note": "replay-bound estimate: (q+2)·k plain steps of the largest devnet model + the devnet tile "
                "time measured above (the tile of this model is 64×512×64, the same order)",
    }


def with_fractions(preset: str, config: ModelConfig, measured: dict[str, Any], note: str) -> dict[str, Any]:
    """``measured`` plus the verification cost as a fraction of a block's expected mining work."""
    block_macs = CHAIN_PRESETS[preset].expected_block_macs
    macs_per_step = config.macs_per_step()
    mining_macs_per_s = macs_per_step / (measured["mining_ms_per_step"] / 1000)
    block_mining_s = block_macs / mining_macs_per_s
    tile_macs = measured["winning_tile_macs"]
    seal_macs = tile_macs + measured["replayed_steps"] * macs_per_step
    tile_s, seal_s = measured["verify_winning_tile_ms_median"] / 1000, measured["verify_seal_ms_median"] / 1000
    return {
        **{k: rounded(v) if isinstance(v, float) else v for k, v in measured.items() if not k.endswith("_samples")},
        "verify_winning_tile_ms_samples": [rounded(v) for v in measured["verify_winning_tile_ms_samples"]],
        "verify_seal_ms_samples": [rounded(v) for v in measured["verify_seal_ms_samples"]],
        "model_note": note,
        "macs_per_step": macs_per_step,
        "expected_block_macs": block_macs,
        "block_time_s": CHAIN_PRESETS[preset].block_time,
        "mining_macs_per_s": rounded(mining_macs_per_s),
        "expected_block_mining_s_here": rounded(block_mining_s),
        "tile_fraction_of_block_time": rounded(tile_s / block_mining_s),
        "seal_fraction_of_block_time": rounded(seal_s / block_mining_s),
        "seal_macs": seal_macs,
        "tile_fraction_of_block_macs": rounded(tile_macs / block_macs),
        "seal_fraction_of_block_macs": rounded(seal_macs / block_macs),
    }


def plot(rows: list[dict[str, Any]]) -> Figure:
    fig, (left, right) = figure(2)
    x = np.arange(len(rows))
    names = [r["preset"] for r in rows]
    left.bar(x - 0.2, [r["verify_winning_tile_ms_median"] for r in rows], 0.4, label="winning tile")
    left.bar(x + 0.2, [r["verify_seal_ms_median"] for r in rows], 0.4, label="full seal (tile + replay)")
    left.set_ylabel("ms (median)")
    left.set_title("verification time")
    right.bar(x - 0.2, [r["seal_fraction_of_block_time"] for r in rows], 0.4, label="seal / block mining time")
    right.bar(x + 0.2, [r["seal_fraction_of_block_macs"] for r in rows], 0.4, label="seal MACs / block MACs")
    right.set_title("verification as a fraction of a block's work")
    for ax in (left, right):
        ax.set_xticks(x, names)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    return fig
