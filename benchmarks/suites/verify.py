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

**Worst case per preset.** The slowest valid block to verify is the one whose job has the largest
model the caps allow (``PouwParams.check_model``: width, parameters and ``max_replay_macs``, found by
search over 1–3 layer MLPs on the 64-feature digits data) and whose seal makes a validator replay the
most steps (``max_replay_steps`` = (q + 3)·k). Its seal is mined and verified for real; where the
mode's shard is shorter than a full replay, the replay time per step measured on that shard is scaled
to ``max_replay_steps`` (``extrapolated``). The result stands against the preset's
``verify_budget_ms`` (one core of the reference 2-core AVX2 CPU; devnet 1 s).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import verify_tile
from benchmarks.framework import RunContext, SuiteReport, figure, rounded
from chain.errors import ValidationError
from consensus.presets import PRESETS as CHAIN_PRESETS
from pouw.model import ModelConfig
from pouw.params import DIM_QUANTUM, MAX_LAYERS, PRESETS, PouwParams

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


def worst_configs(params: PouwParams, features: int = 64) -> list[ModelConfig]:
    """Candidates for the slowest model to replay within the caps: the widest (1–3 layers) and the
    deepest (uniform widths, 4..MAX_LAYERS layers) by ``step_replay_cost``; both are measured."""
    widths = range(DIM_QUANTUM, params.max_width + 1, DIM_QUANTUM)
    wide = [(features, *hidden) for layers in range(1, 4) for hidden in itertools.product(widths, repeat=layers)]
    deep = [(features, *([w] * layers)) for layers in range(4, MAX_LAYERS + 1) for w in widths]
    return [worst_config(params, wide), worst_config(params, deep)]


def worst_config(params: PouwParams, shapes: list[tuple[int, ...]]) -> ModelConfig:
    """Of ``shapes`` (and every batch size), the model the caps allow whose replay costs most: highest
    ``step_replay_cost``, then most parameters (larger states to decode and hash)."""
    widths = range(DIM_QUANTUM, params.max_width + 1, DIM_QUANTUM)
    best: tuple[int, int, ModelConfig] | None = None
    for dims in shapes:
        params_count = sum(a * b for a, b in itertools.pairwise(dims))
        if params_count > params.max_model_params:
            continue
        for batch in widths:
            config = ModelConfig(dims, batch, 8)
            key = (params.step_replay_cost(config), params_count)
            if best is not None and key <= best[:2]:
                continue
            try:
                params.check_model(config)
            except ValidationError:
                continue
            best = (*key, config)
    if best is None:
        raise ValueError(f"no model fits the {params.name} caps")
    return best[2]


def worst_case(preset: str, ctx: RunContext) -> dict[str, Any]:
    """The slower of the worst-case candidates (:func:`worst_configs`), each measured."""
    rows = [worst_case_of(preset, config, ctx) for config in worst_configs(PRESETS[preset])]
    slowest = max(rows, key=lambda row: row["worst_case_verify_ms"])
    return {**slowest, "candidates": [{"model": row["model"], "worst_case_verify_ms": row["worst_case_verify_ms"]}
                                      for row in rows]}


def worst_case_of(preset: str, config: ModelConfig, ctx: RunContext) -> dict[str, Any]:
    """Mine and verify a seal of ``config``; scale its replay to ``max_replay_steps``."""
    params = PRESETS[preset]
    full = params.max_replay_steps()
    shard = full if preset == "devnet" or ctx.is_cuda else ctx.pick(full, 2 * params.checkpoint_interval,
                                                                      2 * params.checkpoint_interval)
    measured = verify_tile.run(preset, ctx.device, ctx.pick(20, 10, 5), shard, config)
    tile_ms = measured["verify_winning_tile_ms_median"]
    seal_ms = measured["verify_seal_ms_median"]
    replayed = measured["replayed_steps"]
    per_step_ms = (seal_ms - tile_ms) / max(replayed, 1)
    worst_ms = seal_ms if replayed >= full else tile_ms + per_step_ms * full
    budget_ms = CHAIN_PRESETS[preset].verify_budget_ms
    return {
        "preset": preset,
        "model": {"dims": list(config.dims), "batch_size": config.batch_size,
                  "params": config.param_count(), "macs_per_step": config.macs_per_step()},
        "max_replay_steps": full,
        "max_replay_macs_cap": params.max_replay_macs,
        "replay_macs": full * config.macs_per_step(),
        "replay_cost": full * params.step_replay_cost(config),
        "shard_steps": measured["shard_steps"],
        "replayed_steps_measured": replayed,
        "extrapolated": replayed < full,
        "work_bytes": measured["work_bytes"],
        "verify_winning_tile_ms_median": rounded(tile_ms),
        "verify_seal_ms_median_measured": rounded(seal_ms),
        "verify_seal_ms_samples": [rounded(v) for v in measured["verify_seal_ms_samples"]],
        "replay_ms_per_step": rounded(per_step_ms),
        "replay_gmacs_per_s": rounded(config.macs_per_step() / per_step_ms / 1e6) if per_step_ms > 0 else None,
        "worst_case_verify_ms": rounded(worst_ms),
        "verify_budget_ms": budget_ms,
        "within_budget": worst_ms <= budget_ms,
        "budget_machine": "one core (torch threads 1) of this machine; the budget's reference is one core "
                          "of a 2-core AVX2 CPU",
    }


