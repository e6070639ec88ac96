"""``pouw-bench``: run benchmark suites and write one JSON file (and plots) per suite.

    pouw-bench [SUITE...] [--quick] [--device cpu|cuda:N] [--threads N] [--emulate-isa avx2] --out DIR

With no SUITE every suite runs, in the order of :data:`SUITES`. A suite that fails is recorded as
``"status": "error"`` in its JSON; the others still run and the command exits with status 1.

``--emulate-isa avx2`` re-executes the command with MKL, oneDNN and numba limited to AVX2 and the
float32 backend forced (``benchmarks.framework.EMULATIONS``; these must be set before torch loads),
so that a machine with AVX-512/AMX gives figures for the AVX2 reference machine of the speed
targets; every JSON then records ``machine.emulated_isa`` and the variables, and products whose
timing the emulation cannot represent (``_int_mm``) are never the "fastest exact" reference.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import click
import torch

from benchmarks.framework import EMULATIONS, RunContext, SuiteReport, emulated_isa, emulation_env, write_report
from benchmarks.suites import attack, chain_ops, matmul, network, training, useful, verify

SUITE_MODULES: tuple[ModuleType, ...] = (matmul, training, verify, attack, chain_ops, network, useful)
SUITES: dict[str, ModuleType] = {module.NAME: module for module in SUITE_MODULES}


def run_suite(name: str, ctx: RunContext, out: Path) -> bool:
    """Run one suite and write its files; returns whether it succeeded."""
    module = SUITES[name]
    runner: Callable[[RunContext], SuiteReport] = module.run
    started = datetime.datetime.now(datetime.UTC)
    clock = time.perf_counter()
    click.echo(f"[bench] {name}: {module.DESCRIPTION}", err=True)
    report: SuiteReport | None = None
    error: str | None = None
    try:
        report = runner(ctx)
    except Exception as exc:  # one broken suite must not lose the others' results
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    path = write_report(out, name, module.DESCRIPTION, ctx, report, started, time.perf_counter() - clock, error)
    for line in report.headline if report else [f"ERROR {error}"]:
        click.echo(f"[bench] {name}: {line}", err=True)
    click.echo(f"[bench] {name}: wrote {path} ({time.perf_counter() - clock:.1f} s)", err=True)
    return error is None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pouw-chain", prog_name="pouw-bench", message="%(prog)s %(version)s")
@click.argument("suites", nargs=-1, type=click.Choice(list(SUITES)))
@click.option("--quick", is_flag=True, help="Small sizes and few repeats (minutes on a laptop CPU).")
@click.option("--tiny", is_flag=True, hidden=True, help="Smallest sizes, for the smoke test.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="torch CPU threads (1: per-core figures, as the miner and node run).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the JSON results and PNG plots.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--emulate-isa", type=click.Choice(sorted(EMULATIONS)), default=None,
              help="Re-run under an emulated CPU ISA (avx2: the AVX2 reference machine); recorded in every JSON.")
def main(suites: tuple[str, ...], quick: bool, tiny: bool, device: str, threads: int, out: Path,
         no_progress: bool, emulate_isa: str | None) -> None:
    """Benchmark the PoUW chain: matmul, training, verify, attack, chain, network, useful."""
    if emulate_isa is not None and emulated_isa() != emulate_isa:
        flags = [flag for flag, on in (("--quick", quick), ("--tiny", tiny), ("--no-progress", no_progress)) if on]
        reexecute(emulate_isa, [*suites, *flags, "--device", device, "--threads", str(threads), "--out", str(out),
                                "--emulate-isa", emulate_isa])
    ctx = RunContext(device=device, quick=quick, tiny=tiny, threads=threads, progress_bars=not no_progress)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # first: the CPU backend's calibration times under these threads
    try:
        ctx.backend()
    except Exception as exc:
        torch.set_num_threads(previous_threads)
        raise click.ClickException(f"device {device!r}: {exc}") from None
    try:
        failed = [name for name in suites or tuple(SUITES) if not run_suite(name, ctx, out)]
    finally:
        torch.set_num_threads(previous_threads)
    if failed:
        click.echo(f"[bench] failed: {', '.join(failed)}", err=True)
        sys.exit(1)


def reexecute(isa: str, args: list[str]) -> None:
    """Replace this process by ``pouw-bench ARGS`` under the emulation's environment (the libraries
    read it once, when torch and numba load, so it cannot be changed in place)."""
    env = {**os.environ, **emulation_env(isa)}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks.cli", *args], env)


if __name__ == "__main__":
    main()
