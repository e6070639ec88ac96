"""Suite ``matmul``: plain int8 GEMM against the PoUW noisy-transcript product at the same shapes.

For square products m = n = k, int8 operands within the payload bound ±63, this times:

* every exact plain product of the device (on a CPU: the ``float32``, ``float64`` and ``int_mm``
  backends of pouw/backends.py, conversions included; on CUDA: ``torch._int_mm``) and names the
  fastest: every PoUW ratio is against it (``overhead_vs_fastest_exact``), and also against
  ``torch._int_mm`` (``overhead_vs_int_mm``), each the median of the per-round ratios; under
  ``--emulate-isa`` a product the emulation cannot represent (``_int_mm``) is timed and marked
  ``representative: false`` but never the fastest;
* float GEMMs for reference (not exact): float32 and bfloat16 on a CPU, float16 and bfloat16 on CUDA;
* the noisy-transcript product of each preset's parameters, through the miner's own hook
  :class:`pouw.transcript.NoisyTranscriptProduct` (commitments, noise, chunked transcript and mix,
  tickets, denoising), and once per size a breakdown of that time by phase, following the route
  the float32 CPU path takes (a small product runs whole in one numba call, counted as
  ``transcript``; where a plain product recovers A·B cheaper than denoising, it is ``denoise``).

Throughput is in TOPS counting 2 operations per multiply-accumulate (the vendors' convention), the
PoUW throughput counting only the useful product. On CUDA each throughput is also given as a
fraction of the device's dense int8 peak.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from benchmarks.framework import (
    RunContext,
    SuiteReport,
    figure,
    int8_peak_tops,
    measure_interleaved,
    paired_ratio,
    representative,
    rounded,
)
from chain.hashing import merkle_root_of_hashes
from pouw.backends import CPU_KINDS, Backend, get_backend
from pouw.kernels import cpu as cpu_kernels
from pouw.noise import draw_noise
from pouw.params import PAYLOAD_BOUND, PRESETS, PouwParams
from pouw.transcript import (
    NoisyTranscriptProduct,
    _device_product,
    _mix_weights,
    block_roots,
    denoise,
    denoise_fast,
    digest_bytes,
    fused_eligible,
    matmul_seed,
    tile_lanes,
    tile_ticket,
    transcript,
    triton_eligible,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NAME = "matmul"
DESCRIPTION = "int8 GEMM (torch._int_mm) and float GEMMs vs the PoUW noisy-transcript product, m = n = k"
HEADER_SEED = b"pouw-bench/matmul".ljust(32, b"\0")
PHASES = ("commit", "noise", "transcript", "tickets", "denoise")


def sizes(ctx: RunContext) -> list[int]:
    if ctx.is_cuda:
        return ctx.pick([256, 512, 1024, 2048, 4096, 8192], [256, 1024, 4096], [256, 512])
    return ctx.pick([64, 128, 256, 512, 1024, 2048], [128, 512, 2048], [64, 128])


def plain_products(ctx: RunContext) -> dict[str, Backend]:
    """The exact plain products of the device, by name."""
    if ctx.is_cuda:
        return {"int_mm": ctx.backend()}
    return {kind: get_backend(f"cpu:{kind}") for kind in CPU_KINDS}


def reference_dtypes(ctx: RunContext) -> dict[str, torch.dtype]:
    if ctx.is_cuda:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16}
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}


def operands(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(n)
    a, b = (rng.integers(-PAYLOAD_BOUND, PAYLOAD_BOUND + 1, size=(n, n), dtype=np.int8) for _ in range(2))
    return torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)


def phase_seconds(
    params: PouwParams, a: torch.Tensor, b: torch.Tensor, backend: Backend, sync: Callable[[], None]
) -> dict[str, float]:
    """One noisy product split into its phases (the order of ``pouw.transcript.noisy_product``)."""
    m, k = a.shape
    n = b.shape[1]
    times: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        sync()
        now = time.perf_counter()
        times[phase] = now - clock
        clock = now

    if triton_eligible(params, k, a.device):  # the GPU path: the miner's own code, timed by phase
        product = _device_product(params, HEADER_SEED, 0, 0, a, b, backend.int_mm, lap)
        product.lottery().scan(0, params.reference_work)  # tickets hashed, then scanned on the device
        lap("tickets")
        product.exact(a)
        lap("denoise")
        return times
    a_host, bt_host = a.cpu().numpy(), cpu_kernels.transpose_int8(b.cpu().numpy())
    ha = merkle_root_of_hashes(block_roots(a_host, params.tile_m))
    hb = merkle_root_of_hashes(block_roots(bt_host, params.tile_n))
    lap("commit")
    sigma_m = matmul_seed(HEADER_SEED, 0, 0, (m, k, n), ha, hb)
    noise = draw_noise(sigma_m, m, k, n, params.rank).to(a.device)
    weights = _mix_weights(params.tile_m, params.tile_n).numpy()
    fused = fused_eligible(backend, params, k, a.device)
    if fused and backend.kind == "float32":  # the miner's float32 path (pouw.kernels.cpu.fused_product)
        lap("noise")
        small = cpu_kernels.small_product(a, b, noise, params.chunk, weights)
        if small is not None:  # one numba call: A+E, B+F, transcript, lanes and A·B, counted as transcript
            lap("transcript")
            _ = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(small[1])]
            lap("tickets")
            times["denoise"] = 0.0
            return times
        ops = cpu_kernels.noisy_operands(a, b, noise, params.chunk)
        times["noise"] += time.perf_counter() - clock
        clock = time.perf_counter()
        if ops.float32_accumulation_exact() and cpu_kernels.plain_is_cheaper(m, k, n, params.rank):
            _, lanes, _ = cpu_kernels.fused_float32(ops, params.chunk, weights, keep_noisy=False)
            lap("transcript")
            _ = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(lanes)]
            lap("tickets")
            backend.int_mm(a, b)  # A·B by a plain product, cheaper than denoising here
            lap("denoise")
            return times
        if ops.float32_accumulation_exact():
            fix = cpu_kernels.correction(a, ops.b, noise, ops.a)
            lap("denoise")
            folded = ops.product_bound() + fix.bound < cpu_kernels.FLOAT32_EXACT
            c_noisy, lanes, _ = cpu_kernels.fused_float32(ops, params.chunk, weights, fix if folded else None)
            lap("transcript")
            _ = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(lanes)]
            lap("tickets")
            if not folded and c_noisy is not None:
                denoise_fast(c_noisy, a, ops.b, noise)
            times["denoise"] += time.perf_counter() - clock
            return times
    if fused:  # the miner's CPU path (transcript includes the lanes)
        e, f = noise.dense()
        a_noisy, b_noisy = backend.prepare(a + e), backend.prepare(b + f)
        lap("noise")
        c_noisy, lanes = cpu_kernels.fused_transcript(
            a_noisy, b_noisy, params.chunk, backend.chunk_mm, weights, backend.chunk_dtype
        )
        lap("transcript")
        _ = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(lanes)]
        lap("tickets")
        denoise_fast(c_noisy, a, b_noisy, noise)
        lap("denoise")
        return times
    a_noisy, b_noisy = a + noise.e().to(torch.int8), b + noise.f().to(torch.int8)
    lap("noise")
    c_noisy, state = transcript(a_noisy, b_noisy, params.chunk, backend.int_mm)
    lap("transcript")
    lanes = tile_lanes(state, params.tile_m, params.tile_n)
    _ = [tile_ticket(sigma_m, i, digest_bytes(tile)) for i, tile in enumerate(lanes)]
    lap("tickets")
    denoise(c_noisy, a, b_noisy, noise)
    lap("denoise")
    return times


def median_phases(
    params: PouwParams, a: torch.Tensor, b: torch.Tensor, backend: Backend, sync: Callable[[], None], repeats: int
) -> dict[str, float]:
    runs = [phase_seconds(params, a, b, backend, sync) for _ in range(repeats)]
    return {phase: rounded(statistics.median(run[phase] for run in runs)) for phase in PHASES}


def measure_size(n: int, ctx: RunContext, presets: list[str], peak: float | None) -> dict[str, Any]:
    """All timings of one size: ``_int_mm``, the float GEMMs and each preset's noisy product."""
    backend = ctx.backend()
    repeats = ctx.pick(7, 5, 3) if n < 2048 else ctx.pick(9, 9, 3)  # the headline size: rounds for a paired median
    min_sample_s = ctx.pick(0.05, 0.01, 0.002)
    a, b = operands(n, backend.device)
    useful_ops = 2 * n**3
    want = torch._int_mm(a, b)
    timed: dict[str, Callable[[], object]] = {}
    for label, candidate in plain_products(ctx).items():
        if not torch.equal(candidate.int_mm(a, b), want):
            raise RuntimeError(f"plain backend {label} is not exact at n={n}")
        timed[f"plain:{label}"] = functools.partial(candidate.int_mm, a, b)
    floats = {label: (a.to(dtype), b.to(dtype)) for label, dtype in reference_dtypes(ctx).items()}
    for label, (fa, fb) in floats.items():
        timed[f"float:{label}"] = functools.partial(torch.matmul, fa, fb)
    hooks = {name: NoisyTranscriptProduct(PRESETS[name], HEADER_SEED, 0, 0, backend) for name in presets}
    exact_pouw = {name: bool(torch.equal(hook(a, b, 0), want)) for name, hook in hooks.items()}
    for name, hook in hooks.items():
        timed[f"pouw:{name}"] = functools.partial(hook, a, b, 0)
    timings = measure_interleaved(timed, repeats, ctx.sync, min_sample_s)  # every ratio from the same moments
    exact_plain: dict[str, Any] = {}
    for label in plain_products(ctx):
        timing = timings[f"plain:{label}"]
        exact_plain[label] = {**timing.to_json(), "tops": rounded(useful_ops / timing.median / 1e12)}
    for label, entry in exact_plain.items():
        entry["representative"] = representative(label)  # False: not what the emulated machine would time
    candidates = [label for label in exact_plain if exact_plain[label]["representative"]]
    fastest = min(candidates, key=lambda label: exact_plain[label]["median"])
    fastest_s = exact_plain[fastest]["median"]
    row: dict[str, Any] = {
        "n": n,
        "int_mm": exact_plain["int_mm"],
        "exact_plain": exact_plain,
        "fastest_exact_plain": {"name": fastest, "median_s": fastest_s, "tops": exact_plain[fastest]["tops"]},
        "pouw_backend": backend.label,
    }
    for label in floats:
        timing = timings[f"float:{label}"]
        row[label] = {**timing.to_json(), "tops": rounded(useful_ops / timing.median / 1e12)}
    row["pouw"] = {}
    for name in presets:
        params = PRESETS[name]
        exact = exact_pouw[name]
        timing = timings[f"pouw:{name}"]
        row["pouw"][name] = {
            **timing.to_json(),
            "tops": rounded(useful_ops / timing.median / 1e12),
            "overhead_vs_fastest_exact": rounded(paired_ratio(timing, timings[f"plain:{fastest}"])),
            "overhead_vs_int_mm": rounded(paired_ratio(timing, timings["plain:int_mm"])),
            "exact_product": exact,
            "params": {"rank": params.rank, "chunk": params.chunk, "tile": [params.tile_m, params.tile_n]},
            "phases_s": median_phases(params, a, b, backend, ctx.sync, repeats),
        }
    if peak is not None:
        for entry in (row["int_mm"], *row["pouw"].values()):
            entry["fraction_of_int8_peak"] = rounded(entry["tops"] / peak)
    return row


