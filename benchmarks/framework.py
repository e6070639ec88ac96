"""The benchmark harness: run settings, timing, the machine description and the report files.

Every suite is a module of :mod:`benchmarks.suites` with ``NAME``, ``DESCRIPTION`` and
``run(ctx: RunContext) -> SuiteReport``. The harness owns what all suites share: sizes chosen by
mode (full, ``--quick``, and the internal ``--tiny`` of the smoke test), wall-clock timing with raw
samples and medians (synchronising CUDA around each sample), progress bars, and the files a suite
leaves in ``--out``: ``<suite>.json`` (machine, device, versions, parameters, results) and its PNG
plots, drawn with matplotlib's Agg backend."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from pouw.backends import Backend, get_backend

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 1
T = TypeVar("T")

# Dense int8 tensor-core peaks (TOPS, 2 ops per multiply-accumulate, no sparsity) from the vendors'
# datasheets. Matched by substring of torch's device name, first match wins, so longer names first.
INT8_PEAK_TOPS: tuple[tuple[str, float], ...] = (
    ("H200", 1979.0),
    ("H100 PCIe", 1513.0),
    ("H100 NVL", 1671.0),
    ("H100", 1979.0),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 624.0),
    ("L40S", 733.0),
    ("L4", 242.5),
    ("RTX 4090", 660.6),
    ("T4", 130.0),
)


def int8_peak_tops(device_name: str) -> float | None:
    """The dense int8 peak of a CUDA device by name, or None when the table does not know it."""
    return next((peak for key, peak in INT8_PEAK_TOPS if key in device_name), None)


# --- run settings -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What a suite is asked to do: the device, the mode and whether to draw progress bars."""

    device: str = "cpu"
    quick: bool = False
    tiny: bool = False
    threads: int = 1
    progress_bars: bool = True

    @property
    def mode(self) -> str:
        return "tiny" if self.tiny else "quick" if self.quick else "full"

    def pick(self, full: T, quick: T, tiny: T) -> T:
        """The value for this run's mode (``--tiny`` wins over ``--quick``)."""
        return tiny if self.tiny else quick if self.quick else full

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def torch_device(self) -> torch.device:
        return self.backend().device

    def backend(self) -> Backend:
        return get_backend(self.device)

    def sync(self) -> None:
        """Wait for queued device work, so that a timer reads finished work."""
        if self.is_cuda:
            torch.cuda.synchronize(self.torch_device)

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        """``items`` with a progress bar on stderr (tqdm when installed and enabled)."""
        if not self.progress_bars:
            yield from items
            return
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is optional: the suites run the same without bars
            yield from items
            return
        yield from tqdm(items, desc=desc, total=total, leave=False, dynamic_ncols=True, disable=None)

    def settings(self) -> dict[str, Any]:
        return {"mode": self.mode, "quick": self.quick, "tiny": self.tiny, "device": self.device,
                "torch_threads": self.threads}


@dataclass
class SuiteReport:
    """What a suite measured. ``figures`` maps a PNG file stem to its figure."""

    parameters: dict[str, Any]
    results: dict[str, Any]
    headline: list[str] = field(default_factory=list)
    figures: dict[str, Figure] = field(default_factory=dict)


# --- timing -----------------------------------------------------------------------------------


def rounded(x: float, digits: int = 5) -> float:
    """``x`` to ``digits`` significant digits (keeps the JSON readable)."""
    return float(f"{x:.{digits}g}") if math.isfinite(x) and x else x


@dataclass(frozen=True)
class Samples:
    """Wall-clock seconds per call of one measured operation."""

    seconds: list[float]
    calls_per_sample: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def rate(self, work: float = 1.0) -> float:
        """``work`` units per second at the median time."""
        return work / self.median

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": "s",
            "median": rounded(self.median),
            "min": rounded(min(self.seconds)),
            "samples": [rounded(s) for s in self.seconds],
            "calls_per_sample": self.calls_per_sample,
        }


def measure(
    fn: Callable[[], object],
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    min_sample_s: float = 0.0,
    warmup: int = 1,
) -> Samples:
    """Time ``fn``: ``warmup`` untimed calls, then ``repeats`` samples. A sample runs ``fn`` enough
    times in a row to last ``min_sample_s`` (so that tiny operations are not all timer noise) and
    records the time per call; ``sync`` runs before each clock read."""
    return measure_interleaved({"fn": fn}, repeats, sync, min_sample_s, warmup)["fn"]


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    sync: Callable[[], None] = lambda: None,
    min_sample_s: float = 0.0,
    warmup: int = 1,
) -> dict[str, Samples]:
    """:func:`measure` for operations that are compared with each other: their samples are taken in
    turn (sample ``i`` of each, in an order rotated every round) rather than one operation's block
    after another's, so a machine that speeds up or slows down during the run (turbo, a neighbour
    on a shared host) shifts every operation alike and their ratios stay honest."""
    calls: dict[str, int] = {}
    for label, fn in fns.items():
        for _ in range(warmup):
            fn()
        sync()
        calls[label] = 1
        if min_sample_s > 0:  # one timed call sizes the sample
            start = time.perf_counter()
            fn()
            sync()
            calls[label] = max(1, math.ceil(min_sample_s / max(time.perf_counter() - start, 1e-9)))
    labels = list(fns)
    seconds: dict[str, list[float]] = {label: [] for label in labels}
    for round_index in range(repeats):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            fn = fns[label]
            start = time.perf_counter()
            for _ in range(calls[label]):
                fn()
            sync()
            seconds[label].append((time.perf_counter() - start) / calls[label])
    return {label: Samples(seconds[label], calls[label]) for label in labels}


