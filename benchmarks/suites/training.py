"""Suite ``training``: steps/s and MAC/s of the integer training step, plain and mined, and float32.

For each workload (the presets' built-in jobs, a 512-512-512 batch-512 MLP on synthetic data; on
CUDA also wide MLPs) this times one step of

* the plain exact integer step (:class:`pouw.engine.Trainer`) on every exact backend of the device
  (on a CPU: float32, float64, ``_int_mm``); the fastest is the reference of ``pouw_slowdown``
  (the median of the per-round ratios, see ``benchmarks.framework.paired_ratio``),
* the same step mined: a :class:`pouw.mining.Miner` under target 0, which never wins, so every
  step pays the whole noisy-transcript lottery and nothing else, on the calibrated backend
  (``get_backend(device)``, named in the JSON),
* a float32 PyTorch step of the same shape (autograd, SGD on the same squared-error loss).

MACs per step are ``ModelConfig.macs_per_step()`` (3 matmuls per layer less the skipped input grad).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.framework import (
    RunContext,
    Samples,
    SuiteReport,
    figure,
    measure_interleaved,
    paired_ratio,
    representative,
    rounded,
)
from consensus.presets import PRESETS as CHAIN_PRESETS
from pouw.backends import CPU_KINDS, Backend, get_backend
from pouw.datasets import Dataset, load_dataset
from pouw.engine import Trainer, batch_indices
from pouw.mining import Miner
from pouw.model import INPUT_EXP, MASTER_FRAC_BITS, ModelConfig, ModelState, init_state
from pouw.params import PRESETS, PouwParams

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "training"
DESCRIPTION = "integer training step plain vs mined (PoUW, never winning) vs a float32 PyTorch step"
TRAJECTORY_SEED = b"pouw-bench/training/trajectory".ljust(32, b"\0")
HEADER_SEED = b"pouw-bench/training/header".ljust(32, b"\0")
INIT_SEED = b"pouw-bench/training/init"


@dataclass(frozen=True)
class Workload:
    name: str
    preset: str  # whose PoUW parameters mine it
    config: ModelConfig
    dataset: str


def builtin(preset: str) -> Workload:
    p = CHAIN_PRESETS[preset]
    config = ModelConfig(p.builtin_dims, p.builtin_batch, p.builtin_lr_shift)
    return Workload(f"{preset} built-in", preset, config, "digits")


def workloads(ctx: RunContext) -> list[Workload]:
    chosen = [builtin(p) for p in ctx.pick(["devnet", "testnet", "mainnet"], ["devnet", "testnet", "mainnet"],
                                           ["devnet"])]
    if not ctx.tiny:
        chosen.append(Workload("512-512-512 batch 512", "mainnet", ModelConfig((512, 512, 512), 512, 12),
                               "synthetic:n=4096,d=512,classes=10,hidden=64"))
    if ctx.is_cuda and not ctx.tiny:
        chosen.append(Workload("wide 1024-4096-4096-1024", "mainnet", ModelConfig((1024, 4096, 4096, 1024), 4096, 14),
                               "synthetic:n=8192,d=1024,classes=10,hidden=64"))
    return chosen


class Float32Step:
    """One float32 SGD step of the integer model's shape and loss, on ``device``."""

    def __init__(self, config: ModelConfig, state: ModelState, dataset: Dataset, device: torch.device) -> None:
        self.config = config
        self.n_classes = dataset.n_classes
        self.n_train = dataset.n_train
        self.lr = 2.0**-config.lr_shift
        self.weights = [
            torch.tensor(w.astype(np.float64) * 2.0**-MASTER_FRAC_BITS, dtype=torch.float32, device=device,
                         requires_grad=True)
            for w in state.weights
        ]
        self.x = torch.from_numpy(dataset.x_train.astype(np.float32) * 2.0**INPUT_EXP).to(device)
        labels = torch.tensor(dataset.y_train, device=device)
        self.onehot = torch.nn.functional.one_hot(labels, self.n_classes).float()
        self.step_index = 0

    def __call__(self) -> None:
        rows = torch.from_numpy(batch_indices(TRAJECTORY_SEED, self.step_index, self.n_train, self.config.batch_size))
        rows = rows.to(self.x.device)
        h = self.x[rows]
        for i, w in enumerate(self.weights):
            h = h @ w if i == len(self.weights) - 1 else torch.relu(h @ w)
        loss = 0.5 * ((h[:, : self.n_classes] - self.onehot[rows]) ** 2).sum()
        grads = torch.autograd.grad(loss, self.weights)
        with torch.no_grad():
            for w, g in zip(self.weights, grads, strict=True):
                w -= self.lr * g
        self.step_index += 1


def plain_backends(ctx: RunContext) -> dict[str, Backend]:
    if ctx.is_cuda:
        return {"int_mm": ctx.backend()}
    return {kind: get_backend(f"cpu:{kind}") for kind in CPU_KINDS}


