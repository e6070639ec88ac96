"""The miner's own ``/metrics`` (``pouw-mine --metrics-port N``), through ``prometheus_client``.

:class:`MinerMetrics` holds a registry of its own (process and build info included) and is fed
from the mining loop's :class:`node.miner.MinerStats` by :meth:`MinerMetrics.observe` (the
status reporter calls it); :meth:`MinerMetrics.serve` starts prometheus_client's HTTP server on
127.0.0.1 in a daemon thread. Counters follow the stats' running totals, so whoever counts in
``MinerStats`` (``blocks_found``, ``blocks_stale``, ``blocks_rejected``, ``steps``, ``macs``,
``tiles``) counts for the metrics too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from node.metrics import package_version

if TYPE_CHECKING:
    from node.miner import MinerStats

PREFIX = "pouw_miner"


class MinerMetrics:
    def __init__(self, backend: str, address: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info(f"{PREFIX}_build", "The miner's version, device and payout address.", registry=self.registry).info(
            {"version": package_version(), "backend": backend, "address": address})
        self.blocks = Counter(f"{PREFIX}_blocks", "Blocks found, by the node's answer.", ["status"],
                              registry=self.registry)
        self.steps = Counter(f"{PREFIX}_steps", "Training steps done.", registry=self.registry)
        self.macs = Counter(f"{PREFIX}_macs", "Multiply-accumulates of those steps.", registry=self.registry)
        self.tiles = Counter(f"{PREFIX}_tiles", "Lottery tiles tried.", registry=self.registry)
        self.steps_rate = Gauge(f"{PREFIX}_steps_per_second", "Training steps per second since start.",
                                registry=self.registry)
        self.macs_rate = Gauge(f"{PREFIX}_macs_per_second", "MACs per second since start.", registry=self.registry)
        self.height = Gauge(f"{PREFIX}_height", "Height of the template being mined.", registry=self.registry)
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def _advance(self, key: str, total: int, counter: Any) -> None:
        delta = total - self._seen.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        self._seen[key] = max(total, self._seen.get(key, 0))

    def observe(self, stats: MinerStats) -> None:
        """Bring the metrics up to ``stats``' running totals (counters never go down)."""
        with self._lock:
            self._advance("accepted", stats.blocks_found, self.blocks.labels("accepted"))
            self._advance("stale", stats.blocks_stale, self.blocks.labels("stale"))
            self._advance("rejected", stats.blocks_rejected, self.blocks.labels("rejected"))
            self._advance("steps", stats.steps, self.steps)
            self._advance("macs", stats.macs, self.macs)
            self._advance("tiles", stats.tiles, self.tiles)
            steps, macs, _ = stats.rates()
            self.steps_rate.set(steps)
            self.macs_rate.set(macs)
            self.height.set(stats.height)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` (0 picks a free port); returns the bound port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