def run(ctx: RunContext) -> SuiteReport:
    presets = ctx.pick(["devnet", "testnet", "mainnet"], ["devnet", "testnet", "mainnet"], ["devnet"])
    runs = ctx.pick(200, 60, 20)
    rows = []
    for preset in ctx.progress(presets, "verify presets"):
        config, shard, note = choose(preset, ctx)
        measured = verify_tile.run(preset, ctx.device, runs, shard, config)
        rows.append(with_fractions(preset, config, measured, note))
    worst = [worst_case(preset, ctx) for preset in ctx.progress(presets, "worst-case blocks")]
    devnet_tile_s = next((r["verify_winning_tile_ms_median"] / 1000 for r in rows if r["preset"] == "devnet"), 0.0)
    by_backend = devnet_worst_case(ctx, devnet_tile_s) if not ctx.tiny else None
    return SuiteReport(
        parameters={"presets": presets, "runs": runs,
                    "shards": {p: choose(p, ctx)[1] for p in presets}},
        results={"presets": rows, "worst_case": worst,
                 "all_within_budget": all(w["within_budget"] for w in worst),
                 "devnet_worst_case": by_backend},
        headline=([f"devnet worst case ({by_backend['dims']}, batch {by_backend['batch_size']}) by backend: seal ≈ "
                   f"{by_backend['estimated_seal_s']:.3g} s ({by_backend['replayed_steps']} plain steps on "
                   f"{by_backend['backend']} + the tile); {by_backend['estimated_seal_s_by_backend']}"]
                  if by_backend else []) + [
            f"{r['preset']}: tile {r['verify_winning_tile_ms_median']:.3g} ms, "
            f"seal {r['verify_seal_ms_median']:.3g} ms ({r['replayed_steps']} steps replayed); "
            f"seal check = {r['seal_fraction_of_block_time']:.2e} "
            f"of a block's mining time, {r['seal_fraction_of_block_macs']:.2e} of its MACs"
            for r in rows
        ] + [
            f"{w['preset']} worst case ({'-'.join(map(str, w['model']['dims']))} batch {w['model']['batch_size']}, "
            f"{w['max_replay_steps']} steps replayed): {w['worst_case_verify_ms']:.4g} ms"
            f"{' (extrapolated)' if w['extrapolated'] else ''} vs budget {w['verify_budget_ms']} ms: "
            f"{'within' if w['within_budget'] else 'OVER'}"
            for w in worst
        ],
        figures={NAME: plot(rows, worst)},
    )


def devnet_worst_case(ctx: RunContext, tile_s: float) -> dict[str, Any]:
    """The replay bound of a devnet seal at the caps: ``max_replay_steps`` plain steps of the widest
    model the caps allow (:func:`worst_configs`), timed on every exact backend (a validator replays
    with the calibrated one) plus one tile."""
    from benchmarks.framework import measure
    from pouw.backends import CPU_KINDS, get_backend
    from pouw.datasets import load_dataset
    from pouw.engine import Trainer
    from pouw.model import init_state
    from pouw.params import DEVNET

    worst_devnet = worst_configs(DEVNET)[0]
    DEVNET.check_model(worst_devnet)
    dataset = load_dataset(f"synthetic:n=1024,d={worst_devnet.dims[0]},classes=10,hidden=64")
    state = init_state(worst_devnet, b"pouw-bench/verify/worst")
    replayed = DEVNET.max_replay_steps()
    candidates = {"calibrated": ctx.backend()}
    if not ctx.is_cuda:
        candidates |= {kind: get_backend(f"cpu:{kind}") for kind in CPU_KINDS}
    step_s = {}
    for label, backend in candidates.items():
        trainer = Trainer(worst_devnet, state, dataset, b"\x01" * 32, backend)
        trainer.step()  # warm-up
        step_s[label] = measure(trainer.step, 3, ctx.sync, 0.0).median
    return {
        "dims": list(worst_devnet.dims),
        "batch_size": worst_devnet.batch_size,
        "param_count": worst_devnet.param_count(),
        "replayed_steps": replayed,
        "backend": ctx.backend().label,
        "plain_step_s_by_backend": {k: rounded(v) for k, v in step_s.items()},
        "estimated_seal_s_by_backend": {k: rounded(v * replayed + tile_s) for k, v in step_s.items()},
        "estimated_seal_s": rounded(step_s["calibrated"] * replayed + tile_s),
        "note": "replay-bound estimate: (q+3)·k plain steps of the widest devnet model + the devnet tile "
                "time measured above (a tile of the same order)",
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


def plot(rows: list[dict[str, Any]], worst: list[dict[str, Any]]) -> Figure:
    fig, (left, right, budget) = figure(3)
    x = np.arange(len(rows))
    names = [r["preset"] for r in rows]
    left.bar(x - 0.2, [r["verify_winning_tile_ms_median"] for r in rows], 0.4, label="winning tile")
    left.bar(x + 0.2, [r["verify_seal_ms_median"] for r in rows], 0.4, label="full seal (tile + replay)")
    left.set_ylabel("ms (median)")
    left.set_title("verification time")
    right.bar(x - 0.2, [r["seal_fraction_of_block_time"] for r in rows], 0.4, label="seal / block mining time")
    right.bar(x + 0.2, [r["seal_fraction_of_block_macs"] for r in rows], 0.4, label="seal MACs / block MACs")
    right.set_title("verification as a fraction of a block's work")
    wx = np.arange(len(worst))
    budget.bar(wx - 0.2, [w["worst_case_verify_ms"] for w in worst], 0.4, label="worst-case block")
    budget.bar(wx + 0.2, [w["verify_budget_ms"] for w in worst], 0.4, label="budget")
    budget.set_ylabel("ms, one core")
    budget.set_title("worst-case verification vs budget")
    for ax, labels in ((left, names), (right, names), (budget, [w["preset"] for w in worst])):
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    return fig
