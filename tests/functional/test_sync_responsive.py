"""A node syncing a chain keeps answering its HTTP API: header tiles and block replays run in the
verification pool, off the writer thread the API's reads go through."""

from __future__ import annotations

import os
import time
import urllib.request

from tests.functional.conftest import Network
from tests.functional.framework import TIMEOUT_FACTOR, sync_blocks, wait_until
from tests.functional.test_p2p_network import ADDRESSES, mine

BLOCKS = int(os.environ.get("POUW_SYNC_BLOCKS", "80"))
"""Blocks to sync (measure the 1,000-block case with POUW_SYNC_BLOCKS=1000; minutes)."""
API_BOUND_S = 1.0


def test_the_api_answers_within_a_second_during_sync(network: Network) -> None:
    source = network.add_node()
    mine(network, source, ADDRESSES[0], BLOCKS, timeout=300 + BLOCKS)
    height = source.height()
    fresh = network.add_node(connect=[source])
    latencies: list[float] = []
    started = time.monotonic()
    while fresh.height() < height and time.monotonic() - started < 240 * TIMEOUT_FACTOR:
        for path in ("/api/status", "/api/blocks?limit=5"):
            began = time.perf_counter()
            with urllib.request.urlopen(fresh.url + path, timeout=30) as response:
                response.read()
            latencies.append(time.perf_counter() - began)
        time.sleep(0.05)
    sync_blocks([source, fresh], 60)
    synced = time.monotonic() - started
    worst = max(latencies)
    print(f"synced {height} blocks in {synced:.1f} s; {len(latencies)} API calls, slowest {worst:.3f} s")
    assert len(latencies) >= 10, "the sync ended before the API was probed"
    assert worst < API_BOUND_S * TIMEOUT_FACTOR, f"an API call took {worst:.2f} s during the sync"
    wait_until(lambda: fresh.status()["tip"] == source.status()["tip"], 30, "the same tip")
