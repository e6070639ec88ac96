"""``pouw-mine``: mine blocks for a node with the CPU or a CUDA GPU, showing live progress."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import time
from pathlib import Path

import click
import torch

from chain.errors import PouwError, ValidationError
from node.miner import MinerError, MinerStats, MiningLoop, NodeClient
from node.miner_metrics import MinerMetrics
from pouw.backends import get_backend
from pouw.transcript import transcript_path
from wallet.address import InvalidAddress, decode_address
from wallet.client import COOKIE_ENV, DATADIR_ENV, RpcCredentials

DEFAULT_NODE = "http://127.0.0.1:8645"
OPEN_ENDED_STEPS = 1 << 31
"""Jobs with at least this many steps left are shown as open-ended (the built-in job has 2^32 - 1)."""


def _fmt(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.1f}"


class Reporter:
    """A live status line on a terminal; plain log lines (at most every few seconds) otherwise."""

    def __init__(self, tty: bool, interval: float = 5.0, metrics: MinerMetrics | None = None) -> None:
        self.tty = tty
        self.interval = interval
        self.metrics = metrics
        self._last = 0.0

    def line(self, stats: MinerStats) -> str:
        steps, macs, tiles = stats.rates()
        best = stats.best_ticket.hex()[:10] if stats.best_ticket else "-"
        left = "open-ended" if stats.steps_left >= OPEN_ENDED_STEPS else f"{stats.steps_left} left"
        rejected = f"{stats.blocks_rejected} rejected"
        if stats.rejections:
            rejected += " (" + ", ".join(f"{reason} {n}" for reason, n in sorted(stats.rejections.items())) + ")"
        return (f"height {stats.height} job {stats.job} ({left}) shard {stats.shard_nonce} | {steps:.1f} steps/s "
                f"{_fmt(macs)}MAC/s {_fmt(tiles)} tiles/s | best {best} | blocks {stats.blocks_found} accepted, "
                f"{stats.blocks_stale} stale, {rejected}")

    def __call__(self, stats: MinerStats, event: str | None) -> None:
        now = time.monotonic()
        if self.metrics is not None:
            self.metrics.observe(stats)
        if event is not None:
            if self.tty:
                sys.stderr.write("\r\x1b[2K")
            click.echo(f"[miner] {event}", err=True)
        if self.tty and (event is not None or now - self._last > 0.2):
            self._last = now
            sys.stderr.write("\r\x1b[2K" + self.line(stats))
            sys.stderr.flush()
        elif not self.tty and now - self._last > self.interval:
            self._last = now
            click.echo(f"[miner] {self.line(stats)}", err=True)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pouw-chain", prog_name="pouw-mine", message="%(prog)s %(version)s")
@click.option("--node", "node_url", default=lambda: os.environ.get("POUW_NODE", DEFAULT_NODE),
              show_default=DEFAULT_NODE,
              help="The node's HTTP API URL (env POUW_NODE).")
@click.option("--datadir", type=click.Path(file_okay=False, path_type=Path), envvar=DATADIR_ENV,
              help="The node's datadir, whose .cookie authenticates block submissions "
                   f"(env {DATADIR_ENV}; default ~/.pouw/<the node's preset>).")
@click.option("--cookie", type=click.Path(dir_okay=False, path_type=Path), envvar=COOKIE_ENV,
              help=f"The node's cookie file (env {COOKIE_ENV}); overrides --datadir.")
@click.option("--address", required=True, help="Address (pw1...) that earns the block rewards.")
@click.option("--gpu", type=int, default=None, help="Mine on CUDA device N.")
@click.option("--cpu", "use_cpu", is_flag=True, help="Mine on the CPU (default when --gpu is not given).")
@click.option("--backend", "backend_kind", type=click.Choice(["auto", "float32", "float64", "int_mm"]), default="auto",
              show_default=True, envvar="POUW_CPU_BACKEND",
              help="CPU matmul backend (all exact); auto times them at start-up and keeps the fastest.")
@click.option("--job", default=None, help="Job id to mine (default: the active job that pays best per MAC).")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="CPU threads for torch (small matmuls run fastest on one).")
@click.option("--blocks", "max_blocks", type=click.IntRange(1), default=None, help="Stop after N blocks found.")
@click.option("--retry-for", type=click.FloatRange(0), default=60.0, show_default=True,
              help="Seconds to keep retrying when the node stops answering.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
              help="Serve Prometheus /metrics on 127.0.0.1:PORT (0: any free port, printed).")
@click.option("--first-nonce", type=click.IntRange(0, (1 << 63) - 1), default=None, metavar="N",
              help="Shard nonce of the first shard; later shards count up from it (default: random, so "
                   "processes mining for one address never train the same shard).")
def main(node_url: str, datadir: Path | None, cookie: Path | None, address: str, gpu: int | None,
         use_cpu: bool, backend_kind: str, job: str | None, threads: int, max_blocks: int | None,
         retry_for: float, metrics_port: int | None, first_nonce: int | None) -> None:
    """Train clients' models for a pouw-chain node and earn blocks."""
    if gpu is not None and use_cpu:
        raise click.UsageError("choose --cpu or --gpu N, not both")
    try:
        decode_address(address)
    except InvalidAddress as exc:
        raise click.ClickException(f"bad --address: {exc}") from None
    if job is not None and (len(job) != 64 or any(c not in "0123456789abcdef" for c in job)):
        raise click.ClickException("--job must be 64 lowercase hex digits")
    torch.set_num_threads(threads)
    if gpu is not None:
        if not torch.cuda.is_available():
            raise click.ClickException("--gpu given but CUDA is not available on this machine (use --cpu)")
        if not 0 <= gpu < torch.cuda.device_count():
            raise click.ClickException(f"no CUDA device {gpu} (this machine has {torch.cuda.device_count()})")
    try:
        if gpu is not None:
            backend = get_backend(f"cuda:{gpu}")
        else:
            backend = get_backend("cpu" if backend_kind == "auto" else f"cpu:{backend_kind}")
    except ValidationError as exc:
        raise click.ClickException(f"device: {exc.detail}") from None
    logging.basicConfig(level=logging.WARNING)
    client = NodeClient(node_url, credentials=RpcCredentials(cookie=cookie, datadir=datadir))
    try:
        status = client.get_json("/api/status")
    except MinerError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"[miner] mining {status['preset']} at height {status['height']} on {backend.label} "
               f"for {address} via {node_url}; noisy products: {transcript_path(backend)}", err=True)
    metrics = None
    if metrics_port is not None:
        metrics = MinerMetrics(backend.name, address)
        try:
            bound = metrics.serve(metrics_port)
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on 127.0.0.1:{metrics_port}: {exc.strerror}") from None
        click.echo(f"[miner] metrics on http://127.0.0.1:{bound}/metrics", err=True)
    loop = MiningLoop(client, address, backend, job, Reporter(sys.stderr.isatty(), metrics=metrics))
    loop.shard_nonce = secrets.randbelow(1 << 63) if first_nonce is None else first_nonce
    failing_since: float | None = None
    while max_blocks is None or loop.stats.blocks_found < max_blocks:
        try:
            loop.run(max_blocks)
            failing_since = None
        except KeyboardInterrupt:
            break
        except MinerError as exc:
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > retry_for:
                raise click.ClickException(f"{exc} (for {retry_for:.0f}s; giving up)") from None
            click.echo(f"[miner] {exc}; retrying", err=True)
            time.sleep(2.0)
        except PouwError as exc:
            raise click.ClickException(str(exc)) from None
    stats = loop.stats
    click.echo(f"\n[miner] done: {stats.blocks_found} blocks accepted, {stats.blocks_stale} stale, "
               f"{stats.blocks_rejected} rejected, {stats.steps} steps, {stats.tiles} tiles", err=True)


if __name__ == "__main__":
    main()