def run(ctx: RunContext) -> SuiteReport:
    presets = ["devnet"] if ctx.tiny else list(PRESETS)
    peak = int8_peak_tops(torch.cuda.get_device_name(ctx.torch_device)) if ctx.is_cuda else None
    rows = [measure_size(n, ctx, presets, peak) for n in ctx.progress(sizes(ctx), "matmul sizes")]
    return SuiteReport(
        parameters={"sizes": sizes(ctx), "repeats": ctx.pick(7, 5, 3), "min_sample_s": ctx.pick(0.05, 0.01, 0.002),
                    "pouw_presets": presets, "operands": f"uniform int8 in [-{PAYLOAD_BOUND}, {PAYLOAD_BOUND}]",
                    "ops_convention": "2 ops per multiply-accumulate; PoUW counts the useful product only",
                    "reference_dtypes": list(reference_dtypes(ctx))},
        results={"int8_peak_tops": peak, "sizes": rows},
        headline=headline(rows),
        figures={NAME: plot(rows, list(reference_dtypes(ctx)), presets, peak),
                 f"{NAME}_phases": plot_phases(rows, presets)},
    )


def headline(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        pouw = ", ".join(
            f"{name} {entry['tops']:.3g} TOPS (x{entry['overhead_vs_fastest_exact']:.2f} the fastest exact, "
            f"x{entry['overhead_vs_int_mm']:.2f} _int_mm)"
            for name, entry in row["pouw"].items()
        )
        fastest = row["fastest_exact_plain"]
        lines.append(f"n={row['n']}: fastest exact plain {fastest['name']} {fastest['tops']:.3g} TOPS, "
                     f"int_mm {row['int_mm']['tops']:.3g} TOPS; PoUW {pouw}")
    return lines


def plot(rows: list[dict[str, Any]], dtypes: list[str], presets: list[str], peak: float | None) -> Figure:
    fig, (left, right) = figure(2)
    n = [row["n"] for row in rows]
    left.plot(n, [row["int_mm"]["tops"] for row in rows], marker="o", label="torch._int_mm (int8)")
    for label in rows[0]["exact_plain"]:
        if label != "int_mm":
            tops = [row["exact_plain"][label]["tops"] for row in rows]
            left.plot(n, tops, marker="^", label=f"exact {label} backend")
    for label in dtypes:
        left.plot(n, [row[label]["tops"] for row in rows], marker=".", linestyle="--", label=f"{label} GEMM")
    for name in presets:
        left.plot(n, [row["pouw"][name]["tops"] for row in rows], marker="s", label=f"PoUW ({name} r, t)")
        right.plot(n, [row["pouw"][name]["overhead_vs_fastest_exact"] for row in rows], marker="s", label=name)
    if peak is not None:
        left.axhline(peak, color="grey", linestyle=":", label=f"int8 peak {peak:g}")
    left.set_title("throughput (useful ops)")
    left.set_ylabel("TOPS")
    right.set_title("PoUW time / fastest exact plain product")
    right.set_ylabel("overhead (x)")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("m = n = k")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return fig


def plot_phases(rows: list[dict[str, Any]], presets: list[str]) -> Figure:
    """Where the noisy product's time goes, per size: stacked shares of the phases."""
    fig, axes = figure(len(presets), width=4.5)
    labels = [str(row["n"]) for row in rows]
    for ax, name in zip(axes, presets, strict=True):
        bottom = np.zeros(len(rows))
        for phase in PHASES:
            times = np.array([row["pouw"][name]["phases_s"][phase] for row in rows])
            totals = np.array([sum(row["pouw"][name]["phases_s"].values()) for row in rows])
            share = 100 * times / totals
            ax.bar(labels, share, bottom=bottom, label=phase)
            bottom += share
        ax.set_title(f"PoUW product phases ({name} r, t)")
        ax.set_xlabel("m = n = k")
        ax.set_ylabel("share of time (%)")
        ax.set_ylim(0, 130)
        ax.set_yticks(range(0, 101, 20))
        ax.legend(fontsize=7, ncol=3, loc="upper center")
    return fig