def paired_ratio(numerator: Samples, denominator: Samples) -> float:
    """The median over rounds of ``numerator / denominator`` for samples of
    :func:`measure_interleaved` (sample ``i`` of each taken in the same round): a slow round
    slows both sides of its ratio, so the drift of a shared machine cancels out (a ratio of medians
    can pair one operation's fast minute with the other's slow one)."""
    if len(numerator.seconds) != len(denominator.seconds) or not numerator.seconds:
        raise ValueError("paired samples need the same, non-zero number of rounds")
    return statistics.median(x / y for x, y in zip(numerator.seconds, denominator.seconds, strict=True))


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(values: list[float]) -> dict[str, Any]:
    """p50/p95/max of latencies in seconds, with the raw values."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_s": rounded(percentile(values, 50)),
        "p95_s": rounded(percentile(values, 95)),
        "max_s": rounded(max(values)),
        "samples_s": [rounded(v) for v in values],
    }


def unavailable(reason: str, **details: Any) -> dict[str, Any]:
    """The result of a measurement that could not run here (a missing feature, not a failure)."""
    return {"status": "unavailable", "reason": reason, **details}


# --- the machine ------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CAPABILITY_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8",
                    "amx_bf16")


def cpu_capabilities() -> dict[str, bool]:
    """The CPU's int8/f32 matmul features (/proc/cpuinfo flags, as lscpu shows them)."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: flag in flags for flag in CAPABILITY_FLAGS}


# --- ISA emulation: figures for a reference machine this one is not --------------------------------

EMULATE_ENV = "POUW_BENCH_EMULATE_ISA"
"""Set (by ``pouw-bench --emulate-isa``) in the re-executed process: the emulated ISA's name."""
EMULATIONS: dict[str, dict[str, str]] = {
    # the 2-core AVX2 reference machine of the speed targets (AMD EPYC, no AVX-512, no VNNI): MKL,
    # oneDNN and numba limited to AVX2 (haswell), and the float32 backend forced, since there
    # ``torch._int_mm`` is a naive loop (here it would still run oneDNN's AVX2 kernel: not representative)
    "avx2": {
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "NUMBA_CPU_NAME": "haswell",
        "POUW_CPU_BACKEND": "float32",
    },
}
EMULATION_UNREPRESENTATIVE: dict[str, tuple[str, ...]] = {"avx2": ("int_mm",)}
"""Exact CPU products whose timing under the emulation says nothing about the emulated machine."""


def emulated_isa() -> str | None:
    """The ISA this process emulates (its environment was set before torch loaded), or None."""
    name = os.environ.get(EMULATE_ENV) or None
    return name if name in EMULATIONS else None


def emulation_env(isa: str) -> dict[str, str]:
    """The variables that emulate ``isa``, plus the marker :func:`emulated_isa` reads."""
    return {**EMULATIONS[isa], EMULATE_ENV: isa}


def representative(kind: str) -> bool:
    """Whether an exact plain product's timing stands for the machine (emulated or real)."""
    isa = emulated_isa()
    return isa is None or kind not in EMULATION_UNREPRESENTATIVE.get(isa, ())


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    return {
        "cpu_model": cpu_model(),
        "cpu_capabilities": cpu_capabilities(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "memory_bytes": memory,
        "platform": platform.platform(),
        # other processes' load while the suite ran skews timings: 1, 5, 15-minute averages at its end
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        # figures taken under an emulated ISA (pouw-bench --emulate-isa) say so, with the variables set
        "emulated_isa": emulated_isa(),
        "emulation_env": {key: os.environ.get(key) for key in emulation_env(isa)} if (isa := emulated_isa()) else None,
    }


def device_info(ctx: RunContext) -> dict[str, Any]:
    if not ctx.is_cuda:
        return {"name": ctx.device, "model": cpu_model(), "torch_threads": torch.get_num_threads(),
                "matmul_backend": ctx.backend().label, "capabilities": cpu_capabilities()}
    props = torch.cuda.get_device_properties(ctx.torch_device)
    return {
        "name": ctx.device,
        "model": props.name,
        "memory_bytes": props.total_memory,
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "int8_peak_tops": int8_peak_tops(props.name),
    }


def versions() -> dict[str, Any]:
    def dist(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "pouw_chain": dist("pouw-chain"),
        "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


# --- plots and files --------------------------------------------------------------------------


def figure(columns: int = 1, width: float = 6.0, height: float = 4.2) -> tuple[Figure, list[Axes]]:
    """A new Agg figure with ``columns`` side-by-side axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    return fig, list(axes[0])


def plain_log_ticks(ax: Axes) -> None:
    """Label a log-scaled y axis with plain numbers (0.5, 2) rather than powers of ten."""
    from matplotlib.ticker import FormatStrFormatter

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))


def write_report(
    out: Path,
    name: str,
    description: str,
    ctx: RunContext,
    report: SuiteReport | None,
    started: datetime.datetime,
    duration_s: float,
    error: str | None = None,
) -> Path:
    """Write ``<out>/<name>.json`` and the report's PNGs; returns the JSON path."""
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    plots = []
    for stem, fig in (report.figures if report else {}).items():
        fig.tight_layout()
        fig.savefig(out / f"{stem}.png", dpi=110)
        plt.close(fig)
        plots.append(f"{stem}.png")
    document = {
        "suite": name,
        "description": description,
        "schema": SCHEMA_VERSION,
        "status": "error" if error else "ok",
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(duration_s, 2),
        "machine": machine_info(),
        "device": device_info(ctx),
        "versions": versions(),
        "parameters": {**ctx.settings(), **(report.parameters if report else {})},
        "results": report.results if report else {},
        "headline": report.headline if report else [],
        "plots": plots,
    }
    if error:
        document["error"] = error
    path = out / f"{name}.json"
    path.write_text(json.dumps(document, indent=1) + "\n")
    return path