def mining_params(workload: Workload) -> PouwParams:
    """The preset's PoUW parameters, with its job caps widened to fit the workload (the caps bound a
    validator's replay, not a step's speed: a 512-wide job measures the same noisy products)."""
    params = PRESETS[workload.preset]
    config = workload.config
    return dataclasses.replace(
        params,
        max_model_params=max(params.max_model_params, config.param_count()),
        max_width=max(params.max_width, *config.dims, config.batch_size),
        max_replay_macs=max(params.max_replay_macs, params.max_replay_steps() * params.step_replay_cost(config)),
    )


def mined_step(workload: Workload, state: ModelState, dataset: Dataset, ctx: RunContext) -> Callable[[], None]:
    """One PoUW mining step under an impossible target; a fresh shard when the block's cap is hit."""
    params = mining_params(workload)
    miner = Miner(params, workload.config, dataset, state, TRAJECTORY_SEED, ctx.backend())

    def step() -> None:
        nonlocal miner
        if miner.exhausted:
            miner = Miner(params, workload.config, dataset, state, TRAJECTORY_SEED, ctx.backend())
        if miner.mine(HEADER_SEED, 0, 1) is not None:
            raise RuntimeError("a tile won under target 0")

    return step


def run(ctx: RunContext) -> SuiteReport:
    repeats = ctx.pick(15, 9, 3)  # rounds of the paired ratios (the 512-wide job sits near its target)
    min_sample_s = ctx.pick(0.2, 0.05, 0.01)
    rows = []
    for workload in ctx.progress(workloads(ctx), "training workloads"):
        config = workload.config
        dataset = load_dataset(workload.dataset)
        state = init_state(config, INIT_SEED)
        steps: dict[str, Callable[[], object]] = {
            f"plain:{label}": Trainer(config, state, dataset, TRAJECTORY_SEED, candidate).step
            for label, candidate in plain_backends(ctx).items()
        }
        steps["integer_pouw"] = mined_step(workload, state, dataset, ctx)
        steps["float32"] = Float32Step(config, state, dataset, ctx.torch_device)
        measured = measure_interleaved(steps, repeats, ctx.sync, min_sample_s)  # ratios from the same moments
        plain = {label.removeprefix("plain:"): t for label, t in measured.items() if label.startswith("plain:")}
        fastest = min((label for label in plain if representative(label)), key=lambda label: plain[label].median)
        timings: dict[str, Samples] = {
            "integer_plain": plain[fastest],
            "integer_pouw": measured["integer_pouw"],
            "float32": measured["float32"],
        }
        macs = config.macs_per_step()
        row: dict[str, Any] = {
            "workload": workload.name,
            "dims": list(config.dims),
            "batch_size": config.batch_size,
            "dataset": dataset.name,
            "pouw_params": workload.preset,
            "macs_per_step": macs,
            "fastest_exact_plain": fastest,
            "plain_by_backend_s": {label: rounded(t.median) for label, t in plain.items()},
            "mined_backend": ctx.backend().label,
        }
        for label, timing in timings.items():
            row[label] = {**timing.to_json(), "steps_per_s": rounded(timing.rate()),
                          "macs_per_s": rounded(timing.rate(macs))}
        row["pouw_slowdown"] = rounded(paired_ratio(timings["integer_pouw"], timings["integer_plain"]))
        row["integer_vs_float32"] = rounded(paired_ratio(timings["integer_plain"], timings["float32"]))
        rows.append(row)
    return SuiteReport(
        parameters={"repeats": repeats, "min_sample_s": min_sample_s,
                    "workloads": [{"name": w.name, "dims": list(w.config.dims), "batch_size": w.config.batch_size,
                                   "lr_shift": w.config.lr_shift, "dataset": w.dataset, "pouw_params": w.preset,
                                   "caps_widened": mining_params(w) != PRESETS[w.preset]}
                                  for w in workloads(ctx)],
                    "pouw_target": 0},
        results={"workloads": rows},
        headline=[
            f"{r['workload']}: plain ({r['fastest_exact_plain']}) {r['integer_plain']['steps_per_s']:.4g} steps/s "
            f"({r['integer_plain']['macs_per_s']:.3g} MAC/s), PoUW {r['integer_pouw']['steps_per_s']:.4g} steps/s "
            f"(x{r['pouw_slowdown']:.3g} slower), float32 {r['float32']['steps_per_s']:.4g} steps/s"
            for r in rows
        ],
        figures={NAME: plot(rows)},
    )


def plot(rows: list[dict[str, Any]]) -> Figure:
    fig, (left, right) = figure(2)
    labels = {"integer_plain": "integer, plain", "integer_pouw": "integer, mined (PoUW)", "float32": "float32"}
    x = np.arange(len(rows))
    width = 0.27
    for i, (key, label) in enumerate(labels.items()):
        left.bar(x + (i - 1) * width, [r[key]["steps_per_s"] for r in rows], width, label=label)
        right.bar(x + (i - 1) * width, [r[key]["macs_per_s"] for r in rows], width, label=label)
    for ax, title in ((left, "steps / s"), (right, "MAC / s")):
        ax.set_xticks(x, [r["workload"] for r in rows], fontsize=7, rotation=10)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    return fig
