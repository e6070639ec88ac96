"""Suite ``attack``: what a ticket costs shortcut attackers, against the honest miner.

A ticket needs a tile's whole transcript: its partial sums after every chunk of t, folded by the
cubic mix (docs/protocol.md Part IV §4, §9). The honest miner computes (A+E)(B+F) chunk by chunk:
BM·k·BN multiply-accumulates per tile. An attacker picks his operand A to make A+E cheap:

* **zero**: A = 0, so A+E = E_L·E_R has rank r and P_c = E_L[I]·Y_c with
  Y_c = Σ_{c'<=c} E_R[:, c']·(B+F)[c']: r·t·n per chunk shared by all tiles, BM·r·BN per tile;
* **low-rank**: A = U·V of rank ρ, so A+E = [U E_L]·[V; E_R] has rank ρ + r;
* **sparse**: a few non-zeros in A: a sparse product (nnz·n per chunk) plus the zero attack on E;
* **saturated**: every entry at the payload bound, A = 63·u·vᵀ (rank 1; |A+E| still fits int8).

Each attacker's transcript is checked bit for bit against the honest one (same digests), his MACs
are counted, and both are timed on the CPU (whatever ``--device``) with the same exact float64 GEMM,
and the honest miner also with ``_int_mm``, the int8 path that an attacker's wide Y_c cannot use.
The attacker-advantage ratio is attacker cost / honest cost per ticket: >= 1 means no advantage.
A control run with t = 4r (which ``PouwParams.validate`` forbids) shows the ratio falling below 1
when the rule t <= r is broken.

The second part (:mod:`benchmarks.suites.strategies`) plays the strategies against the v2 rules
and reports reward per unit of work against honest mining: grinding (re-stamping a step; a fresh σ
for one-step blocks) and fabrication of a fraction of the segments, with the real verifier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.framework import RunContext, SuiteReport, figure, measure, plain_log_ticks, rounded
from benchmarks.suites import strategies
from pouw.backends import get_backend
from pouw.noise import NoiseFactors, draw_noise, exact_matmul
from pouw.params import DEVNET, PAYLOAD_BOUND, PRESETS, PouwParams
from pouw.transcript import fold_chunk, tile_lanes, transcript

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "attack"
DESCRIPTION = ("cost per ticket of shortcut attackers (zero, low-rank, sparse, saturated operand) vs honest; "
               "reward per unit of work of grinding and fabrication vs honest mining")
LOW_RANK = 8
SPARSE_DENSITY = 1 / 16
CONTROL = dataclasses.replace(DEVNET, name="control t=4r", rank=16, chunk=64)


class MacCounter:
    """An exact integer matmul (float64 GEMM) that counts its multiply-accumulates."""

    def __init__(self) -> None:
        self.macs = 0

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.macs += x.shape[0] * x.shape[1] * y.shape[1]
        return exact_matmul(x, y)


@dataclass(frozen=True)
class Attacker:
    """A's rank-ρ part ``left·right`` and its sparse part; A = left·right + sparse."""

    name: str
    left: torch.Tensor  # m × ρ
    right: torch.Tensor  # ρ × k
    sparse: torch.Tensor | None = None  # m × k, few non-zeros

    def operand(self) -> torch.Tensor:
        a = exact_matmul(self.left, self.right)
        return a if self.sparse is None else a + self.sparse


def attackers(m: int, k: int, seed: int) -> list[Attacker]:
    rng = np.random.default_rng(seed)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.astype(np.int64))

    empty = (torch.zeros((m, 0), dtype=torch.int64), torch.zeros((0, k), dtype=torch.int64))
    u = rng.integers(-1, 2, size=(m, LOW_RANK))
    v = rng.integers(-(PAYLOAD_BOUND // LOW_RANK), PAYLOAD_BOUND // LOW_RANK + 1, size=(LOW_RANK, k))
    mask = rng.random((m, k)) < SPARSE_DENSITY
    sparse = np.where(mask, rng.choice([-PAYLOAD_BOUND, PAYLOAD_BOUND], size=(m, k)), 0)
    signs_u, signs_v = rng.choice([-1, 1], size=(m, 1)), rng.choice([-1, 1], size=(1, k))
    return [
        Attacker("zero", *empty),
        Attacker(f"low-rank (rank {LOW_RANK})", tensor(u), tensor(v)),
        Attacker(f"sparse ({SPARSE_DENSITY:.3g} dense)", *empty, sparse=tensor(sparse)),
        Attacker("saturated (±63, rank 1)", tensor(PAYLOAD_BOUND * signs_u), tensor(signs_v)),
    ]


def shortcut_state(
    attacker: Attacker, noise: NoiseFactors, b_noisy: torch.Tensor, chunk: int, shared: MacCounter, own: MacCounter
) -> torch.Tensor:
    """The mix states of (A+E)(B+F) computed through A+E = [left E_L]·[right; E_R] (+ sparse)."""
    left = torch.cat([attacker.left, noise.e_left.to(torch.int64)], dim=1)
    right = torch.cat([attacker.right, noise.e_right.to(torch.int64)], dim=0)
    m, k = left.shape[0], right.shape[1]
    n = b_noisy.shape[1]
    y = torch.zeros((right.shape[0], n), dtype=torch.int64)
    sparse_sum = torch.zeros((m, n), dtype=torch.float64)
    state = torch.zeros((m, n), dtype=torch.int64)
    b_float = b_noisy.to(torch.float64)
    for c, start in enumerate(range(0, k, chunk)):
        stop = min(start + chunk, k)
        y = y + shared(right[:, start:stop], b_noisy[start:stop])
        partial = own(left, y)
        if attacker.sparse is not None:
            block = attacker.sparse[:, start:stop].to(torch.float64).to_sparse()
            own.macs += int(block._nnz()) * n
            sparse_sum += torch.sparse.mm(block, b_float[start:stop])
            partial = partial + sparse_sum.to(torch.int64)
        state = fold_chunk(state, partial, c)
    return state


def study(params: PouwParams, shape: tuple[int, int, int], repeats: int) -> dict[str, Any]:
    """Honest and attacker cost per ticket for one product shape under ``params``."""
    m, k, n = shape
    tiles = (m // params.tile_m) * (n // params.tile_n)
    sigma_m = bytes([k % 256, params.rank % 256]) * 16
    noise = draw_noise(sigma_m, m, k, n, params.rank)
    rng = np.random.default_rng(k)
    b = torch.from_numpy(rng.integers(-PAYLOAD_BOUND, PAYLOAD_BOUND + 1, size=(k, n)).astype(np.int64))
    b_noisy = b + noise.f()
    honest_macs = params.tile_m * k * params.tile_n
    rows = []
    for attacker in attackers(m, k, seed=m + k):
        a_noisy = attacker.operand() + noise.e()
        if int(a_noisy.abs().max()) > 127:
            raise ValueError(f"{attacker.name}: noisy operand leaves int8")
        honest_lanes = tile_lanes(transcript(a_noisy, b_noisy, params.chunk, exact_matmul)[1], params.tile_m,
                                  params.tile_n)
        shared, own = MacCounter(), MacCounter()
        lanes = tile_lanes(shortcut_state(attacker, noise, b_noisy, params.chunk, shared, own), params.tile_m,
                           params.tile_n)

        def honest_f64(a_noisy: torch.Tensor = a_noisy) -> object:
            return transcript(a_noisy, b_noisy, params.chunk, exact_matmul)

        a8, b8 = a_noisy.to(torch.int8), b_noisy.to(torch.int8)

        def honest_int8(a8: torch.Tensor = a8, b8: torch.Tensor = b8) -> object:
            return transcript(a8, b8, params.chunk, get_backend("cpu").int_mm)

        def shortcut(attacker: Attacker = attacker) -> object:
            return shortcut_state(attacker, noise, b_noisy, params.chunk, MacCounter(), MacCounter())

        timings = {label: measure(fn, repeats, min_sample_s=0.01)
                   for label, fn in (("honest_f64", honest_f64), ("honest_int8", honest_int8),
                                     ("attacker_f64", shortcut))}
        attacker_macs = (shared.macs + own.macs) / tiles
        rows.append({
            "attacker": attacker.name,
            "digests_match_honest": bool(np.array_equal(lanes, honest_lanes)),
            "honest_macs_per_ticket": honest_macs,
            "attacker_macs_per_ticket": rounded(attacker_macs),
            "attacker_shared_macs_per_ticket": rounded(shared.macs / tiles),
            "advantage_ratio_macs": rounded(attacker_macs / honest_macs),
            "seconds_per_ticket": {label: rounded(t.median / tiles) for label, t in timings.items()},
            "advantage_ratio_time_f64": rounded(timings["attacker_f64"].median / timings["honest_f64"].median),
            "advantage_ratio_time_vs_int8": rounded(timings["attacker_f64"].median / timings["honest_int8"].median),
            "timings": {label: t.to_json() for label, t in timings.items()},
        })
    return {
        "params": params.name,
        "rank": params.rank,
        "chunk": params.chunk,
        "tile": [params.tile_m, params.tile_n],
        "shape_mkn": [m, k, n],
        "tiles": tiles,
        "predicted_zero_ratio": rounded(params.rank / params.chunk + params.rank / m),  # own r/t + shared r/m
        "attackers": rows,
    }


def shape_for(params: PouwParams, ctx: RunContext) -> tuple[int, int, int]:
    """m spans several row tiles (the shared part of the shortcut is spread over them), k several chunks."""
    row_tiles, chunks = ctx.pick((8, 4), (8, 4), (4, 2))
    return row_tiles * params.tile_m, chunks * params.chunk, 2 * params.tile_n


def run(ctx: RunContext) -> SuiteReport:
    repeats = ctx.pick(9, 5, 3)
    cases: list[PouwParams] = [PRESETS[name] for name in ctx.pick(list(PRESETS), list(PRESETS), ["devnet"])]
    cases.append(CONTROL)
    studies = [study(p, shape_for(p, ctx), repeats) for p in ctx.progress(cases, "attack params")]
    honest_presets = [s for s in studies if s["params"] != CONTROL.name]
    worst = min(row["advantage_ratio_macs"] for s in honest_presets for row in s["attackers"])
    control = min(row["advantage_ratio_macs"] for row in studies[-1]["attackers"])
    plays = [strategies.study("devnet", ctx.backend(), ctx.pick(20_000, 5_000, 2_000), ctx.pick(8, 4, 2))]
    odds = [strategies.shard_odds(name) for name in ("devnet", "testnet", "mainnet")]
    return SuiteReport(
        parameters={"repeats": repeats, "low_rank": LOW_RANK, "sparse_density": SPARSE_DENSITY,
                    "timing_note": "attacker and honest_f64 use the same exact float64 GEMM on the CPU; "
                                   "honest_int8 is the miner's _int_mm path",
                    "shapes": {s["params"]: s["shape_mkn"] for s in studies}},
        results={"studies": studies, "min_advantage_ratio_macs": worst, "control_min_ratio_macs": control,
                 "strategies": [rounded_tree(play) for play in plays],
                 "builtin_shard_odds": rounded_tree(odds),
                 "honest_on_top": all(play["honest_on_top"] for play in plays)},
        headline=[
            f"{s['params']} (r={s['rank']}, t={s['chunk']}): "
            + ", ".join(f"{row['attacker'].split(' ')[0]} x{row['advantage_ratio_macs']:.3g}" for row in s["attackers"])
            + " (MACs, attacker/honest)"
            for s in studies
        ] + [
            f"{play['preset']} reward per MAC vs honest: "
            + ", ".join(f"{row['strategy']} x{row['ratio_to_honest']:.3g}" for row in play["strategies"][1:])
            + f" (honest on top: {play['honest_on_top']})"
            for play in plays
        ] + [
            f"{o['preset']} built-in job: {o['expected_steps_per_win']:.3g} steps per win, cap "
            f"{o['max_steps_per_block']}: a shard ends spent with probability {o['spent_shard_probability']:.3g}, "
            f"{o['shards_per_win']:.3g} shards (nonces) per win"
            for o in odds
        ],
        figures={NAME: plot(studies), "attack_strategies": plot_strategies(plays)},
    )


def plot(studies: list[dict[str, Any]]) -> Figure:
    fig, (left, right) = figure(2)
    names = [row["attacker"] for row in studies[0]["attackers"]]
    x = np.arange(len(names))
    width = 0.8 / len(studies)
    metrics: list[tuple[Any, str, Callable[[dict[str, Any]], float]]] = [
        (left, "counted MACs", lambda row: row["advantage_ratio_macs"]),
        (right, "time (float64 GEMM both)", lambda row: row["advantage_ratio_time_f64"]),
    ]
    for ax, title, metric in metrics:
        for i, s in enumerate(studies):
            ax.bar(x + (i - (len(studies) - 1) / 2) * width, [metric(row) for row in s["attackers"]], width,
                   label=f"{s['params']} (r={s['rank']}, t={s['chunk']})")
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [name.split(" (")[0] for name in names])
        ax.set_yscale("log")
        plain_log_ticks(ax)
        ax.set_ylabel("attacker / honest cost per ticket")
        ax.set_title(f"attacker advantage ratio: {title} (>= 1: none)")
        ax.grid(alpha=0.3, axis="y", which="both")
        ax.legend(fontsize=7)
    return fig


def rounded_tree(value: Any) -> Any:
    if isinstance(value, float):
        return rounded(value)
    if isinstance(value, dict):
        return {k: rounded_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded_tree(v) for v in value]
    return value


def plot_strategies(plays: list[dict[str, Any]]) -> Figure:
    fig, (ax,) = figure(1, width=8.0)
    names = [row["strategy"] for row in plays[0]["strategies"]]
    x = np.arange(len(names))
    width = 0.8 / len(plays)
    for i, play in enumerate(plays):
        ax.bar(x + (i - (len(plays) - 1) / 2) * width,
               [max(row["ratio_to_honest"], 1e-4) for row in play["strategies"]], width, label=play["preset"])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, names, rotation=15, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("reward per MAC / honest (floor 1e-4)")
    ax.set_title("v2 rules: reward per unit of work vs honest mining (< 1: honest on top)")
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.legend(fontsize=7)
    return fig
